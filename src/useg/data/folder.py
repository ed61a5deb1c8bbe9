"""Folder datasets: `images/` + optional `masks/` (same stem) + `classes.txt` + optional `splits.csv`.

    root/
      images/<stem>.<jpg|png|...>     any size, RGB / gray / RGBA
      masks/<stem>.png                optional; single-channel class ids, 255 = ignore
      instances/<stem>.png            optional; instance ids, 0 = none
      classes.txt                     one class name per line; line number = class id
      things.txt                      optional; names of the countable (thing) classes
      splits.csv                      optional; header row, then `<stem>,<split>`; default split "train"
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from useg.data.images import IGNORE_INDEX, IMAGE_EXTENSIONS
from useg.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_SPLIT = "train"
MAX_LISTED = 20  # unknown stems named in the warning


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset before it is checked."""

    id: str
    path: Path
    split: str
    mask_path: Path | None = None
    instance_path: Path | None = None
    label_map: str = ""  # label setting of the mask files (useg.data.labels); "" = they hold class ids
    image_class: str = ""  # the image's class by its folder (ImageNet-S: the wnid); "" = none given


@dataclass(frozen=True)
class DatasetListing:
    """What a reader found: image records, class names (empty when unlabelled), the ignore id."""

    records: list[ImageRecord]
    classes: list[str]
    things: list[str]
    ignore_index: int = IGNORE_INDEX


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a text file, or [] when it does not exist."""
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_splits(path: Path, stems: set[str]) -> dict[str, str]:
    """Map stem -> split from a CSV with a header row and (stem, split) as its first two columns;
    a first row naming an image (no header) is an error, rows naming no image of `stems` a warning."""
    if not path.exists():
        return {}
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or len(rows[0]) < 2:
        raise DataError(f"{path}: expected a header row and two columns <stem>,<split>")
    if rows[0][0].strip() in stems:
        raise DataError(
            f"{path}: the first row {','.join(rows[0])!r} names the image {rows[0][0].strip()!r}, but the first "
            "row is the header: add a header line `stem,split` at the top"
        )
    splits = {row[0].strip(): row[1].strip() for row in rows[1:] if len(row) >= 2}
    unknown = sorted(set(splits) - stems)
    if unknown:
        more = f" ... and {len(unknown) - MAX_LISTED} more" if len(unknown) > MAX_LISTED else ""
        log.warning("%s: %d row(s) name no image in images/, ignored: %s%s", path, len(unknown), ", ".join(unknown[:MAX_LISTED]), more)
    return splits


def _optional(folder: Path, stem: str) -> Path | None:
    candidate = folder / f"{stem}.png"
    return candidate if candidate.exists() else None


def image_stems(images_dir: Path) -> dict[str, Path]:
    """stem -> path of every image file of `images_dir`, sorted; two images sharing a stem are an error."""
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise DataError(f"two images share the stem {path.stem!r}: {stems[path.stem]} and {path}")
        stems[path.stem] = path
    return stems


def split_size(root: str | Path, split: str) -> int:
    """Images of a folder dataset listed in `split` (by splits.csv, else train), before the manifest checks them."""
    images_dir = Path(root) / "images"
    if not images_dir.is_dir():
        return 0
    stems = image_stems(images_dir)
    splits = read_splits(Path(root) / "splits.csv", set(stems))
    return sum(splits.get(stem, DEFAULT_SPLIT) == split for stem in stems)


def list_folder_dataset(root: str | Path) -> DatasetListing:
    """List a folder dataset; fails with a clear message when the layout is wrong."""
    root = Path(root)
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise DataError(f"{root}: no images/ folder. A folder dataset needs images/ (and optional masks/).")
    stems = image_stems(images_dir)
    splits = read_splits(root / "splits.csv", set(stems))
    records = [
        ImageRecord(
            id=stem,
            path=path.resolve(),
            split=splits.get(stem, DEFAULT_SPLIT),
            mask_path=_optional(root / "masks", stem),
            instance_path=_optional(root / "instances", stem),
        )
        for stem, path in stems.items()
    ]
    return DatasetListing(records, read_lines(root / "classes.txt"), read_lines(root / "things.txt"))
