"""Object mask distillation from the last block's q and k (MaskDistill §3.2, eq. 1–2), with the release's
three extras as switches (`MaskRule`): a_CLS over the first heads only, a_CLS kept on its top-mass set,
and the connected component of the source patch. Masks are mined in the working frame, or (`mask_short_side`)
as the release mines them: each image at its own size, short side S, then carried into the frame."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm import tqdm

from useg.backbones.vit import ViTBackbone
from useg.data.augment import normalise_images
from useg.data.frame import Frame
from useg.data.images import load_rgb
from useg.data.manifest import ManifestRow, row_keys
from useg.data.pipeline import ordered_batches, ordered_samples
from useg.data.transforms import normalise, resize_labels, resize_rgb
from useg.errors import ConfigError
from useg.stores.background import stream_to_store
from useg.stores.maskbank import MaskBankWriter, grid_to_pixels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaskRule:
    """The mask rule's settings: top-k fraction, a_CLS heads (n > 0: the first n, n < 0: all but the last |n|,
    None: all), a_CLS mass kept (None: all) and whether only the source patch's connected component stays."""

    topk: float = 0.4
    cls_heads: int | None = None
    cls_mass: float | None = None
    connected: bool = False

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> MaskRule:
        """The rule of a `maskdistill` config section."""
        return cls(cfg["topk"], cfg["cls_heads"], cfg["cls_mass"], cfg["connected"])


def head_subset(num_heads: int, cls_heads: int | None) -> slice:
    """The heads a_CLS averages: the first n (n > 0), all but the last |n| (n < 0), or all (None)."""
    if cls_heads is not None and (cls_heads == 0 or abs(cls_heads) >= num_heads + (cls_heads > 0)):
        raise ConfigError(
            f"maskdistill.cls_heads {cls_heads} leaves no head or asks for more than the backbone's {num_heads}:"
            f" use 1..{num_heads}, -1..-{num_heads - 1} or null (all heads)"
        )
    return slice(None, cls_heads)


def cls_affinity(q: torch.Tensor, k: torch.Tensor, prefix: int = 1, cls_heads: int | None = None) -> torch.Tensor:
    """a_CLS = mean over heads of q_CLS · k_Iᵀ, q/k [B, H, T, d] -> [B, N] (MaskDistill eq. 1); `cls_heads`
    selects the heads (the release averages the first 5 of ViT-S's 6)."""
    heads = head_subset(q.shape[1], cls_heads)
    q, k = q[:, heads], k[:, heads]
    return torch.einsum("bhd,bhnd->bn", q[:, :, 0], k[:, :, prefix:]) / q.shape[1]


def mass_set(a_cls: torch.Tensor, mass: float) -> torch.Tensor:
    """Boolean [B, N]: the largest a_CLS values that hold the top `mass` of its sum (DINO's attention
    threshold, as the release applies it to a_CLS: values sorted ascending, kept where the normalised
    cumulative sum exceeds 1 − mass)."""
    values, order = torch.sort(a_cls, dim=1)
    cumulative = torch.cumsum(values / values.sum(dim=1, keepdim=True), dim=1)
    return torch.zeros_like(a_cls, dtype=torch.bool).scatter_(1, order, cumulative > 1 - mass)


