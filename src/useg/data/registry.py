"""Dataset kinds: each reader turns `dataset.root` into the same DatasetListing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from useg.data.folder import DatasetListing, list_folder_dataset
from useg.errors import ConfigError

READERS: dict[str, Callable[[Path], DatasetListing]] = {
    "folder": list_folder_dataset,
    # the synthetic generator writes a folder dataset, read back like any other
    "synthetic": list_folder_dataset,
}


def list_dataset(kind: str, root: str | Path) -> DatasetListing:
    """List the images of a dataset of the given kind."""
    if kind not in READERS:
        raise ConfigError(f"dataset.kind: {kind!r} is not one of {sorted(READERS)}")
    return READERS[kind](Path(root))
