"""Adam or AdamW over decayed / undecayed parameter groups, and a guarded descent step."""

from __future__ import annotations

import torch
from torch import nn

from useg.errors import check_choice
from useg.train.amp import FULL_PRECISION, Precision
from useg.train.optim import weight_decay_groups

OPTIMISERS = ("adam", "adamw")


def build_optimiser(module: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """`adam`: Adam with L2 weight decay added to the gradient; `adamw`: decoupled decay. Biases and norms undecayed."""
    check_choice("optimiser", name, OPTIMISERS)
    kind = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return kind(weight_decay_groups(module.named_parameters(), weight_decay), lr=lr)


def descend(
    optimiser: torch.optim.Optimizer,
    loss: torch.Tensor,
    clamp: float | None = None,
    skip_nonpositive: bool = False,
    precision: Precision = FULL_PRECISION,
    value: float | None = None,
) -> bool:
    """One step on `loss` (backward scaled under fp16 `precision`): each unscaled gradient element clamped to
    ±`clamp` (None: not clamped); with `skip_nonpositive` a loss ≤ 0 takes no step, judged on `value` where given
    (the global batch's loss under torchrun, so every process decides alike), else on `loss`. Returns whether a
    step was taken."""
    if skip_nonpositive and (loss.item() if value is None else value) <= 0:
        return False
    precision.step(optimiser, loss, None if clamp is None else lambda: clamp_gradients(optimiser, clamp))
    return True


def clamp_gradients(optimiser: torch.optim.Optimizer, clamp: float) -> None:
    """Clamp each gradient element of the optimiser's parameters to ±`clamp`."""
    for group in optimiser.param_groups:
        for param in group["params"]:
            if param.grad is not None:
                param.grad.clamp_(-clamp, clamp)
