"""COCO-Stuff (2017) in the 27 super-class, 171 class, 80 things, 12 thing super-class (COCO-Things) or 15
stuff super-class (COCO-Stuff-15) settings; COCO20k.

    root/
      images/<split>/<id>.jpg                  split = train2017, val2017
      annotations/<split>/<id>.png             stuffthingmaps: raw id = COCO category id - 1, 255 = unlabeled
                                               (also accepted under stuffthingmaps/<split>/)

`dataset.image_lists: {<split>: <file>}` keeps only the images a list file names (one image
per line, first token; `000000000009`, `000000000009.jpg`, `COCO_train2014_000000000009.jpg`
and `9` name the same image): the "curated" lists of the IIC/PiCIE protocol, or the COCO20k list.
"""

from __future__ import annotations

from pathlib import Path

from useg.data.benchmarks.common import choose_setting, first_dir, image_files, listing, require_splits, split_records
from useg.data.folder import DatasetListing, ImageRecord
from useg.data.options import DatasetOptions
from useg.errors import ConfigError

SETTINGS = (27, 171, 80, 12, 15)


def _records(root: Path, options: DatasetOptions, split: str, setting: str) -> list[ImageRecord]:
    images_dir = first_dir([root / "images" / split], f"COCO images of split {split!r}")
    masks_dir = first_dir(
        [root / sub / split for sub in ("annotations", "stuffthingmaps")], f"COCO-Stuff masks of split {split!r}"
    )
    return split_records(root, options, split, image_files(images_dir), lambda stem: masks_dir / f"{stem}.png", setting)


def _list(kind: str, root: Path, options: DatasetOptions, settings: tuple[int, ...]) -> DatasetListing:
    setting = f"cocostuff-{choose_setting(kind, options, settings)}"
    records = [r for split in require_splits(kind, options) for r in _records(root, options, split, setting)]
    return listing(records, setting)


def list_cocostuff(root: Path, options: DatasetOptions) -> DatasetListing:
    """COCO-Stuff: every image of the splits (or those of the curated lists), 27 classes by default."""
    return _list("cocostuff", root, options, SETTINGS)


def list_coco20k(root: Path, options: DatasetOptions) -> DatasetListing:
    """COCO20k (MaskDistill): the images of the COCO20k list in the 80 things (+ background) setting."""
    missing = [s for s in options.splits if s not in options.image_lists]
    if missing:
        raise ConfigError(
            f"dataset.kind 'coco20k' needs the COCO20k file list: set dataset.image_lists.{missing[0]} "
            "(e.g. coco_20k_filenames.txt, one COCO_train2014_<id>.jpg per line)"
        )
    return _list("coco20k", root, options, (80, 27, 171))
