"""Subcommands of PASS: `pass-pretrain`, `pass-cluster`, `pass-finetune`, `pass-threshold`, `pass-predict`."""

from __future__ import annotations

import argparse
from typing import Any

from useg.cli import add_stage, stage_params


def _size(params: dict[str, Any]) -> tuple[int, int]:
    return tuple(params["pass"]["input_size"])


def run_pretrain(args: argparse.Namespace) -> None:
    """Shape-enhanced SwAV pretraining of the ResNet on the train split."""
    from useg.data.manifest import read_manifest, split_rows
    from useg.methods.pass_.model import NetConfig
    from useg.methods.pass_.train import PretrainConfig, attention_priors, pretrain
    from useg.runtime import set_threads
    from useg.stores.base import config_hash
    from useg.stores.features import open_shards

    params = stage_params(args)
    set_threads(args.threads)
    cfg = params["pass"]
    rows = split_rows(read_manifest(args.manifest), params["split"])
    priors = attention_priors(open_shards(args.features), [i for i, _ in rows], cfg["resize"]) if args.features else None
    pretrain(
        NetConfig(**cfg["net"]),
        PretrainConfig(**cfg["pretrain"]),
        [row.path for _, row in rows],
        _size(params),
        priors,
        args.out,
        args.out_log,
        args.resume,
        config_hash(params),
        params["seed"],
        cfg["device"],
        args.threads,
        cfg["resize"],
        cfg["amp"],
    )


def run_cluster(args: argparse.Namespace) -> None:
    """Image-level k-means of the pretrained features into pseudo categories."""
    from useg.data.manifest import read_classes, read_manifest, split_rows
    from useg.methods.pass_.stages import cluster_images
    from useg.runtime import set_threads
    from useg.stores.base import provenance

    params = stage_params(args)
    set_threads(args.threads)
    cfg = params["pass"]
    classes = read_classes(args.classes)
    k = cfg["k"] or len(classes["classes"]) - 1
    rows = [row for _, row in split_rows(read_manifest(args.manifest), params["split"])]
    prov = provenance("pass-cluster", params, params["seed"])
    cluster_images(
        args.checkpoint,
        rows,
        k,
        cfg["cluster"],
        _size(params),
        params["seed"],
        args.out,
        prov,
        classes.get("ignore_index", 255),
        args.threads,
        cfg["resize"],
    )


def run_finetune(args: argparse.Namespace) -> None:
    """Fine-tune trunk + 1x1 conv head on the image pseudo labels."""
    import json

    from useg.data.manifest import read_manifest, split_rows
    from useg.methods.pass_.stages import FinetuneConfig, finetune
    from useg.runtime import set_threads
    from useg.stores.base import config_hash

    params = stage_params(args)
    set_threads(args.threads)
    rows = [row for _, row in split_rows(read_manifest(args.manifest), params["split"])]
    with open(args.pseudo_labels) as fh:
        pseudo = json.load(fh)
    cfg = params["pass"]
    finetune(
        args.checkpoint,
        pseudo,
        rows,
        FinetuneConfig(**cfg["finetune"]),
        _size(params),
        params["seed"],
        args.out,
        args.resume,
        config_hash(params),
        cfg["device"],
        args.threads,
        cfg["resize"],
        cfg["amp"],
    )


def run_threshold(args: argparse.Namespace) -> None:
    """Choose the CAM foreground threshold tau on the held-out split."""
    from useg.data.manifest import read_classes, read_manifest, split_rows
    from useg.errors import ConfigError
    from useg.methods.pass_.stages import choose_threshold
    from useg.runtime import set_threads
    from useg.stores.base import provenance

    params = stage_params(args)
    set_threads(args.threads)
    cfg = params["pass"]
    if cfg["tau_split"] == params["eval_split"]:
        raise ConfigError(
            f"pass.tau_split {cfg['tau_split']!r} is the evaluation split: choose tau on a held-out split"
        )
    classes = read_classes(args.classes)
    rows = [row for _, row in split_rows(read_manifest(args.manifest), cfg["tau_split"])]
    prov = provenance("pass-threshold", params, params["seed"])
    choose_threshold(
        args.model,
        rows,
        classes["classes"],
        classes.get("ignore_index", 255),
        cfg["taus"],
        _size(params),
        cfg["batch_size"],
        args.out,
        prov,
        args.threads,
        cfg["resize"],
    )


def run_predict(args: argparse.Namespace) -> None:
    """CAM + threshold label maps of the evaluation split."""
    import json

    from useg.data.manifest import read_manifest, split_rows
    from useg.methods.pass_.stages import predict
    from useg.runtime import set_threads
    from useg.stores.base import provenance

    params = stage_params(args)
    set_threads(args.threads)
    with open(args.tau) as fh:
        tau = json.load(fh)["tau"]
    rows = split_rows(read_manifest(args.manifest), params["split"])
    prov = provenance("pass-predict", params, params["seed"])
    cfg = params["pass"]
    predict(args.model, rows, tau, _size(params), cfg["batch_size"], args.out, prov, args.threads, cfg["resize"])


def register(sub: argparse._SubParsersAction) -> None:
    p = add_stage(sub, "pass-pretrain", run_pretrain, "PASS: pixel-attention SwAV pretraining of a ResNet")
    p.add_argument("--manifest", required=True)
    p.add_argument(
        "--features", nargs="*", default=[], help="train FeatureStores (saliency prior from their CLS attention)"
    )
    p.add_argument("--out", required=True, help="network checkpoint")
    p.add_argument("--out-log", required=True, help="training log JSON")
    p.add_argument("--resume", required=True, help="resume state, rewritten after every epoch")

    p = add_stage(sub, "pass-cluster", run_cluster, "PASS: image-level k-means into pseudo categories")
    p.add_argument("--manifest", required=True)
    p.add_argument("--classes", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="pseudo labels JSON")

    p = add_stage(sub, "pass-finetune", run_finetune, "PASS: fine-tune the segmentation head on pseudo labels")
    p.add_argument("--manifest", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--pseudo-labels", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--resume", required=True)

    p = add_stage(sub, "pass-threshold", run_threshold, "PASS: choose the CAM threshold tau on a held-out split")
    p.add_argument("--manifest", required=True)
    p.add_argument("--classes", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)

    p = add_stage(sub, "pass-predict", run_predict, "PASS: CAM + threshold label maps -> predictions")
    p.add_argument("--manifest", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--tau", required=True)
    p.add_argument("--out", required=True)
