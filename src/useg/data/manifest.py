"""The manifest stage: open every image once, validate it, and write `manifest.csv`.

Columns: id, path, width, height, split, mask_path, instance_path (empty when absent), label_map
(the label setting that turns the mask files into class ids: read masks with
`useg.data.labels.load_mask(row)`, never by opening mask_path directly), image_class (the class
the dataset gives the whole image by its folder, e.g. the ImageNet-S wnid; empty when none).
Next to it, `classes.json` records class names, thing classes and the ignore index.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from useg.atomic import write_json, write_text
from useg.data.folder import DatasetListing, ImageRecord
from useg.data.images import UnreadableImage, load_rgb
from useg.data.labels import load_instances, load_mask
from useg.errors import DataError

log = logging.getLogger(__name__)

COLUMNS = ("id", "path", "width", "height", "split", "mask_path", "instance_path", "label_map", "image_class")
MAX_LISTED = 20


@dataclass(frozen=True)
class ManifestRow:
    """One validated image."""

    id: str
    path: str
    width: int
    height: int
    split: str
    mask_path: str = ""
    instance_path: str = ""
    label_map: str = ""
    image_class: str = ""


def row_keys(rows: list[tuple[int, ManifestRow]]) -> tuple[np.ndarray, list[str]]:
    """The manifest positions and the ids of indexed rows (position, row), as a store records them."""
    return np.array([i for i, _ in rows], np.int64), [row.id for _, row in rows]


def _check_record(
    record: ImageRecord, num_classes: int, ignore_index: int, min_size: int
) -> tuple[ManifestRow | None, str | None]:
    """Validate one image (and its mask); return the row, or the problem as text."""
    try:
        image = load_rgb(record.path)
    except UnreadableImage as exc:
        return None, f"unreadable image {exc}"
    height, width = image.shape[:2]
    if min(height, width) < min_size:
        return None, f"{record.path} is {width}x{height} px, smaller than one {min_size}-px patch"
    for label_path, load in ((record.mask_path, load_mask), (record.instance_path, load_instances)):
        if not label_path:
            continue
        try:
            labels = load(record)
        except UnreadableImage as exc:
            return None, f"unreadable label map {exc}"
        if labels.shape != (height, width):
            return None, (
                f"label map {label_path} is {labels.shape[1]}x{labels.shape[0]} but image "
                f"{record.path} is {width}x{height}"
            )
        if label_path == record.mask_path and num_classes:
            bad = np.setdiff1d(np.unique(labels), [*range(num_classes), ignore_index])
            if bad.size:
                return None, _bad_ids(label_path, bad, num_classes, ignore_index, record.label_map)
    return ManifestRow(
        id=record.id,
        path=str(record.path),
        width=width,
        height=height,
        split=record.split,
        mask_path=str(record.mask_path or ""),
        instance_path=str(record.instance_path or ""),
        label_map=record.label_map,
        image_class=record.image_class,
    ), None


def _bad_ids(path: Path, bad: np.ndarray, num_classes: int, ignore_index: int, label_map: str) -> str:
    if label_map:
        return f"mask {path} holds ids outside the {label_map!r} label table: do dataset.kind and setting match the files?"
    return f"mask {path} has ids {bad.tolist()} outside 0..{num_classes - 1} and {ignore_index}"


def _report(problems: list[str]) -> str:
    shown = "\n  ".join(problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"{len(problems)} problem(s) in the dataset:\n  {shown}{more}"


def build_manifest(listing: DatasetListing, min_size: int, on_corrupt: str = "error") -> list[ManifestRow]:
    """Validate every record; corrupt images fail the stage, or are skipped when on_corrupt='skip'."""
    if not listing.records:
        raise DataError("the dataset has no images: check dataset.root and that images/ holds image files")
    rows, problems = [], []
    for record in tqdm(listing.records, desc="manifest", unit="img"):
        row, problem = _check_record(record, len(listing.classes), listing.ignore_index, min_size)
        if row is not None:
            rows.append(row)
        else:
            problems.append(problem)
    if problems and on_corrupt == "error":
        raise DataError(_report(problems) + "\nFix or remove these files, or set dataset.on_corrupt: skip.")
    if problems:
        log.warning("skipping %s", _report(problems))
    if not rows:
        raise DataError("no usable image is left in the dataset")
    return rows


def write_manifest(rows: list[ManifestRow], listing: DatasetListing, out_csv: str | Path, out_classes: str | Path) -> None:
    """Write manifest.csv and classes.json atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([getattr(row, column) for column in COLUMNS])
    write_text(out_csv, buffer.getvalue())
    write_json(out_classes, {"classes": listing.classes, "things": listing.things, "ignore_index": listing.ignore_index})
    splits = {s: sum(r.split == s for r in rows) for s in sorted({r.split for r in rows})}
    log.info("manifest: %d images %s -> %s", len(rows), splits, out_csv)


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Read manifest.csv back into rows."""
    with Path(path).open(newline="") as fh:
        return [
            ManifestRow(**{**row, "width": int(row["width"]), "height": int(row["height"])})
            for row in csv.DictReader(fh)
        ]


def split_rows(rows: list[ManifestRow], split: str) -> list[tuple[int, ManifestRow]]:
    """(manifest row number, row) of every image in `split`; an unknown split is an error."""
    selected = [(i, row) for i, row in enumerate(rows) if row.split == split]
    if not selected:
        available = sorted({row.split for row in rows})
        raise DataError(f"split {split!r} has no images; the manifest has splits {available}")
    return selected


def shard_rows(items: list, shard: int, num_shards: int) -> list:
    """Contiguous shard `shard` of `num_shards` (sizes differ by at most one)."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is outside 0..{num_shards - 1}")
    bounds = np.linspace(0, len(items), num_shards + 1).round().astype(int)
    return items[bounds[shard] : bounds[shard + 1]]


def read_classes(path: str | Path) -> dict:
    """Read classes.json written by the manifest stage."""
    return json.loads(Path(path).read_text())
