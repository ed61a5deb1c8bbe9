"""Checkpoints written atomically (a killed job never leaves a half file) and read back for resume;
trained models as {method, config, state_dict, ...} files read with weights_only (they can never run code)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from useg.atomic import atomic_output
from useg.errors import StoreError, TrainingError

log = logging.getLogger(__name__)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save `state` beside `path`, then rename it into place."""
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, config_hash: str | None = None) -> dict[str, Any] | None:
    """The resume state at `path`, or None when absent or made by a different configuration."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged file: refuse to resume silently from garbage
        raise TrainingError(f"cannot read the resume state {path}: {exc}. Delete it to restart training.") from exc
    if config_hash is not None and state.get("config_hash") != config_hash:
        log.info("resume state %s belongs to another configuration: starting from scratch", path)
        return None
    log.info("resuming from %s (after epoch %d)", path, state.get("epoch", -1))
    return state


def save_model(path: str | Path, method: str, config: dict[str, Any], state_dict: dict[str, Any], **extra: Any) -> None:
    """Write a trained model as {method, config, state_dict, **extra}, atomically (`useg predict` checks `method`)."""
    save_checkpoint(path, {"method": method, "config": config, "state_dict": state_dict, **extra})


def read_model(path: str | Path, stage: str) -> dict[str, Any]:
    """Read a model file written by `save_model`; `stage` names the stage that rewrites it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise StoreError(f"cannot read the model file {path}: {exc}. Delete it and rerun {stage}.") from exc
