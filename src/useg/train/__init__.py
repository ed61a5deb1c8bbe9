"""Shared training machinery: cosine schedules, EMA teachers, checkpoints with resume, loss guards."""

from useg.train.checkpoint import load_checkpoint, read_model, save_checkpoint, save_model
from useg.train.ema import ema_update
from useg.train.guard import check_finite
from useg.train.schedules import cosine_schedule

__all__ = ["check_finite", "cosine_schedule", "ema_update", "load_checkpoint", "read_model", "save_checkpoint", "save_model"]
