"""Subcommands `useg kmeans-fit` and `useg kmeans-predict`."""

from __future__ import annotations

import argparse

from useg.cli import add_stage, stage_params
from useg.errors import ConfigError


def run_kmeans_fit(args: argparse.Namespace) -> None:
    """Fit k-means centroids on the patch tokens of the given shards."""
    from useg.data.manifest import read_classes
    from useg.methods.kmeans.stages import fit_patch_kmeans
    from useg.runtime import set_threads
    from useg.stores.base import provenance
    from useg.stores.features import open_shards

    params = stage_params(args)
    set_threads(args.threads)
    cfg = params["kmeans"]
    k = cfg["k"] or len(read_classes(args.classes)["classes"])
    if not k:
        raise ConfigError("kmeans.k is not set and the dataset has no classes.txt to take K from")
    prov = provenance("kmeans-fit", params, params["seed"])
    fit_patch_kmeans(open_shards(args.features), k, cfg, params["seed"], args.out, prov)


def run_kmeans_predict(args: argparse.Namespace) -> None:
    """Label every image of the given shards with its nearest centroids."""
    from useg.methods.kmeans.stages import predict_patch_kmeans
    from useg.runtime import set_threads
    from useg.stores.base import provenance
    from useg.stores.features import open_shards

    params = stage_params(args)
    set_threads(args.threads)
    stores = open_shards(args.features)
    prov = provenance("kmeans-predict", params, params.get("seed"))
    predict_patch_kmeans(stores, args.centroids, args.out, prov)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_stage(sub, "kmeans-fit", run_kmeans_fit, "fit k-means centroids on patch tokens")
    p.add_argument("--classes", required=True)
    p.add_argument("--features", nargs="+", required=True)
    p.add_argument("--out", required=True)

    p = add_stage(sub, "kmeans-predict", run_kmeans_predict, "label images with their nearest centroids")
    p.add_argument("--centroids", required=True)
    p.add_argument("--features", nargs="+", required=True)
    p.add_argument("--out", required=True)
