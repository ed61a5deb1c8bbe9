"""benchmarks/seeds.py end to end: one real workflow run per seed, each in its own folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO
from tests.integration.dag import tiny_config

pytestmark = pytest.mark.integration


def test_seed_spread_runs_each_seed_and_aggregates_its_metrics(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    out = tmp_path / "seeds.json"
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "seeds.py"), "--config", str(config), "--seeds", "0", "1",
        "--methods", "kmeans", "--compare", "--workdir", str(tmp_path / "work"), "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    report = json.loads(out.read_text())
    per_seed = {int(seed): mious for seed, mious in report["per_seed"].items()}
    assert set(per_seed) == {0, 1} and all(set(m) == {"kmeans"} for m in per_seed.values())
    for seed, mious in per_seed.items():
        run = tmp_path / "work" / f"seed-{seed}"
        metrics = json.loads((run / "tiny" / "kmeans" / "metrics.json").read_text())
        assert mious["kmeans"] == pytest.approx(100 * metrics["protocols"]["hungarian"]["miou"])
        assert yaml.safe_load((run / "overlay.yaml").read_text())["seed"] == seed
        assert (run / ".snakemake").is_dir()  # each repetition keeps its own Snakemake state
    assert per_seed[0]["kmeans"] != per_seed[1]["kmeans"]  # the seed draws other scenes
    values = [m["kmeans"] for m in per_seed.values()]
    assert report["spread"]["kmeans"]["mean"] == pytest.approx(sum(values) / 2)
    assert report["comparisons"] == {}
