"""Sliding-window crops, the foreground prior and the crop bank stage (TransFGU §3.2, §4.2).

CropBank layout (`crops/shard-<i>.zarr`)::

    image   int64   [n]      manifest row of the image each crop comes from
    boxes   int32   [n, 4]   crop box (x0, y0, x1, y1) in pixels of the original image
    group   int8    [n]      1 foreground, 0 background, -1 neither (foreground prior)
    cls     float32 [n, D]   CLS token of the crop resized to `crop_size`

attrs: kind="CropBank", crop_size, betas, embed_dim, num_images, provenance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from useg.backbones.vit import ViTBackbone
from useg.data.frame import Frame
from useg.data.images import load_rgb
from useg.data.manifest import ManifestRow
from useg.data.transforms import normalise
from useg.errors import ConfigError
from useg.methods.common import roi_crop
from useg.stores.base import create_array, write_store
from useg.stores.features import FeatureStore, feature_frame

log = logging.getLogger(__name__)

KIND = "CropBank"
FOREGROUND, BACKGROUND, UNUSED = 1, 0, -1
FG_MIN_FRACTION, BG_MIN_FRACTION = 0.5, 0.8


def window_starts(length: int, side: int, step: int) -> list[int]:
    """Window offsets along one axis; a last window flush with the far edge covers any remainder."""
    starts = list(range(0, length - side + 1, step))
    if starts[-1] + side < length:
        starts.append(length - side)
    return starts


def crop_boxes(height: int, width: int, betas: list[float]) -> np.ndarray:
    """Square boxes [n, 4] (x0, y0, x1, y1) of side β·min(H, W), stride ½·β·min(H, W) (TransFGU §4.2)."""
    short = min(height, width)
    boxes = []
    for beta in betas:
        side = min(short, max(1, round(beta * short)))
        step = max(1, round(0.5 * beta * short))
        boxes += [(x, y, x + side, y + side) for y in window_starts(height, side, step) for x in window_starts(width, side, step)]
    return np.asarray(boxes, np.int64).reshape(-1, 4)


def foreground_mask(attn: np.ndarray) -> np.ndarray:
    """Binarised last-block CLS attention: head-mean above its mean value is foreground (TransFGU §4.2)."""
    mean_map = np.asarray(attn, np.float32).mean(axis=0)
    return mean_map > mean_map.mean()


def crop_groups(boxes: np.ndarray, fg_pixels: np.ndarray) -> np.ndarray:
    """Foreground (> 50 % fg pixels), background (> 80 % bg pixels) or unused, per box (TransFGU §4.2)."""
    integral = np.pad(fg_pixels.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    x0, y0, x1, y1 = boxes.T
    fg = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    fraction = fg / ((x1 - x0) * (y1 - y0))
    groups = np.full(len(boxes), UNUSED, np.int8)
    groups[fraction > FG_MIN_FRACTION] = FOREGROUND
    groups[1 - fraction > BG_MIN_FRACTION] = BACKGROUND
    return groups


def image_mask(mask: np.ndarray, frame: Frame, shape: tuple[int, int]) -> np.ndarray:
    """A grid mask of a feature frame back on the image (nearest); what the frame does not show is False."""
    return frame.unfit_labels(mask.astype(np.uint8), shape, fill=0).astype(bool)


@torch.inference_mode()
def crop_cls(backbone: ViTBackbone, image: np.ndarray, boxes: np.ndarray, crop_size: int, batch_size: int, device: torch.device) -> np.ndarray:
    """CLS tokens [n, D] of the image's crops, each resized to crop_size x crop_size (TransFGU eq. 3)."""
    tensor = normalise(image)[None].to(device)
    out = []
    for start in range(0, len(boxes), batch_size):
        chunk = torch.from_numpy(boxes[start : start + batch_size]).float()
        crops = roi_crop(tensor, chunk, (crop_size, crop_size), image_of_box=torch.zeros(len(chunk)))
        out.append(backbone(crops).cls.float().cpu().numpy())
    return np.concatenate(out)


def check_crop_size(crop_size: int, patch_size: int) -> None:
    """The crop working size must be a whole number of patches."""
    if crop_size % patch_size:
        raise ConfigError(f"transfgu.crop_size {crop_size} must be a multiple of the patch size {patch_size}")


def build_crop_bank(
    backbone: ViTBackbone,
    rows: list[tuple[int, ManifestRow]],
    features: FeatureStore,
    cfg: dict[str, Any],
    out_path: str | Path,
    prov: dict[str, Any],
    device: torch.device,
) -> None:
    """Crop every image of a shard, classify crops by the foreground prior, store their CLS tokens."""
    check_crop_size(cfg["crop_size"], backbone.patch_size)
    if list(features.index) != [i for i, _ in rows]:
        raise ConfigError(f"feature shard {features.path} does not hold the images of this crop shard")
    backbone = backbone.to(device).eval()
    boxes = [crop_boxes(row.height, row.width, cfg["betas"]) for _, row in rows]
    total = sum(len(b) for b in boxes)
    attrs = {"crop_size": cfg["crop_size"], "betas": cfg["betas"], "embed_dim": backbone.embed_dim, "num_images": len(rows)}
    with write_store(out_path, KIND, prov, **attrs) as group:
        arrays = {
            "image": create_array(group, "image", (total,), "int64", max(total, 1)),
            "boxes": create_array(group, "boxes", (total, 4), "int32", max(total, 1)),
            "group": create_array(group, "group", (total,), "int8", max(total, 1)),
            "cls": create_array(group, "cls", (total, backbone.embed_dim), "float32", 4096),
        }
        start, grid_frame = 0, Frame(features.grid, feature_frame([features]).mode)
        for n, ((index, row), box) in enumerate(tqdm(list(zip(rows, boxes)), desc=f"crops {Path(out_path).name}", unit="img")):
            image = load_rgb(row.path)
            fg = image_mask(foreground_mask(features.group["attn"][n]), grid_frame, image.shape[:2])
            stop = start + len(box)
            arrays["image"][start:stop] = index
            arrays["boxes"][start:stop] = box.astype(np.int32)
            arrays["group"][start:stop] = crop_groups(box, fg)
            arrays["cls"][start:stop] = crop_cls(backbone, image, box, cfg["crop_size"], cfg["crop_batch_size"], device)
            start = stop
        counts = np.bincount(arrays["group"][:] + 1, minlength=3)
    log.info("crops: %d crops of %d images (fg %d, bg %d, unused %d) -> %s", total, len(rows), counts[2], counts[1], counts[0], out_path)
