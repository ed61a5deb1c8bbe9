"""LIP (Look Into Person) in the 19, 16 or 5 part settings (+ background), TransFGU supplementary Table 3.

    root/
      TrainVal_images/<split>_images/<id>.jpg                       split = train, val
      TrainVal_parsing_annotations/<split>_segmentations/<id>.png   gray PNG: 0 background, 1..19 parts
      <split>_id.txt                                                optional: the ids of the split
(the two folders may also sit directly in root: root/<split>_images/, root/<split>_segmentations/)
"""

from __future__ import annotations

from pathlib import Path

from useg.data.benchmarks.common import (
    check_present,
    choose_setting,
    first_dir,
    image_files,
    listing,
    read_list,
    require_splits,
    split_records,
)
from useg.data.folder import DatasetListing, ImageRecord
from useg.data.options import DatasetOptions

SETTINGS = (19, 16, 5)


def _records(root: Path, options: DatasetOptions, split: str, setting: str) -> list[ImageRecord]:
    images_dir = first_dir([root / "TrainVal_images" / f"{split}_images", root / f"{split}_images"], f"LIP {split} images")
    masks_dir = first_dir(
        [root / "TrainVal_parsing_annotations" / f"{split}_segmentations", root / f"{split}_segmentations"],
        f"LIP {split} segmentations",
    )
    if (id_file := root / f"{split}_id.txt").is_file():
        ids = read_list(id_file, f"LIP {split} ids")
        files = {i: images_dir / f"{i}.jpg" for i in ids}
        check_present(list(files.values()), f"LIP images of {id_file}")
    else:
        files = image_files(images_dir)
    return split_records(root, options, split, files, lambda stem: masks_dir / f"{stem}.png", setting)


def list_lip(root: Path, options: DatasetOptions) -> DatasetListing:
    """LIP images of the configured splits; 19 parts + background by default."""
    setting = f"lip-{choose_setting('lip', options, SETTINGS)}"
    records = [r for split in require_splits("lip", options) for r in _records(root, options, split, setting)]
    return listing(records, setting)
