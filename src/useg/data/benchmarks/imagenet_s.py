"""ImageNet-S (LUSS): ImageNet-S50 / -300 / -919, class id = R + 256 G, 0 = background, 1000 = ignore.

    root/
      <split>/<wnid>/<name>.JPEG                 split = train, validation, test, train-semi, ...
                                                 (the wnid folder is the image's class: manifest image_class)
      <split>-segmentation/<wnid>/<name>.png     RGB PNG, class id = R + 256 G (validation, train-semi)
    class-list file (dataset.class_list)         one class per line: `<wnid> [readable name]`;
                                                 line i is class id i (1-based), 0 is background

Only the class folders of the list are read, so a full ImageNet train folder serves every subset.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from useg.data.benchmarks.common import choose_setting, first_dir, require_splits, resolve, split_records
from useg.data.folder import DatasetListing, ImageRecord
from useg.data.images import IMAGE_EXTENSIONS
from useg.data.labels import label_setting
from useg.data.options import DatasetOptions
from useg.errors import ConfigError, DataError

SETTINGS = (50, 300, 919)


def read_class_list(root: Path, options: DatasetOptions) -> list[tuple[str, str]]:
    """(wnid, name) of every class of the subset, in class-id order (ids 1..C)."""
    if not options.class_list:
        raise ConfigError("dataset.class_list: ImageNet-S needs the class-list file of its subset (one wnid per line)")
    path = resolve(root, options.class_list)
    if not path.is_file():
        raise DataError(f"dataset.class_list: {path} does not exist")
    rows = [line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip()]
    classes = [(row[0], row[1].strip() if len(row) > 1 else row[0]) for row in rows]
    size = choose_setting("imagenet-s", options, SETTINGS)
    if options.setting is not None and len(classes) != size:
        raise DataError(f"dataset.class_list: {path} lists {len(classes)} classes, dataset.setting says {size}")
    return classes


def _images(split_dir: Path, wnids: set[str]) -> dict[str, Path]:
    """Images of a split: those in the listed class folders, and any at the top level."""
    files = [p for p in split_dir.iterdir() if p.is_file()]
    files += [p for d in split_dir.iterdir() if d.is_dir() and d.name in wnids for p in d.iterdir()]
    images: dict[str, Path] = {}
    for path in sorted(files):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            if path.stem in images:
                raise DataError(f"two images share the name {path.stem!r}: {images[path.stem]} and {path}")
            images[path.stem] = path
    return images


def _records(root: Path, options: DatasetOptions, split: str, wnids: set[str]) -> list[ImageRecord]:
    split_dir = first_dir([root / split], f"ImageNet-S split {split!r}")
    files = _images(split_dir, wnids)
    masks = root / f"{split}-segmentation"
    records = split_records(
        root,
        options,
        split,
        files,
        lambda stem: masks / files[stem].relative_to(split_dir).with_suffix(".png"),
        "imagenet-s",
    )
    return [replace(r, image_class=_folder_class(files[r.id], split_dir)) for r in records]


def _folder_class(path: Path, split_dir: Path) -> str:
    """The wnid of the class folder an image lies in; "" for an image at the split's top level."""
    return path.parent.name if path.parent != split_dir else ""


def list_imagenet_s(root: Path, options: DatasetOptions) -> DatasetListing:
    """ImageNet-S images of the configured splits restricted to the subset's classes."""
    classes = read_class_list(root, options)
    wnids = {wnid for wnid, _ in classes}
    records = [r for split in require_splits("imagenet-s", options) for r in _records(root, options, split, wnids)]
    names = ["background", *(name for _, name in classes)]
    return DatasetListing(records, names, names[1:], label_setting("imagenet-s").ignore_index)
