"""Optimisers over decayed / undecayed parameter groups and a guarded descent step."""

from __future__ import annotations

import torch
from torch import nn

from useg.errors import check_choice

OPTIMISERS = ("adam", "adamw")


def decay_groups(module: nn.Module) -> list[dict]:
    """Trainable weights (ndim > 1) decayed; biases and norm gains (ndim ≤ 1) not."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim > 1]},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
    ]


def build_optimiser(module: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """`adam`: Adam with L2 weight decay added to the gradient; `adamw`: Adam with decoupled weight decay."""
    check_choice("optimiser", name, OPTIMISERS)
    kind = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return kind(decay_groups(module), lr=lr, weight_decay=weight_decay)


def descend(
    optimiser: torch.optim.Optimizer, loss: torch.Tensor, clamp: float | None = None, skip_nonpositive: bool = False
) -> bool:
    """One step on `loss`: each gradient element clamped to ±`clamp` (None: not clamped); with `skip_nonpositive`
    a loss ≤ 0 takes no step. Returns whether a step was taken."""
    if skip_nonpositive and loss.item() <= 0:
        return False
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    if clamp is not None:
        for group in optimiser.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.grad.clamp_(-clamp, clamp)
    optimiser.step()
    return True
