"""Running the real Snakemake workflow on tiny configs from tests."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO, TINY_BACKBONE

# Tests build on the embedded demo explicitly (a --configfile never inherits config.yaml by itself).
TINY_CONFIG: dict[str, Any] = {
    "_base_": [str(REPO / "config.yaml")],
    "seed": 0,
    "results_dir": "results",
    "methods": ["kmeans"],
    "dataset": {
        "name": "tiny",
        "kind": "synthetic",
        "synthetic": {"num_train": 8, "num_val": 6, "image_size": 32},
    },
    "backbone": TINY_BACKBONE,
    "features": {"shards": 2, "batch_size": 4},
    "kmeans": {"niter": 10, "nredo": 1, "max_train_points": 5000},
    "evaluate": {"threads": 1},
    "report": {"enabled": False},  # tests/integration/test_report_dag.py turns it on
}


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """TINY_CONFIG with top-level sections updated (one level deep)."""
    cfg = copy.deepcopy(TINY_CONFIG)
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return cfg


def snakemake_command(workdir: Path, config: dict[str, Any], *args: str) -> tuple[list[str], dict[str, str]]:
    """Command and environment running the repository's Snakefile in `workdir` on `config`."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "test-config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [
        sys.executable, "-m", "snakemake",
        "-s", str(REPO / "Snakefile"),
        "-d", str(workdir),
        "--configfile", str(workdir / "test-config.yaml"),
        "--cores", "2",
        *args,
    ]  # fmt: skip
    return cmd, env


def run_snakemake(workdir: Path, config: dict[str, Any], *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in `workdir` with `config` written to workdir/test-config.yaml."""
    cmd, env = snakemake_command(workdir, config, *args)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Fail with Snakemake's output when it did not succeed."""
    assert result.returncode == 0, f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    return result


def mtimes(root: Path, paths: list[str]) -> dict[str, float]:
    """Modification times of outputs (directories: their zarr.json)."""
    out = {}
    for rel in paths:
        path = root / rel
        out[rel] = (path / "zarr.json" if path.is_dir() else path).stat().st_mtime_ns
    return out


def copy_run(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of a finished run, its inputs included (mtimes and Snakemake metadata preserved)."""
    target = tmp_path / "copy"
    shutil.copytree(finished_run, target, symlinks=True)
    return target
