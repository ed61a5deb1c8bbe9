"""Content fingerprint of a dataset folder: what the manifest stage depends on besides its config.

Snakemake sees a directory input change only when the directory itself changes; a rewritten mask,
a converted image or an edited splits.csv leave it alone. The manifest rule therefore takes this
fingerprint (every file's relative path, size and modification time, computed when the DAG is
built) as a param, so any such edit reruns the manifest and everything downstream of it.
Folders are listed in parallel threads (a stat releases the GIL: on a network file system, where
one stat waits for the server, the threads overlap the waits).
Standard library only: the Snakefile imports it before any dependency is known to be present.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WORKERS = 16


def _scan(folder: str, prefix: str) -> tuple[list[str], list[tuple[str, str]]]:
    """One folder: a `path\\0size\\0mtime_ns` line per regular file (path relative to the root, which
    `prefix` leads to), and its subfolders as (folder, prefix)."""
    lines, subfolders = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            rel = prefix + entry.name
            try:
                if entry.is_dir():  # follows links, as the manifest's readers do
                    subfolders.append((entry.path, rel + "/"))
                    continue
                stat = entry.stat()
            except FileNotFoundError:  # a dangling link or a file removed while listing
                continue
            lines.append(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n")
    return lines, subfolders


def _lines(root: str) -> list[str]:
    """The `_scan` line of every regular file below `root`, sorted."""
    lines: list[str] = []
    with ThreadPoolExecutor(WORKERS) as pool:
        pending = [(root, "")]
        while pending:
            results = list(pool.map(lambda job: _scan(*job), pending))
            pending = [sub for found, subs in results for sub in subs]
            lines += [line for found, _ in results for line in found]
    return sorted(lines)


def dataset_fingerprint(root: str | Path) -> str:
    """SHA-256 over (path, size, mtime) of every file below `root`; 'absent' when it does not exist."""
    root = str(root)
    if not os.path.isdir(root):
        return "absent"
    return hashlib.sha256("".join(_lines(root)).encode()).hexdigest()
