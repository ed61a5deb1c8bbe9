"""Subcommand `useg pretrain`: CrOC backbone pretraining."""

from __future__ import annotations

import argparse

from useg.cli import add_stage, stage_params


def run_pretrain(args: argparse.Namespace) -> None:
    """Pretrain the configured backbone with CrOC on the train split's images."""
    from useg.backbones import BackboneConfig
    from useg.data.manifest import read_manifest, split_rows
    from useg.methods.croc.train import CrOCConfig, pretrain
    from useg.runtime import set_threads
    from useg.stores.base import config_hash

    params = stage_params(args)
    set_threads(args.threads)
    rows = split_rows(read_manifest(args.manifest), params["split"])
    pretrain(
        CrOCConfig(**params["croc"]),
        BackboneConfig.from_dict({**params["backbone"], "weights": "random"}),
        [row.path for _, row in rows],
        args.out,
        args.out_log,
        args.resume,
        config_hash(params),
        params["seed"],
        threads=args.threads,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = add_stage(sub, "pretrain", run_pretrain, "pretrain the backbone with CrOC -> teacher checkpoint")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="teacher backbone state dict (timm keys)")
    p.add_argument("--out-log", required=True, help="training log JSON")
    p.add_argument("--resume", required=True, help="resume state, rewritten after every epoch")
