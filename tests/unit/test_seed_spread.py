"""Seed-spread benchmark (benchmarks/seeds.py): reading runs, spread and method comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.seeds import comparison_pairs, comparisons, overlay, parse_comparison, read_mious, spread


def write_metrics(root: Path, method: str, miou: float | None, protocol: str = "hungarian") -> None:
    protocols = {} if miou is None else {protocol: {"miou": miou, "pixel_accuracy": 0.5}}
    path = root / "shapes" / method / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"method": method, "num_clusters": 7, "num_images": 4, "protocols": protocols}))


def test_read_mious_takes_every_method_with_a_hungarian_block(tmp_path):
    write_metrics(tmp_path, "kmeans", 0.35)
    write_metrics(tmp_path, "transfgu-initial", 0.2)
    write_metrics(tmp_path, "supervised-only", None)
    assert read_mious(tmp_path) == pytest.approx({"kmeans": 35.0, "transfgu-initial": 20.0})


def test_read_mious_keys_other_protocols_by_method_at_protocol(tmp_path):
    write_metrics(tmp_path, "kmeans", 0.35)
    write_metrics(tmp_path, "alignseg", 0.4, protocol="alignseg")
    assert read_mious(tmp_path) == pytest.approx({"kmeans": 35.0})
    got = read_mious(tmp_path, ["hungarian", "alignseg"])
    assert got == pytest.approx({"kmeans": 35.0, "alignseg@alignseg": 40.0})


def test_spread_is_mean_sample_std_min_max_over_the_seeds_reporting_a_method():
    per_seed = {0: {"a": 30.0, "b": 10.0}, 1: {"a": 34.0}, 2: {"a": 32.0, "b": 20.0}}
    result = spread(per_seed)
    assert result["a"] == pytest.approx({"mean": 32.0, "std": 2.0, "min": 30.0, "max": 34.0, "seeds": 3})
    assert result["b"]["mean"] == pytest.approx(15.0) and result["b"]["seeds"] == 2
    assert spread({0: {"a": 5.0}})["a"]["std"] == 0.0


def test_comparisons_count_the_seeds_where_the_order_holds():
    per_seed = {0: {"a": 30.0, "b": 25.0}, 1: {"a": 20.0, "b": 28.0}, 2: {"a": 31.0, "b": 30.0}, 3: {"a": 40.0}}
    result = comparisons(per_seed, [("a", "b"), ("b", "a")])
    assert result["a>b"]["holds"] == pytest.approx(2 / 3)
    assert result["a>b"]["mean_gap"] == pytest.approx((5 - 8 + 1) / 3)
    assert result["b>a"]["holds"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no seed reports both"):
        comparisons(per_seed, [("a", "missing")])


def test_parse_comparison_and_overlay():
    assert parse_comparison("alignseg>kmeans") == ("alignseg", "kmeans")
    for bad in ("alignseg", ">kmeans", "alignseg>"):
        with pytest.raises(ValueError, match="method>method"):
            parse_comparison(bad)
    cfg = overlay(Path("/tmp/x/seed-3"), 3, ["kmeans"])
    assert cfg["seed"] == 3 and cfg["results_dir"] == "/tmp/x/seed-3" and cfg["methods"] == ["kmeans"]
    assert cfg["backbone_eval"] == {"enabled": False} and cfg["report"] == {"enabled": False}
    assert overlay(Path("/tmp/x/seed-3"), 3, ["kmeans"], backbone_eval=True)["backbone_eval"] == {"enabled": True}


def test_read_mious_takes_the_backbone_evaluation_under_its_method_name(tmp_path):
    write_metrics(tmp_path, "kmeans", 0.35)
    write_metrics(tmp_path, "backbone-eval/pretrain/kmeans", 0.3)
    assert read_mious(tmp_path) == pytest.approx({"kmeans": 35.0, "backbone-eval/pretrain/kmeans": 30.0})


def test_the_default_comparisons_are_those_whose_methods_run_and_given_ones_are_kept():
    assert comparison_pairs(None, ["kmeans", "alignseg", "transfgu"]) == [("alignseg", "kmeans"), ("transfgu", "kmeans")]
    assert comparison_pairs(None, ["transfgu"]) == []  # a TransFGU-only run has no kmeans column to compare with
    assert comparison_pairs(None, ["kmeans", "alignseg"]) == [("alignseg", "kmeans")]
    assert comparison_pairs(["transfgu-trained>transfgu-initial"], ["transfgu"]) == [("transfgu-trained", "transfgu-initial")]
