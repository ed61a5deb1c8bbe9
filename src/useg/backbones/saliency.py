"""Saliency from the last block's CLS attention: the patches that hold a fixed share of its mass (DINO)."""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.functional as TF
from scipy import ndimage
from torch import Tensor

BLUR_KERNEL = 7  # side of the Gaussian kernel of `attention_blur` (AlignSeg release, utils.process_attentions)


def blur_attention(scores: Tensor, sigma: float) -> Tensor:
    """A 7x7 Gaussian blur (std `sigma`, reflected borders) of attention maps [B, h, w]; h, w >= 4."""
    return TF.gaussian_blur(scores[:, None], [BLUR_KERNEL, BLUR_KERNEL], [sigma, sigma])[:, 0]


def drop_small_components(mask: Tensor, min_size: int) -> Tensor:
    """Masks [B, h, w] with every 8-connected component of fewer than `min_size` patches removed."""
    out = mask.cpu().numpy().copy()
    for image in out:
        labels, _ = ndimage.label(image, structure=np.ones((3, 3), dtype=bool))
        sizes = np.bincount(labels.ravel())
        image[(sizes < min_size)[labels] & (labels > 0)] = False
    return torch.from_numpy(out).to(mask.device)


def attention_mass_mask(attn: Tensor, mass: float = 0.6, blur_sigma: float = 0.0, min_component: int = 1) -> Tensor:
    """Binary mask [B, h, w] of the fewest patches holding `mass` of the CLS attention (AlignSeg §IV-A, DINO).

    `attn` is the last block's CLS -> patch attention [B, H, h, w]; heads are averaged first. As in
    DINO, patches are sorted by attention and kept while the cumulative share from the top is at
    most `mass` (the patch that crosses it is kept too, so the mask is never empty). The AlignSeg
    release first blurs the averaged map (`blur_sigma` > 0) and afterwards removes components of
    fewer than `min_component` patches (3 there); the defaults leave both out, as DINO does.
    """
    if not 0 < mass <= 1:
        raise ValueError(f"attention mass must be in (0, 1], got {mass}")
    batch, _, h, w = attn.shape
    scores = attn.float().mean(dim=1)
    if blur_sigma > 0:
        scores = blur_attention(scores, blur_sigma)
    values, order = scores.reshape(batch, h * w).sort(dim=1)  # ascending, as DINO does
    share = values.cumsum(dim=1) / values.sum(dim=1, keepdim=True).clamp_min(1e-12)
    keep_sorted = share > 1 - mass
    keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted).reshape(batch, h, w)
    return drop_small_components(keep, min_component) if min_component > 1 else keep
