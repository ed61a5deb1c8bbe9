"""Seed spread of the default run: how far every method's hungarian mIoU moves from seed to seed.

The top-level `seed` draws the synthetic scenes, the CrOC pretraining and every method's own
randomness, so one seed is one complete, independent repetition of the run. For each seed this
runs the real workflow (`snakemake -s Snakefile -d <folder> --configfile <configs...> <overlay>`)
into its own results folder, reads every `<method>/metrics.json` it wrote, and reports per
method the mean, standard deviation, min and max of the hungarian mIoU over the seeds; for each comparison
`a>b` (e.g. `alignseg>kmeans`), the share of seeds where it holds and the mean gap in points.
A method ordering that holds on one seed but not on most is within the run's noise.

    python benchmarks/seeds.py --seeds 0 1 2 3 4 --methods kmeans alignseg transfgu \
        --compare 'alignseg>kmeans' 'transfgu>transfgu-trained' 'transfgu-trained>transfgu-initial' 'transfgu>kmeans'
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from useg.report.tables import comparison_rows  # noqa: E402

PROTOCOL = "hungarian"  # reported under the method's name; any other protocol as `<method>@<protocol>`
DEFAULT_COMPARE = ("alignseg>kmeans", "transfgu>kmeans")
SNAKEFILE = Path(__file__).resolve().parents[1] / "Snakefile"


def overlay(results_dir: Path, seed: int, methods: list[str], backbone_eval: bool = False) -> dict:
    """Config overlay of one repetition: its own results folder and seed, no report, the backbone comparison
    (pretrained against random weights) only when asked."""
    return {
        "results_dir": str(results_dir),
        "seed": seed,
        "methods": methods,
        "backbone_eval": {"enabled": backbone_eval},
        "report": {"enabled": False},
    }


def run_seed(
    configs: list[Path], results_dir: Path, seed: int, methods: list[str], cores: int, backbone_eval: bool = False
) -> float:
    """One repetition of the workflow, with its Snakemake state in its own folder; returns its wall seconds."""
    results_dir.mkdir(parents=True, exist_ok=True)
    overlay_file = results_dir / "overlay.yaml"
    overlay_file.write_text(yaml.safe_dump(overlay(results_dir, seed, methods, backbone_eval)))
    start = time.perf_counter()
    command = [
        sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(results_dir), "--cores", str(cores),
        "--configfile", *(str(c.resolve()) for c in configs), str(overlay_file),
    ]  # fmt: skip
    with (results_dir / "snakemake.log").open("w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def read_mious(results_dir: Path, protocols: Sequence[str] = (PROTOCOL,)) -> dict[str, float]:
    """mIoU (%) under each of `protocols` of every method's `<results_dir>/<dataset>/<method>/metrics.json` and
    every backbone evaluation's `<dataset>/backbone-eval/<variant>/<protocol>/metrics.json`, keyed by the
    method (hungarian) or `<method>@<protocol>`."""
    paths = [*results_dir.glob("*/*/metrics.json"), *results_dir.glob("*/backbone-eval/*/*/metrics.json")]
    rows = comparison_rows(sorted(paths))
    return {
        row["method"] if row["protocol"] == PROTOCOL else f"{row['method']}@{row['protocol']}": row["mIoU"]
        for row in rows
        if row["protocol"] in protocols
    }


def spread(per_seed: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation (n−1), min and max of each method's mIoU over the seeds that report it."""
    methods = sorted({m for mious in per_seed.values() for m in mious})
    out = {}
    for method in methods:
        values = [mious[method] for mious in per_seed.values() if method in mious]
        out[method] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
            "seeds": len(values),
        }
    return out


def parse_comparison(text: str) -> tuple[str, str]:
    """`a>b` -> (a, b)."""
    better, sep, worse = text.partition(">")
    if not sep or not better or not worse:
        raise ValueError(f"a comparison reads 'method>method', got {text!r}")
    return better, worse


def comparison_pairs(texts: list[str] | None, methods: list[str]) -> list[tuple[str, str]]:
    """The a>b pairs to report: the given ones, or the default pairs whose methods both run (a column's
    method is its name up to the first "-" or "@": transfgu-trained -> transfgu)."""
    if texts is not None:
        return [parse_comparison(text) for text in texts]
    pairs = [parse_comparison(text) for text in DEFAULT_COMPARE]
    return [pair for pair in pairs if all(column.split("@")[0].split("-")[0] in methods for column in pair)]


def comparisons(per_seed: dict[int, dict[str, float]], pairs: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """For each (a, b): share of seeds with mIoU_a > mIoU_b and the mean gap a − b in points."""
    out = {}
    for better, worse in pairs:
        gaps = [m[better] - m[worse] for m in per_seed.values() if better in m and worse in m]
        if not gaps:
            raise ValueError(f"no seed reports both {better!r} and {worse!r}")
        out[f"{better}>{worse}"] = {"holds": sum(g > 0 for g in gaps) / len(gaps), "mean_gap": statistics.fmean(gaps)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, nargs="+", default=[Path("config.yaml")],
        help="config files, composed in order (default: the embedded demo; an overlay on it: config.yaml overlay.yaml)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["kmeans", "alignseg", "transfgu"])
    parser.add_argument(
        "--protocols", nargs="+", default=[PROTOCOL],
        help="evaluation protocols to report (they must be in the config's evaluate.protocols)",
    )  # fmt: skip
    parser.add_argument("--backbone-eval", action="store_true", help="also run and report the backbone evaluation")
    parser.add_argument(
        "--compare", nargs="*", default=None,
        help=f"a>b pairs of columns of the methods run (default: those of {' '.join(DEFAULT_COMPARE)} whose methods run)",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/results/seeds"), help="one results folder per seed")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/seeds.json")
    args = parser.parse_args()
    pairs = comparison_pairs(args.compare, args.methods)

    per_seed, walls = {}, {}
    for seed in args.seeds:
        results_dir = args.workdir.resolve() / f"seed-{seed}"
        walls[seed] = run_seed(args.config, results_dir, seed, args.methods, args.cores, args.backbone_eval)
        per_seed[seed] = read_mious(results_dir, args.protocols)
        print(f"seed {seed}: " + ", ".join(f"{m} {v:.2f}" for m, v in per_seed[seed].items()), file=sys.stderr)

    report = {
        "protocols": args.protocols,
        "config": str(args.config),
        "methods": args.methods,
        "per_seed": per_seed,
        "wall_seconds": walls,
        "spread": spread(per_seed),
        "comparisons": comparisons(per_seed, pairs),
    }
    save(report, args.out)
    for method, s in report["spread"].items():
        print(f"{method:24s} mIoU {s['mean']:6.2f} ± {s['std']:5.2f}  [{s['min']:.2f}, {s['max']:.2f}]")
    for name, c in report["comparisons"].items():
        print(f"{name:40s} holds on {100 * c['holds']:.0f} % of seeds, mean gap {c['mean_gap']:+.2f}")


if __name__ == "__main__":
    main()
