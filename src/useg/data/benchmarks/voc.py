"""PASCAL VOC 2012: 21 classes (background + 20), palette PNG masks, 255 = ignore (object borders).

    root/                                  the VOC2012 folder
      JPEGImages/<id>.jpg
      SegmentationClass/<id>.png           palette PNG; the palette index is the class id
      SegmentationClassAug/<id>.png        optional (train_aug, SBD): gray PNG of class ids
      SegmentationObject/<id>.png          optional: palette PNG of instance ids, 255 = border
      ImageSets/Segmentation/<split>.txt   one image id per line (train, val, trainval, train_aug)

A split is the list file of that name (also looked up in ImageSets/SegmentationAug/), or with
`dataset.split_lists: {<split>: [<list file>, ...]}` the union of several list files, each naming images
of the VOC folder that holds it (<folder>/ImageSets/<set>/<name>.txt): VOC2007 and VOC2012 trainval,
whose image ids differ (000005 and 2007_000027), as one split (MaskDistill §A.4).
Masks come from SegmentationClass/, else SegmentationClassAug/.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from useg.data.benchmarks.common import check_present, choose_setting, listing, optional_file, read_list, require_splits, resolve
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


def split_sources(root: Path, split: str, options: DatasetOptions) -> list[tuple[Path, list[str]]]:
    """(VOC folder, image ids) of each list file making up a split: its own list file under `root`, or
    the files `dataset.split_lists` names for it, each in the VOC folder that holds it."""
    if split not in options.split_lists:
        return [(root, read_list(split_file(root, split), f"VOC split {split!r}"))]
    files = [resolve(root, f).resolve() for f in options.split_lists[split]]
    sources = [(f.parents[2], read_list(f, f"dataset.split_lists.{split}")) for f in files]
    twice = [i for i, n in Counter(i for _, listed in sources for i in listed).items() if n > 1]
    if twice:
        raise DataError(f"dataset.split_lists.{split}: image ids listed twice ({twice[:3]}); the union needs distinct ids")
    return sources


def list_voc(root: Path, options: DatasetOptions) -> DatasetListing:
    """List the VOC images of the configured splits with their masks and object maps."""
    choose_setting("voc", options, (21,))
    records = []
    for split in require_splits("voc", options):
        for folder, ids in split_sources(root, split, options):
            images = [folder / "JPEGImages" / f"{i}.jpg" for i in ids]
            check_present(images, f"VOC images of split {split!r}")
            records += [
                ImageRecord(
                    id=i,
                    path=path.resolve(),
                    split=split,
                    mask_path=_mask(folder, i),
                    instance_path=optional_file(folder / "SegmentationObject" / f"{i}.png"),
                    label_map="voc",
                )
                for i, path in zip(ids, images)
            ]
    return listing(records, "voc")
