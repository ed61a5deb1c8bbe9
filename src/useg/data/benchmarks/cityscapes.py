"""Cityscapes gtFine in the 27-class setting (the 34 labelIds less the 7 'void' ones, PiCIE/TransFGU).

    root/
      leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
      gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
"""

from __future__ import annotations

from pathlib import Path

from useg.data.benchmarks.common import choose_setting, first_dir, listing, require_splits, split_records
from useg.data.folder import DatasetListing, ImageRecord
from useg.data.options import DatasetOptions

IMAGE_SUFFIX = "_leftImg8bit"
MASK_SUFFIX = "_gtFine_labelIds.png"


def _records(root: Path, options: DatasetOptions, split: str) -> list[ImageRecord]:
    images_dir = first_dir([root / "leftImg8bit" / split], f"Cityscapes images of split {split!r}")
    files = {p.stem[: -len(IMAGE_SUFFIX)]: p for p in sorted(images_dir.glob(f"*/*{IMAGE_SUFFIX}.png"))}
    return split_records(
        root, options, split, files, lambda stem: root / "gtFine" / split / files[stem].parent.name / f"{stem}{MASK_SUFFIX}", "cityscapes-27"
    )


def list_cityscapes(root: Path, options: DatasetOptions) -> DatasetListing:
    """Every image of the configured splits (city folders) with its labelIds mask."""
    choose_setting("cityscapes", options, (27,))
    records = [r for split in require_splits("cityscapes", options) for r in _records(root, options, split)]
    return listing(records, "cityscapes-27")
