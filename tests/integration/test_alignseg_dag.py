"""AlignSeg through the real Snakemake DAG on a tiny config: train -> per-image predict -> evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import zarr

from tests.integration.dag import check, run_snakemake, tiny_config
from tests.integration.predict_check import assert_other_methods_model_is_refused, predict_agreement

pytestmark = pytest.mark.integration

OUT = "results/tiny"
ALIGNSEG = {
    "k": 3, "heads": 2, "global_size": [32, 32], "local_size": [16, 16], "epochs": 2, "batch_size": 4,
}  # fmt: skip


def test_alignseg_chain_reports_hungarian_and_per_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    cfg = tiny_config(methods=["alignseg"], features={"shards": 1}, alignseg=ALIGNSEG)
    result = check(run_snakemake(tmp_path, cfg, timeout=900))
    metrics = json.loads((tmp_path / OUT / "alignseg/metrics.json").read_text())
    assert metrics["method"] == "alignseg" and metrics["num_images"] == 6 and metrics["num_clusters"] == 3
    protocols = metrics["protocols"]
    assert list(protocols) == ["hungarian", "per-image"]
    assert protocols["per-image"]["comparable"] is False
    assert protocols["per-image"]["pixel_accuracy"] >= protocols["hungarian"]["pixel_accuracy"]  # per image: optimal per image
    predictions = zarr.open_group(str(tmp_path / OUT / "alignseg/predictions.zarr"), mode="r")
    assert predictions.attrs["kind"] == "Predictions" and predictions["labels"].shape == (6, 32, 32)
    assert int(predictions["labels"][:].max()) < 3
    decoder = torch.load(tmp_path / OUT / "alignseg/decoder.pt", weights_only=True)
    assert decoder["config"]["prototypes"] == 3 and len(decoder["history"]) == 2
    assert len(json.loads((tmp_path / OUT / "alignseg/train-log.json").read_text())["epochs"]) == 2
    assert "alignseg" in result.stdout and "per-image" in result.stdout
    assert predict_agreement(tmp_path, "alignseg", "alignseg", monkeypatch) >= 0.999  # docs/measurements.md
    assert_other_methods_model_is_refused(tmp_path, "alignseg", "alignseg/decoder.pt", capsys)
