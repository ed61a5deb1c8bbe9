"""Grad-CAM pseudo labels from the concepts (TransFGU eq. 4–8, §4.2).

For an image, the CLS token x_cls and the last block's CLS attention A (per head, patches only)
come from one forward pass whose last block's CLS path is in the autograd graph. For every
concept k the gradient of a similarity between x_cls and S_k (minus the gradient of eq. 5's
loss) w.r.t. A makes the response map M_k (eq. 7), by one of two rules (`LabelConfig.gradcam`):

- `release` (the authors' code): similarity cos(x_cls, S_k); M_k = A/max A + ReLU(−∂L/∂A) kept on
  the patches holding the top `gradcam_mass` of that ReLU map's mass, and M_k = 0 wherever
  ∂L/∂A > 0 (A and ∂L/∂A head-averaged);
- `paper` (eq. 5–7 as written): similarity x_cls·S_kᵀ/√d; M_k = head-mean(A + ∂sim/∂A).

Eq. 5's loss is taken per image (as a mean over a fixed `gradcam_loss_batch`), so a map never
depends on the batch it was computed in. All K gradients come from ONE batched computation — the
CLS path evaluated on K copies of A, one backward pass — never K backward passes. Maps are
min-max normalised per image to [0, 1] so that they are probability-like (eq. 8's T_bg and
eq. 12's average with the teacher's probabilities assume that scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from useg.backbones.saliency import attention_mass_mask
from useg.backbones.vit import ViTBackbone
from useg.errors import check_choice
from useg.methods.transfgu.crops import BACKGROUND, FOREGROUND

GRADCAM_RULES = ("release", "paper")


@dataclass(frozen=True)
class LabelConfig:
    """How concept gradients become pseudo-label maps: Grad-CAM rule (eq. 5–7), fg/bg zeroing (§4.2), eq. 8."""

    gradcam: str = "release"
    gradcam_mass: float = 0.8
    gradcam_loss_batch: int = 8
    zero_other_group: bool = False
    foreground_only: bool = False
    t_bg: float = 0.1

    def __post_init__(self) -> None:
        check_choice("transfgu.gradcam", self.gradcam, GRADCAM_RULES)

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any]) -> LabelConfig:
        """The label keys of a `transfgu` config section (absent keys keep their defaults)."""
        return cls(**{f.name: cfg[f.name] for f in fields(cls) if f.name in cfg})


class ClsPath:
    """The last block's CLS output as a function of its CLS attention row A (eq. 4).

    Everything before the last block runs once without gradients; only the CLS query of the last
    block is recomputed (the CLS output does not depend on the other queries), so the CLS token
    can be re-evaluated cheaply for rows with any leading batch dimensions [..., B, H, T]. The
    gradient w.r.t. A holds v fixed: Grad-CAM on the attention map.
    """

    def __init__(self, backbone: ViTBackbone, images: Tensor) -> None:
        m = backbone.model
        self.block, self.norm = m.blocks[-1], m.norm
        attn = self.block.attn
        with torch.no_grad():
            x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(images))))
            for block in m.blocks[:-1]:
                x = block(x)
            h = self.block.norm1(x)
            batch, tokens, _ = h.shape
            qkv = attn.qkv(h).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
            q, k, self.v = qkv.unbind(0)
            q, k = attn.q_norm(q[:, :, :1]), attn.k_norm(k)
            self.row = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1).squeeze(2)  # [B, H, T]
            self.gate = attn.gate(h[:, :1]).sigmoid() if getattr(attn, "gate", None) is not None else None
        self.x_cls = x[:, :1]

    def cls(self, row: Tensor) -> Tensor:
        """x_cls [..., B, D] for CLS attention rows [..., B, H, T]."""
        attn = self.block.attn
        heads = torch.einsum("...bht,bhtd->...bhd", row, self.v)  # v is shared, never copied per leading index
        out = attn.norm(heads.flatten(-2).unsqueeze(-2))  # [..., B, 1, H*dh]
        if self.gate is not None:
            out = out * self.gate
        token = self.x_cls + self.block.ls1(attn.proj(out))
        token = token + self.block.ls2(self.block.mlp(self.block.norm2(token)))
        return self.norm(token)[..., 0, :]


def concept_similarity(cls: Tensor, concepts: Tensor, rule: str) -> Tensor:
    """cos(x_cls, S_k) (`release`) or x_cls·S_kᵀ/√d (`paper`, eq. 5 as written), over the last axis."""
    if rule == "release":
        return (F.normalize(cls, dim=-1) * F.normalize(concepts, dim=-1)).sum(-1)
    return (cls * concepts).sum(-1) / math.sqrt(cls.shape[-1])


def concept_gradients(path: ClsPath, concepts: Tensor, rule: str = "release", chunk: int = 256) -> Tensor:
    """∂sim(x_cls, S_k)/∂A for every concept k — minus the gradient of eq. 5's loss — in one backward pass.

    The CLS path is evaluated on K copies of A at once (copy k scored against S_k), so a single
    backward pass of the summed similarities yields all K gradients [K, B, H, T] (per chunk of K);
    each image's gradient is that of its own similarity, whatever the batch.
    """
    concepts = concepts.to(path.row)
    parts = []
    for start in range(0, len(concepts), chunk):
        s = concepts[start : start + chunk]
        rows = path.row.expand(len(s), *path.row.shape).clone().requires_grad_(True)
        similarity = concept_similarity(path.cls(rows), s[:, None, :], rule).sum()
        parts.append(torch.autograd.grad(similarity, rows)[0])
    return torch.cat(parts)


def concept_gradients_loop(path: ClsPath, concepts: Tensor, rule: str = "release") -> Tensor:
    """Reference: one backward pass of eq. 5's loss per concept, negated (for tests and the benchmark)."""
    row = path.row.clone().requires_grad_(True)
    cls = path.cls(row)
    grads = []
    for s in concepts.to(cls):
        loss = (1 - concept_similarity(cls, s, rule)).sum()
        grads.append(-torch.autograd.grad(loss, row, retain_graph=True)[0])
    return torch.stack(grads)


