"""Training guards: stop with a clear message instead of silently training on NaN/inf."""

from __future__ import annotations

import math

import torch

from useg.errors import TrainingError


def check_finite(loss: torch.Tensor | float, epoch: int, step: int, hint: str = "lower the learning rate") -> None:
    """Raise TrainingError when the loss is NaN or infinite."""
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise TrainingError(
            f"the training loss became {value} at epoch {epoch}, step {step}: training diverged. "
            f"Try to {hint}; the run can resume from its last saved epoch."
        )
