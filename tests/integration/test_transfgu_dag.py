"""TransFGU through the real Snakemake DAG on a tiny config: round chain wiring and the whole chain."""

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
TRANSFGU = {"crop_size": 16, "epochs": 2, "rounds": 1, "niter": 5, "nredo": 1, "batch_size": 4, "decoder": {"dim": 16, "layers": 1, "heads": 2}}
CONFIG = tiny_config(methods=["transfgu"], features={"shards": 1}, transfgu=TRANSFGU)
COLUMNS = ("transfgu-initial", "transfgu-trained", "transfgu")


def job_inputs(dry_run: str, output: str) -> str:
    """The `input:` line of the dry-run job that writes `output`."""
    for block in re.split(r"\n(?:local)?rule ", dry_run):
        if re.search(rf"output: .*{re.escape(output)}", block):
            return re.search(r"input: (.*)", block).group(1)
    raise AssertionError(f"no job writes {output}:\n{dry_run[-3000:]}")


def test_rounds_form_a_chain(tmp_path: Path):
    cfg = tiny_config(methods=["transfgu"], transfgu={**TRANSFGU, "rounds": 3})
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
    for r in (0, 1):
        assert (tmp_path / OUT / f"transfgu/round-{r}/model.pt").is_file()
    assert predict_agreement(tmp_path, "transfgu", "transfgu", monkeypatch) >= 0.999  # docs/measurements.md
    assert_other_methods_model_is_refused(tmp_path, "transfgu", "transfgu/round-1/model.pt", capsys)
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
