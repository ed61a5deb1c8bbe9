"""The embedded default's time on `cores` cores estimated from a finished run's benchmark files.

The longest chain of the default DAG is CrOC pretraining followed by MaskDistill's stages (masks ->
clusters -> Mask R-CNN -> candidates -> labels -> DeepLab-v3 -> CRF); its two mask jobs (train,
val) run side by side, so the chain counts the longer. A run on `cores` cores takes at least
max(chain, all jobs / cores): the estimate, in wall seconds (`s`) and in CPU seconds (`cpu_time`,
which Snakemake samples every 30 s after a job's first 30 s, so it reads low for long jobs).

    python benchmarks/critical_path.py --benchmarks results/shapes/benchmarks --out benchmarks/results/critical_path.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from useg.report.benchmarks import read_benchmark  # noqa: E402

# Steps of the chain in order; a step of several jobs (side by side) counts its longest.
CHAIN = (
    ("synthesize",),
    ("manifest",),
    ("pretrain",),
    ("maskdistill_masks/train-0", "maskdistill_masks/val-0"),
    ("maskdistill_clusters",),
    ("maskdistill_maskrcnn",),
    ("maskdistill_candidates/train-0",),
    ("maskdistill_labels/train",),
    ("maskdistill_deeplab/deeplab",),
    ("maskdistill_crf",),
)


def job_times(folder: Path) -> dict[str, dict[str, float]]:
    """Every job's measurement, by its benchmark path below `folder` without `.tsv`."""
    return {str(path.relative_to(folder).with_suffix("")): read_benchmark(path) for path in sorted(folder.rglob("*.tsv"))}


def estimate(jobs: dict[str, dict[str, float]], column: str, cores: int) -> dict[str, float]:
    """Chain seconds, all jobs' seconds and the lower bound max(chain, all / cores) in `column`."""
    missing = [job for step in CHAIN for job in step if job not in jobs]
    if missing:
        raise SystemExit(f"no benchmark file for {', '.join(missing)}: run the embedded default (methods with maskdistill) first")
    chain = sum(max(jobs[job][column] for job in step) for step in CHAIN)
    total = sum(job[column] for job in jobs.values())
    return {"chain": round(chain, 1), "all": round(total, 1), "estimate": round(max(chain, total / cores), 1)}


def main() -> None:
    """Print and save the estimate in wall and CPU seconds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", type=Path, default=Path("results/shapes/benchmarks"))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/critical_path.json")
    args = parser.parse_args()
    jobs = job_times(args.benchmarks)
    result = {column: estimate(jobs, column, args.cores) for column in ("time s", "cpu time s")}
    save({"benchmarks": str(args.benchmarks), "cores": args.cores, "jobs": len(jobs), **result}, args.out)


if __name__ == "__main__":
    main()
