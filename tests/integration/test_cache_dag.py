"""The cache sees every input change: a rewritten mask, an added image, a rewritten weights file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_BACKBONE, make_folder_dataset, write_image, write_mask
from tests.integration.dag import check, copy_run, mtimes, run_snakemake, tiny_config
from useg.backbones.vit import BackboneConfig, create_vit

pytestmark = pytest.mark.integration

OUT = "results/folder"
METRICS = f"{OUT}/kmeans/metrics.json"
MANIFEST = [f"{OUT}/manifest.csv"]
FEATURES = [f"{OUT}/features/tiny/{split}/shard-0.zarr" for split in ("train", "val")]
KMEANS = [f"{OUT}/kmeans/centroids.zarr", f"{OUT}/kmeans/predictions.zarr", METRICS]


def write_weights(path: Path, seed: int) -> Path:
    """A tiny ViT's random state dict, drawn from `seed`, saved as a .pth file."""
    torch.manual_seed(seed)
    torch.save(create_vit(BackboneConfig.from_dict(TINY_BACKBONE)).state_dict(), path)
    return path


# Paths relative to the workdir, so that a copy of a finished run is the same run to Snakemake.
CONFIG = tiny_config(
    dataset={"name": "folder", "kind": "folder", "root": "ds"},
    backbone={**TINY_BACKBONE, "weights": "weights.pth"},
    features={"shards": 1},
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir with a folder dataset (3 train, 2 val images) and a weights file, the k-means DAG run once."""
    workdir = tmp_path_factory.mktemp("cache")
    root = make_folder_dataset(workdir / "ds", count=5)
    (root / "splits.csv").write_text("stem,split\n" + "".join(f"img{i},{'val' if i < 2 else 'train'}\n" for i in range(5)))
    write_weights(workdir / "weights.pth", seed=0)
    check(run_snakemake(workdir, CONFIG, METRICS))
    return workdir


@pytest.fixture
def workdir(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run, its dataset and weights (mtimes and metadata preserved)."""
    return copy_run(finished_run, tmp_path)


def rerun(workdir: Path) -> tuple[dict[str, float], dict[str, float], dict]:
    """Rerun the DAG on the copy; output mtimes before and after, and the new metrics."""
    before = mtimes(workdir, MANIFEST + FEATURES + KMEANS)
    check(run_snakemake(workdir, CONFIG, METRICS))
    return before, mtimes(workdir, MANIFEST + FEATURES + KMEANS), json.loads((workdir / METRICS).read_text())


def test_unchanged_rerun_does_nothing(workdir: Path):
    before, after, _ = rerun(workdir)
    assert after == before


def metric(metrics: dict) -> float:
    return metrics["protocols"]["hungarian"]["miou"]


def test_rewritten_mask_reruns_the_manifest_and_everything_after_it(workdir: Path):
    old = json.loads((workdir / METRICS).read_text())
    write_mask(workdir / "ds/masks/img0.png", seed=99)
    before, after, new = rerun(workdir)
    assert all(after[p] != before[p] for p in MANIFEST + FEATURES + KMEANS)
    assert new["confusion"] != old["confusion"], "the evaluation read the rewritten mask"


def test_added_image_with_its_split_row_enters_the_manifest(workdir: Path):
    write_image(workdir / "ds/images/img6.png", seed=6)
    write_mask(workdir / "ds/masks/img6.png", seed=6)
    with (workdir / "ds/splits.csv").open("a") as fh:
        fh.write("img6,val\n")
    before, after, new = rerun(workdir)
    assert all(after[p] != before[p] for p in MANIFEST + FEATURES + KMEANS)
    assert new["num_images"] == 3, "the new image is evaluated"


def test_rewritten_weights_file_reruns_the_features_and_what_follows_only(workdir: Path):
    old = json.loads((workdir / METRICS).read_text())
    write_weights(workdir / "weights.pth", seed=1)
    before, after, new = rerun(workdir)
    assert after[MANIFEST[0]] == before[MANIFEST[0]], "the manifest does not read the weights"
    assert all(after[p] != before[p] for p in FEATURES + KMEANS)
    assert metric(new) != metric(old)


def test_missing_weights_file_fails_when_the_dag_is_built(workdir: Path):
    (workdir / "weights.pth").unlink()
    result = run_snakemake(workdir, CONFIG, METRICS, "-n")
    assert result.returncode != 0
    assert "backbone weights file weights.pth does not exist" in result.stdout + result.stderr


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_backbone_resize_reruns_the_features_and_scores_what_the_frame_shows(workdir: Path, mode: str):
    import numpy as np
    import zarr

    from useg.data.frame import Frame

    config = tiny_config(**{**CONFIG, "backbone": {**CONFIG["backbone"], "resize": mode}})
    before = mtimes(workdir, MANIFEST + FEATURES + KMEANS)
    check(run_snakemake(workdir, config, METRICS))
    after = mtimes(workdir, MANIFEST + FEATURES + KMEANS)
    assert after[MANIFEST[0]] == before[MANIFEST[0]] and all(after[p] != before[p] for p in FEATURES + KMEANS)
    assert zarr.open_group(str(workdir / FEATURES[1]), mode="r").attrs["resize"] == mode
    predictions = zarr.open_group(str(workdir / KMEANS[1]), mode="r")
    assert predictions.attrs["resize"] == mode
    frame = Frame(predictions["labels"].shape[1:], mode)
    (top, left, bottom, right), _ = frame.placement((40, 48))  # the folder dataset's images are 40 x 48
    seen = (bottom - top) * (right - left)
    assert seen == 40 * 48 if mode == "pad" else abs(seen - 40 * 40) <= 40  # crop: the centre 40 x 40, to a column
    confusion = json.loads((workdir / METRICS).read_text())["confusion"]
    assert np.sum(confusion) == 2 * seen, "every pixel the frame shows is scored once, and only those"
