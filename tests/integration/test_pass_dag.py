"""PASS through the real Snakemake DAG on a tiny object-centric config, saliency prior included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.integration.dag import check, run_snakemake, tiny_config
from tests.integration.predict_check import assert_other_methods_model_is_refused, predict_agreement
from useg.data.labels import read_mask

pytestmark = pytest.mark.integration

OUT = "results/tiny"
PASS = {
    "input_size": [32, 32],
    "saliency_prior": True,
    "taus": [0.3, 0.6],
    "batch_size": 4,
    "net": {
        "arch": "tiny",
        "width": 8,
        "output_stride": 8,
        "projector_hidden": 32,
        "projector_dim": 16,
        "prototypes": 8,
    },
    "pretrain": {"epochs": 1, "batch_size": 4, "view_size": [32, 32], "overlap_size": 2},
    "cluster": {"niter": 5, "nredo": 1, "batch_size": 4},
    "finetune": {"epochs": 1, "batch_size": 4},
}
CONFIG = tiny_config(
    methods=["pass"],
    dataset={
        "synthetic": {
            "mode": "object-centric",
            "num_classes": 3,
            "num_train": 8,
            "num_val": 6,
            "num_heldout": 4,
            "image_size": 32,
        }
    },
    features={"shards": 1},
    backbone_eval={"enabled": False},
    evaluate={"threads": 1, "protocols": ["hungarian", "imagenet-s"], "export_pngs": True},
    **{"pass": PASS},
)


def test_pass_chain_reports_every_imagenet_s_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    result = check(run_snakemake(tmp_path, CONFIG, timeout=1200))
    out = tmp_path / OUT
    assert (out / "features/tiny/train/shard-0.zarr").is_dir(), "the saliency prior reads the train features"
    pseudo = json.loads((out / "pass/pseudo-labels.json").read_text())
    assert pseudo["k"] == 3 and len(pseudo["labels"]) == 8 and 0 <= pseudo["train_nmi"] <= 1
    tau = json.loads((out / "pass/tau.json").read_text())
    assert tau["tau"] in (0.3, 0.6) and tau["images"] == 4 and len(tau["sweep"]) == 2
    preds = zarr.open_group(str(out / "pass/predictions.zarr"), mode="r")
    assert preds.attrs["num_labels"] == 4 and preds["labels"].shape == (6, 32, 32)
    assert np.max(preds["labels"][:]) <= 3
    metrics = json.loads((out / "pass/metrics.json").read_text())
    r = metrics["protocols"]["imagenet-s"]
    for key in ("miou", "boundary_miou", "f_measure", "image_accuracy", "nmi"):
        assert 0 <= r[key] <= 1, key
    assert set(r["miou_by_size"]) == {"S", "MS", "ML", "L"}
    assert r["matching_ids"]["0"] == 0 and sorted(r["matching_ids"].values()) == [0, 1, 2, 3]
    assert "hungarian" in metrics["protocols"] and "pass" in result.stdout
    pngs = sorted((out / "pass/imagenet-s-pngs").glob("*.png"))  # the test server's files
    assert len(pngs) == 6 and read_mask(pngs[0], "imagenet-s").shape == (32, 32)
    assert {int(v) for p in pngs for v in np.unique(read_mask(p, "imagenet-s"))} <= set(r["matching_ids"].values())
    assert predict_agreement(tmp_path, "pass", "pass", monkeypatch) >= 0.999  # the same net, tau and frame
    assert_other_methods_model_is_refused(tmp_path, "pass", "pass/model.pth", capsys)
