"""faiss k-means (the one the stages use) against scikit-learn KMeans on the same data.

N points in d dimensions drawn around K random centres; both run K-means++/random-init Lloyd
with one restart and the same iteration budget. time_ratio = scikit-learn seconds / faiss
seconds (> 1: faiss is faster); inertia_ratio = faiss inertia / scikit-learn inertia, both
computed the same way on all N points (<= 1: faiss is at least as good).
Needs the `bench` extra (scikit-learn).

    python benchmarks/kmeans.py --out benchmarks/results/kmeans.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from useg.cluster.kmeans import assign, fit_kmeans  # noqa: E402
from useg.runtime import set_threads  # noqa: E402


def blobs(n: int, d: int, k: int, seed: int) -> np.ndarray:
    """n points around k Gaussian centres in d dimensions, float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    return centres[rng.integers(0, k, n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    """Sum of squared distances of every point to its nearest centroid."""
    return float(assign(x, centroids)[1].astype(np.float64).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--k", type=int, default=27)
    parser.add_argument("--niter", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/kmeans.json")
    args = parser.parse_args()

    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    set_threads(args.threads)
    x = blobs(args.n, args.d, args.k, args.seed)

    start = time.perf_counter()
    ours = fit_kmeans(x, args.k, niter=args.niter, seed=args.seed)
    faiss_s = time.perf_counter() - start

    with threadpool_limits(args.threads):
        start = time.perf_counter()
        sk = KMeans(args.k, n_init=1, max_iter=args.niter, tol=0.0, random_state=args.seed).fit(x)
        sklearn_s = time.perf_counter() - start

    faiss_inertia, sklearn_inertia = inertia(x, ours.centroids), inertia(x, sk.cluster_centers_.astype(np.float32))
    save(
        {
            "benchmark": "kmeans",
            "n": args.n, "d": args.d, "k": args.k, "niter": args.niter, "threads": args.threads,
            "faiss_s": faiss_s,
            "sklearn_s": sklearn_s,
            "time_ratio": sklearn_s / faiss_s,
            "faiss_inertia": faiss_inertia,
            "sklearn_inertia": sklearn_inertia,
            "inertia_ratio": faiss_inertia / sklearn_inertia,
        },
        args.out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
