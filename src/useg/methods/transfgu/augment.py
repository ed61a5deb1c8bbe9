"""Training views of TransFGU §4.2: crops of a batch (labels cropped by RoI-Align), flip and photometric
augmentations of `useg.data.augment`; every draw comes from a numpy Generator.

Two rules (`transfgu.augment_rule`): `batch` is the release's (a square side scale of 0.4–0.9 per image, then
one colour-jitter (0.8, 0.8, 0.8, 0.2) draw at p 0.3, grayscale at p 0.2 and a 3×3 blur at p 0.2 shared by the
whole batch); `image` is the paper's reading (random resized crops, DINO-strength photometrics per image,
`transfgu.augment` overriding them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from useg.data.augment import ViewAugment, normalise_images, photometric, sample_crop
from useg.errors import check_choice
from useg.methods.common import roi_crop

AUGMENT_RULES = ("batch", "image")
TEACHER_VIEWS = ("augmented", "whole")
RELEASE_PHOTOMETRIC = ViewAugment(
    jitter_p=0.3, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, grayscale_p=0.2,
    blur_p=0.2, blur_sigma=(1.0, 2.0), blur_kernel=3, solarize_p=0.0,
)  # fmt: skip
RELEASE_SIDE_SCALE = (0.4, 0.9)  # its torch.randint(4, 10) / 10


def view_augment(cfg: dict[str, Any]) -> ViewAugment:
    """The `transfgu.augment` section as shared view parameters (`crop_scale` is ViewAugment's `scale`)."""
    params = dict(cfg)
    return ViewAugment(scale=tuple(params.pop("crop_scale", (0.3, 1.0))), **params)


def half_size(input_size: tuple[int, int], patch: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Training view size (H/2, W/2) rounded down to whole patches (at least one), and its grid (§4.2)."""
    grid = tuple(max(1, s // 2 // patch) for s in input_size)
    return (grid[0] * patch, grid[1] * patch), grid  # type: ignore[return-value]


def random_crop_boxes(n: int, height: int, width: int, aug: ViewAugment, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """`n` random-resized-crop boxes [n, 4] (x0, y0, x1, y1) in pixels and their flip flags [n]."""
    crops = [sample_crop((height, width), aug, rng) for _ in range(n)]
    boxes = torch.tensor([[c.left, c.top, c.left + c.width, c.top + c.height] for c in crops], dtype=torch.float32)
    return boxes, torch.tensor([c.flip for c in crops], dtype=torch.bool)


def side_scale_box(height: int, width: int, scales: tuple[float, float], rng: np.random.Generator) -> tuple[Tensor, bool]:
    """The release's crop: both sides × one scale s from the tenths in `scales`, a uniform corner, a flip at p ½."""
    s = rng.integers(round(scales[0] * 10), round(scales[1] * 10) + 1) / 10
    h, w = int(height * s), int(width * s)
    y, x = int((height - h) * rng.random()), int((width - w) * rng.random())
    return torch.tensor([x, y, x + w, y + h], dtype=torch.float32), bool(rng.random() < 0.5)


def crop_views(
    images: Tensor, maps: Tensor, boxes: Tensor, flip: Tensor, out_size: tuple[int, int], out_grid: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Images [B, 3, H, W] and response maps [B, L, h, w] cropped to `boxes` by RoI-Align and flipped where `flip`."""
    views = roi_crop(images, boxes, out_size)
    crops = roi_crop(maps.float(), boxes, out_grid, spatial_scale=maps.shape[-1] / images.shape[-1])
    views[flip], crops[flip] = views[flip].flip(-1), crops[flip].flip(-1)
    return views, crops


def draw_boxes(n: int, height: int, width: int, aug: ViewAugment, rule: str, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """`n` crop boxes [n, 4] and flips [n] of `rule`: the release's side-scale crops (`batch`) or random resized crops."""
    check_choice("transfgu.augment_rule", rule, AUGMENT_RULES)
    if rule == "image":
        return random_crop_boxes(n, height, width, aug, rng)
    drawn = [side_scale_box(height, width, RELEASE_SIDE_SCALE, rng) for _ in range(n)]
    return torch.stack([b for b, _ in drawn]), torch.tensor([f for _, f in drawn], dtype=torch.bool)


def per_image_photometric(views: Tensor, aug: ViewAugment, rule: str, rng: np.random.Generator) -> Tensor:
    """Views [B, 3, h, w] in [0, 1] with one photometric draw per image under the `image` rule (unchanged under `batch`)."""
    return torch.stack([photometric(v, aug, rng) for v in views]) if rule == "image" else views


def bootstrap_sample(
    image: np.ndarray,
    maps: np.ndarray,
    rng: np.random.Generator,
    *,
    rule: str,
    aug: ViewAugment,
    out_size: tuple[int, int],
    out_grid: tuple[int, int],
    whole: bool,
) -> dict[str, Tensor]:
    """One training sample, drawn in the loader worker from the sample's generator: the cropped view in [0, 1]
    (photometrics applied here under the `image` rule), its cropped maps, box, flip, and the whole image if `whole`."""
    picture = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None] / 255
    boxes, flip = draw_boxes(1, *image.shape[:2], aug, rule, rng)
    views, crops = crop_views(picture, torch.from_numpy(maps.astype(np.float32))[None], boxes, flip, out_size, out_grid)
    sample = {"view": per_image_photometric(views, aug, rule, rng)[0], "maps": crops[0], "box": boxes[0], "flip": flip[0]}
    if whole:
        sample["image"] = picture[0]
    return sample


def stack_samples(items: list[tuple[int, dict[str, Tensor]]]) -> dict[str, Tensor]:
    """Collate (index, sample) items into one batch of stacked fields and the indices."""
    batch = {name: torch.stack([s[name] for _, s in items]) for name in items[0][1]}
    return {**batch, "index": torch.tensor([i for i, _ in items])}


def batch_photometric(views: Tensor, rule: str, rng: np.random.Generator) -> Tensor:
    """Normalised views; under the `batch` rule after one release photometric draw shared by the batch."""
    return normalise_images(photometric(views, RELEASE_PHOTOMETRIC, rng) if rule == "batch" else views)
