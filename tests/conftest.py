"""Shared fixtures: tiny datasets written to temp folders, tiny backbone configs, paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from useg.backbones import BackboneConfig
from useg.data.synthetic import ShapesConfig, write_shapes_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CAMVID = SHARED / "data" / "camvid"

TINY_BACKBONE = dict(
    name="tiny",
    model="vit_tiny_patch16_224",
    patch_size=8,
    embed_dim=64,
    depth=2,
    num_heads=2,
    input_size=[32, 32],
    weights="random",
)


@pytest.fixture
def tiny_backbone_cfg() -> BackboneConfig:
    return BackboneConfig.from_dict(TINY_BACKBONE)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small rendered shapes dataset (read-only: copy before modifying)."""
    out = tmp_path_factory.mktemp("shapes") / "data"
    return write_shapes_dataset(ShapesConfig(num_train=6, num_val=4, image_size=48), out)


def write_image(path: Path, size: tuple[int, int] = (40, 48), mode: str = "RGB", seed: int = 0) -> Path:
    """Write a random image of (height, width) in a PIL mode."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (*size, channels), dtype=np.uint8)
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode=mode).save(path)
    return path


def write_mask(path: Path, size: tuple[int, int] = (40, 48), num_classes: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, num_classes, size, dtype=np.uint8), mode="L").save(path)
    return path


def make_folder_dataset(root: Path, count: int = 3, classes: int = 3, size: tuple[int, int] = (40, 48)) -> Path:
    """images/ + masks/ + classes.txt (+ splits.csv) with `count` random images."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        write_image(root / "images" / f"img{i}.png", size, seed=i)
        write_mask(root / "masks" / f"img{i}.png", size, classes, seed=i)
    (root / "classes.txt").write_text("\n".join(f"class{c}" for c in range(classes)) + "\n")
    (root / "splits.csv").write_text("stem,split\n" + "".join(f"img{i},{'val' if i == 0 else 'train'}\n" for i in range(count)))
    return root
