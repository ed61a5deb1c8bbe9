"""Gradient clipping: DINO's per-parameter rule or one global norm."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float, per_parameter: bool = True) -> None:
    """Scale gradients down to norm `max_norm`: each parameter's gradient on its own when
    `per_parameter` (DINO's rule: factor max_norm / (||g|| + 1e-6) where below one), else all together."""
    with_grad = [p for p in parameters if p.grad is not None]
    if max_norm <= 0 or not with_grad:
        return
    if not per_parameter:
        nn.utils.clip_grad_norm_(with_grad, max_norm)
        return
    for p in with_grad:
        factor = max_norm / (float(p.grad.norm(2)) + 1e-6)
        if factor < 1:
            p.grad.mul_(factor)
