"""Optimisers and parameter groups shared by the trainers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from useg.errors import check_choice


def weight_decay_groups(
    named: Iterable[tuple[str, nn.Parameter]], weight_decay: float, exempt: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Two groups: decayed weights, and biases, norm weights (every ≤ 1-d tensor) and the named `exempt` ones at 0."""
    decay, no_decay = [], []
    for name, param in named:
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name in exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class LARCSGD(torch.optim.SGD):
    """SGD with LARC's layer-wise learning rates (You et al. 2017, as apex.parallel.LARC wraps SGD in
    SwAV and the PASS release): each parameter's gradient, weight decay folded in, is scaled by
    trust * ||w|| / (||g|| + wd * ||w|| + eps), capped at 1 relative to the lr when `clip`."""

    def __init__(self, params: Any, lr: float, momentum: float, weight_decay: float, trust: float = 0.001, clip: bool = False, eps: float = 1e-8) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.trust, self.clip, self.eps = trust, clip, eps

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        decays = [group["weight_decay"] for group in self.param_groups]
        for group, decay in zip(self.param_groups, decays):
            for p in group["params"]:
                if p.grad is None:
                    continue
                w, g = torch.linalg.vector_norm(p), torch.linalg.vector_norm(p.grad)
                if w == 0 or g == 0:
                    continue
                rate = self.trust * w / (g + w * decay + self.eps)
                if self.clip:
                    rate = torch.clamp(rate / group["lr"], max=1.0)
                p.grad.add_(p, alpha=decay).mul_(rate)
            group["weight_decay"] = 0.0
        try:
            return super().step(closure)
        finally:
            for group, decay in zip(self.param_groups, decays):
                group["weight_decay"] = decay


OPTIMISERS = ("adamw", "sgd", "larc")


def build_optimiser(name: str, params: Any, lr: float, weight_decay: float, key: str, momentum: float = 0.9, trust: float = 0.001, clip: bool = False) -> torch.optim.Optimizer:
    """The optimiser `name` of the config key `key`: adamw, sgd (momentum) or larc (LARCSGD)."""
    check_choice(key, name, OPTIMISERS)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return LARCSGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, trust=trust, clip=clip)
