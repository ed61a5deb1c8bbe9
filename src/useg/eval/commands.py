"""Subcommand `useg evaluate`."""

from __future__ import annotations

import argparse

from useg.cli import add_stage, stage_params


def run_evaluate(args: argparse.Namespace) -> None:
    """Score a Predictions store against the manifest's ground truth -> metrics.json."""
    from useg.data.manifest import read_classes, read_manifest
    from useg.eval.stage import evaluate_predictions

    params = stage_params(args)
    classes = read_classes(args.classes)
    evaluate_predictions(
        args.predictions,
        read_manifest(args.manifest),
        classes["classes"],
        args.out,
        context={k: params[k] for k in ("dataset", "method", "split") if k in params},
        ignore_index=classes.get("ignore_index", 255),
        threads=args.threads,
        protocols=tuple(params.get("protocols", ["hungarian"])),
        matching_path=args.matching,
        alignseg_size=params.get("alignseg_size", 100),
        scored_at=params.get("scored_at", "image"),
    )


def run_linear_probe(args: argparse.Namespace) -> None:
    """Train a 1x1 conv on frozen train-split features with ground truth; label the eval split."""
    from useg.data.manifest import read_classes, read_manifest
    from useg.eval.probe import linear_probe
    from useg.runtime import set_threads
    from useg.stores.base import provenance
    from useg.stores.features import open_shards

    params = stage_params(args)
    set_threads(args.threads)
    classes = read_classes(args.classes)
    linear_probe(
        open_shards(args.train_features),
        open_shards(args.eval_features),
        read_manifest(args.manifest),
        len(classes["classes"]),
        params["probe"],
        params["seed"],
        args.out,
        provenance("linear-probe", params, params["seed"]),
        ignore=classes.get("ignore_index", 255),
        threads=args.threads,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = add_stage(sub, "linear-probe", run_linear_probe, "supervised linear probe on frozen features -> predictions")
    p.add_argument("--manifest", required=True)
    p.add_argument("--classes", required=True)
    p.add_argument("--train-features", nargs="+", required=True)
    p.add_argument("--eval-features", nargs="+", required=True)
    p.add_argument("--out", required=True)

    p = add_stage(sub, "evaluate", run_evaluate, "score predictions against ground truth -> metrics.json")
    p.add_argument("--predictions", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--classes", required=True)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--matching", help="imagenet-s: reuse the matching saved in this metrics.json instead of matching anew"
    )
