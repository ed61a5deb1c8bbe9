"""faiss k-means: seeded training on a capped sample, assignment in batches, GPU when available."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

try:
    import faiss
except ImportError as exc:  # faiss comes from the `cpu` or the `gpu` extra (docs/install.md)
    raise ImportError("faiss is not installed: pip install -e '.[cpu]' (faiss-cpu) or -e '.[gpu]' (faiss-gpu)") from exc

from useg.errors import ConfigError

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


def squared_distances(x: np.ndarray, x_sq: np.ndarray, c: np.ndarray) -> np.ndarray:
    """[N, M] squared L2 distances of rows of `x` (squared norms `x_sq`) to rows of `c`."""
    return np.maximum(x_sq[:, None] - 2 * (x @ c.T) + (c * c).sum(axis=1)[None, :], 0).astype(np.float64)


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator, max_points: int = 200_000) -> np.ndarray:
    """Greedy k-means++ seeding: 2 + ln K candidates drawn with probability proportional to D(x)^2,
    the one that lowers the potential most becomes the next centre.

    Runs on a uniform subsample of at most `max_points` rows, so its cost does not grow with N.
    """
    if len(x) > max_points:
        x = x[np.sort(rng.choice(len(x), max_points, replace=False))]
    x_sq = np.einsum("ij,ij->i", x, x)
    trials = 2 + int(np.log(k))
    centres = np.empty((k, x.shape[1]), np.float32)
    first = rng.integers(len(x))
    centres[0] = x[first]
    d2 = squared_distances(x, x_sq, x[first : first + 1])[:, 0]
    for i in range(1, k):
        total = d2.sum()
        picks = rng.choice(len(x), trials, p=d2 / total) if total > 0 else rng.integers(len(x), size=trials)
        potentials = np.minimum(d2[:, None], squared_distances(x, x_sq, x[picks]))
        best = int(np.argmin(potentials.sum(axis=0)))
        centres[i], d2 = x[picks[best]], potentials[:, best]
    return centres


def fit_kmeans(
    x: np.ndarray,
    k: int,
    niter: int = 50,
    seed: int = 0,
    spherical: bool = False,
    nredo: int = 1,
    key: str = "k",
) -> KMeansResult:
    """Fit k-means on rows of `x` (spherical: unit-norm centroids, for cosine clustering).

    Each of the `nredo` restarts is seeded by k-means++ and refined by faiss Lloyd iterations;
    the restart with the lowest objective is kept. `key`: the config key K comes from, named
    when there are fewer points than K.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) < k:
        raise ConfigError(
            f"{key}: {k} clusters need at least {k} points to cluster, but there are only {len(x)}: "
            f"lower {key} or use more images"
        )
    rng = np.random.default_rng(seed)
    best: KMeansResult | None = None
    for redo in range(max(1, nredo)):
        km = faiss.Kmeans(
            x.shape[1],
            k,
            niter=niter,
            seed=seed + redo,
            spherical=spherical,
            gpu=gpu_available(),
            max_points_per_centroid=max(256, len(x) // k + 1),
            verbose=False,
        )
        km.train(x, init_centroids=kmeans_plus_plus(x, k, rng))
        if best is None or km.obj[-1] < best.inertia:
            best = KMeansResult(centroids=km.centroids.copy(), inertia=float(km.obj[-1]))
    return best


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
