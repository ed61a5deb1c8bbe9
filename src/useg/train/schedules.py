"""Per-iteration schedules: DINO-style linear warmup then cosine from `base` to `final`; step decay per epoch."""

from __future__ import annotations

import numpy as np


def cosine_schedule(
    base: float, final: float, epochs: int, iters_per_epoch: int, warmup_epochs: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """One value per iteration: linear warmup from `warmup_start` to `base`, then cosine to `final`."""
    total = epochs * iters_per_epoch
    warmup = min(warmup_epochs * iters_per_epoch, total)
    ramp = np.linspace(warmup_start, base, warmup, endpoint=False) if warmup else np.zeros(0)
    steps = np.arange(total - warmup)
    span = max(len(steps) - 1, 1)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * steps / span))
    return np.concatenate([ramp, cosine])


def step_schedule(base: float, epochs: int, iters_per_epoch: int, step_epochs: int, gamma: float) -> np.ndarray:
    """One value per iteration: `base`, multiplied by `gamma` after every `step_epochs` epochs (torch StepLR per epoch)."""
    epoch = np.arange(epochs * iters_per_epoch) // iters_per_epoch
    return base * gamma ** (epoch // step_epochs)
