"""Helpers shared by the benchmark scripts: synthetic image folders, manifests, JSON results."""

from __future__ import annotations

import csv
import json
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from useg.cluster.hungarian import hungarian_match
from useg.data.manifest import COLUMNS, ManifestRow
from useg.data.synthetic import ShapesConfig, write_shapes_dataset
from useg.eval.metrics import scores_from_mapping

# the embedded default backbone of config.yaml
TINY_VIT = dict(
    name="vit-tiny-p8", model="vit_tiny_patch16_224", patch_size=8, embed_dim=96, depth=4, num_heads=3,
    input_size=[96, 96], weights="random",
)  # fmt: skip
# the papers' ViT-S/8 (DINO architecture) at 224 x 224, random weights: same cost as the real ones
VIT_S8 = dict(
    name="vit-s8", model="vit_small_patch8_224", patch_size=8, embed_dim=384, depth=12, num_heads=6,
    input_size=[224, 224], weights="random",
)  # fmt: skip
BACKBONES = {"tiny": TINY_VIT, "vit-s8": VIT_S8}


def image_rows(folder: Path, count: int, image_size: int = 96, unique: int = 100) -> list[ManifestRow]:
    """`count` train images in `folder`: `unique` rendered scenes, repeated as separate files."""
    scenes = write_shapes_dataset(ShapesConfig(num_train=min(unique, count), num_val=0, image_size=image_size), folder / "scenes")
    sources = sorted((scenes / "images").iterdir())
    (folder / "images").mkdir(exist_ok=True)
    rows = []
    for i in range(count):
        path = folder / "images" / f"img{i:06d}.png"
        shutil.copyfile(sources[i % len(sources)], path)
        rows.append(ManifestRow(id=path.stem, path=str(path), width=image_size, height=image_size, split="train"))
    return rows


def write_manifest_csv(rows: list[ManifestRow], path: Path) -> Path:
    """manifest.csv of `rows` (what the manifest stage would write for them)."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        writer.writerows([getattr(row, c) for c in COLUMNS] for row in rows)
    return path


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def hungarian_miou(confusion: np.ndarray) -> float:
    """Mean IoU after one dataset-level Hungarian match of a [classes, labels] confusion matrix."""
    iou, _ = scores_from_mapping(confusion, hungarian_match(confusion))
    return float(np.nanmean(iou))


def save(result: dict[str, Any], out: str | Path) -> None:
    """Print `result` and write it as JSON to `out`."""
    text = json.dumps({**result, "machine": machine()}, indent=2)
    print(text)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text + "\n")
