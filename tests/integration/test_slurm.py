"""The tiny DAG through `--profile profiles/slurm` on a real Slurm cluster (tests/slurm/up.sh), and
the shipped profile's placeholder partitions refused before anything is submitted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.conftest import SHARDED_CONFIG, assert_same_artifacts
from tests.integration.dag import check, snakemake_command, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def slurm_is_up() -> bool:
    """A controller answers and the test partition exists."""
    if not shutil.which("sbatch") or not shutil.which("scontrol"):
        return False
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
        parts = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%P"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:  # a configured controller that does not answer
        return False
    return "is UP" in ping.stdout and parts.stdout.strip() != ""


@pytest.fixture(scope="module")
def slurm() -> None:
    if slurm_is_up():
        return
    reason = "no Slurm cluster with a 'debug' partition is up (start one: sudo bash tests/slurm/up.sh)"
    if os.environ.get("USEG_REQUIRE_SLURM") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def cluster_state() -> str:
    """What the cluster says about its node and every job it knows, for a failure message."""
    commands = [
        ["sinfo", "-N", "-l"],
        ["squeue", "--states=all", "-o", "%i %j %T %r %C %m %M %S"],
    ]
    said = [subprocess.run(c, capture_output=True, text=True, timeout=30).stdout for c in commands]
    controller_log = Path(os.environ.get("USEG_SLURM_DIR", "/tmp/useg-slurm")) / "log/slurmctld.log"
    if controller_log.is_file():
        said.append("slurmctld.log (last 30 lines):\n" + "\n".join(controller_log.read_text().splitlines()[-30:]))
    return "\n".join(said)


def test_dag_runs_through_slurm_and_equals_the_local_run(slurm: None, tmp_path: Path, reference_run: Path):
    workdir = tmp_path / "slurm"
    profiles = ["--profile", str(REPO / "profiles/slurm"), "--profile", str(REPO / "tests/slurm/profile")]
    cmd, env = snakemake_command(workdir, SHARDED_CONFIG, "--workflow-profile", "none", *profiles)
    run = subprocess.run(["timeout", "-k", "30", "900", *cmd], env=env, capture_output=True, text=True)
    if run.returncode != 0:
        print(cluster_state())  # shown by pytest beside the failure: pending reasons, node state
    result = check(run)

    submitted = dict(SUBMITTED.findall(result.stdout + result.stderr))
    print("Slurm job ids:", " ".join(submitted))
    assert len(submitted) == 9, "every job but `all`: synthesize, manifest, 2x2 features, fit, predict, evaluate"
    assert "Auto-selected partition 'debug'" in result.stdout + result.stderr, "routed by the partition config"
    for job_id, log in submitted.items():
        assert Path(log).is_file() and Path(log).name == f"{job_id}.log", "the Slurm job wrote its log"
    states = subprocess.run(
        ["squeue", "--states=all", "-h", "-o", "%i %T", "-j", ",".join(submitted)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert dict(line.split() for line in states.splitlines()) == dict.fromkeys(submitted, "COMPLETED")
    assert_same_artifacts(workdir, reference_run)


def test_placeholder_partitions_stop_the_run_before_any_submission(slurm: None, tmp_path: Path):
    cmd, env = snakemake_command(tmp_path, tiny_config(), "--workflow-profile", "none", "--profile", str(REPO / "profiles/slurm"))
    result = subprocess.run(["timeout", "-k", "30", "300", *cmd], env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "CHANGE_ME_PARTITION" in output and "CHANGE_ME_GPU_PARTITION" in output and "CHANGE_ME_ACCOUNT" in output
    assert "useg install-profile slurm --partition" in output, "the message says how to fill them in"
    assert not SUBMITTED.findall(output) and not (tmp_path / "results").exists(), "nothing was submitted or run"
