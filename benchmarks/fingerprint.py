"""Dataset fingerprint time (useg.data.fingerprint, the manifest rule's param) on ImageNet-S-like trees.

Each tree is `train/<wnid>/<wnid>_<i>.JPEG` over 1 000 class folders, every file sparse (made with
os.truncate to 110 kB: ImageNet's mean size, no disk blocks), in a temporary folder that is deleted
afterwards. The fingerprint is timed on a warm metadata cache (just written), median of `--repeat`
runs; a cold cache (a fresh node, a network file system) stats slower.

    python benchmarks/fingerprint.py --sizes 100000 1200000 --out benchmarks/results/fingerprint.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from useg.data.fingerprint import dataset_fingerprint  # noqa: E402

CLASSES = 1000
FILE_BYTES = 110_000


def imagenet_like_tree(root: Path, count: int) -> None:
    """`count` sparse JPEG-named files spread over CLASSES class folders of root/train."""
    for c in range(CLASSES):
        (root / "train" / f"n{c:08d}").mkdir(parents=True)
    for i in range(count):
        path = root / "train" / f"n{i % CLASSES:08d}" / f"n{i % CLASSES:08d}_{i}.JPEG"
        with open(path, "wb"):
            pass
        os.truncate(path, FILE_BYTES)


def time_fingerprint(root: Path, repeat: int) -> list[float]:
    """Seconds of each of `repeat` fingerprints of `root`."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        dataset_fingerprint(root)
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_200_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tmp", default=None, help="folder for the trees (default: the system's temporary folder)")
    parser.add_argument("--out", default="benchmarks/results/fingerprint.json")
    args = parser.parse_args()
    rows = []
    for count in args.sizes:
        root = Path(tempfile.mkdtemp(prefix="useg-fingerprint-", dir=args.tmp))
        try:
            began = time.perf_counter()
            imagenet_like_tree(root, count)
            made = time.perf_counter() - began
            times = time_fingerprint(root, args.repeat)
        finally:
            shutil.rmtree(root)
        rows.append({"files": count, "make_seconds": made, "fingerprint_seconds": statistics.median(times), "runs": times})
        print(f"{count} files: fingerprint {statistics.median(times):.2f} s (median of {args.repeat})", flush=True)
    save({"benchmark": "fingerprint", "sizes": rows}, args.out)


if __name__ == "__main__":
    main()
