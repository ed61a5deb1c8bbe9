"""Feature extraction at growing N: throughput and peak RSS of every shard job.

For each N the synthetic images are split into a fixed number of shards, so a shard holds
N / shards images; each shard runs as its own `useg features` process (as a Snakemake job
would) and its peak RSS is read from the kernel (wait4). Memory must stay flat as N grows:
the stage streams batches into the store and never holds a shard in memory.

    python benchmarks/scale.py --sizes 100 1000 10000 --out benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TINY_VIT, image_rows, save, write_manifest_csv  # noqa: E402


def run_shard(manifest: Path, shard: int, shards: int, out: Path, batch_size: int, threads: int) -> dict:
    """One `useg features` process: wall time and peak resident memory."""
    params = {"backbone": TINY_VIT, "features": {"batch_size": batch_size, "device": "auto", "shards": shards}, "seed": 0}
    cmd = [
        sys.executable, "-m", "useg", "features", "--params", json.dumps(params), "--manifest", str(manifest),
        "--split", "train", "--shard", str(shard), "--shards", str(shards), "--out", str(out), "--threads", str(threads),
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"shard {shard} failed: {' '.join(cmd)}")
    return {"shard": shard, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--measure-shards", type=int, help="run only the first shards of each N (saves time)")
    parser.add_argument("--out", default="benchmarks/results/scale.json")
    args = parser.parse_args()

    runs = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            rows = image_rows(Path(tmp), n)
            manifest = write_manifest_csv(rows, Path(tmp) / "manifest.csv")
            shards = [
                run_shard(manifest, i, args.shards, Path(tmp) / f"shard-{i}.zarr", args.batch_size, args.threads)
                for i in range(min(args.shards, args.measure_shards or args.shards))
            ]
            store_mb = sum(f.stat().st_size for f in Path(tmp).glob("shard-*.zarr/**/*") if f.is_file()) / 2**20
        run = {
            "images": n,
            "images_per_shard": n / args.shards,
            "images_per_s": n / args.shards * len(shards) / sum(s["wall_s"] for s in shards),
            "max_peak_rss_mb": max(s["peak_rss_mb"] for s in shards),
            "store_mb": store_mb,
            "shards": shards,
        }
        print(f"N={n}: {run['images_per_s']:.1f} img/s, peak RSS {run['max_peak_rss_mb']:.0f} MB per shard", flush=True)
        runs.append(run)
    rss = [r["max_peak_rss_mb"] for r in runs]
    save(
        {
            "benchmark": "scale",
            "backbone": TINY_VIT,
            "shards": args.shards,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "runs": runs,
            "peak_rss_growth": max(rss) / min(rss),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
