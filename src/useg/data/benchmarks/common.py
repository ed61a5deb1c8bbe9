"""Pieces every benchmark reader shares: settings, split selection, image lists, file checks."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from useg.data.folder import DatasetListing, ImageRecord
from useg.data.images import IMAGE_EXTENSIONS
from useg.data.labels import label_setting
from useg.data.options import DatasetOptions
from useg.errors import ConfigError, DataError

MAX_LISTED = 5


def choose_setting(kind: str, options: DatasetOptions, allowed: tuple[int, ...]) -> int:
    """The label setting of a kind: dataset.setting, or the kind's first (default) one."""
    if options.setting is None:
        return allowed[0]
    if options.setting not in allowed:
        raise ConfigError(f"dataset.setting: {options.setting} is not one of {list(allowed)} for dataset.kind {kind!r}")
    return options.setting


def require_splits(kind: str, options: DatasetOptions) -> tuple[str, ...]:
    """The split names to list; a benchmark reader lists only those."""
    if not options.splits:
        raise ConfigError(f"dataset.kind {kind!r} lists images by split: set dataset.train_split and eval_split")
    return options.splits


def first_dir(candidates: list[Path], what: str) -> Path:
    """The first existing folder of `candidates`; an error naming all of them otherwise."""
    for path in candidates:
        if path.is_dir():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise DataError(f"no {what} folder (looked for {looked}): check dataset.root and dataset.train_split / eval_split")


def optional_file(path: Path) -> Path | None:
    return path if path.is_file() else None


def resolve(root: Path, path: str) -> Path:
    """A user path: absolute, or relative to the dataset root."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else root / candidate


def read_list(path: Path, what: str) -> list[str]:
    """First whitespace-separated token of every non-empty, non-comment line of a list file."""
    if not path.is_file():
        raise DataError(f"{what}: {path} does not exist")
    lines = (line.split() for line in path.read_text().splitlines())
    return [tokens[0] for tokens in lines if tokens and not tokens[0].startswith("#")]


def image_key(name: str) -> str:
    """Key matching list entries to files: the file stem, and for numbered names (COCO) the number.

    `COCO_train2014_000000000009.jpg`, `000000000009` and `9` all give `9`.
    """
    stem = Path(name).stem
    digits = re.search(r"(\d+)$", stem)
    return str(int(digits.group(1))) if digits and re.fullmatch(r"(COCO_[a-z]+\d*_)?\d+", stem) else stem


def keep_listed(root: Path, options: DatasetOptions, split: str, stems: list[str]) -> list[str]:
    """The stems named by the split's image list (dataset.image_lists), or all when it has none."""
    if split not in options.image_lists:
        return stems
    listed = {image_key(n) for n in read_list(resolve(root, options.image_lists[split]), f"dataset.image_lists.{split}")}
    kept = [s for s in stems if image_key(s) in listed]
    if not kept:
        raise DataError(f"dataset.image_lists.{split}: none of its {len(listed)} names matches an image of split {split!r}")
    return kept


def check_present(paths: list[Path], what: str) -> None:
    """An error listing files that a split file names but that are missing."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:MAX_LISTED])
        raise DataError(f"{len(missing)} {what} missing, e.g. {shown}")


def listing(records: list[ImageRecord], setting: str) -> DatasetListing:
    """A DatasetListing whose classes, things and ignore id come from a label setting."""
    spec = label_setting(setting)
    return DatasetListing(records, spec.classes, spec.things, spec.ignore_index)


def image_files(folder: Path) -> dict[str, Path]:
    """Image files of a folder by stem, in sorted order."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}


def split_records(
    root: Path, options: DatasetOptions, split: str, files: dict[str, Path], mask_of: Callable[[str], Path], setting: str
) -> list[ImageRecord]:
    """Records of the kept images of a split: image file, mask (when present) and label setting."""
    return [
        ImageRecord(
            id=stem, path=files[stem].resolve(), split=split, mask_path=optional_file(mask_of(stem)), label_map=setting
        )
        for stem in keep_listed(root, options, split, list(files))
    ]
