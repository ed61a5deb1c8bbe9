"""The tiny DAG with `backbone.weights: pretrain`: pretrain -> features -> backbone evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.integration.dag import check, run_snakemake, tiny_config

pytestmark = pytest.mark.integration

OUT = "results/tiny"
TINY_CROC = {
    "epochs": 1, "batch_size": 4, "warmup_epochs": 0, "k_start": 3, "sinkhorn_iters": 10, "view_size": [32, 32],
    "head_hidden_dim": 32, "head_bottleneck_dim": 16, "head_global_dim": 64, "head_dense_dim": 32,
}  # fmt: skip


def test_pretrain_feeds_features_and_the_backbone_evaluation(tmp_path: Path):
    probe = {"epochs": 2, "batch_size": 4, "lr": 0.01, "weight_decay": 0.0}
    cfg = tiny_config(
        backbone={"weights": "pretrain"}, croc=TINY_CROC, backbone_eval={"protocols": ["linear-probe"], "probe": probe}
    )
    result = check(run_snakemake(tmp_path, cfg, timeout=1200))
    ckpt = tmp_path / OUT / "croc/checkpoint.pth"
    state = torch.load(ckpt, weights_only=True)
    assert "blocks.0.attn.qkv.weight" in state and not any(k.startswith("head") for k in state)
    log = json.loads((tmp_path / OUT / "croc/train-log.json").read_text())
    assert len(log["epochs"]) == 1 and log["k_histogram"]
    assert (tmp_path / OUT / "croc/resume/last.pth").is_file(), "resume state kept outside the outputs"
    features = json.loads((tmp_path / OUT / "features/tiny/train/shard-0.zarr/zarr.json").read_text())
    assert features["attributes"]["provenance"]["config"]["backbone"]["weights"] == "pretrain"
    assert (tmp_path / OUT / "features/tiny-random/val/shard-1.zarr").is_dir()
    km = json.loads((tmp_path / OUT / "kmeans/metrics.json").read_text())
    assert "hungarian" in km["protocols"] and km["supervised"] is False
    for variant in ("pretrain", "random"):
        probe = json.loads((tmp_path / OUT / f"backbone-eval/{variant}/linear-probe/metrics.json").read_text())
        assert set(probe["protocols"]) == {"linear-probe"} and probe["supervised"] is True
        assert probe["protocols"]["linear-probe"]["supervised"] is True
    assert "backbone-eval/random/linear-probe" in result.stdout
    # the pretrained checkpoint is an input of the feature jobs: retraining reruns them
    dry = run_snakemake(tmp_path, tiny_config(**{**cfg, "croc": {**TINY_CROC, "lr": 1e-3}}), "-n")
    assert "pretrain" in dry.stdout and "features" in dry.stdout
    # MaskDistill's models on `backbone: vit` start from that checkpoint too
    models = {"backbone": "vit", "weights": "random"}
    md = tiny_config(**{**cfg, "methods": ["maskdistill"], "maskdistill": {"maskrcnn": models, "deeplab": models}})
    dry = check(run_snakemake(tmp_path, md, "-n", "-p"))
    for stage in ("maskdistill-maskrcnn", "maskdistill-deeplab"):
        (command,) = [line for line in dry.stdout.splitlines() if f"useg {stage} " in line]
        assert f"--weights {OUT}/croc/checkpoint.pth" in command and '"backbone": {' in command


def test_an_external_checkpoint_runs_only_the_backbone_evaluation(tmp_path: Path):
    # backbone_eval.external: the checkpoint another run pretrained is the `pretrain` variant; nothing retrains
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights/croc.pth").touch()  # a dry run reads no weights
    backbone_eval = {"external": True, "variants": ["pretrain"]}
    cfg = tiny_config(backbone={"weights": "weights/croc.pth"}, backbone_eval=backbone_eval)
    dry = check(run_snakemake(tmp_path, cfg, "-n", "-p"))
    assert "rule pretrain:" not in dry.stdout and "croc/checkpoint.pth" not in dry.stdout
    for protocol in ("kmeans", "linear-probe"):
        assert f"{OUT}/backbone-eval/pretrain/{protocol}/metrics.json" in dry.stdout
    assert "backbone-eval/random" not in dry.stdout
    assert "wildcards: features=tiny-" not in dry.stdout, "one feature set: the file's"
    (command,) = [line for line in dry.stdout.splitlines() if "useg linear-probe " in line]
    assert f"--train-features {OUT}/features/tiny/train/shard-0.zarr" in command
    assert "--weights weights/croc.pth" in dry.stdout
    # without the switch a checkpoint file is a plain backbone: no backbone evaluation
    plain = check(run_snakemake(tmp_path, tiny_config(backbone={"weights": "weights/croc.pth"}), "-n"))
    assert "linear_probe" not in plain.stdout and "backbone_kmeans_fit" not in plain.stdout


def test_external_backbone_evaluation_without_a_checkpoint_fails_naming_the_keys(tmp_path: Path):
    result = run_snakemake(tmp_path, tiny_config(backbone_eval={"external": True}), "-n")
    assert result.returncode != 0
    assert "backbone_eval.external: true evaluates a backbone pretrained elsewhere, but backbone.weights is 'random'" in (
        result.stdout + result.stderr
    )
