"""Training views of TransFGU §4.2: random resized crops of a batch (labels cropped by RoI-Align), flip and
the shared photometric augmentations of `useg.data.augment`; every draw comes from one numpy Generator."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from useg.data.augment import ViewAugment, normalise_images, photometric, sample_crop
from useg.methods.common import roi_crop


def view_augment(cfg: dict[str, Any]) -> ViewAugment:
    """The `transfgu.augment` section as shared view parameters (`crop_scale` is ViewAugment's `scale`)."""
    params = dict(cfg)
    return ViewAugment(scale=tuple(params.pop("crop_scale", (0.3, 1.0))), **params)


def random_crop_boxes(n: int, height: int, width: int, aug: ViewAugment, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """`n` random-resized-crop boxes [n, 4] (x0, y0, x1, y1) in pixels and their flip flags [n]."""
    crops = [sample_crop((height, width), aug, rng) for _ in range(n)]
    boxes = torch.tensor([[c.left, c.top, c.left + c.width, c.top + c.height] for c in crops], dtype=torch.float32)
    return boxes, torch.tensor([c.flip for c in crops], dtype=torch.bool)


def training_views(
    images: Tensor,
    maps: Tensor,
    out_size: tuple[int, int],
    out_grid: tuple[int, int],
    aug: ViewAugment,
    rng: np.random.Generator,
) -> tuple[Tensor, Tensor]:
    """Augmented normalised views [B, 3, *out_size] and their response maps cropped by RoI-Align [B, L, *out_grid]."""
    height, width = images.shape[-2:]
    boxes, flip = random_crop_boxes(len(images), height, width, aug, rng)
    views = roi_crop(images, boxes, out_size)
    crops = roi_crop(maps.float(), boxes, out_grid, spatial_scale=maps.shape[-1] / width)
    views[flip], crops[flip] = views[flip].flip(-1), crops[flip].flip(-1)
    views = torch.stack([photometric(v, aug, rng) for v in views])
    return normalise_images(views), crops
