"""PASCAL VOC 2012: 21 classes (background + 20), palette PNG masks, 255 = ignore (object borders).

    root/                                  the VOC2012 folder
      JPEGImages/<id>.jpg
      SegmentationClass/<id>.png           palette PNG; the palette index is the class id
      SegmentationClassAug/<id>.png        optional (train_aug, SBD): gray PNG of class ids
      SegmentationObject/<id>.png          optional: palette PNG of instance ids, 255 = border
      ImageSets/Segmentation/<split>.txt   one image id per line (train, val, trainval, train_aug)

A split is the list file of that name (also looked up in ImageSets/SegmentationAug/).
Masks come from SegmentationClass/, else SegmentationClassAug/.
"""

from __future__ import annotations

from pathlib import Path

from useg.data.benchmarks.common import check_present, choose_setting, listing, optional_file, read_list, require_splits
from useg.data.folder import DatasetListing, ImageRecord
from useg.data.options import DatasetOptions
from useg.errors import DataError


def split_file(root: Path, split: str) -> Path:
    """The id list of a split: ImageSets/Segmentation/<split>.txt (or SegmentationAug/)."""
    candidates = [root / "ImageSets" / folder / f"{split}.txt" for folder in ("Segmentation", "SegmentationAug")]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(f"VOC split {split!r}: no list file, looked for " + ", ".join(map(str, candidates)))


def _mask(root: Path, image_id: str) -> Path | None:
    for folder in ("SegmentationClass", "SegmentationClassAug"):
        if (path := root / folder / f"{image_id}.png").is_file():
            return path
    return None


def list_voc(root: Path, options: DatasetOptions) -> DatasetListing:
    """List the VOC images of the configured splits with their masks and object maps."""
    choose_setting("voc", options, (21,))
    records = []
    for split in require_splits("voc", options):
        ids = read_list(split_file(root, split), f"VOC split {split!r}")
        images = [root / "JPEGImages" / f"{i}.jpg" for i in ids]
        check_present(images, f"VOC images of split {split!r}")
        records += [
            ImageRecord(
                id=i,
                path=path.resolve(),
                split=split,
                mask_path=_mask(root, i),
                instance_path=optional_file(root / "SegmentationObject" / f"{i}.png"),
                label_map="voc",
            )
            for i, path in zip(ids, images)
        ]
    return listing(records, "voc")
