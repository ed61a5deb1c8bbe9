"""The kmeans baseline through the real DAG on a fake copy of every benchmark layout."""

from __future__ import annotations

import csv
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.fake_benchmarks import MAKERS
from tests.integration.dag import check, run_snakemake, tiny_config
from useg.data.labels import read_mask

pytestmark = pytest.mark.integration


def _run(base: Path, kind: str) -> tuple[dict, subprocess.CompletedProcess]:
    # one split for both roles and K=4 keep each run to five small jobs (splits: unit tests)
    dataset = MAKERS[kind](base / kind / "data")
    dataset["train_split"] = dataset["eval_split"]
    config = tiny_config(
        dataset={"name": "bench", **dataset, "root": str(base / kind / "data")},
        features={"shards": 1, "batch_size": 8},
        kmeans={"k": 4},
    )
    return dataset, run_snakemake(base / kind / "work", config, "--cores", "1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, subprocess.CompletedProcess]]:
    """Every layout's DAG, two at a time (each run is a chain of single-core jobs)."""
    base = tmp_path_factory.mktemp("benchmarks")
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(MAKERS, pool.map(lambda kind: _run(base, kind), MAKERS)))


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_kmeans_runs_on_each_benchmark_layout(runs, kind: str):
    dataset, result = runs[kind]
    check(result)
    out = Path(result.args[result.args.index("-d") + 1]) / "results" / "bench"
    classes = json.loads((out / "classes.json").read_text())
    with open(out / "manifest.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == dataset["eval_split"]]
    metrics = json.loads((out / "kmeans" / "metrics.json").read_text())
    assert metrics["num_images"] == len(rows) > 0
    assert len(metrics["protocols"]["hungarian"]["per_class_iou"]) == len(classes["classes"])
    labelled = sum(int((read_mask(r["mask_path"], r["label_map"]) != classes["ignore_index"]).sum()) for r in rows)
    assert np.sum(metrics["confusion"]) == labelled, "every mapped, non-ignored pixel is scored once"
