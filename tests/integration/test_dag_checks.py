"""Problems a stage would find in the config and the class list fail when the DAG is built (dry runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_folder_dataset
from tests.integration.dag import run_snakemake, tiny_config

pytestmark = pytest.mark.integration


def folder_config(root: Path, **overrides) -> dict:
    return tiny_config(dataset={"name": "folder", "kind": "folder", "root": str(root)}, **overrides)


def test_maskdistill_on_background_and_one_object_class_builds_its_dag(tmp_path: Path):
    root = make_folder_dataset(tmp_path / "ds", count=3, classes=2)
    result = run_snakemake(tmp_path / "run", folder_config(root, methods=["maskdistill"]), "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "maskdistill_clusters" in result.stdout


def test_too_few_classes_for_the_default_k_fail_when_the_dag_is_built(tmp_path: Path):
    root = make_folder_dataset(tmp_path / "ds", count=3, classes=1)
    result = run_snakemake(tmp_path / "run", folder_config(root, methods=["kmeans", "transfgu"]), "-n")
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert f"transfgu.k is not set and {root / 'classes.txt'} lists 1 class(es), giving K = 1, fewer than the 2" in text
    assert not (tmp_path / "run/results").exists()


def test_unknown_config_key_is_reported_in_a_few_lines_naming_it(tmp_path: Path):
    result = run_snakemake(tmp_path, {**tiny_config(), "bogus_key": 3}, "-n")
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "invalid configuration: config: Additional properties are not allowed ('bogus_key' was unexpected)" in text
    assert len(text.splitlines()) < 10, "neither the schema nor the whole config is printed"


def test_scoring_imagenet_s_in_the_frame_fails_when_the_dag_is_built(tmp_path: Path):
    config = tiny_config(evaluate={"protocols": ["hungarian", "imagenet-s"], "scored_at": "frame"})
    result = run_snakemake(tmp_path, config, "-n")
    assert result.returncode != 0
    assert "evaluate.scored_at: frame cannot score the imagenet-s protocol" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_pass_k_above_the_train_images_fails_when_the_dag_is_built(tmp_path: Path):
    root = make_folder_dataset(tmp_path / "ds", count=4, classes=3)  # 3 train images, 1 val
    result = run_snakemake(tmp_path / "run", folder_config(root, methods=["pass"], **{"pass": {"k": 5}}), "-n")
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "pass.k = 5 pseudo categories need at least 5 images to cluster, but the train split 'train' lists 3" in text
    assert "set pass.k to at most 3" in text
    assert not (tmp_path / "run/results").exists()


def test_pass_default_k_from_the_classes_is_checked_against_the_train_images(tmp_path: Path):
    root = make_folder_dataset(tmp_path / "ds", count=3, classes=6)  # K = 5 foreground classes, 2 train images
    result = run_snakemake(tmp_path / "run", folder_config(root, methods=["pass"]), "-n")
    assert result.returncode != 0
    assert "pass.k is not set, so K = 5 foreground classes, and pseudo categories need at least 5 images" in result.stdout + result.stderr


def test_pass_without_k_or_classes_fails_when_the_dag_is_built(tmp_path: Path):
    root = make_folder_dataset(tmp_path / "ds", count=4, classes=3)
    (root / "classes.txt").unlink()
    result = run_snakemake(tmp_path / "run", folder_config(root, methods=["pass"]), "-n")
    assert result.returncode != 0
    assert f"pass.k is not set and {root / 'classes.txt'} lists 0 class(es), giving K = -1, fewer than the 2" in result.stdout + result.stderr


def test_pass_k_above_the_synthetic_train_split_fails_when_the_dag_is_built(tmp_path: Path):
    result = run_snakemake(tmp_path, tiny_config(methods=["pass"], **{"pass": {"k": 9}}), "-n")
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "pass.k = 9 pseudo categories need at least 9 images to cluster, but the train split 'train' lists 8" in text


def dry_run_jobs(text: str) -> dict[str, dict[str, str]]:
    """The `threads:` and `priority:` of each rule's (first) job in a dry run's printout."""
    jobs: dict[str, dict[str, str]] = {}
    rule = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("rule ") and stripped.endswith(":"):
            rule = stripped[5:-1]
            jobs.setdefault(rule, {})
        elif rule and stripped.startswith(("threads:", "priority:")):
            key, value = stripped.split(":", 1)
            jobs[rule].setdefault(key, value.strip())
    return jobs


def test_threads_key_reaches_the_rules_and_the_maskdistill_chain_goes_first(tmp_path: Path):
    cfg = tiny_config(methods=["kmeans", "maskdistill"], threads=3)
    result = run_snakemake(tmp_path, cfg, "-n", "--cores", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = dry_run_jobs(result.stdout)
    assert jobs["features"]["threads"] == "3" and jobs["maskdistill_deeplab"]["threads"] == "3"
    assert "threads" not in jobs["maskdistill_maskrcnn"], "the small-model training rules keep their one thread"
    assert {jobs[rule].get("priority") for rule in ("maskdistill_masks", "maskdistill_maskrcnn", "maskdistill_crf")} == {"10"}
    assert "priority" not in jobs["features"] and "priority" not in jobs["kmeans_fit"]