def cls_patch_rows(rows: Tensor, grid: tuple[int, int], prefix: int) -> Tensor:
    """The patch part of CLS attention rows [..., H, T] as maps [..., H, h, w]."""
    return rows[..., prefix:].reshape(*rows.shape[:-1], *grid)


def response_maps(attn: Tensor, grads: Tensor) -> Tensor:
    """M^k = GRAD-CAM(x_cls, S_k | A) + A, averaged over heads: attn [B, H, h, w], grads [K, B, H, h, w] -> [B, K, h, w] (eq. 7)."""
    return (grads + attn[None]).mean(dim=2).transpose(0, 1)


def release_response_maps(attn: Tensor, grads: Tensor, loss_batch: int, mass: float) -> Tensor:
    """The release's eq. 7: A/max A + ReLU(−∂L/∂A) on its top-`mass` patches, 0 where ∂L/∂A > 0, [B, K, h, w].

    `grads` [K, B, H, h, w] are ∂sim/∂A; eq. 5's loss L = (1 − sim) is a mean over `loss_batch` images,
    so ∂L/∂A = −grads / loss_batch. A and ∂L/∂A are averaged over heads first.
    """
    shared = attn.mean(dim=1)
    shared = shared / shared.amax(dim=(-2, -1), keepdim=True)
    loss_grad = -grads.mean(dim=2) / loss_batch  # [K, B, h, w]
    gain = torch.relu(-loss_grad)
    keep = attention_mass_mask(gain.flatten(0, 1)[:, None], mass).view_as(gain)  # DINO's top-mass rule, on the ReLU map
    maps = (shared[None] + gain * keep).masked_fill(loss_grad > 0, 0.0)
    return maps.transpose(0, 1)


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


def concept_maps(attn: Tensor, grads: Tensor, cfg: LabelConfig) -> Tensor:
    """Response maps [B, K, h, w] by the configured Grad-CAM rule, min-max normalised per image (eq. 7)."""
    if cfg.gradcam == "release":
        return normalise_maps(release_response_maps(attn, grads, cfg.gradcam_loss_batch, cfg.gradcam_mass))
    return normalise_maps(response_maps(attn, grads))


def pseudo_label_maps(
    backbone: ViTBackbone, images: Tensor, concepts: Tensor, groups: Tensor, cfg: LabelConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """Response maps [B, K(+1), h, w], their arg-max labels [B, h, w] (eq. 6) and the fg mask [B, h, w]."""
    grid = backbone.grid_for(*images.shape[-2:])
    path = ClsPath(backbone, images)
    prefix = backbone.num_prefix_tokens
    grads = cls_patch_rows(concept_gradients(path, concepts, cfg.gradcam), grid, prefix)
    attn = cls_patch_rows(path.row, grid, prefix)
    maps = concept_maps(attn, grads, cfg)
    fg = foreground_patches(attn)
    if cfg.zero_other_group:
        maps = mask_concepts(maps, fg, groups)
    if cfg.foreground_only:
        maps = torch.cat([maps, background_map(maps, cfg.t_bg)], dim=1)
    return maps, maps.argmax(dim=1), fg
