"""Subcommand `useg features`."""

from __future__ import annotations

import argparse

from useg.cli import add_shard_args, add_stage, stage_params


def run_features(args: argparse.Namespace) -> None:
    """Extract backbone outputs of one manifest shard into a FeatureStore."""
    from useg.backbones import BackboneConfig, build_backbone
    from useg.backbones.extract import extract_features
    from useg.data.manifest import read_manifest, shard_rows, split_rows
    from useg.runtime import resolve_device, set_threads
    from useg.stores.base import provenance

    params = stage_params(args)
    set_threads(args.threads)
    cfg = BackboneConfig.from_dict(params["backbone"])
    backbone = build_backbone(cfg, args.weights, seed=params["seed"])
    rows = shard_rows(split_rows(read_manifest(args.manifest), args.split), args.shard, args.shards)
    where = {"split": args.split, "shard": args.shard, "shards": args.shards}
    extract_features(
        backbone,
        rows,
        args.out,
        cfg.frame,
        provenance("features", {**params, **where}, params["seed"]),
        resolve_device(params["features"]["device"]),
        batch_size=params["features"]["batch_size"],
        threads=args.threads,
        codec=params["features"]["codec"],
    )


def register(sub: argparse._SubParsersAction) -> None:
    add_shard_args(add_stage(sub, "features", run_features, "extract ViT features of one manifest shard into a FeatureStore"))
