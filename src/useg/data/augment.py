"""Augmented views that remember where they came from.

Each view is a random resized crop (optionally flipped horizontally) of the original image with
photometric augmentations. It keeps its crop box in the original image and its flip flag, so every
patch of the view has a 2-D position in the original image frame (CrOC Fig. 4): E in R^{N x 2},
rows (y, x) normalised by the original height and width to [0, 1]. Multi-crop views (AlignSeg
§IV-B): one global view and local views that each overlap it by at least a minimum share, of
the image area (the AlignSeg release) or of the local view's patches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import Tensor

from useg.data.transforms import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class ViewAugment:
    """Parameters of the view augmentations (DINO global views by default)."""

    size: tuple[int, int] = (224, 224)
    scale: tuple[float, float] = (0.4, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    solarize_p: float = 0.1
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 0  # 0: 2·round(2σ) + 1 (DINO); else a fixed odd side (the TransFGU release's 3)


@dataclass(frozen=True)
class Crop:
    """Crop box in original pixels (top, left, height, width) and horizontal flip flag."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


@dataclass
class View:
    """One augmented view: normalised image [3, h, w], its crop, and patch positions [N, 2]."""

    image: Tensor
    crop: Crop
    coords: Tensor


def sample_crop(shape: tuple[int, int], aug: ViewAugment, rng: np.random.Generator) -> Crop:
    """A random resized crop box (area fraction in `scale`, aspect in `ratio`) and a flip."""
    height, width = shape
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*aug.scale)
        aspect = math.exp(rng.uniform(math.log(aug.ratio[0]), math.log(aug.ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return Crop(top, left, h, w, bool(rng.random() < aug.flip_p))
    return Crop(0, 0, height, width, bool(rng.random() < aug.flip_p))


def patch_coords(crop: Crop, size: tuple[int, int], patch: int, original: tuple[int, int]) -> Tensor:
    """Centre (y, x) of every patch of a view in the original frame, over [0, 1] (row-major) [N, 2]."""
    out_h, out_w = size
    ys = (np.arange(out_h // patch) + 0.5) * patch
    xs = (np.arange(out_w // patch) + 0.5) * patch
    if crop.flip:
        xs = out_w - xs
    y = (crop.top + ys * crop.height / out_h) / original[0]
    x = (crop.left + xs * crop.width / out_w) / original[1]
    grid = np.stack(np.meshgrid(y, x, indexing="ij"), axis=-1).reshape(-1, 2)
    return torch.from_numpy(grid.astype(np.float32))


def photometric(image: Tensor, aug: ViewAugment, rng: np.random.Generator) -> Tensor:
    """Colour jitter, grayscale, Gaussian blur and solarisation of a [3, h, w] image in [0, 1]; given a batch
    [B, 3, h, w], one draw applies to every image of it."""
    if rng.random() < aug.jitter_p:
        ops = [
            lambda x: TF.adjust_brightness(x, rng.uniform(1 - aug.brightness, 1 + aug.brightness)),
            lambda x: TF.adjust_contrast(x, rng.uniform(1 - aug.contrast, 1 + aug.contrast)),
            lambda x: TF.adjust_saturation(x, rng.uniform(1 - aug.saturation, 1 + aug.saturation)),
            lambda x: TF.adjust_hue(x, rng.uniform(-aug.hue, aug.hue)),
        ]
        for i in rng.permutation(len(ops)):
            image = ops[i](image)
    if rng.random() < aug.grayscale_p:
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if rng.random() < aug.blur_p:
        sigma = float(rng.uniform(*aug.blur_sigma))
        kernel = aug.blur_kernel or 2 * max(1, round(sigma * 2)) + 1
        image = TF.gaussian_blur(image, [kernel, kernel], [sigma, sigma])
    if rng.random() < aug.solarize_p:
        image = torch.where(image >= 0.5, 1 - image, image)
    return image.clamp(0, 1)


def normalise_images(images: Tensor) -> Tensor:
    """[..., 3, H, W] in [0, 1] -> normalised with ImageNet statistics."""
    mean = torch.from_numpy(IMAGENET_MEAN).to(images)[:, None, None]
    std = torch.from_numpy(IMAGENET_STD).to(images)[:, None, None]
    return (images - mean) / std


def make_view(image: np.ndarray, aug: ViewAugment, patch: int, rng: np.random.Generator) -> View:
    """One augmented view of an HxWx3 uint8 image with its crop and patch positions."""
    return render_view(image, sample_crop(image.shape[:2], aug, rng), aug, patch, rng)


def render_view(image: np.ndarray, crop: Crop, aug: ViewAugment, patch: int, rng: np.random.Generator) -> View:
    """The view of an HxWx3 uint8 image inside `crop`: resized, flipped, photometric, normalised."""
    region = image[crop.top : crop.top + crop.height, crop.left : crop.left + crop.width]
    region = cv2.resize(region, (aug.size[1], aug.size[0]), interpolation=cv2.INTER_LINEAR)
    if crop.flip:
        region = region[:, ::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(region.transpose(2, 0, 1))).float() / 255
    tensor = photometric(tensor, aug, rng)
    return View(normalise_images(tensor), crop, patch_coords(crop, aug.size, patch, image.shape[:2]))


def two_views(
    image: np.ndarray, augs: tuple[ViewAugment, ViewAugment], patch: int, rng: np.random.Generator
) -> tuple[View, View]:
    """Two independent global views of the same image, the first drawn with augs[0], the second with
    augs[1] (DINO's global views differ in blur and solarisation)."""
    return make_view(image, augs[0], patch, rng), make_view(image, augs[1], patch, rng)


def coords_in_crop(coords: Tensor, crop: Crop, original: tuple[int, int]) -> Tensor:
    """Positions [N, 2] (y, x) in the original frame over [0, 1] -> the same points in the frame of
    `crop`'s view over [0, 1] (flip applied); points outside the crop fall outside [0, 1]."""
    y = (coords[:, 0] * original[0] - crop.top) / crop.height
    x = (coords[:, 1] * original[1] - crop.left) / crop.width
    if crop.flip:
        x = 1 - x
    return torch.stack([y, x], dim=1)


def overlap_share(local: Crop, global_crop: Crop, size: tuple[int, int], patch: int, original: tuple[int, int]) -> float:
    """Share of the local view's patch centres that lie inside the global crop."""
    inside = coords_in_crop(patch_coords(local, size, patch, original), global_crop, original)
    return float(((inside >= 0) & (inside <= 1)).all(dim=1).float().mean())


def intersection_share(a: Crop, b: Crop, original: tuple[int, int]) -> float:
    """Area of the intersection of two crop boxes as a share of the original image's area."""
    height = max(0, min(a.top + a.height, b.top + b.height) - max(a.top, b.top))
    width = max(0, min(a.left + a.width, b.left + b.width) - max(a.left, b.left))
    return height * width / (original[0] * original[1])


OverlapRule = Literal["area", "patches"]


def overlaps_enough(
    local: Crop, global_crop: Crop, rule: OverlapRule, min_overlap: float, size: tuple[int, int], patch: int, original: tuple[int, int]
) -> bool:
    """The minimum-intersection constraint of AlignSeg §IV-B between a local and the global crop.

    "area" (AlignSeg release): the boxes' intersection covers more than `min_overlap` of the image
    area; "patches": at least `min_overlap` of the local view's patch centres lie inside the global crop.
    """
    if rule == "area":
        return intersection_share(local, global_crop, original) > min_overlap
    return overlap_share(local, global_crop, size, patch, original) >= min_overlap


def sample_local_crop(
    global_crop: Crop,
    original: tuple[int, int],
    aug: ViewAugment,
    patch: int,
    min_overlap: float,
    rng: np.random.Generator,
    tries: int = 50,
    rule: OverlapRule = "patches",
) -> Crop:
    """A local crop that overlaps `global_crop` by `min_overlap` under `rule` (see `overlaps_enough`).

    Rejection sampling; after `tries` misses the crop is moved inside the global box (same size),
    which satisfies the patch rule always and the area rule whenever the crop is that large.
    """
    for _ in range(tries):
        crop = sample_crop(original, aug, rng)
        if overlaps_enough(crop, global_crop, rule, min_overlap, aug.size, patch, original):
            return crop
    top = min(max(crop.top, global_crop.top), max(global_crop.top + global_crop.height - crop.height, 0))
    left = min(max(crop.left, global_crop.left), max(global_crop.left + global_crop.width - crop.width, 0))
    return Crop(top, left, crop.height, crop.width, crop.flip)


def global_local_views(
    image: np.ndarray,
    global_aug: ViewAugment,
    local_aug: ViewAugment,
    num_local: int,
    min_overlap: float,
    patch: int,
    rng: np.random.Generator,
    overlap_rule: OverlapRule = "patches",
) -> tuple[View, list[View]]:
    """One global view and `num_local` local views, each overlapping the global one (AlignSeg §IV-B)."""
    original = image.shape[:2]
    global_view = make_view(image, global_aug, patch, rng)
    local = []
    for _ in range(num_local):
        crop = sample_local_crop(global_view.crop, original, local_aug, patch, min_overlap, rng, rule=overlap_rule)
        local.append(render_view(image, crop, local_aug, patch, rng))
    return global_view, local
