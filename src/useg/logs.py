"""Logging set-up shared by every stage: to stderr and, when given, to the rule's log file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from useg.world import world_from_env

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Send log records to stderr and, if `log_file` is given, to that file; of torchrun's processes
    only rank 0 writes the file and the others log warnings only."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if not world_from_env().is_main:
        log_file, level = None, logging.WARNING
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs every import
