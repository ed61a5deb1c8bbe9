"""Shared training machinery: schedules, weight-decay groups, EMA teachers, checkpoints with resume, loss guards,
data-parallel processes (useg.train.distributed)."""

from useg.train import distributed
from useg.train.checkpoint import load_checkpoint, read_model, save_checkpoint, save_model
from useg.train.ema import ema_update
from useg.train.guard import LossGuard, check_finite
from useg.train.optim import weight_decay_groups
from useg.train.schedules import cosine_schedule, step_schedule

__all__ = [
    "LossGuard", "check_finite", "cosine_schedule", "distributed", "ema_update", "load_checkpoint", "read_model", "save_checkpoint", "save_model",
    "step_schedule", "weight_decay_groups",
]  # fmt: skip
