"""AlignSeg training objectives (§IV-B): prototype-image alignment and global-local alignment.

Shapes: one global crop with n_g patches and v_l local crops with n_l patches each, per image of a
batch of B. Similarities s are cos(x, P^x) [B, n, K]; masks are saliency masks [B, n] (bool).
Each term has the paper's literal form and the form the authors' release computes
(github.com/yliu1229/AlignSeg, model/criterion.py), chosen by a `LossConfig` field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from useg.train.distributed import global_sum, world_size

Source = Literal["release", "paper"]
Reduction = Literal["sum", "mean"]


@dataclass(frozen=True)
class LossConfig:
    """Weights, temperature, shift, the Table II switches and the release/paper form of every term."""

    alpha: float = 1.0
    beta: float = 0.15
    tau: float = 1.0
    shift: float = 0.11
    proto: bool = True
    corr: bool = True
    clamp: bool = True
    saliency: bool = True
    proto_loss: Source = "release"
    proto_corr: Source = "release"
    dense_corr: Source = "release"
    corr_reduction: Reduction = "sum"


def proto_loss(global_protos: Tensor, local_protos: list[Tensor], tau: float) -> Tensor:
    """InfoNCE between the i-th global and local prototypes, summed over i, averaged over crops and images (eq. 4)."""
    g = F.normalize(global_protos, dim=-1)
    total = global_protos.new_zeros(())
    for local in local_protos:
        logits = g @ F.normalize(local, dim=-1).transpose(1, 2) / tau  # [B, K, K]: row i, column j
        targets = torch.arange(logits.shape[1], device=logits.device).expand(len(logits), -1)
        total = total + F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").sum(dim=1).mean()
    return total / len(local_protos)


def nt_xent_proto_loss(global_protos: Tensor, local_protos: list[Tensor], tau: float) -> Tensor:
    """Release form of eq. 4: symmetric NT-Xent over the 2K prototypes of the global and a local crop.

    Each of the 2K prototypes is an anchor; its positive is the same index in the other view, its
    negatives are the other 2K - 2 prototypes of both views (same-view ones included). Averaged
    over anchors and images, then over the local crops.
    """
    g = F.normalize(global_protos, dim=-1)
    batch, k, _ = g.shape
    self_pairs = torch.eye(2 * k, dtype=torch.bool, device=g.device)
    targets = (torch.arange(2 * k, device=g.device) + k) % (2 * k)
    total = global_protos.new_zeros(())
    for local in local_protos:
        z = torch.cat([g, F.normalize(local, dim=-1)], dim=1)  # [B, 2K, D]
        logits = (z @ z.transpose(1, 2) / tau).masked_fill(self_pairs, float("-inf"))
        total = total + F.cross_entropy(logits.reshape(batch * 2 * k, 2 * k), targets.repeat(batch))
    return total / len(local_protos)


def proto_corr(s_global: Tensor, s_local: Tensor, clamp: bool = True, softmax: bool = False) -> Tensor:
    """ProtoCorr = s̄_g s̄_lᵀ [B, n_g, n_l], s̄ = max(s, 0) with the 0-clamp (eq. 5, 8).

    `softmax` (release): s̄ is then normalised by a softmax over the K prototypes of every patch.
    """
    if clamp:
        s_global, s_local = s_global.clamp_min(0), s_local.clamp_min(0)
    if softmax:
        s_global, s_local = s_global.softmax(dim=-1), s_local.softmax(dim=-1)
    return s_global @ s_local.transpose(1, 2)


def dense_corr(x_global: Tensor, x_local: Tensor, centred: bool = False) -> Tensor:
    """DenseCorr = cos(x_g, x_l) [B, n_g, n_l] of the frozen patch tokens (eq. 6).

    `centred` (release): every row (global patch) loses its mean over the local patches, and the
    mean of the whole (global) batch's correlations is added back.
    """
    corr = F.normalize(x_global, dim=-1) @ F.normalize(x_local, dim=-1).transpose(1, 2)
    if centred:
        corr = corr - corr.mean(dim=-1, keepdim=True) + global_sum(corr.sum()) / (corr.numel() * world_size())
    return corr


def saliency_intersection(m_global: Tensor, m_local: Tensor) -> Tensor:
    """M = m̂_g ⊙ m̂_lᵀ: 1 where both the global and the local patch are salient, [B, n_g, n_l] (eq. 9)."""
    return m_global.float()[:, :, None] * m_local.float()[:, None, :]


def corr_loss(
    s_global: Tensor,
    s_locals: list[Tensor],
    x_global: Tensor,
    x_locals: list[Tensor],
    shift: float,
    clamp: bool = True,
    m_global: Tensor | None = None,
    m_locals: list[Tensor] | None = None,
    *,
    softmax: bool = False,
    centred: bool = False,
    reduction: Reduction = "mean",
) -> Tensor:
    """-1/v_l Σ_v reduce(M ⊙ ProtoCorr ⊙ (DenseCorr - h)) over patch pairs and images (eq. 7; eq. 10 with masks).

    `reduction` "mean" (paper reading) averages over all n_g x n_l pairs and the images, so pairs
    outside the saliency intersection add nothing; "sum" (release) sums them, over the global batch:
    a training process's sum is scaled by the number of processes, whose mean DDP takes. `softmax`
    and `centred` are the release forms of ProtoCorr (eq. 5, 8) and DenseCorr (eq. 6).
    """
    total = s_global.new_zeros(())
    for v, (s_local, x_local) in enumerate(zip(s_locals, x_locals, strict=True)):
        term = proto_corr(s_global, s_local, clamp, softmax) * (dense_corr(x_global, x_local, centred) - shift)
        if m_global is not None and m_locals is not None:
            term = term * saliency_intersection(m_global, m_locals[v])
        total = total - (term.sum() * world_size() if reduction == "sum" else term.mean())
    return total / len(s_locals)


def total_loss(
    cfg: LossConfig,
    protos: tuple[Tensor, list[Tensor]],
    sims: tuple[Tensor, list[Tensor]],
    tokens: tuple[Tensor, list[Tensor]],
    masks: tuple[Tensor, list[Tensor]],
) -> tuple[Tensor, dict[str, float]]:
    """L = α L_proto + β L_corr with the disabled terms left out (eq. 11); each argument is (global, locals)."""
    loss = protos[0].new_zeros(())
    terms: dict[str, float] = {}
    if cfg.proto:
        proto = (nt_xent_proto_loss if cfg.proto_loss == "release" else proto_loss)(*protos, cfg.tau)
        loss, terms["loss_proto"] = loss + cfg.alpha * proto, float(proto.detach())
    if cfg.corr:
        m_global, m_locals = masks if cfg.saliency else (None, None)
        corr = corr_loss(
            *sims, *tokens, cfg.shift, cfg.clamp, m_global, m_locals,
            softmax=cfg.proto_corr == "release", centred=cfg.dense_corr == "release", reduction=cfg.corr_reduction,
        )  # fmt: skip
        loss, terms["loss_corr"] = loss + cfg.beta * corr, float(corr.detach())
    return loss, terms
