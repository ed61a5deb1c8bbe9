"""Grad-CAM pseudo labels from the concepts (TransFGU eq. 4–8, §4.2).

For an image, the CLS token x_cls and the last block's CLS attention A (per head, patches only)
come from one forward pass whose last block is in the autograd graph. For every concept k the
gradient of the similarity x_cls·S_kᵀ/√d (i.e. minus the gradient of eq. 5's loss) w.r.t. A is
added to A and averaged over heads (eq. 7). All K gradients come from ONE batched
vector-Jacobian product (`torch.autograd.grad(..., is_grads_batched=True)`), never K backward
passes. Only the CLS query of the last block is recomputed with gradients (its output does not
depend on the other queries). Maps are min-max normalised per image to [0, 1] so that they are probability-like
(eq. 8's T_bg and eq. 12's average with the teacher's probabilities assume that scale).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from timm.models.vision_transformer import Block

from useg.backbones.vit import ViTBackbone
from useg.methods.transfgu.crops import BACKGROUND, FOREGROUND


def cls_query_block(block: Block, x: Tensor) -> tuple[Tensor, Tensor]:
    """The last block for the CLS query only: (CLS output token [B, C], CLS attention row [B, H, T]).

    The attention row is a leaf that requires grad, so gradients w.r.t. A hold v fixed (Grad-CAM on
    the attention map); the other queries do not influence the CLS output of the last block.
    """
    attn = block.attn
    h = block.norm1(x)
    batch, tokens, _ = h.shape
    q, k, v = attn.qkv(h).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q[:, :, :1]), attn.k_norm(k)
    row = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1).squeeze(2).detach().requires_grad_(True)
    out = attn.norm((row.unsqueeze(2) @ v).reshape(batch, 1, -1))
    if getattr(attn, "gate", None) is not None:
        out = out * attn.gate(h[:, :1]).sigmoid()
    token = x[:, :1] + block.ls1(attn.proj(out))
    token = token + block.ls2(block.mlp(block.norm2(token)))
    return token[:, 0], row


def cls_and_attention(backbone: ViTBackbone, images: Tensor) -> tuple[Tensor, Tensor]:
    """x_cls [B, D] and the last block's CLS attention row [B, H, T] as a graph leaf (eq. 4)."""
    m = backbone.model
    with torch.no_grad():
        x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(images))))
        for block in m.blocks[:-1]:
            x = block(x)
    token, row = cls_query_block(m.blocks[-1], x)
    return m.norm(token), row


def similarity_cotangents(concepts: Tensor, batch: int, dim: int) -> Tensor:
    """∂(x_cls·S_kᵀ/√d)/∂x_cls for every concept k and image, [K, B, D] (the negated gradient of eq. 5)."""
    return (concepts / math.sqrt(dim))[:, None, :].expand(-1, batch, -1)


def concept_gradients(cls: Tensor, attn_row: Tensor, concepts: Tensor, chunk: int = 256) -> Tensor:
    """Gradients of every concept's similarity w.r.t. the CLS attention row, batched over K: [K, B, H, T]."""
    cot = similarity_cotangents(concepts.to(cls), *cls.shape)
    parts = [
        torch.autograd.grad(cls, attn_row, grad_outputs=cot[i : i + chunk], is_grads_batched=True, retain_graph=True)[0]
        for i in range(0, len(cot), chunk)
    ]
    return torch.cat(parts)


def concept_gradients_loop(cls: Tensor, attn_row: Tensor, concepts: Tensor) -> Tensor:
    """Reference: one backward pass of eq. 5's loss per concept, negated (for tests and the benchmark)."""
    d = cls.shape[-1]
    grads = []
    for s in concepts.to(cls):
        loss = (1 - cls @ s / math.sqrt(d)).sum()
        grads.append(-torch.autograd.grad(loss, attn_row, retain_graph=True)[0])
    return torch.stack(grads)


def cls_patch_rows(rows: Tensor, grid: tuple[int, int], prefix: int) -> Tensor:
    """The patch part of CLS attention rows [..., H, T] as maps [..., H, h, w]."""
    return rows[..., prefix:].reshape(*rows.shape[:-1], *grid)


def response_maps(attn: Tensor, grads: Tensor) -> Tensor:
    """M^k = GRAD-CAM(x_cls, S_k | A) + A, averaged over heads: attn [B, H, h, w], grads [K, B, H, h, w] -> [B, K, h, w] (eq. 7)."""
    return (grads + attn[None]).mean(dim=2).transpose(0, 1)


def normalise_maps(maps: Tensor) -> Tensor:
    """Min-max normalise each image's K maps jointly to [0, 1]."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    return ((flat - lo[:, None]) / (hi - lo).clamp_min(1e-12)[:, None]).view_as(maps)


def foreground_patches(attn: Tensor) -> Tensor:
    """Binarised head-mean CLS attention [B, h, w]: above its per-image mean is foreground (§4.2)."""
    mean_map = attn.mean(dim=1)
    return mean_map > mean_map.flatten(1).mean(1)[:, None, None]


def mask_concepts(maps: Tensor, fg: Tensor, groups: Tensor) -> Tensor:
    """Foreground patches get 0 in background concepts and background patches 0 in foreground ones (§4.2)."""
    fg_concept = (groups == FOREGROUND).to(maps.device)[None, :, None, None]
    bg_concept = (groups == BACKGROUND).to(maps.device)[None, :, None, None]
    fg = fg[:, None]
    zero = (fg & bg_concept) | (~fg & fg_concept)
    return maps.masked_fill(zero, 0.0)


def background_map(maps: Tensor, t_bg: float) -> Tensor:
    """M^bg = ReLU(T_bg − max_k M^k), [B, 1, h, w] (eq. 8)."""
    return torch.relu(t_bg - maps.max(dim=1, keepdim=True).values)


def pseudo_label_maps(
    backbone: ViTBackbone,
    images: Tensor,
    concepts: Tensor,
    groups: Tensor,
    foreground_prior: bool,
    foreground_only: bool,
    t_bg: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Response maps [B, K(+1), h, w], their arg-max labels [B, h, w] (eq. 6) and the fg mask [B, h, w]."""
    grid = backbone.grid_for(*images.shape[-2:])
    cls, row = cls_and_attention(backbone, images)
    prefix = backbone.num_prefix_tokens
    grads = cls_patch_rows(concept_gradients(cls, row, concepts), grid, prefix)
    attn = cls_patch_rows(row, grid, prefix).detach()
    maps = normalise_maps(response_maps(attn, grads))
    fg = foreground_patches(attn)
    if foreground_prior:
        maps = mask_concepts(maps, fg, groups)
    if foreground_only:
        maps = torch.cat([maps, background_map(maps, t_bg)], dim=1)
    return maps, maps.argmax(dim=1), fg
