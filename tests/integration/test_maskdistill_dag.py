"""MaskDistill through the real Snakemake DAG on a tiny config: every store, the three Table-1 columns, mask AP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.integration.dag import check, run_snakemake, tiny_config
from tests.integration.predict_check import assert_other_methods_model_is_refused, predict_agreement

pytestmark = pytest.mark.integration

OUT = "results/tiny"
MASKDISTILL = {
    "niter": 5, "nredo": 1, "batch_size": 8, "tau": 0.5, "mask_short_side": 32,  # the release's per-image path
    "maskrcnn": {
        "backbone": "vit", "fpn_channels": 16, "head_dim": 32, "proposals": 50, "roi_batch_size": 16,
        "iterations": 3, "batch_size": 2, "warmup_iters": 1, "max_candidates": 5, "min_score": 0.0,
    },
    "deeplab": {"backbone": "vit", "epochs": 1, "batch_size": 4, "lr": 0.01},
    "linear": {"enabled": True, "epochs": 2, "batch_size": 4, "lr_epochs": [1]},
}  # fmt: skip  (the ResNet backbones are covered by the unit tests)
COLUMNS = ("maskdistill-initial", "maskdistill-maskrcnn", "maskdistill", "maskdistill-linear")


def test_whole_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    cfg = tiny_config(methods=["maskdistill"], features={"shards": 1}, maskdistill=MASKDISTILL)
    result = check(run_snakemake(tmp_path, cfg, timeout=1500))
    out = tmp_path / OUT
    for column in COLUMNS:
        metrics = json.loads((out / column / "metrics.json").read_text())
        assert metrics["method"] == column and metrics["num_images"] == 6
        assert metrics["num_clusters"] == 7  # C = 7 classes - 1, plus the background label
        assert column in result.stdout
    linear = json.loads((out / "maskdistill-linear/metrics.json").read_text())
    assert linear["supervised"] and "linear-probe" in linear["protocols"]  # class ids, scored without matching
    masks = zarr.open_group(str(out / "maskdistill/masks/train/shard-0.zarr"), mode="r")
    assert masks.attrs["kind"] == "MaskBank" and masks["masks"].shape == (8, 4, 4) and masks["cls"].shape == (8, 64)
    assert masks.attrs["mask_short_side"] == 32
    boxes, grid = masks["boxes"][:], masks["masks"][:]
    for box, mask in zip(boxes, grid):  # every box encloses its upsampled mask (8 px patches)
        rows, cols = np.nonzero(mask)
        assert box.tolist() == [cols.min() * 8, rows.min() * 8, (cols.max() + 1) * 8, (rows.max() + 1) * 8]
    cand = zarr.open_group(str(out / "maskdistill/candidates/val/shard-0.zarr"), mode="r")
    offsets = cand["offsets"][:]
    assert cand.attrs["kind"] == "CandidateBank" and len(offsets) == 7 and offsets[-1] == cand["scores"].shape[0]
    bank = zarr.open_group(str(out / "maskdistill/labels/train.zarr"), mode="r")
    assert bank.attrs["kind"] == "LabelBank" and bank["labels"].shape == (8, 32, 32) and "maps" not in bank
    assert bank["labels"][:].max() <= 6
    ap = json.loads((out / "maskdistill/ap.json").read_text())
    for source in ("initial", "maskrcnn"):
        assert set(ap[source]) == {"class-agnostic/multi", "class-agnostic/single", "semantic/multi", "semantic/single"}
        assert all(0 <= block["ap"] <= 1 and block["num_instances"] > 0 for block in ap[source].values())
    assert predict_agreement(tmp_path, "maskdistill", "maskdistill", monkeypatch) >= 0.999  # docs/measurements.md
    assert_other_methods_model_is_refused(tmp_path, "maskdistill", "maskdistill/deeplab/model.pt", capsys)


@pytest.mark.parametrize("crf_round", [True, False])
def test_the_crf_round_trains_a_second_deeplab_on_crf_labels_of_the_train_split(tmp_path: Path, crf_round: bool):
    crf = {"enabled": True, "round": crf_round}
    cfg = tiny_config(methods=["maskdistill"], features={"shards": 1}, maskdistill={**MASKDISTILL, "crf": crf})
    result = check(run_snakemake(tmp_path, cfg, "-n", "-p", f"{OUT}/maskdistill-crf/metrics.json"))
    crf_jobs = [block for block in result.stdout.split("\n\n") if "rule maskdistill_crf:" in block]
    assert len(crf_jobs) == 1
    expected = "maskdistill/deeplab-crf/model.pt" if crf_round else "maskdistill/deeplab/model.pt"
    assert expected in crf_jobs[0]
    assert ("rule maskdistill_crf_labels:" in result.stdout) == crf_round
    assert ("maskdistill-predict --crf --bank" in result.stdout) == crf_round
    assert (f"{OUT}/maskdistill/crf-labels/train.zarr" in result.stdout) == crf_round


@pytest.mark.parametrize("crf_round", [True, False])
def test_the_linear_classifier_reads_the_final_model_and_its_crf_row_the_crf_rounds_model(tmp_path: Path, crf_round: bool):
    crf = {"enabled": True, "round": crf_round}
    cfg = tiny_config(methods=["maskdistill"], features={"shards": 1}, maskdistill={**MASKDISTILL, "crf": crf})
    result = check(run_snakemake(tmp_path, cfg, "-n", "-p"))
    blocks = result.stdout.split("\n\n")
    trained = {b.split("maskdistill/linear/")[1].split("/")[0] for b in blocks if "rule maskdistill_linear:" in b}
    assert trained == ({"deeplab", "deeplab-crf"} if crf_round else {"deeplab"})
    predicted = [b for b in blocks if "rule maskdistill_linear_predict:" in b]
    assert len(predicted) == 2
    (plain,) = [b for b in predicted if "maskdistill-linear/predictions.zarr" in b]
    (refined,) = [b for b in predicted if "maskdistill-linear-crf/predictions.zarr" in b]
    assert "maskdistill/linear/deeplab/model.pt" in plain and "--crf" not in plain
    assert f"maskdistill/linear/{'deeplab-crf' if crf_round else 'deeplab'}/model.pt" in refined and "--crf" in refined
    assert f"{OUT}/maskdistill-linear-crf/metrics.json" in result.stdout
    off = check(run_snakemake(tmp_path, tiny_config(methods=["maskdistill"], features={"shards": 1}), "-n"))
    assert "maskdistill_linear" not in off.stdout  # off by default
