"""The kmeans baseline through the real DAG on a fake copy of every benchmark layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.fake_benchmarks import MAKERS
from tests.integration.dag import check, run_snakemake, tiny_config
from useg.data.labels import read_mask

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_kmeans_runs_on_each_benchmark_layout(tmp_path: Path, kind: str):
    # one split for both roles and K=4 keep each run to five small jobs (splits: unit tests)
    dataset = MAKERS[kind](tmp_path / "data")
    dataset["train_split"] = dataset["eval_split"]
    config = tiny_config(
        dataset={"name": "bench", **dataset, "root": str(tmp_path / "data")},
        features={"shards": 1, "batch_size": 8},
        kmeans={"k": 4},
    )
    check(run_snakemake(tmp_path / "work", config))
    out = tmp_path / "work" / "results" / "bench"
    classes = json.loads((out / "classes.json").read_text())
    with open(out / "manifest.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == dataset["eval_split"]]
    metrics = json.loads((out / "kmeans" / "metrics.json").read_text())
    assert metrics["num_images"] == len(rows) > 0
    assert len(metrics["protocols"]["hungarian"]["per_class_iou"]) == len(classes["classes"])
    labelled = sum(int((read_mask(r["mask_path"], r["label_map"]) != classes["ignore_index"]).sum()) for r in rows)
    assert np.sum(metrics["confusion"]) == labelled, "every mapped, non-ignored pixel is scored once"
