"""`useg <stage>`: one subcommand per pipeline stage; the only entry point the Snakemake rules call.

Every stage takes `--params` (the JSON config slice that defines it, recorded as provenance),
its input/output paths, `--threads` and `--log`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from useg.errors import UsegError
from useg.logs import setup_logging

log = logging.getLogger("useg")

Handler = Callable[[argparse.Namespace], None]


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return json.loads(args.params) if args.params else {}


def run_synthesize(args: argparse.Namespace) -> None:
    from useg.data.synthetic import ShapesConfig, write_shapes_dataset

    params = _params(args)
    write_shapes_dataset(ShapesConfig(**params["synthetic"], seed=params["seed"]), args.out)


def run_manifest(args: argparse.Namespace) -> None:
    from useg.data.manifest import build_manifest, write_manifest
    from useg.data.registry import list_dataset

    params = _params(args)
    listing = list_dataset(params["kind"], args.root)
    rows = build_manifest(listing, min_size=args.min_size, on_corrupt=params.get("on_corrupt", "error"))
    write_manifest(rows, listing, args.out_csv, args.out_classes)


def run_features(args: argparse.Namespace) -> None:
    from useg.backbones import BackboneConfig, build_backbone
    from useg.backbones.extract import extract_features
    from useg.data.manifest import read_manifest, shard_rows, split_rows
    from useg.runtime import resolve_device, set_threads
    from useg.stores.base import provenance

    params = _params(args)
    set_threads(args.threads)
    cfg = BackboneConfig.from_dict(params["backbone"])
    backbone = build_backbone(cfg, args.weights, seed=params["seed"])
    rows = shard_rows(split_rows(read_manifest(args.manifest), args.split), args.shard, args.shards)
    feat = params["features"]
    extract_features(
        backbone,
        rows,
        args.out,
        cfg.input_size,
        provenance("features", {**params, "split": args.split, "shard": args.shard, "shards": args.shards}, params["seed"]),
        resolve_device(feat["device"]),
        batch_size=feat["batch_size"],
        workers=max(1, args.threads),
    )


def run_kmeans_fit(args: argparse.Namespace) -> None:
    from useg.data.manifest import read_classes
    from useg.methods.kmeans import fit_patch_kmeans
    from useg.runtime import set_threads
    from useg.stores.base import provenance
    from useg.stores.features import open_shards

    params = _params(args)
    set_threads(args.threads)
    cfg = params["kmeans"]
    k = cfg["k"] or len(read_classes(args.classes)["classes"])
    if not k:
        raise UsegError("kmeans.k is not set and the dataset has no classes.txt to take K from")
    fit_patch_kmeans(open_shards(args.features), k, cfg, params["seed"], args.out, provenance("kmeans-fit", params, params["seed"]))


def run_kmeans_predict(args: argparse.Namespace) -> None:
    from useg.methods.kmeans import predict_patch_kmeans
    from useg.runtime import set_threads
    from useg.stores.base import provenance
    from useg.stores.features import open_shards

    params = _params(args)
    set_threads(args.threads)
    stores = open_shards(args.features)
    size = tuple(stores[0].attrs["input_size"])
    predict_patch_kmeans(stores, args.centroids, args.out, size, provenance("kmeans-predict", params, params.get("seed")))


def run_evaluate(args: argparse.Namespace) -> None:
    from useg.data.manifest import read_classes, read_manifest
    from useg.eval.stage import evaluate_predictions

    params = _params(args)
    classes = read_classes(args.classes)
    evaluate_predictions(
        args.predictions,
        read_manifest(args.manifest),
        classes["classes"],
        args.out,
        context={k: params[k] for k in ("dataset", "method", "split") if k in params},
        ignore_index=classes.get("ignore_index", 255),
        threads=args.threads,
    )


def run_inspect(args: argparse.Namespace) -> None:
    from useg.stores.inspect import describe_store

    print(describe_store(args.path))


def _stage(sub: argparse._SubParsersAction, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--params", default="{}", help="JSON config slice of this stage")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log", help="also write the log to this file")
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The `useg` argument parser with one subcommand per stage."""
    parser = argparse.ArgumentParser(prog="useg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = _stage(sub, "synthesize", run_synthesize, "render the synthetic shapes dataset")
    p.add_argument("--out", required=True)

    p = _stage(sub, "manifest", run_manifest, "validate every image once and write manifest.csv")
    p.add_argument("--root", required=True)
    p.add_argument("--min-size", type=int, default=1, help="smallest accepted image side (one patch)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-classes", required=True)

    p = _stage(sub, "features", run_features, "extract ViT features of one manifest shard into a FeatureStore")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--weights", help="checkpoint file when backbone.weights is 'pretrain'")
    p.add_argument("--out", required=True)

    p = _stage(sub, "kmeans-fit", run_kmeans_fit, "fit k-means centroids on patch tokens")
    p.add_argument("--classes", required=True)
    p.add_argument("--features", nargs="+", required=True)
    p.add_argument("--out", required=True)

    p = _stage(sub, "kmeans-predict", run_kmeans_predict, "label images with their nearest centroids")
    p.add_argument("--centroids", required=True)
    p.add_argument("--features", nargs="+", required=True)
    p.add_argument("--out", required=True)

    p = _stage(sub, "evaluate", run_evaluate, "score predictions against ground truth -> metrics.json")
    p.add_argument("--predictions", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--classes", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("inspect", help="print a store's layout, shapes, dtypes and provenance")
    p.add_argument("path", type=Path)
    p.set_defaults(handler=run_inspect, log=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `useg` console script."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log)
    try:
        args.handler(args)
    except UsegError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
