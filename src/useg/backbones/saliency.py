"""Saliency from the last block's CLS attention: the patches that hold a fixed share of its mass (DINO)."""

from __future__ import annotations

import torch
from torch import Tensor


def attention_mass_mask(attn: Tensor, mass: float = 0.6) -> Tensor:
    """Binary mask [B, h, w] of the fewest patches holding `mass` of the CLS attention (AlignSeg §IV-A, DINO).

    `attn` is the last block's CLS -> patch attention [B, H, h, w]; heads are averaged first. As in
    DINO, patches are sorted by attention and kept while the cumulative share from the top is at
    most `mass` (the patch that crosses it is kept too, so the mask is never empty).
    """
    if not 0 < mass <= 1:
        raise ValueError(f"attention mass must be in (0, 1], got {mass}")
    batch, _, h, w = attn.shape
    scores = attn.float().mean(dim=1).reshape(batch, h * w)
    values, order = scores.sort(dim=1)  # ascending, as DINO does
    share = values.cumsum(dim=1) / values.sum(dim=1, keepdim=True).clamp_min(1e-12)
    keep_sorted = share > 1 - mass
    keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
    return keep.reshape(batch, h, w)
