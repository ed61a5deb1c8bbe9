"""Shared training machinery: cosine schedules, EMA teachers, gradient clipping, checkpoints with resume, loss guards."""

from useg.train.checkpoint import load_checkpoint, read_model, save_checkpoint, save_model
from useg.train.clip import clip_gradients
from useg.train.ema import ema_update
from useg.train.guard import check_finite
from useg.train.schedules import cosine_schedule

__all__ = ["check_finite", "clip_gradients", "cosine_schedule", "ema_update", "load_checkpoint", "read_model", "save_checkpoint", "save_model"]
