"""CrOC losses: teacher-centred self-distillation at image level and between paired centroids."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from useg.train.distributed import global_sum, world_size


def cluster_centroids(tokens: Tensor, assign: Tensor, hard: Tensor, cls_norm: Tensor, rule: str = "release") -> Tensor:
    """Centroids of one view fed to h [B, K, D] (CrOC eq. 2).

    paper: C^T = Z^T Q divided by each cluster's mass (a soft weighted mean). release: the mean over
    the tokens the cluster wins (Q masked by M), L2-normalised and scaled to the mean CLS-token norm.
    """
    if rule == "paper":
        mass = assign.sum(dim=1).clamp_min(1e-6)
        return torch.einsum("bnd,bnk->bkd", tokens, assign) / mass[..., None]
    return cls_norm * F.normalize(torch.einsum("bnd,bnk->bkd", tokens, assign * hard), dim=-1)


def mean_norm(cls_tokens: list[Tensor]) -> Tensor:
    """Mean L2 norm of the CLS tokens of both views over the global batch (the release's centroid scale)."""
    norms = torch.cat(cls_tokens).norm(dim=-1)
    return global_sum(norms.sum()) / (len(norms) * world_size())


def distill_ce(teacher_logits: Tensor, student_logits: Tensor, center: Tensor, tau_t: float, tau_s: float) -> Tensor:
    """Per-row H(P_t, P_s) with P_t = softmax((t - center)/tau_t), P_s = softmax(s/tau_s) (CrOC eq. 3, 5)."""
    p_t = F.softmax((teacher_logits - center) / tau_t, dim=-1)
    return -(p_t * F.log_softmax(student_logits / tau_s, dim=-1)).sum(dim=-1)


def global_loss(t: tuple[Tensor, Tensor], s: tuple[Tensor, Tensor], center: Tensor, tau_t: float, tau_s: float) -> Tensor:
    """L_glob = (H(p_t1, p_s2) + H(p_t2, p_s1)) / 2, averaged over the batch (CrOC eq. 6)."""
    return 0.5 * (distill_ce(t[0], s[1], center, tau_t, tau_s) + distill_ce(t[1], s[0], center, tau_t, tau_s)).mean()


def dense_loss(
    t: tuple[Tensor, Tensor], s: tuple[Tensor, Tensor], valid: Tensor, center: Tensor, tau_t: float, tau_s: float
) -> Tensor:
    """L_dense = (H(P_t1, P_s2) + H(P_t2, P_s1)) / 2, averaged over the kept clusters (CrOC eq. 4).

    Logits are [B, K, L]; `valid` [B, K] marks the clusters kept after pruning. Across training
    processes the kept clusters are counted over the global batch and the sum scaled by the number of
    processes, so that DDP's mean of the processes' gradients is the global batch's.
    """
    ce = 0.5 * (distill_ce(t[0], s[1], center, tau_t, tau_s) + distill_ce(t[1], s[0], center, tau_t, tau_s))
    weight = valid.to(ce.dtype)
    return (ce * weight).sum() * world_size() / global_sum(weight.sum().detach()).clamp_min(1)


@torch.no_grad()
def update_center(center: Tensor, logits: Tensor, momentum: float, weight: Tensor | None = None) -> Tensor:
    """EMA of the teacher's mean output over the global batch (DINO centering), rows weighted by `weight`."""
    flat = logits.reshape(-1, logits.shape[-1])
    w = torch.ones(len(flat), device=flat.device) if weight is None else weight.reshape(-1).to(flat.dtype)
    mean = global_sum((flat * w[:, None]).sum(dim=0)) / global_sum(w.sum()).clamp_min(1)
    return center * momentum + mean * (1 - momentum)


def total_loss(dense: Tensor, glob: Tensor, alpha: float) -> Tensor:
    """L = alpha * L_dense + L_glob (CrOC eq. 7)."""
    return alpha * dense + glob
