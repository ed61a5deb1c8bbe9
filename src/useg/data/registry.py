"""Dataset kinds: each reader turns `dataset.root` (and the dataset options) into the same DatasetListing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from useg.data.folder import DatasetListing, list_folder_dataset
from useg.data.options import DatasetOptions
from useg.errors import ConfigError


Reader = Callable[[Path, DatasetOptions], DatasetListing]


def _folder(root: Path, options: DatasetOptions) -> DatasetListing:
    return list_folder_dataset(root)


def _readers() -> dict[str, Reader]:
    from useg.data.benchmarks import cityscapes, cocostuff, imagenet_s, lip, voc

    return {
        "folder": _folder,
        # the synthetic generator writes a folder dataset, read back like any other
        "synthetic": _folder,
        "voc": voc.list_voc,
        "cocostuff": cocostuff.list_cocostuff,
        "coco20k": cocostuff.list_coco20k,
        "cityscapes": cityscapes.list_cityscapes,
        "lip": lip.list_lip,
        "imagenet-s": imagenet_s.list_imagenet_s,
    }


READERS: dict[str, Reader] = _readers()


def list_dataset(kind: str, root: str | Path, options: DatasetOptions | None = None) -> DatasetListing:
    """List the images of a dataset of the given kind."""
    if kind not in READERS:
        raise ConfigError(f"dataset.kind: {kind!r} is not one of {sorted(READERS)}")
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"dataset.root: {root} is not a folder (dataset.kind {kind!r} reads a folder)")
    return READERS[kind](root, options or DatasetOptions())
