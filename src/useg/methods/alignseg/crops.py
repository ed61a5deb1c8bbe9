"""Training crops of AlignSeg §IV-B: per image one global and v_l local views, batched by position."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from useg.data.augment import ViewAugment, global_local_views


@dataclass(frozen=True)
class CropConfig:
    """Global and local view augmentations, number of local crops v_l and the minimum overlap."""

    global_aug: ViewAugment
    local_aug: ViewAugment
    num_local: int = 2
    min_overlap: float = 0.3


@dataclass
class CropBatch:
    """Normalised global views [B, 3, Hg, Wg] and, per local crop v, local views [B, 3, Hl, Wl]."""

    global_views: Tensor
    local_views: list[Tensor]


def make_crop_batch(images: list[np.ndarray], cfg: CropConfig, patch: int, rngs: list[np.random.Generator]) -> CropBatch:
    """Sample the views of every image (image i draws from rngs[i]) and stack them by crop position."""
    views = [
        global_local_views(img, cfg.global_aug, cfg.local_aug, cfg.num_local, cfg.min_overlap, patch, rng)
        for img, rng in zip(images, rngs, strict=True)
    ]
    global_views = torch.stack([g.image for g, _ in views])
    local_views = [torch.stack([locals_[v].image for _, locals_ in views]) for v in range(cfg.num_local)]
    return CropBatch(global_views, local_views)
