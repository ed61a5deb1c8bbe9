"""Class assignment of the object masks: k-means of their CLS tokens (MaskDistill §3.2), optionally whitened
first as the release does."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from useg.cluster.kmeans import assign, fit_kmeans, l2_normalise
from useg.stores.base import create_array, open_store, write_store
from useg.stores.maskbank import MaskBank
from useg.stores.predictions import PredictionsWriter

log = logging.getLogger(__name__)

KIND = "MaskClusters"


def fit_mask_clusters(
    fit: MaskBank, label: MaskBank, k: int, cfg: dict[str, Any], seed: int, out_path: str | Path, prov: dict[str, Any]
) -> np.ndarray:
    """k-means of the `fit` bank's CLS tokens into C clusters; every image of both banks gets its cluster.

    Store `MaskClusters`: centroids float32 [C, D], scale float32 [D] (the whitening divisor, ones when
    off), index int64 [M] (manifest rows), cluster int32 [M]; attrs k, normalize, whiten, inertia.
    """
    fit_cls = fit.read("cls").astype(np.float32)
    scale = whitening_scale(fit_cls) if cfg["whiten"] else np.ones(fit_cls.shape[1], np.float32)

    def prepare(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32) / scale
        return l2_normalise(x) if cfg["normalize"] else x

    result = fit_kmeans(prepare(fit_cls), k, niter=cfg["niter"], seed=seed, spherical=cfg["normalize"], nredo=cfg["nredo"], key="maskdistill.k")
    index = np.concatenate([fit.index, label.index])
    clusters, _ = assign(prepare(np.concatenate([fit_cls, label.read("cls")])), result.centroids)
    attrs = {"k": k, "normalize": cfg["normalize"], "whiten": cfg["whiten"], "inertia": result.inertia}
    with write_store(out_path, KIND, prov, **attrs) as group:
        group.create_array("centroids", data=result.centroids)
        group.create_array("scale", data=scale)
        create_array(group, "index", (len(index),), "int64", len(index))[:] = index
        create_array(group, "cluster", (len(index),), "int32", len(index))[:] = clusters.astype(np.int32)
    sizes = np.bincount(clusters[: len(fit)], minlength=k)
    log.info("mask clusters: C=%d on %d masks, sizes %s -> %s", k, len(fit), sizes.tolist(), out_path)
    return clusters


def whitening_scale(x: np.ndarray) -> np.ndarray:
    """Per-dimension standard deviation of the CLS tokens [N, D], 1 where a dimension is constant: dividing by
    it gives every dimension unit variance (the release's `scipy.cluster.vq.whiten` before L2 normalisation)."""
    std = x.std(axis=0)
    return np.where(std > 0, std, 1.0).astype(np.float32)


def read_clusters(path: str | Path) -> tuple[int, dict[int, int]]:
    """Number of clusters C and the cluster of every manifest row."""
    group = open_store(path, KIND)
    return int(group.attrs["k"]), dict(zip(group["index"][:].tolist(), group["cluster"][:].tolist()))


def predict_initial(bank: MaskBank, clusters_path: str | Path, out_path: str | Path, prov: dict[str, Any]) -> None:
    """`maskdistill-initial`: each image's object mask labelled by its cluster, the rest background (label C)."""
    k, cluster_of = read_clusters(clusters_path)
    clusters = np.array([cluster_of[int(row)] for row in bank.index])
    with PredictionsWriter(out_path, bank.index, bank.ids, bank.frame, k + 1, "maskdistill-initial", prov) as writer:
        start, chunk = 0, 64
        for masks in tqdm(bank.pixel_mask_chunks(chunk), total=-(-len(bank) // chunk), desc="initial masks", unit="batch"):
            writer.write(start, np.where(masks > 0, clusters[start : start + len(masks), None, None], k))
            start += len(masks)
    log.info("maskdistill-initial: %d images -> %s", len(bank), out_path)
