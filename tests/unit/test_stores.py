import shutil

import numpy as np
import pytest

from useg.atomic import atomic_output
from useg.cli import main
from useg.data.frame import Frame
from useg.errors import StoreError
from useg.stores import FeatureStore, FeatureWriter, Predictions, PredictionsWriter, open_store, provenance
from useg.stores.base import config_hash
from useg.stores.inspect import describe_store


def write_features(path, n=5, grid=(2, 3), dim=4, heads=2):
    rng = np.random.default_rng(0)
    cls = rng.normal(size=(n, dim)).astype(np.float32)
    patches = rng.normal(size=(n, *grid, dim)).astype(np.float32)
    attn = rng.random((n, heads, *grid)).astype(np.float32)
    prov = provenance("features", {"a": 1}, seed=7)
    with FeatureWriter(path, np.arange(10, 10 + n), [f"id{i}" for i in range(n)], grid, dim, heads, prov, rows_per_chunk=2) as w:
        w.write(0, cls[:3], patches[:3], attn[:3])
        w.write(3, cls[3:], patches[3:], attn[3:])
    return cls, patches, attn


def test_feature_store_round_trip(tmp_path):
    cls, patches, attn = write_features(tmp_path / "s.zarr")
    store = FeatureStore(tmp_path / "s.zarr")
    assert len(store) == 5 and store.grid == (2, 3) and store.ids[4] == "id4"
    batches = list(store.batches(2))
    assert [len(b.index) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b.cls for b in batches]), cls)
    np.testing.assert_allclose(np.concatenate([b.patches for b in batches]), patches, atol=1e-2)
    assert store.group["patches"].dtype == np.float16 and store.group["attn"].dtype == np.float16
    prov = store.attrs["provenance"]
    assert prov["seed"] == 7 and prov["config_hash"] == config_hash({"a": 1}) and prov["stage"] == "features"


def test_failed_write_leaves_no_store_that_looks_complete(tmp_path):
    target = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError):
        with FeatureWriter(target, np.arange(2), ["a", "b"], (1, 1), 2, 1, {}) as w:
            w.write(0, np.zeros((1, 2)), np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 1, 1)))
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(StoreError, match="does not exist: check the path, or run the stage that writes it"):
        FeatureStore(target)


def test_atomic_output_replaces_only_on_success(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(ValueError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise ValueError
    assert target.read_text() == "old"
    with atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_opening_a_store_of_another_kind_is_an_error(tmp_path):
    write_features(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="is a 'FeatureStore' store, expected 'Predictions'"):
        Predictions(tmp_path / "s.zarr")


def test_predictions_round_trip(tmp_path):
    labels = np.random.default_rng(0).integers(0, 4, (3, 8, 8))
    with PredictionsWriter(tmp_path / "p.zarr", np.array([2, 0, 1]), ["c", "a", "b"], Frame((8, 8)), 4, "kmeans", {}) as w:
        w.write(0, labels)
    preds = Predictions(tmp_path / "p.zarr")
    (index, got), = list(preds.batches())
    assert preds.num_labels == 4 and index.tolist() == [2, 0, 1] and np.array_equal(got, labels)


def test_inspect_prints_layout_and_provenance(tmp_path, capsys):
    write_features(tmp_path / "s.zarr")
    text = describe_store(tmp_path / "s.zarr")
    assert "kind: FeatureStore" in text and "patches" in text and "float16" in text
    assert "shape=(5, 2, 3, 4)" in text and "config_hash" in text
    assert main(["inspect", str(tmp_path / "s.zarr")]) == 0
    assert "provenance:" in capsys.readouterr().out
    open_store(tmp_path / "s.zarr", "FeatureStore")


def test_cli_reports_user_errors_without_traceback(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.zarr")]) == 2
    assert f"{tmp_path / 'missing.zarr'} does not exist" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert main(["inspect", str(tmp_path / "plain")]) == 2
    assert "not a useg store" in capsys.readouterr().err


def test_inspect_refuses_the_temporary_store_of_a_killed_writer(tmp_path, capsys):
    write_features(tmp_path / "s.zarr")
    leftover = tmp_path / ".shard-1.zarr.tmp-4242"
    shutil.copytree(tmp_path / "s.zarr", leftover)  # what a writer killed before its rename leaves
    assert main(["inspect", str(leftover)]) == 2
    err = capsys.readouterr().err
    assert f"{leftover} is incomplete" in err and f"Rerun the workflow to write {tmp_path / 'shard-1.zarr'}" in err
