"""Training views of TransFGU §4.2: random resized crop (labels cropped by RoI-Align), flip, colour jitter,
grayscale, Gaussian blur. Every random draw comes from an explicit torch.Generator."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from useg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from useg.methods.common import roi_crop


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the view augmentations."""

    crop_scale: tuple[float, float] = (0.3, 1.0)
    flip: float = 0.5
    jitter: float = 0.8
    grayscale: float = 0.2
    blur: float = 0.5


def _uniform(generator: torch.Generator, lo: float, hi: float, n: int = 1) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def random_boxes(n: int, height: int, width: int, scale: tuple[float, float], generator: torch.Generator) -> Tensor:
    """Random-resized-crop boxes [n, 4] (x0, y0, x1, y1): area fraction in `scale`, aspect in [3/4, 4/3]."""
    area = _uniform(generator, *scale, n) * height * width
    aspect = torch.exp(_uniform(generator, math.log(3 / 4), math.log(4 / 3), n))
    w = torch.sqrt(area * aspect).clamp(1, width)
    h = torch.sqrt(area / aspect).clamp(1, height)
    x0 = torch.rand(n, generator=generator) * (width - w)
    y0 = torch.rand(n, generator=generator) * (height - h)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def photometric(image: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Colour jitter, grayscale and Gaussian blur of one image [3, H, W] in [0, 1]."""
    if torch.rand(1, generator=generator) < cfg.jitter:
        b, c, s = _uniform(generator, 0.6, 1.4, 3).tolist()
        image = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(image, b), c), s)
    if torch.rand(1, generator=generator) < cfg.grayscale:
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if torch.rand(1, generator=generator) < cfg.blur:
        image = TF.gaussian_blur(image, [3, 3], [float(_uniform(generator, 0.1, 2.0))])
    return image.clamp(0, 1)


def normalise_batch(images: Tensor) -> Tensor:
    """[B, 3, H, W] in [0, 1] -> ImageNet-normalised."""
    mean = torch.from_numpy(IMAGENET_MEAN).to(images)[:, None, None]
    std = torch.from_numpy(IMAGENET_STD).to(images)[:, None, None]
    return (images - mean) / std


def training_views(
    images: Tensor,
    maps: Tensor,
    out_size: tuple[int, int],
    out_grid: tuple[int, int],
    cfg: AugmentConfig,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Augmented normalised views [B, 3, *out_size] and their response maps cropped by RoI-Align [B, L, *out_grid]."""
    height, width = images.shape[-2:]
    boxes = random_boxes(len(images), height, width, cfg.crop_scale, generator)
    views = roi_crop(images, boxes, out_size)
    crops = roi_crop(maps.float(), boxes, out_grid, spatial_scale=maps.shape[-1] / width)
    flip = torch.rand(len(images), generator=generator) < cfg.flip
    views[flip], crops[flip] = views[flip].flip(-1), crops[flip].flip(-1)
    views = torch.stack([photometric(v, cfg, generator) for v in views])
    return normalise_batch(views), crops
