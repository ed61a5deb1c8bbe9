"""Time and memory per stage from the rules' `benchmark:` files (results/<dataset>/benchmarks/).

Snakemake writes one TSV per job: a header line, then one line per repetition with `s` (wall
seconds), `max_rss` (MB), `cpu_time` (seconds, user + system) among others. A stage is a rule:
`benchmarks/<rule>.tsv` for a rule without wildcards, `benchmarks/<rule>/<wildcards>.tsv` else.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

BENCHMARKS_DIR = "benchmarks"
COLUMNS = ("stage", "jobs", "time s", "cpu time s", "max RSS MB")


def benchmark_stage(path: str | Path) -> str:
    """The rule a benchmark file belongs to: the first path part below the `benchmarks` folder."""
    parts = Path(path).parts
    folders = [i for i, part in enumerate(parts[:-1]) if part == BENCHMARKS_DIR]
    if not folders:
        raise ValueError(f"{path}: not a benchmark file (expected .../{BENCHMARKS_DIR}/<rule>[/...].tsv)")
    below = parts[folders[-1] + 1 :]
    return Path(below[0]).stem if len(below) == 1 else below[0]


def number(value: str) -> float:
    """A TSV cell as a float; Snakemake writes `NA` when a job ended before it could be measured."""
    return 0.0 if value in ("", "NA", "-") else float(value)


def read_benchmark(path: str | Path) -> dict[str, float]:
    """One job's measurement: wall and CPU seconds summed over its repetitions, the largest RSS."""
    with open(path, newline="") as fh:
        lines = list(csv.DictReader(fh, delimiter="\t"))
    if not lines or "s" not in lines[0]:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no header with `s`, `max_rss`, `cpu_time`)")
    return {
        "time s": sum(number(line["s"]) for line in lines),
        "cpu time s": sum(number(line.get("cpu_time", "NA")) for line in lines),
        "max RSS MB": max(number(line.get("max_rss", "NA")) for line in lines),
    }


def benchmark_rows(paths: list[str | Path]) -> list[dict[str, Any]]:
    """One row per stage: its job count, summed wall and CPU seconds and the largest RSS of any of
    its jobs, slowest stage first; a last row `total` over all stages."""
    stages: dict[str, dict[str, Any]] = {}
    for path in paths:
        job = read_benchmark(path)
        row = stages.setdefault(benchmark_stage(path), {"jobs": 0, "time s": 0.0, "cpu time s": 0.0, "max RSS MB": 0.0})
        row["jobs"] += 1
        row["time s"] += job["time s"]
        row["cpu time s"] += job["cpu time s"]
        row["max RSS MB"] = max(row["max RSS MB"], job["max RSS MB"])
    rows = [{"stage": stage, **row} for stage, row in stages.items()]
    rows.sort(key=lambda row: (-row["time s"], row["stage"]))
    total = {
        "stage": "total",
        "jobs": sum(r["jobs"] for r in rows),
        "time s": sum(r["time s"] for r in rows),
        "cpu time s": sum(r["cpu time s"] for r in rows),
        "max RSS MB": max((r["max RSS MB"] for r in rows), default=0.0),
    }
    return rows + [total]


def benchmark_markdown(rows: list[dict[str, Any]]) -> str:
    """The per-stage table as Markdown (seconds to one decimal, RSS to whole MB)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [row["stage"], str(row["jobs"]), f"{row['time s']:.1f}", f"{row['cpu time s']:.1f}", f"{row['max RSS MB']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_benchmark_csv(rows: list[dict[str, Any]], out: str | Path) -> None:
    """The per-stage table as CSV."""
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
