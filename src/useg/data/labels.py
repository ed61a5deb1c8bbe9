"""Label settings: how each dataset's label files become class ids, in one place.

Every mask the project reads goes through `read_mask(path, setting)` (instances through
`read_instances`), where `setting` is the `label_map` column of the manifest. A setting owns its
class names and a lookup table from the ids stored in the files (palette indices, COCO-Stuff raw
ids, Cityscapes labelIds, LIP ids, ImageNet-S R + 256 G) to class ids 0..C-1; raw ids the setting
drops become its ignore index (255, or 1000 for ImageNet-S whose class ids pass 255). Raw ids a
setting does not know become -1, which the manifest stage reports as an error.
The tables live in `useg/data/tables/` (one per dataset).
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from useg.data.images import IGNORE_INDEX, UnreadableImage, load_label_map
from useg.errors import ConfigError

IMAGENET_S_IGNORE = 1000
UNKNOWN = -1


@dataclass(frozen=True)
class LabelSetting:
    """The classes of one dataset setting and how its label files decode to them."""

    name: str
    classes: list[str]
    things: list[str]
    lut: np.ndarray | None = None  # raw id -> class id; None: the files already hold class ids
    instance_lut: np.ndarray | None = None  # raw instance id -> instance id (0 = none)
    rg: bool = False  # ids stored as R + 256 G in an RGB PNG (ImageNet-S)
    ignore_index: int = IGNORE_INDEX


class HasLabels(Protocol):
    mask_path: str | Path | None
    instance_path: str | Path | None
    label_map: str


def table_rows(name: str) -> list[dict[str, str]]:
    """Rows of a CSV table in useg/data/tables/ ('#' lines are comments)."""
    text = resources.files("useg.data").joinpath("tables", name).read_text()
    return list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))


def table_names(name: str) -> list[str]:
    """Class names of a text table in useg/data/tables/, one per line (line number = id)."""
    text = resources.files("useg.data").joinpath("tables", name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def _lut(pairs: dict[int, int], size: int = 256, ignore: int = IGNORE_INDEX) -> np.ndarray:
    """Lookup table raw -> class id: listed ids mapped, ignore kept, everything else unknown."""
    lut = np.full(size, UNKNOWN, np.int64)
    lut[ignore] = ignore
    for raw, target in pairs.items():
        lut[raw] = target
    return lut


def _voc() -> LabelSetting:
    classes = table_names("voc.txt")
    instances = np.arange(256)
    instances[IGNORE_INDEX] = 0  # SegmentationObject marks object borders 255: no instance
    return LabelSetting("voc", classes, classes[1:], instance_lut=instances)


def _cocostuff(setting: int) -> LabelSetting:
    rows = table_rows("cocostuff.csv")
    things = [r for r in rows if r["kind"] == "thing"]
    if setting == 171:
        classes, thing_names = [r["name"] for r in rows], [r["name"] for r in things]
        pairs = {int(r["raw"]): i for i, r in enumerate(rows)}
    elif setting == 27:
        classes = table_names("cocostuff27.txt")
        thing_names = list(dict.fromkeys(r["coarse"] for r in things))
        pairs = {int(r["raw"]): classes.index(r["coarse"]) for r in rows}
    elif setting in (12, 15):  # COCO-Things / COCO-Stuff of Leopart: one side's super-classes, the other side ignored
        kind = "thing" if setting == 12 else "stuff"
        kept = {r["coarse"] for r in rows if r["kind"] == kind}
        classes = [name for name in table_names("cocostuff27.txt") if name in kept]
        thing_names = classes if kind == "thing" else []
        pairs = {int(r["raw"]): classes.index(r["coarse"]) if r["kind"] == kind else IGNORE_INDEX for r in rows}
    else:  # 80 things; every stuff pixel is background (class 0)
        classes, thing_names = ["background"] + [r["name"] for r in things], [r["name"] for r in things]
        pairs = {int(r["raw"]): 0 for r in rows} | {int(r["raw"]): i + 1 for i, r in enumerate(things)}
    return LabelSetting(f"cocostuff-{setting}", classes, thing_names, lut=_lut(pairs))


def _cityscapes27() -> LabelSetting:
    kept = [r for r in table_rows("cityscapes.csv") if r["id27"]]
    pairs = {int(r["raw"]): int(r["id27"]) for r in kept}
    pairs |= {int(r["raw"]): IGNORE_INDEX for r in table_rows("cityscapes.csv") if not r["id27"]}
    classes = [r["name"] for r in sorted(kept, key=lambda r: int(r["id27"]))]
    things = [r["name"] for r in kept if r["thing"] == "1"]
    return LabelSetting("cityscapes-27", classes, things, lut=_lut(pairs))


def _lip(setting: int) -> LabelSetting:
    rows = table_rows("lip.csv")
    column = {19: "raw", 16: "id16", 5: "id5"}[setting]
    classes = [r["name"] for r in rows] if setting == 19 else table_names(f"lip{setting}.txt")
    pairs = {int(r["raw"]): int(r[column]) for r in rows}
    return LabelSetting(f"lip-{setting}", classes, classes[1:], lut=_lut(pairs))


def _imagenet_s() -> LabelSetting:
    # class names come from the user's class-list file; ids in the files are already class ids
    return LabelSetting("imagenet-s", [], [], rg=True, ignore_index=IMAGENET_S_IGNORE)


SETTINGS = {
    "": lambda: LabelSetting("", [], []),
    "voc": _voc,
    "cocostuff-27": lambda: _cocostuff(27),
    "cocostuff-171": lambda: _cocostuff(171),
    "cocostuff-80": lambda: _cocostuff(80),
    "cocostuff-12": lambda: _cocostuff(12),
    "cocostuff-15": lambda: _cocostuff(15),
    "cityscapes-27": _cityscapes27,
    "lip-19": lambda: _lip(19),
    "lip-16": lambda: _lip(16),
    "lip-5": lambda: _lip(5),
    "imagenet-s": _imagenet_s,
}


@functools.cache
def label_setting(name: str) -> LabelSetting:
    """The label setting a manifest row names ('' = the files hold class ids, 255 = ignore)."""
    if name not in SETTINGS:
        raise ConfigError(f"unknown label setting {name!r}; known: {sorted(SETTINGS)}")
    return SETTINGS[name]()


def decode_rg(path: str | Path) -> np.ndarray:
    """Ids stored as R + 256 G in an RGB PNG (ImageNet-S); single-channel files are read as ids."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("RGB", "RGBA"):
                return load_label_map(path)
            arr = np.asarray(img.convert("RGB")).astype(np.int64)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage(f"{path}: {exc}") from exc
    return arr[..., 0] + 256 * arr[..., 1]


