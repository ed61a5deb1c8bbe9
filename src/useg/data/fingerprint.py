"""Content fingerprint of a dataset folder: what the manifest stage depends on besides its config.

Snakemake sees a directory input change only when the directory itself changes; a rewritten mask,
a converted image or an edited splits.csv leave it alone. The manifest rule therefore takes this
fingerprint (every file's relative path, size and modification time, computed when the DAG is
built) as a param, so any such edit reruns the manifest and everything downstream of it.
Standard library only: the Snakefile imports it before any dependency is known to be present.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def _files(root: str) -> list[tuple[str, int, int]]:
    """(path relative to `root`, size, mtime in ns) of every regular file below `root`, sorted."""
    found = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs.sort()
        for name in names:
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # a dangling link or a file removed while walking
                continue
            found.append((os.path.relpath(path, root), stat.st_size, stat.st_mtime_ns))
    return sorted(found)


def dataset_fingerprint(root: str | Path) -> str:
    """SHA-256 over (path, size, mtime) of every file below `root`; 'absent' when it does not exist."""
    root = str(root)
    if not os.path.isdir(root):
        return "absent"
    digest = hashlib.sha256()
    for rel, size, mtime in _files(root):
        digest.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()
