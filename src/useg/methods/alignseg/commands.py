"""Subcommands of AlignSeg: `alignseg-train` (decoder + prototypes) and `alignseg-predict` (per image)."""

from __future__ import annotations

import argparse

from useg.cli import add_stage, stage_params


def run_train(args: argparse.Namespace) -> None:
    """Train the decoder and prototypes on crops of the train split through the frozen backbone."""
    import hashlib
    from pathlib import Path

    from useg.backbones import BackboneConfig, build_backbone
    from useg.data.manifest import read_classes, read_manifest, split_rows
    from useg.errors import ConfigError
    from useg.methods.alignseg.train import AlignSegConfig, train_alignseg
    from useg.runtime import resolve_device, set_threads
    from useg.stores.base import config_hash

    params = stage_params(args)
    set_threads(args.threads)
    cfg = AlignSegConfig(**params["alignseg"])
    k = cfg.k or len(read_classes(args.classes)["classes"])
    if k < 2:
        raise ConfigError("alignseg.k is not set and the dataset has no classes.txt to take K from")
    backbone = build_backbone(BackboneConfig.from_dict(params["backbone"]), args.weights, seed=params["seed"])
    rows = split_rows(read_manifest(args.manifest), params["split"])
    # the resume state belongs to this config and these backbone weights (a new checkpoint restarts training)
    weights = hashlib.sha256(Path(args.weights).read_bytes()).hexdigest() if args.weights else None
    state_key = config_hash({**params, "weights_sha256": weights})
    train_alignseg(
        cfg, backbone, [row.path for _, row in rows], k, args.out, args.out_log, args.resume, state_key, params["seed"],
        resolve_device(cfg.device), threads=args.threads,
    )  # fmt: skip


def run_predict(args: argparse.Namespace) -> None:
    """Segment every image of the evaluation split on its own with the trained decoder."""
    from useg.methods.alignseg.decoder import load_decoder
    from useg.methods.alignseg.infer import predict_alignseg
    from useg.runtime import resolve_device, set_threads
    from useg.stores.base import provenance
    from useg.stores.features import open_shards

    params = stage_params(args)
    set_threads(args.threads)
    stores = open_shards(args.features)
    prov = provenance("alignseg-predict", params, params.get("seed"))
    predict_alignseg(load_decoder(args.model), stores, args.out, prov, resolve_device(params["device"]))


def register(sub: argparse._SubParsersAction) -> None:
    p = add_stage(sub, "alignseg-train", run_train, "AlignSeg: train the prototype decoder on the frozen backbone")
    p.add_argument("--manifest", required=True)
    p.add_argument("--classes", required=True)
    p.add_argument("--weights", help="checkpoint file when backbone.weights is 'pretrain'")
    p.add_argument("--out", required=True, help="decoder checkpoint")
    p.add_argument("--out-log", required=True, help="training log JSON (per-epoch losses)")
    p.add_argument("--resume", required=True, help="resume state, rewritten after every epoch")

    p = add_stage(sub, "alignseg-predict", run_predict, "AlignSeg: per-image segmentation -> predictions")
    p.add_argument("--model", required=True)
    p.add_argument("--features", nargs="+", required=True)
    p.add_argument("--out", required=True)
