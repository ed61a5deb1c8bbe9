"""Atomic outputs: write beside the target, rename onto it only when the write succeeded."""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


TMP_MARK = ".tmp-"  # `.<name>.tmp-<pid>`: the temporary path of an output being written


def unfinished_target(path: str | Path) -> Path | None:
    """The output a temporary `.<name>.tmp-<pid>` path was being written as; None for any other path."""
    name = Path(path).name
    if name.startswith(".") and TMP_MARK in name and name.rsplit(TMP_MARK, 1)[1].isdigit():
        return Path(path).with_name(name[1:].rsplit(TMP_MARK, 1)[0])
    return None


def remove_path(path: Path) -> None:
    """Delete a file or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_output(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds.

    A killed or failing writer leaves at most a hidden `.<name>.tmp-<pid>` path behind, never
    something at `target` that looks complete; the next writer of `target` removes such leftovers.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{glob.escape(target.name)}{TMP_MARK}*"):
        remove_path(stale)
    tmp = target.with_name(f".{target.name}{TMP_MARK}{os.getpid()}")
    try:
        yield tmp
    except BaseException:
        remove_path(tmp)
        raise
    remove_path(target)
    os.replace(tmp, target)


def finite_or_null(data: Any) -> Any:
    """`data` with every NaN or infinite float replaced by None: JSON has no NaN (RFC 8259)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_or_null(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_null(value) for value in data]
    return data


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented, strict JSON (non-finite numbers as null), atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(finite_or_null(data), indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
