"""Per-stage table of the rules' benchmark files, written by Snakemake's own benchmark writer."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from snakemake.benchmark import BenchmarkRecord, write_benchmark_records

from useg.cli import main
from useg.report.benchmarks import benchmark_markdown, benchmark_rows, benchmark_stage, write_benchmark_csv


def write_job(path: Path, seconds: float, rss: float | None, cpu: float | None) -> Path:
    """One job's benchmark TSV as Snakemake writes it (rss and cpu None: a job too short to sample, NA)."""
    record = BenchmarkRecord(running_time=seconds, max_rss=rss, cpu_time=cpu)
    record.data_collected = rss is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    write_benchmark_records([record], str(path), False)
    return path


def test_rows_sum_time_per_stage_and_keep_the_largest_rss(tmp_path: Path):
    root = tmp_path / "results/shapes/benchmarks"
    paths = [
        write_job(root / "features/vit-train-0.tsv", 10.0, 300.0, 8.0),
        write_job(root / "features/vit-train-1.tsv", 12.5, 450.0, 9.5),
        write_job(root / "evaluate/backbone-eval/pretrain/kmeans.tsv", 2.0, 120.0, 1.5),
        write_job(root / "pretrain.tsv", 30.0, 900.0, 25.0),
        write_job(root / "manifest.tsv", 0.4, None, None),
    ]
    rows = benchmark_rows(paths)
    by_stage = {row["stage"]: row for row in rows}
    assert [row["stage"] for row in rows] == ["pretrain", "features", "evaluate", "manifest", "total"]
    assert by_stage["features"] == {"stage": "features", "jobs": 2, "time s": 22.5, "cpu time s": 17.5, "max RSS MB": 450.0}
    assert by_stage["evaluate"]["jobs"] == 1, "a wildcard value with slashes stays in its rule's folder"
    assert by_stage["manifest"] == {"stage": "manifest", "jobs": 1, "time s": 0.4, "cpu time s": 0.0, "max RSS MB": 0.0}
    total = by_stage["total"]
    assert (total["jobs"], total["max RSS MB"]) == (5, 900.0)
    assert (total["time s"], total["cpu time s"]) == pytest.approx((54.9, 44.0))

    table = benchmark_markdown(rows)
    assert table.splitlines()[0] == "| stage | jobs | time s | cpu time s | max RSS MB |"
    assert "| features | 2 | 22.5 | 17.5 | 450 |" in table
    write_benchmark_csv(rows, tmp_path / "stages.csv")
    with open(tmp_path / "stages.csv", newline="") as fh:
        assert [line["stage"] for line in csv.DictReader(fh)] == [row["stage"] for row in rows]


def test_a_file_outside_a_benchmarks_folder_or_without_the_header_is_refused(tmp_path: Path):
    assert benchmark_stage("results/x/benchmarks/report_table.tsv") == "report_table"
    with pytest.raises(ValueError, match="not a benchmark file"):
        benchmark_stage(tmp_path / "features.tsv")
    other = tmp_path / "benchmarks" / "features.tsv"
    other.parent.mkdir()
    other.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match=r"features.tsv: not a Snakemake benchmark file"):
        benchmark_rows([other])


def test_useg_benchmarks_prints_the_table_and_names_an_empty_folder(tmp_path: Path, capsys):
    root = tmp_path / "benchmarks"
    write_job(root / "features/vit-val-0.tsv", 4.0, 200.0, 3.0)
    assert main(["benchmarks", str(root), "--out-csv", str(tmp_path / "stages.csv")]) == 0
    assert "| features | 1 | 4.0 | 3.0 | 200 |" in capsys.readouterr().out
    assert (tmp_path / "stages.csv").read_text().splitlines()[0] == "stage,jobs,time s,cpu time s,max RSS MB"
    assert main(["benchmarks", str(tmp_path / "empty")]) == 2


def test_critical_path_counts_the_longer_of_side_by_side_jobs_and_bounds_by_all_over_cores(tmp_path: Path):
    from benchmarks.critical_path import CHAIN, estimate, job_times

    root = tmp_path / "benchmarks"
    for step in CHAIN:
        for i, job in enumerate(step):
            write_job(root / f"{job}.tsv", 10.0 + i, 100.0, 5.0)  # val masks (second of its step): 11 s
    write_job(root / "transfgu_train/round-0.tsv", 200.0, 100.0, 150.0)
    jobs = job_times(root)
    wall = estimate(jobs, "time s", cores=2)
    assert wall["chain"] == 10.0 * len(CHAIN) + 1.0 and wall["all"] == 10.0 * 11 + 1.0 + 200.0
    assert wall["estimate"] == 311.0 / 2, "all jobs over 2 cores (155.5 s) above the 101 s chain"
    assert estimate(jobs, "time s", cores=4)["estimate"] == 101.0, "the chain above 311 s over 4 cores"
    assert estimate(jobs, "cpu time s", cores=2)["estimate"] == (5.0 * 11 + 150.0) / 2
