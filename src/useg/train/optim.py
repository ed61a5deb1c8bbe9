"""Optimiser parameter groups shared by the trainers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn


def weight_decay_groups(
    named: Iterable[tuple[str, nn.Parameter]], weight_decay: float, exempt: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Two groups: decayed weights, and biases, norm weights (every ≤ 1-d tensor) and the named `exempt` ones at 0."""
    decay, no_decay = [], []
    for name, param in named:
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name in exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
