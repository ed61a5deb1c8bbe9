"""Subcommands `useg synthesize` and `useg manifest`."""

from __future__ import annotations

import argparse

from useg.cli import add_stage, stage_params


def run_synthesize(args: argparse.Namespace) -> None:
    """Render the synthetic shapes dataset as a folder dataset."""
    from useg.data.synthetic import ShapesConfig, write_shapes_dataset

    params = stage_params(args)
    write_shapes_dataset(ShapesConfig(**params["synthetic"], seed=params["seed"]), args.out)


def run_manifest(args: argparse.Namespace) -> None:
    """Validate every image once and write manifest.csv + classes.json."""
    from useg.data.manifest import build_manifest, write_manifest
    from useg.data.options import DatasetOptions
    from useg.data.registry import list_dataset

    params = stage_params(args)
    listing = list_dataset(params["kind"], args.root, DatasetOptions.from_params(params))
    rows = build_manifest(listing, min_size=args.min_size, on_corrupt=params.get("on_corrupt", "error"))
    write_manifest(rows, listing, args.out_csv, args.out_classes)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_stage(sub, "synthesize", run_synthesize, "render the synthetic shapes dataset")
    p.add_argument("--out", required=True)

    p = add_stage(sub, "manifest", run_manifest, "validate every image once and write manifest.csv")
    p.add_argument("--root", required=True)
    p.add_argument("--min-size", type=int, default=1, help="smallest accepted image side (one patch)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-classes", required=True)
