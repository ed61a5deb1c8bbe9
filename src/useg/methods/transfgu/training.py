"""One optimisation step of the TransFGU student and the per-epoch probe of its losses and label shares
(eq. 13–16), shared by the `rounds` and `release` schedules."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from useg.methods.transfgu.losses import LossConfig, shuffled_labels, total_loss
from useg.methods.transfgu.segmenter import Segmenter
from useg.train import LossGuard
from useg.train.amp import Precision
from useg.train.descent import descend


def train_step(
    student: Segmenter,
    optimiser: torch.optim.Optimizer,
    patches: Tensor,
    labels: Tensor,
    generator: torch.Generator,
    alpha: float,
    losses: LossConfig,
    cfg: dict[str, Any],
    precision: Precision,
    guard: LossGuard,
    epoch: int,
    step: int,
) -> dict[str, Any]:
    """L = L_peer + ω₁·L_div + ω₂·L_unc on one batch of patch tokens and labels [B, h, w], one descent step;
    returns the loss, its terms, whether the step was skipped and the predicted label of every patch."""
    with precision.autocast():
        logits, classes = student(patches)
        negatives = shuffled_labels(labels, logits.shape[1], generator)
        loss, terms = total_loss(logits, classes, labels, negatives, alpha, losses)
    guard.check(loss, epoch, step)
    stepped = descend(optimiser, loss, cfg["grad_clamp"], cfg["skip_nonpositive_loss"], precision)
    return {"loss": loss.item(), **{f"loss_{k}": v for k, v in terms.items()}, "skipped": float(not stepped), "predicted": logits.detach().argmax(dim=1)}


class EpochProbe:
    """Per-epoch means of the step values and the share of each label in the student's predictions on the
    training batches (the label-share probe: a collapse shows as shares piling onto few labels)."""

    def __init__(self, num_labels: int) -> None:
        self.sums: dict[str, float] = {}
        self.counts = torch.zeros(num_labels, dtype=torch.long)
        self.steps = 0

    def add(self, values: dict[str, Any]) -> None:
        """Add one step's values; `predicted` (labels [B, h, w]) goes into the label counts."""
        self.counts += torch.bincount(values["predicted"].flatten().cpu(), minlength=len(self.counts))
        for name, value in values.items():
            if name != "predicted":
                self.sums[name] = self.sums.get(name, 0.0) + value
        self.steps += 1

    def means(self) -> dict[str, Any]:
        """The epoch's mean values and `label_shares` (fractions summing to 1, 4 decimals)."""
        shares = (self.counts / max(1, int(self.counts.sum()))).tolist()
        return {**{k: v / max(1, self.steps) for k, v in self.sums.items()}, "label_shares": [round(s, 4) for s in shares]}
