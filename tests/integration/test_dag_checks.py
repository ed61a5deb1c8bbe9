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
