"""The real Snakemake DAG on a tiny synthetic config: outputs, caching, reruns, determinism."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.conftest import make_folder_dataset
from tests.integration.dag import TINY_CONFIG, check, copy_run, mtimes, run_snakemake, tiny_config
from useg.report.benchmarks import benchmark_rows

pytestmark = pytest.mark.integration

OUT = "results/tiny"
FEATURES = [f"{OUT}/features/tiny/{split}/shard-{i}.zarr" for split in ("train", "val") for i in range(2)]
UPSTREAM = [f"{OUT}/manifest.csv", *FEATURES]
KMEANS = [f"{OUT}/kmeans/centroids.zarr", f"{OUT}/kmeans/predictions.zarr", f"{OUT}/kmeans/metrics.json"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir where the tiny DAG ran once, to completion."""
    workdir = tmp_path_factory.mktemp("dag")
    result = check(run_snakemake(workdir, TINY_CONFIG))
    assert "useg: results in" in result.stdout
    return workdir


@pytest.fixture
def workdir(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run (mtimes and Snakemake metadata preserved)."""
    return copy_run(finished_run, tmp_path)


def test_outputs_exist_and_validate(finished_run: Path):
    with open(finished_run / OUT / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 14 and {r["split"] for r in rows} == {"train", "val"}
    shard = zarr.open_group(str(finished_run / FEATURES[0]), mode="r")
    assert shard["patches"].shape[1:] == (4, 4, 64) and shard["attn"].shape[1:] == (2, 4, 4)
    assert shard.attrs["provenance"]["stage"] == "features"
    metrics = json.loads((finished_run / KMEANS[2]).read_text())
    hungarian = metrics["protocols"]["hungarian"]
    assert metrics["num_images"] == 6 and metrics["method"] == "kmeans" and hungarian["protocol"] == "hungarian"
    assert 0 < hungarian["miou"] <= 1 and len(hungarian["per_class_iou"]) == 7
    assert np.sum(metrics["confusion"]) == 6 * 32 * 32, "every ground-truth pixel is counted once"


def test_every_job_wrote_its_benchmark_file(finished_run: Path):
    rows = benchmark_rows(sorted((finished_run / OUT / "benchmarks").rglob("*.tsv")))
    jobs = {row["stage"]: row["jobs"] for row in rows}
    assert jobs == {"synthesize": 1, "manifest": 1, "features": 4, "kmeans_fit": 1, "kmeans_predict": 1, "evaluate": 1, "total": 9}
    assert all(row["time s"] > 0 for row in rows)


def test_second_run_does_nothing(workdir: Path):
    before = mtimes(workdir, UPSTREAM + KMEANS)
    result = check(run_snakemake(workdir, TINY_CONFIG))
    assert "Nothing to be done" in result.stdout + result.stderr
    assert mtimes(workdir, UPSTREAM + KMEANS) == before


def test_parameter_change_reruns_the_stage_and_what_follows_only(workdir: Path):
    before = mtimes(workdir, UPSTREAM + KMEANS)
    check(run_snakemake(workdir, tiny_config(kmeans={"niter": 5})))
    after = mtimes(workdir, UPSTREAM + KMEANS)
    assert all(after[p] == before[p] for p in UPSTREAM), "nothing before k-means reran"
    assert all(after[p] != before[p] for p in KMEANS), "k-means and everything after it reran"


def test_forcerun_reruns_one_stage_and_its_dependents(workdir: Path):
    before = mtimes(workdir, UPSTREAM + KMEANS)
    check(run_snakemake(workdir, TINY_CONFIG, "--forcerun", "kmeans_predict"))
    after = mtimes(workdir, UPSTREAM + KMEANS)
    changed = {p for p in before if before[p] != after[p]}
    assert changed == set(KMEANS[1:])


def test_feature_stage_rerun_is_bit_identical(workdir: Path):
    def arrays(path: str) -> dict[str, np.ndarray]:
        group = zarr.open_group(str(workdir / path), mode="r")
        return {name: group[name][:] for name in ("cls", "patches", "attn", "index")}

    before = {p: arrays(p) for p in FEATURES}
    stamps = mtimes(workdir, FEATURES)
    check(run_snakemake(workdir, TINY_CONFIG, "--forcerun", "features"))
    assert mtimes(workdir, FEATURES) != stamps, "the feature stage really ran again"
    for path in FEATURES:
        for name, value in arrays(path).items():
            assert np.array_equal(value, before[path][name]), f"{path}/{name} differs"


def test_invalid_config_value_fails_naming_the_key_and_allowed_values(tmp_path: Path):
    result = run_snakemake(tmp_path, tiny_config(dataset={"on_corrupt": "maybe"}), "-n")
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "['dataset']['on_corrupt']" in text and "['error', 'skip']" in text


def test_folder_dataset_without_root_is_refused(tmp_path: Path):
    result = run_snakemake(tmp_path, tiny_config(dataset={"kind": "folder"}), "-n")
    assert result.returncode != 0 and "root" in result.stdout + result.stderr


def test_corrupt_image_fails_the_manifest_and_writes_nothing(tmp_path: Path):
    root = make_folder_dataset(tmp_path / "ds", count=3)
    (root / "images" / "img2.png").write_bytes(b"\x89PNG broken")
    cfg = tiny_config(dataset={"name": "folder", "kind": "folder", "root": str(root)})
    result = run_snakemake(tmp_path / "run", cfg, "--until", "manifest")
    assert result.returncode != 0
    log = (tmp_path / "run/results/folder/logs/manifest.log").read_text()
    assert "img2.png" in log
    assert not (tmp_path / "run/results/folder/manifest.csv").exists()


def test_lint_is_clean(tmp_path: Path):
    result = run_snakemake(tmp_path, TINY_CONFIG, "--lint")
    assert result.returncode == 0 and "Congratulations" in result.stdout + result.stderr


def test_predict_kmeans_reproduces_the_run(finished_run: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    from tests.integration.predict_check import assert_other_methods_model_is_refused, predict_agreement

    assert predict_agreement(finished_run, "kmeans", "kmeans", monkeypatch) >= 0.999  # docs/measurements.md
    assert_other_methods_model_is_refused(finished_run, "kmeans", "kmeans/centroids.zarr", capsys)
