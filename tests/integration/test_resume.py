"""Resumability: a run killed in the middle of the sharded feature stage, then rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.conftest import OUT, SHARDED_CONFIG, assert_same_artifacts
from tests.integration.dag import check, run_snakemake, snakemake_command
from useg.stores.features import FeatureStore

pytestmark = pytest.mark.integration

FEATURES = f"{OUT}/features/tiny"


def partial_shards(workdir: Path) -> list[Path]:
    """Hidden temporary feature stores that already hold some arrays (a shard mid-write)."""
    return [p for p in (workdir / FEATURES).glob("*/.shard-*.zarr.tmp-*") if (p / "patches").exists()]


def kill_during_features(workdir: Path, sig: signal.Signal, timeout: float = 300) -> list[Path]:
    """Start the DAG and send `sig` to its whole process group while a feature shard is being written."""
    cmd, env = snakemake_command(workdir, SHARDED_CONFIG)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            caught = partial_shards(workdir)
            if caught:
                os.killpg(proc.pid, sig)
                proc.wait(60)
                return caught
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    pytest.fail("the run never wrote a feature shard that could be interrupted")


def test_killed_feature_stage_resumes_to_identical_results(tmp_path: Path, reference_run: Path):
    workdir = tmp_path / "run"
    caught = kill_during_features(workdir, signal.SIGKILL)
    for temp in caught:
        target = temp.with_name(temp.name[1:].split(".tmp-")[0])
        assert not target.exists(), f"{target} appeared although its writer was killed mid-way"
    for shard in (workdir / FEATURES).glob("*/shard-*.zarr"):
        FeatureStore(shard)  # whatever exists under a final name is a complete store
    assert not (workdir / OUT / "kmeans").exists(), "nothing after the feature stage ran"

    check(run_snakemake(workdir, SHARDED_CONFIG, "--unlock"))  # a SIGKILLed Snakemake leaves its lock
    dry = check(run_snakemake(workdir, SHARDED_CONFIG, "-n"))
    assert "features" in dry.stdout, "the interrupted shard is scheduled again"

    check(run_snakemake(workdir, SHARDED_CONFIG))  # profiles/default, read by Snakemake itself: rerun-incomplete
    assert not list((workdir / OUT).rglob(".*.tmp-*")), "no temporary leftovers after the rerun"
    assert_same_artifacts(workdir, reference_run)
