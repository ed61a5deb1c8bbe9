"""Training guards: stop with a clear message instead of silently training on NaN/inf, diverging or collapsing."""

from __future__ import annotations

import logging
import math

import torch

from useg.errors import TrainingError

log = logging.getLogger(__name__)

# A loss this many times its start (the first step's, on the untrained model; at least 1, so that
# a loss starting near 0 may grow to the usual scale) has diverged: a stable loss decreases from its
# start, a too-high learning rate overshoots it by orders of magnitude and may stay finite.
DIVERGENCE_FACTOR = 100.0

# A bounded loss cannot explode; a too-high learning rate collapses such a trainer instead: its K
# prototypes (the vectors its labels are the arg-max over) turn to one direction, every patch then
# scores the same against all of them and the labels are noise. Healthy training spreads them
# (mean pairwise cosine near or below 0); stop when it stays above COLLAPSE_COSINE for COLLAPSE_STEPS steps.
COLLAPSE_COSINE = 0.95
COLLAPSE_STEPS = 5

RESUME_NOTE = (
    "Rerunning with the same config resumes from the last saved epoch (where the stage saves any); "
    "a changed learning rate or any other training key restarts the stage from scratch."
)


def _value(loss: torch.Tensor | float) -> float:
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)


def check_finite(loss: torch.Tensor | float, epoch: int, step: int, hint: str = "lower the learning rate") -> None:
    """Raise TrainingError when the loss is NaN or infinite (`epoch` and `step` count from 0, shown from 1)."""
    value = _value(loss)
    if not math.isfinite(value):
        raise TrainingError(
            f"the training loss became {value} at epoch {epoch + 1}, step {step + 1}: training diverged. "
            f"Try to {hint}. {RESUME_NOTE}"
        )


def check_finite_values(values: torch.Tensor, what: str, epoch: int, step: int, hint: str) -> None:
    """Raise TrainingError when `values` (a model's outputs inside a step, before any loss exists) hold NaN or inf."""
    if not bool(torch.isfinite(values).all()):
        raise TrainingError(
            f"the {what} became non-finite at epoch {epoch + 1}, step {step + 1}: training diverged "
            f"(the previous step's update overflowed the weights). Try to {hint}. {RESUME_NOTE}"
        )


class LossGuard:
    """check_finite, and the divergence rule: fail when the loss exceeds DIVERGENCE_FACTOR times its
    start max(|first loss|, 1), a run that trains on with finite but exploded losses."""

    def __init__(self, hint: str, factor: float = DIVERGENCE_FACTOR) -> None:
        self.hint, self.factor = hint, factor
        self.start: float | None = None

    def check_values(self, values: torch.Tensor, what: str, epoch: int, step: int) -> None:
        """check_finite_values with this guard's hint."""
        check_finite_values(values, what, epoch, step, self.hint)

    def check(self, loss: torch.Tensor | float, epoch: int, step: int) -> None:
        """Raise TrainingError when the loss is non-finite or far above its start."""
        check_finite(loss, epoch, step, self.hint)
        value = _value(loss)
        if self.start is None:
            self.start = max(abs(value), 1.0)
            log.info("loss guard: reference %.4g, training stops above %.4g", self.start, self.factor * self.start)
        if value > self.factor * self.start:
            raise TrainingError(
                f"the training loss reached {value:.4g} at epoch {epoch + 1}, step {step + 1}, over "
                f"{self.factor:g} times its start ({self.start:.4g}): training diverged. Try to {self.hint}. {RESUME_NOTE}"
            )


def mean_pairwise_cosine(vectors: torch.Tensor) -> float:
    """Mean cosine similarity over the K(K-1) ordered pairs of distinct vectors [..., K, D], K >= 2 (1: all one direction)."""
    k = vectors.shape[-2]
    if k < 2:
        raise ValueError(f"a pairwise cosine needs at least 2 vectors, got {k}")
    unit = torch.nn.functional.normalize(vectors.detach().float(), dim=-1)
    cosine = unit @ unit.transpose(-1, -2)
    return float((cosine.sum(dim=(-1, -2)) - cosine.diagonal(dim1=-2, dim2=-1).sum(-1)).mean() / (k * (k - 1)))


class CollapseGuard:
    """The collapse rule: fail when the mean pairwise cosine of a trainer's K prototypes (mean_pairwise_cosine)
    stays above `threshold` for `steps` consecutive steps, a run whose bounded loss stays finite."""

    def __init__(
        self, hint: str, what: str = "prototypes", threshold: float = COLLAPSE_COSINE, steps: int = COLLAPSE_STEPS
    ) -> None:
        self.hint, self.what, self.threshold, self.steps = hint, what, threshold, steps
        self.run = 0

    def check(self, cosine: float, epoch: int, step: int) -> None:
        """Count the steps in a row with `cosine` above the threshold; raise TrainingError at `steps`."""
        self.run = self.run + 1 if cosine > self.threshold else 0
        if self.run >= self.steps:
            raise TrainingError(
                f"the {self.what} collapsed: their mean pairwise cosine similarity was {cosine:.3f} at epoch {epoch + 1}, "
                f"step {step + 1}, above {self.threshold:g} for {self.steps} steps in a row (healthy training keeps "
                f"it near or below 0), so every patch gets an arbitrary label. Try to {self.hint}. {RESUME_NOTE}"
            )
