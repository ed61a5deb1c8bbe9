"""TransFGU through the real Snakemake DAG on a tiny config: the wiring of both schedules and the whole chain
(schedule release, two teacher updates in its one bootstrapping job)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.integration.dag import check, run_snakemake, tiny_config
from tests.integration.predict_check import assert_other_methods_model_is_refused, predict_agreement

pytestmark = pytest.mark.integration

OUT = "results/tiny"
TRANSFGU = {"crop_size": 16, "epochs": 3, "bootstrap_start": 1, "bootstrap_every": 1, "rounds": 1, "niter": 5, "nredo": 1, "batch_size": 4, "decoder": {"dim": 16, "layers": 1, "heads": 2}}
CONFIG = tiny_config(methods=["transfgu"], features={"shards": 1}, transfgu=TRANSFGU)
COLUMNS = ("transfgu-initial", "transfgu-trained", "transfgu")


def job_inputs(dry_run: str, output: str) -> str:
    """The `input:` line of the dry-run job that writes `output`."""
    for block in re.split(r"\n(?:local)?rule ", dry_run):
        if re.search(rf"output: .*{re.escape(output)}", block):
            return re.search(r"input: (.*)", block).group(1)
    raise AssertionError(f"no job writes {output}:\n{dry_run[-3000:]}")


def test_release_schedule_is_one_job_beside_round_0(tmp_path: Path):
    result = check(run_snakemake(tmp_path, CONFIG, "-n"))
    text = result.stdout + result.stderr
    inputs = job_inputs(text, f"{OUT}/transfgu/bootstrap/model.pt")
    assert f"{OUT}/transfgu/bank/train/shard-0.zarr" in inputs and "model.pt" not in inputs
    assert f"{OUT}/transfgu/bootstrap/model.pt" in job_inputs(text, f"{OUT}/transfgu/predictions.zarr")
    assert f"{OUT}/transfgu/round-0/model.pt" in job_inputs(text, f"{OUT}/transfgu-trained/predictions.zarr")
    assert "round-1" not in text and text.count("rule transfgu_bootstrap:") == 1


def test_rounds_form_a_chain(tmp_path: Path):
    cfg = tiny_config(methods=["transfgu"], transfgu={**TRANSFGU, "schedule": "rounds", "rounds": 3})
    result = check(run_snakemake(tmp_path, cfg, "-n"))
    text = result.stdout + result.stderr
    for r in range(1, 4):
        assert f"{OUT}/transfgu/round-{r - 1}/model.pt" in job_inputs(text, f"{OUT}/transfgu/round-{r}/model.pt")
    assert "round-" not in job_inputs(text, f"{OUT}/transfgu/round-0/model.pt")
    assert f"{OUT}/transfgu/round-3/model.pt" in job_inputs(text, f"{OUT}/transfgu/predictions.zarr")
    assert f"{OUT}/transfgu/round-0/model.pt" in job_inputs(text, f"{OUT}/transfgu-trained/predictions.zarr")
    assert "round-4" not in text


def test_whole_chain_writes_three_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    result = check(run_snakemake(tmp_path, CONFIG, timeout=1500))
    for column in COLUMNS:
        metrics = json.loads((tmp_path / OUT / column / "metrics.json").read_text())
        assert metrics["method"] == column and metrics["num_images"] == 6
        assert 0 <= metrics["protocols"]["hungarian"]["miou"] <= 1
        assert column in result.stdout
    crops = zarr.open_group(str(tmp_path / OUT / "transfgu/crops/train/shard-0.zarr"), mode="r")
    assert crops.attrs["kind"] == "CropBank" and crops["cls"].shape[1] == 64
    assert set(np.unique(crops["group"][:])) <= {-1, 0, 1} and len(np.unique(crops["image"][:])) == 8
    concepts = zarr.open_group(str(tmp_path / OUT / "transfgu/concepts.zarr"), mode="r")
    assert concepts["centroids"].shape == (7, 64) and concepts["group"][:].tolist() == [1] * 4 + [0] * 3
    bank = zarr.open_group(str(tmp_path / OUT / "transfgu/bank/val/shard-0.zarr"), mode="r")
    assert bank.attrs["kind"] == "LabelBank" and bank.attrs["provenance"]["stage"] == "transfgu-bank"
    assert bank["maps"].dtype == np.float32 and bank["maps"].shape == (6, 7, 4, 4)
    assert np.array_equal(bank["labels"][:], bank["maps"][:].astype(np.float32).argmax(1))
    assert (tmp_path / OUT / "transfgu/round-0/model.pt").is_file()
    train_log = json.loads((tmp_path / OUT / "transfgu/bootstrap/train-log.json").read_text())
    assert train_log["teacher_updates"] == 2 and [e["teacher_update"] for e in train_log["epochs"]] == [False, True, True]
    assert all(len(e["label_shares"]) == 7 for e in train_log["epochs"])
    assert not (tmp_path / OUT / "transfgu/resume/bootstrap.pth").exists(), "a finished run leaves no resume state"
    assert predict_agreement(tmp_path, "transfgu", "transfgu", monkeypatch) >= 0.999  # docs/measurements.md
    assert_other_methods_model_is_refused(tmp_path, "transfgu", "transfgu/bootstrap/model.pt", capsys)
    monkeypatch.chdir(tmp_path)  # the manifest's paths are relative to the run's working directory
    assert_concept_probe_reproduces_the_initial_column(Path(OUT))


def assert_concept_probe_reproduces_the_initial_column(results: Path) -> None:
    """benchmarks/transfgu_concepts.py on the finished run: its `discovered` row with the run's zeroing (off by
    default, as the release) is transfgu-initial."""
    from benchmarks.transfgu_concepts import probe

    report = probe(results, "val", 0.6, None)
    initial = json.loads((results / "transfgu-initial/metrics.json").read_text())["protocols"]["hungarian"]["miou"]
    assert report["initial_miou"]["discovered"]["zero_other_group_false"] == pytest.approx(initial, abs=1e-9)
    for row in report["initial_miou"].values():
        assert set(row) == {"zero_other_group_true", "zero_other_group_false"} and all(0 <= v <= 1 for v in row.values())
    assert len(report["discovered_concepts"]["pure_crops_per_class"]) == 7 and report["pure_crops"] > 0
