"""Bootstrapping targets and losses (TransFGU eq. 12–16). Every mean over the batch is taken over the global
batch under torchrun (useg.train.distributed.global_row_mean), so N processes compute the loss of one."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from useg.errors import check_choice
from useg.train import distributed

DIVERSITY_FORMS = ("release", "paper")


def bootstrapped_maps(maps: Tensor, teacher_probs: Tensor) -> Tensor:
    """M̂^k = 0.5·(M^k + P̂^k), maps and probabilities [N, K, h, w]; the labels are their arg-max (eq. 11–12)."""
    return 0.5 * (maps + teacher_probs)


def shuffled_labels(labels: Tensor, num_labels: int, generator: torch.Generator) -> Tensor:
    """Negative labels M̂′: every label id moved to another id by a random cyclic derangement (eq. 13)."""
    order = torch.randperm(num_labels, generator=generator)
    mapping = torch.empty(num_labels, dtype=torch.long)
    mapping[order] = order.roll(-1)
    return mapping.to(labels.device)[labels]


def batch_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """CE(P, M) [B, K, h, w] against [B, h, w], the mean over every location of the global batch (eq. 9)."""
    return distributed.global_row_mean(F.cross_entropy(logits, labels, reduction="none").flatten())


def peer_loss(logits: Tensor, labels: Tensor, negatives: Tensor, alpha: float) -> Tensor:
    """L_peer = CE(P, M̂) − α·CE(P, M̂′) (eq. 13)."""
    return batch_cross_entropy(logits, labels) - alpha * batch_cross_entropy(logits, negatives)


def uncertainty_loss(logits: Tensor) -> Tensor:
    """L_unc = 1 − mean over locations of (p′ − p″), the gap of the two largest probabilities (eq. 14)."""
    top2 = logits.softmax(dim=1).topk(2, dim=1).values
    return 1 - distributed.global_row_mean((top2[:, 0] - top2[:, 1]).flatten())


def diversity_loss(classes: Tensor, form: str = "release") -> Tensor:
    """L_div over the unit-norm class embeddings [B, K, d], batch-averaged (eq. 15).

    `release`: 1 + mean over pairs i < j of cos(C_i, C_j); `paper`: eq. 15 as written,
    1 + (1/K²)·Σ C·Cᵀ/√d over all K² entries (diagonal included) — about (K − 1)/(K√d) of the
    release's gradient per embedding (1/20 at K = 27, d = 384).
    """
    k, d = classes.shape[-2:]
    gram = classes @ classes.transpose(-1, -2)
    if form == "release":
        i, j = torch.triu_indices(k, k, offset=1, device=classes.device)
        return 1 + distributed.global_row_mean(gram[:, i, j].mean(dim=-1))
    return 1 + distributed.global_row_mean(gram.sum(dim=(-1, -2))) / (k * k * math.sqrt(d))


def peer_alpha(epoch: int, epochs: int, start: float, end: float) -> float:
    """α rising linearly from `start` at the first epoch to `end` at the last (§4.2, supplement)."""
    return start if epochs <= 1 else start + (end - start) * epoch / (epochs - 1)


@dataclass(frozen=True)
class LossConfig:
    """Which terms of eq. 16 are on, and their weights."""

    peer: bool = True
    uncertainty: bool = True
    diversity: bool = True
    w_div: float = 1.0
    w_unc: float = 0.3
    diversity_form: str = "release"

    def __post_init__(self) -> None:
        check_choice("transfgu.diversity_form", self.diversity_form, DIVERSITY_FORMS)


def total_loss(
    logits: Tensor, classes: Tensor, labels: Tensor, negatives: Tensor, alpha: float, cfg: LossConfig
) -> tuple[Tensor, dict[str, float]]:
    """L = L_peer + ω₁·L_div + ω₂·L_unc, each term switchable; without peer, plain CE (eq. 9, 16)."""
    main = peer_loss(logits, labels, negatives, alpha) if cfg.peer else batch_cross_entropy(logits, labels)
    terms = {"main": main}
    if cfg.diversity:
        terms["div"] = cfg.w_div * diversity_loss(classes, cfg.diversity_form)
    if cfg.uncertainty:
        terms["unc"] = cfg.w_unc * uncertainty_loss(logits)
    total = torch.stack(list(terms.values())).sum()
    return total, {name: value.item() for name, value in terms.items()}
