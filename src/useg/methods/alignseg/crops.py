"""Training crops of AlignSeg §IV-B: per image one global and v_l local views, batched by position.

The release's crops (github.com/yliu1229/AlignSeg, model/transforms.py with train_voc_config.yml):
random resized crops at one size for global and local views, a local crop accepted when its box
meets the global one over more than 5 % of the image area, no flips, no colour augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from useg.data.augment import OverlapRule, View, ViewAugment, global_local_views

NO_PHOTOMETRIC = {"flip_p": 0.0, "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0}
"""Probabilities under `alignseg.augment` overrides: the release neither flips nor colour-augments its crops."""


def crop_augment(size: list[int], scale: list[float], overrides: dict[str, float]) -> ViewAugment:
    """A crop's augmentation: size and area scale, no flip or photometric change unless `overrides` turn one on."""
    return ViewAugment(size=(size[0], size[1]), scale=(scale[0], scale[1]), **{**NO_PHOTOMETRIC, **overrides})


@dataclass(frozen=True)
class CropConfig:
    """Global and local view augmentations, number of local crops v_l and the minimum overlap and its rule."""

    global_aug: ViewAugment
    local_aug: ViewAugment
    num_local: int = 2
    min_overlap: float = 0.05
    overlap_rule: OverlapRule = "area"


@dataclass
class CropBatch:
    """Normalised global views [B, 3, Hg, Wg] and, per local crop v, local views [B, 3, Hl, Wl]."""

    global_views: Tensor
    local_views: list[Tensor]


def image_crops(cfg: CropConfig, patch: int, image: np.ndarray, rng: np.random.Generator) -> tuple[View, list[View]]:
    """The global and local views of one image (the input pipeline's sample, drawn in the loader's worker)."""
    return global_local_views(image, cfg.global_aug, cfg.local_aug, cfg.num_local, cfg.min_overlap, patch, rng, cfg.overlap_rule)


def collate_crops(num_local: int, items: list[tuple[int, tuple[View, list[View]]]]) -> CropBatch:
    """The input pipeline's collate: (index, views) items -> one CropBatch."""
    return stack_crops([views for _, views in items], num_local)


def stack_crops(views: list[tuple[View, list[View]]], num_local: int) -> CropBatch:
    """Stack the views of a batch by crop position."""
    global_views = torch.stack([g.image for g, _ in views])
    local_views = [torch.stack([locals_[v].image for _, locals_ in views]) for v in range(num_local)]
    return CropBatch(global_views, local_views)
