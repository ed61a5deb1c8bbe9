"""Optimiser and learning-rate schedule of AlignSeg training: the release's or useg's earlier choice.

The release (github.com/yliu1229/AlignSeg, train.py `configure_optimizers`): AdamW at lr 5e-4 and
weight decay 0.04, none on biases, norm weights and the prototypes, the lr halved every 3 epochs
(StepLR). The paper states neither; useg's earlier choice was a warm-up + cosine schedule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from useg.methods.alignseg.decoder import PrototypeDecoder
from useg.train import cosine_schedule, step_schedule, weight_decay_groups

if TYPE_CHECKING:
    from useg.methods.alignseg.train import AlignSegConfig

Schedule = Literal["step", "cosine"]


def build_optimiser(decoder: PrototypeDecoder, cfg: AlignSegConfig) -> torch.optim.AdamW:
    """AdamW over decoder and prototypes; with `weight_decay_exempt` biases, norms and prototypes take no decay."""
    if cfg.weight_decay_exempt:
        groups = weight_decay_groups(decoder.named_parameters(), cfg.weight_decay, exempt=("prototypes",))
    else:
        groups = [{"params": list(decoder.parameters())}]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_schedule(cfg: AlignSegConfig, iters_per_epoch: int) -> np.ndarray:
    """The lr of every iteration: `step` (×`step_gamma` every `step_epochs` epochs) or warm-up + `cosine`."""
    if cfg.schedule == "step":
        return step_schedule(cfg.lr, cfg.epochs, iters_per_epoch, cfg.step_epochs, cfg.step_gamma)
    return cosine_schedule(cfg.lr, cfg.min_lr, cfg.epochs, iters_per_epoch, cfg.warmup_epochs)
