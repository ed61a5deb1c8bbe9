"""Shared training machinery: schedules, weight-decay groups, EMA teachers, checkpoints with resume, loss and collapse guards,
data-parallel processes (useg.train.distributed)."""

from useg.train import distributed
from useg.train.checkpoint import load_checkpoint, read_model, save_checkpoint, save_model
from useg.train.ema import ema_update
from useg.train.guard import CollapseGuard, LossGuard, check_finite, mean_pairwise_cosine
from useg.train.optim import weight_decay_groups
from useg.train.schedules import cosine_schedule, step_schedule

__all__ = [
    "CollapseGuard", "LossGuard", "check_finite", "cosine_schedule", "distributed", "ema_update", "load_checkpoint", "mean_pairwise_cosine", "read_model", "save_checkpoint", "save_model",
    "step_schedule", "weight_decay_groups",
]  # fmt: skip