def source_component(masks: torch.Tensor, source: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Masks [B, N] cut to the 4-connected component that holds each source patch (LOST; the release's
    `scipy.ndimage.label`); a source outside its mask selects the background component, as the release does."""
    out = []
    for mask, s in zip(masks.reshape(len(masks), *grid).cpu().numpy(), source.tolist()):
        labels = ndimage.label(mask)[0]
        out.append(labels == labels[s // grid[1], s % grid[1]])
    return torch.from_numpy(np.stack(out).reshape(len(out), -1)).to(masks.device)


def patch_affinity(k: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """A_I = mean over heads of k_I · k_Iᵀ, k [B, H, T, d] -> [B, N, N] (MaskDistill eq. 2)."""
    keys = k[:, :, prefix:]
    return torch.einsum("bhnd,bhmd->bnm", keys, keys) / k.shape[1]


def top_k_count(num_patches: int, fraction: float) -> int:
    """Number of proposals |P| for a top-k fraction: ⌈fraction · N⌉, at least 1."""
    return max(1, min(num_patches, math.ceil(fraction * num_patches - 1e-9)))


def proposals(a_cls: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean [B, N] set P of the top-k a_CLS patches; ties go to the lower patch index."""
    order = torch.sort(a_cls, dim=1, descending=True, stable=True).indices
    keep = order[:, : top_k_count(a_cls.shape[1], fraction)]
    return torch.zeros_like(a_cls, dtype=torch.bool).scatter_(1, keep, True)


def object_masks(a_cls: torch.Tensor, affinity: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks M_s [B, N] and sources s [B] (§3.2): P′ = {j ∈ P : A[s, j] > 0}, M[j] = Σ_{i∈P′} A[i, j] > 0."""
    in_p = proposals(a_cls, fraction)
    source = torch.sort(a_cls, dim=1, descending=True, stable=True).indices[:, 0]
    to_source = affinity[torch.arange(len(source)), source]  # A[s, j]
    in_p_prime = in_p & (to_source > 0)
    summed = torch.einsum("bi,bij->bj", in_p_prime.to(affinity.dtype), affinity)
    return summed > 0, source


def rule_masks(q: torch.Tensor, k: torch.Tensor, prefix: int, grid: tuple[int, int], rule: MaskRule) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks [B, N] and sources [B] of the last block's q/k [B, H, T, d] under `rule` (§3.2 and the release's extras)."""
    a_cls = cls_affinity(q, k, prefix, rule.cls_heads)
    if rule.cls_mass is not None:
        a_cls = a_cls * mass_set(a_cls, rule.cls_mass)
    masks, source = object_masks(a_cls, patch_affinity(k, prefix), rule.topk)
    return (source_component(masks, source, grid) if rule.connected else masks), source


def upsample_masks(masks: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Patch masks [B, N] -> pixel masks [B, H, W] by nearest-neighbour upsampling."""
    grid_masks = masks.reshape(len(masks), 1, *grid).float()
    return F.interpolate(grid_masks, size=size, mode="nearest")[:, 0] > 0


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box (x0, y0, x1, y1) of a binary [H, W] mask, x1/y1 exclusive; zeros for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return np.zeros(4, np.int32)
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.int32)


def masked_images(images: torch.Tensor, masks: torch.Tensor, background: str) -> torch.Tensor:
    """Images [B, 3, H, W] (normalised) with the background zeroed (`zero`: the mean colour) or blurred (`blur`)."""
    keep = masks[:, None].to(images.dtype)
    if background == "zero":
        return images * keep
    from torchvision.transforms.functional import gaussian_blur

    side = max(images.shape[-2:]) // 8 * 2 + 1  # a kernel about a quarter of the image
    return images * keep + gaussian_blur(images, [side, side]) * (1 - keep)


CLUSTER_INPUTS = ("box_crop", "masked")


def original_box(box: np.ndarray, frame: Frame, original: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box (x0, y0, x1, y1) of the working frame in the original image's pixels (H, W), inside the image and
    at least one pixel wide and high; an empty box (no mask) becomes the whole image."""
    if not (box[2] > box[0] and box[3] > box[1]):
        return 0, 0, original[1], original[0]
    (top, left), (bottom, right) = frame.to_image(box[1], box[0], original), frame.to_image(box[3], box[2], original)
    x0, y0 = min(max(0, round(left)), original[1] - 1), min(max(0, round(top)), original[0] - 1)
    return x0, y0, max(x0 + 1, min(original[1], round(right))), max(y0 + 1, min(original[0], round(bottom)))


def padded_crop(image: np.ndarray, box: tuple[int, int, int, int], patch: int) -> torch.Tensor:
    """The box cut from an RGB image at its own resolution, normalised, zero-padded at the bottom and right
    to whole patches [1, 3, H', W'] (the release's clustering input)."""
    x0, y0, x1, y1 = box
    return pad_to_patches(normalise_images(torch.from_numpy(image[y0:y1, x0:x1]).permute(2, 0, 1).float() / 255), patch)[None]


def pad_to_patches(image: torch.Tensor, patch: int) -> torch.Tensor:
    """An image [..., H, W] zero-padded at the bottom and right to whole patches (the release's ViT inputs)."""
    height, width = image.shape[-2:]
    return F.pad(image, (0, -width % patch, 0, -height % patch))


@torch.inference_mode()
def box_crop_cls(
    backbone: ViTBackbone, rows: list[ManifestRow], boxes: np.ndarray, frame: Frame | None, device: torch.device
) -> np.ndarray:
    """CLS tokens [B, D] of each mask's box cut from the original image, one forward per crop at its native
    resolution (the release's clustering input; §3.2 clusters masked images instead); boxes in `frame`'s
    pixels, or in the image's own with `frame` None."""
    out = []
    for row, box in zip(rows, boxes):
        image = load_rgb(row.path)
        crop = padded_crop(image, original_box(box, frame or Frame(image.shape[:2]), image.shape[:2]), backbone.patch_size)
        out.append(backbone(crop.to(device)).cls.float().cpu().numpy())
    return np.concatenate(out)


@torch.inference_mode()
def distill_batch(backbone: ViTBackbone, images: torch.Tensor, rule: MaskRule, background: str | None) -> dict[str, np.ndarray]:
    """Object masks, boxes, sources and, unless `background` is None, the masked-image CLS tokens of one batch."""
    last = backbone.depth - 1
    out = backbone(images, qkv_blocks=(last,))
    q, k, _ = out.qkv[last]
    masks, source = rule_masks(q, k, backbone.num_prefix_tokens, out.grid, rule)
    pixels = upsample_masks(masks, out.grid, tuple(images.shape[-2:]))
    batch = {
        "masks": masks.reshape(len(images), *out.grid).cpu().numpy().astype(np.uint8),
        "boxes": np.stack([mask_box(m) for m in pixels.cpu().numpy()]),
        "source": source.cpu().numpy().astype(np.int32),
    }
    if background is not None:
        batch["cls"] = backbone(masked_images(images, pixels, background)).cls.float().cpu().numpy()
    return batch


def short_side_shape(shape: tuple[int, int], side: int) -> tuple[int, int]:
    """(h, w) of an image of `shape` with its short side at `side` and the long side scaled with it, truncated
    (torchvision's Resize(int), the release's mask input: gen_masks.py `transforms.Resize(640)`)."""
    height, width = shape
    if height <= width:
        return side, int(side * width / height)
    return int(side * height / width), side


@dataclass(frozen=True)
class ShortSideSample:
    """The release's mask input, made in the loader: the image at `short_side_shape`, normalised, zero-padded at
    the bottom and right to whole patches -> (image [3, H', W'], its resized (h, w), its original (H, W))."""

    side: int
    patch: int

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        resized = short_side_shape(image.shape[:2], self.side)
        return pad_to_patches(normalise(resize_rgb(image, resized)), self.patch), resized, image.shape[:2]


def patch_shares(mask: np.ndarray, frame: Frame, grid: tuple[int, int]) -> np.ndarray:
    """An image-sized binary mask brought into `frame` (nearest) and pooled to its patch grid [h, w]: the
    share of each patch's pixels in the mask."""
    (gh, gw), (ph, pw) = grid, (frame.size[0] // grid[0], frame.size[1] // grid[1])
    fitted = frame.fit_labels(mask.astype(np.uint8), 0)[: gh * ph, : gw * pw]
    return fitted.reshape(gh, ph, gw, pw).mean(axis=(1, 3))


def grid_mask_and_source(
    image_mask: np.ndarray, source_pixels: tuple[int, int, int, int], frame: Frame, grid: tuple[int, int]
) -> tuple[np.ndarray, int]:
    """An image-sized object mask and its source patch's box (top, left, bottom, right) in image pixels, in the
    frame's patch grid: the patches at least half in the mask, and the patch holding most of the source."""
    source = np.zeros(image_mask.shape, np.uint8)
    top, left, bottom, right = source_pixels
    source[top:bottom, left:right] = 1
    mask = (patch_shares(image_mask, frame, grid) >= 0.5).astype(np.uint8)
    return mask, int(np.argmax(patch_shares(source, frame, grid)))


def image_masks(
    masks: torch.Tensor, source: torch.Tensor, grid: tuple[int, int], patch: int,
    resized: list[tuple[int, int]], originals: list[tuple[int, int]],
) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:  # fmt: skip
    """Masks [B, N] of padded short-side inputs at each original image's size (upsampled by the patch, cut to
    the resized image, resized nearest, as the release writes them), with their source patches' boxes there."""
    pixels = upsample_masks(masks, grid, (grid[0] * patch, grid[1] * patch)).cpu().numpy()
    out = []
    for mask, s, (h, w), (height, width) in zip(pixels, source.tolist(), resized, originals):
        row, col = divmod(s, grid[1])
        sy, sx = height / h, width / w
        box = (int(row * patch * sy), int(col * patch * sx), math.ceil((row + 1) * patch * sy), math.ceil((col + 1) * patch * sx))
        out.append((resize_labels(mask[:h, :w].astype(np.uint8), (height, width)), box))
    return out


ShortSideInput = tuple[torch.Tensor, tuple[int, int], tuple[int, int]]  # a ShortSideSample


def same_size_groups(samples: list[ShortSideInput]) -> list[list[int]]:
    """Positions of the samples grouped by input size, in order of first appearance (one forward per group)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (image, _, _) in enumerate(samples):
        groups.setdefault(tuple(image.shape), []).append(i)
    return list(groups.values())


@torch.inference_mode()
def distill_group(
    backbone: ViTBackbone, group: list[ShortSideInput], rule: MaskRule, background: str | None, frame: Frame,
    grid: tuple[int, int], device: torch.device,
) -> list[dict[str, Any]]:  # fmt: skip
    """Per image of a group of one input size: its mask and source in the frame's patch `grid` (`mask`, `source`),
    its mask's box in the original image (`image_box`) and, unless `background` is None, the masked image's CLS."""
    images = torch.stack([image for image, _, _ in group]).to(device)
    out = backbone(images, qkv_blocks=(backbone.depth - 1,))
    q, k, _ = out.qkv[backbone.depth - 1]
    masks, source = rule_masks(q, k, backbone.num_prefix_tokens, out.grid, rule)
    carried = image_masks(masks, source, out.grid, backbone.patch_size, [r for _, r, _ in group], [o for _, _, o in group])
    records = []
    for image_mask, source_box in carried:
        mask, grid_source = grid_mask_and_source(image_mask, source_box, frame, grid)
        records.append({"mask": mask, "source": grid_source, "image_box": mask_box(image_mask)})
    if background is not None:
        pixels = upsample_masks(masks, out.grid, tuple(images.shape[-2:]))
        for record, token in zip(records, backbone(masked_images(images, pixels, background)).cls.float().cpu().numpy()):
            record["cls"] = token
    return records


def distill_short_side(
    backbone: ViTBackbone, samples: list[ShortSideInput], rule: MaskRule, background: str | None, frame: Frame, device: torch.device
) -> dict[str, np.ndarray]:
    """`distill_batch` for images at their own short-side sizes (`ShortSideSample`), the masks carried into the
    frame's patch grid; `image_boxes` holds each mask's box in the original image (the box crop's)."""
    grid, records = backbone.grid_for(*frame.size), [{}] * len(samples)
    for members in same_size_groups(samples):
        for i, record in zip(members, distill_group(backbone, [samples[i] for i in members], rule, background, frame, grid, device)):
            records[i] = record
    masks = np.stack([r["mask"] for r in records])
    batch = {
        "masks": masks,
        "boxes": np.stack([mask_box(m) for m in grid_to_pixels(masks, grid, frame.size)]),
        "source": np.array([r["source"] for r in records], np.int32),
        "image_boxes": np.stack([r["image_box"] for r in records]),
    }
    if background is not None:
        batch["cls"] = np.stack([r["cls"] for r in records])
    return batch


def build_mask_bank(
    backbone: ViTBackbone,
    rows: list[tuple[int, ManifestRow]],
    cfg: dict[str, Any],
    frame: Frame,
    out_path: str | Path,
    prov: dict[str, Any],
    device: torch.device,
    threads: int = 1,
    workers: int | None = None,
) -> None:
    """Distil one object mask per image of a shard into a MaskBank (§3.2), with the CLS token each mask
    is clustered by (`maskdistill.cluster_input`: its box cut from the image, or the masked image);
    decoding in `workers` loader workers (default `stream_workers`), the store written in the background."""
    backbone = backbone.to(device).eval()
    grid = backbone.grid_for(*frame.size)
    index, ids = row_keys(rows)
    rule, by_box, side = MaskRule.from_config(cfg), cfg["cluster_input"] == "box_crop", cfg.get("mask_short_side")
    background = None if by_box else cfg["background"]
    attrs = {**frame.attrs(), "patch_size": backbone.patch_size, "topk": cfg["topk"], "background": cfg["background"],
             "cluster_input": cfg["cluster_input"], "mask_short_side": side}  # fmt: skip
    coverage: list[float] = []

    def distil(start: int, images: Any) -> dict[str, np.ndarray]:
        if side is None:
            batch, boxes_frame = distill_batch(backbone, images, rule, background), frame
        else:
            batch, boxes_frame = distill_short_side(backbone, images, rule, background, frame, device), None
        image_boxes = batch.pop("image_boxes", batch["boxes"])
        if by_box:
            chunk = [row for _, row in rows[start : start + len(images)]]
            batch["cls"] = box_crop_cls(backbone, chunk, image_boxes, boxes_frame, device)
        coverage.append(float(batch["masks"].mean(axis=(1, 2)).sum()))
        return batch

    paths = [row.path for _, row in rows]
    if side is None:
        batches = ordered_batches(paths, frame, cfg["batch_size"], threads, device, workers)
    else:
        batches = ordered_samples(paths, ShortSideSample(side, backbone.patch_size), cfg["batch_size"], threads, device, workers)
    with MaskBankWriter(out_path, index, ids, grid, backbone.embed_dim, prov, **attrs) as writer:
        stream_to_store(tqdm(batches, desc=f"object masks {Path(out_path).name}", unit="batch"), distil, writer.write)
    log.info("object masks: %d images, mean coverage %.2f, grid %dx%d -> %s", len(rows), sum(coverage) / max(1, len(rows)), *grid, out_path)
