"""faiss k-means: seeded training on a capped sample, assignment in batches, GPU when available."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import faiss
import numpy as np

log = logging.getLogger(__name__)


def gpu_available() -> bool:
    """True when the faiss GPU build is installed and sees a GPU."""
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass
class KMeansResult:
    """Centroids and the objective of a k-means fit."""

    centroids: np.ndarray  # [K, D] float32
    inertia: float


def fit_kmeans(
    x: np.ndarray, k: int, niter: int = 50, seed: int = 0, spherical: bool = False, nredo: int = 1
) -> KMeansResult:
    """Fit k-means on rows of `x` (spherical: unit-norm centroids, for cosine clustering)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) < k:
        raise ValueError(f"k-means with K={k} needs at least {k} points, got {len(x)}")
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=niter,
        seed=seed,
        spherical=spherical,
        nredo=nredo,
        gpu=gpu_available(),
        max_points_per_centroid=max(256, len(x) // k + 1),
        verbose=False,
    )
    km.train(x)
    return KMeansResult(centroids=km.centroids.copy(), inertia=float(km.obj[-1]))


def assign(x: np.ndarray, centroids: np.ndarray, batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (L2) of every row, computed in batches: (labels int64, squared distances)."""
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    labels, dists = np.empty(len(x), np.int64), np.empty(len(x), np.float32)
    for start in range(0, len(x), batch_size):
        chunk = np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)
        d, i = index.search(chunk, 1)
        labels[start : start + len(chunk)], dists[start : start + len(chunk)] = i[:, 0], d[:, 0]
    return labels, dists


def reservoir_sample(chunks: Iterable[np.ndarray], total: int, cap: int, seed: int) -> np.ndarray:
    """Uniform sample of at most `cap` rows from a stream of row chunks whose total size is known."""
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(total, size=min(cap, total), replace=False))
    picked, offset = [], 0
    for chunk in chunks:
        lo, hi = np.searchsorted(keep, [offset, offset + len(chunk)])
        picked.append(chunk[keep[lo:hi] - offset])
        offset += len(chunk)
    if offset != total:
        raise ValueError(f"stream had {offset} rows, expected {total}")
    return np.concatenate(picked) if picked else np.empty((0, 0), np.float32)
