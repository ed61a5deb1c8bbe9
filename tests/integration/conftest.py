"""A reference run shared by the tests that compare another way of running the DAG against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from tests.integration.dag import check, run_snakemake, tiny_config

OUT = "results/tiny"

# Enough images and one image per batch, so that a feature shard takes long enough to be
# interrupted in the middle.
SHARDED_CONFIG: dict[str, Any] = tiny_config(
    dataset={"synthetic": {"num_train": 32, "num_val": 16, "image_size": 32}},
    features={"shards": 2, "batch_size": 1},
)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SHARDED_CONFIG run locally, uninterrupted."""
    workdir = tmp_path_factory.mktemp("reference")
    check(run_snakemake(workdir, SHARDED_CONFIG))
    return workdir


def artifacts(workdir: Path) -> dict[str, Any]:
    """Every array of every store and every metrics file of a run, by relative path."""
    root = workdir / OUT
    found: dict[str, Any] = {}
    for store in sorted(root.rglob("*.zarr")):
        group = zarr.open_group(str(store), mode="r")
        for name, array in group.arrays():
            found[f"{store.relative_to(root)}/{name}"] = array[:]
    for path in sorted(root.rglob("metrics.json")):
        found[str(path.relative_to(root))] = json.loads(path.read_text())
    return found


def assert_same_artifacts(workdir: Path, reference: Path) -> None:
    """The run in `workdir` produced exactly the reference's stores and metrics."""
    got, want = artifacts(workdir), artifacts(reference)
    assert sorted(got) == sorted(want)
    assert any("features" in key for key in want) and any("metrics.json" in key for key in want)
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(got[key], value), f"{key} differs from the uninterrupted local run"
        else:
            assert got[key] == value, f"{key} differs from the uninterrupted local run"