def encode_rg(ids: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB of an id map with id = R + 256 G (ImageNet-S masks; ids below 65536)."""
    ids = np.asarray(ids, np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256 * 256:
        raise ValueError("R + 256 G encodes ids 0..65535 only")
    rgb = np.zeros((*ids.shape, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = ids % 256, ids // 256
    return rgb


def _apply(lut: np.ndarray | None, raw: np.ndarray) -> np.ndarray:
    if lut is None:
        return raw
    out = np.full(raw.shape, UNKNOWN, np.int64)
    known = (raw >= 0) & (raw < len(lut))
    out[known] = lut[raw[known]]
    return out


def read_mask(path: str | Path, setting: str = "") -> np.ndarray:
    """Class-id map of a mask file under a label setting (ignore = the setting's ignore index)."""
    spec = label_setting(setting)
    raw = decode_rg(path) if spec.rg else load_label_map(path)
    return _apply(spec.lut, raw)


def read_instances(path: str | Path, setting: str = "") -> np.ndarray:
    """Instance-id map (0 = no instance) of an instance file under a label setting."""
    return _apply(label_setting(setting).instance_lut, load_label_map(path))


def load_mask(row: HasLabels) -> np.ndarray:
    """The class-id map of a manifest row (or an image record): the one way masks are read."""
    if not row.mask_path:
        raise ValueError(f"{row} has no mask")
    return read_mask(row.mask_path, row.label_map)


def load_instances(row: HasLabels) -> np.ndarray:
    """The instance-id map of a manifest row (or an image record)."""
    if not row.instance_path:
        raise ValueError(f"{row} has no instance map")
    return read_instances(row.instance_path, row.label_map)
