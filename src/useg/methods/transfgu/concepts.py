"""Concept clustering: k-means of crop CLS tokens into K semantic concepts S (TransFGU §3.2, §4.2).

Concepts layout (`concepts.zarr`)::

    centroids  float32 [K, D]   concept features S
    group      int8    [K]      1 foreground, 0 background, -1 any (no foreground prior)

attrs: kind="Concepts", k, k_fg, k_bg, foreground_prior, provenance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from useg.cluster.kmeans import fit_kmeans
from useg.errors import ConfigError
from useg.methods.transfgu.crops import BACKGROUND, FOREGROUND, KIND as CROPS_KIND, UNUSED
from useg.stores.base import open_store, write_store

log = logging.getLogger(__name__)

KIND = "Concepts"


def concept_counts(k: int, k_fg: int | None, num_things: int) -> tuple[int, int]:
    """(K_fg, K_bg) with K_fg + K_bg = K; K_fg defaults to the number of thing classes, else ⌈K/2⌉."""
    if k_fg is None:
        k_fg = num_things if 0 < num_things < k else k - k // 2
    if not 0 < k_fg < k:
        raise ConfigError(f"transfgu.k_fg = {k_fg} must lie between 1 and K - 1 = {k - 1}")
    return k_fg, k - k_fg


def read_crops(paths: list[str | Path]) -> tuple[np.ndarray, np.ndarray]:
    """CLS tokens [n, D] and groups [n] of every crop bank shard."""
    groups = [open_store(p, CROPS_KIND) for p in paths]
    return np.concatenate([g["cls"][:] for g in groups]), np.concatenate([g["group"][:] for g in groups])


def _fit(x: np.ndarray, k: int, what: str, cfg: dict[str, Any], seed: int) -> np.ndarray:
    if len(x) < k:
        raise ConfigError(
            f"only {len(x)} {what} crops for {k} concepts: lower transfgu.k / k_fg, add smaller transfgu.betas, "
            "or set transfgu.foreground_prior: false"
        )
    return fit_kmeans(x, k, niter=cfg["niter"], seed=seed, nredo=cfg["nredo"]).centroids


def cluster_concepts(
    cls: np.ndarray, groups: np.ndarray, k: int, k_fg: int, cfg: dict[str, Any], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean k-means of crop CLS tokens: K_fg on fg crops and K − K_fg on bg crops, or K on all crops."""
    if not cfg["foreground_prior"]:
        return _fit(cls, k, "", cfg, seed), np.full(k, UNUSED, np.int8)
    fg = _fit(cls[groups == FOREGROUND], k_fg, "foreground", cfg, seed)
    bg = _fit(cls[groups == BACKGROUND], k - k_fg, "background", cfg, seed) if k > k_fg else fg[:0]
    group = np.array([FOREGROUND] * k_fg + [BACKGROUND] * (k - k_fg), np.int8)
    return np.concatenate([fg, bg]), group


def fit_concepts(
    crop_paths: list[str | Path], k: int, num_things: int, cfg: dict[str, Any], seed: int, out_path: str | Path, prov: dict[str, Any]
) -> None:
    """Cluster the crop bank into K concepts and save them as a Concepts store."""
    cls, groups = read_crops(crop_paths)
    k_fg = k if cfg["foreground_only"] else concept_counts(k, cfg["k_fg"], num_things)[0]
    centroids, group = cluster_concepts(cls, groups, k, k_fg, cfg, seed)
    attrs = {"k": k, "k_fg": int((group == FOREGROUND).sum()), "k_bg": int((group == BACKGROUND).sum())}
    with write_store(out_path, KIND, prov, foreground_prior=cfg["foreground_prior"], **attrs) as g:
        g.create_array("centroids", data=centroids.astype(np.float32))
        g.create_array("group", data=group)
    log.info("concepts: K=%d (fg %d, bg %d) from %d crops -> %s", k, attrs["k_fg"], attrs["k_bg"], len(cls), out_path)


def read_concepts(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Concept features S [K, D] and their groups [K]."""
    group = open_store(path, KIND)
    return group["centroids"][:], group["group"][:]
