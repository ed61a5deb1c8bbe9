"""Overlay grids: image | label overlay | ground-truth overlay for N images of a label-map store, and the same
N images under every method side by side."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from useg.data.images import load_rgb
from useg.data.labels import load_mask
from useg.data.manifest import ManifestRow, read_classes, read_manifest
from useg.errors import DataError
from useg.report.draw import blend, grid, legend, stack
from useg.report.labelmaps import LabelMaps
from useg.report.palette import IGNORE_COLOUR, colour_of

UNMATCHED = -1


def find_manifest(store: Path) -> Path:
    """The manifest.csv of the run a store belongs to: the nearest one in the store's parent folders."""
    for parent in store.resolve().parents:
        if (parent / "manifest.csv").exists():
            return parent / "manifest.csv"
    raise DataError(f"no manifest.csv in any parent folder of {store}: pass --manifest results/<dataset>/manifest.csv")


def _located(path: str, manifest: Path) -> str:
    """A manifest path as given, or (relative paths of a run made elsewhere) under a parent of the manifest."""
    if not path or Path(path).is_absolute() or Path(path).exists():
        return path
    for parent in manifest.resolve().parents:
        if (parent / path).exists():
            return str(parent / path)
    return path


def read_rows(manifest: Path) -> list[ManifestRow]:
    """Manifest rows with their image and mask paths found from any working directory."""
    return [
        replace(row, path=_located(row.path, manifest), mask_path=_located(row.mask_path, manifest))
        for row in read_manifest(manifest)
    ]


def pick_rows(count: int, n: int) -> np.ndarray:
    """N rows spread evenly over the store (all when it holds fewer)."""
    return np.unique(np.linspace(0, count - 1, min(n, count)).round().astype(np.int64))


def cell_size(row: ManifestRow, longest: int) -> tuple[int, int]:
    """(height, width) of a grid cell: the image's aspect ratio, longer side `longest` px."""
    scale = longest / max(row.width, row.height)
    return max(1, round(row.height * scale)), max(1, round(row.width * scale))


def _class_map(labels: np.ndarray, matching: dict[int, int]) -> np.ndarray:
    """Label ids -> matched class ids (unmatched labels: UNMATCHED)."""
    lut = np.full(max(int(labels.max(initial=0)) + 1, max(matching, default=0) + 1), UNMATCHED, np.int64)
    for label, cls in matching.items():
        lut[label] = cls
    return lut[labels]


@dataclass
class OverlayRows:
    """The cells of an overlay grid (one list per image) and what the legend needs."""

    cells: list[list[np.ndarray]]
    names: list[str]
    columns: list[str]
    class_names: list[str]
    matched: bool
    with_gt: bool


def class_lookup(maps: LabelMaps, class_names: list[str]) -> dict[int, int]:
    """Label id -> class id of the store's matching (metrics.json beside it); empty without one."""
    return {label: class_names.index(name) for label, name in (maps.matching() or {}).items() if name in class_names}


def label_overlay(image: np.ndarray, labels: np.ndarray, to_class: dict[int, int]) -> np.ndarray:
    """Labels laid over the image: in their matched class's colour (unmatched: black), else by label id."""
    shown = _class_map(labels, to_class) if to_class else labels
    return blend(image, shown, ignore=UNMATCHED if to_class else None)


def thumbnail(row: ManifestRow, longest: int) -> np.ndarray:
    """A manifest row's image, resized to its grid cell."""
    return cv2.resize(load_rgb(row.path), cell_size(row, longest)[::-1], interpolation=cv2.INTER_AREA)


def overlay_rows(maps: LabelMaps, n: int, manifest: Path | None = None, longest: int = 160) -> OverlayRows:
    """Image, label overlay and ground-truth overlay (when the dataset has masks) of N images.

    When a metrics.json sits beside the store, labels are drawn in the colour of the class the
    Hungarian matching gave them, so labels and ground truth share colours; otherwise each label id
    has its own fixed colour.
    """
    manifest = manifest or find_manifest(maps.path)
    rows = read_rows(manifest)
    class_names = _class_names(manifest)
    to_class = class_lookup(maps, class_names)
    picked = pick_rows(len(maps), n)
    with_gt = all(rows[int(maps.index[r])].mask_path for r in picked)
    cells, names = [], []
    for r, labels in zip(picked, maps.read(picked)):
        row = rows[int(maps.index[r])]
        image = thumbnail(row, longest)
        cell = [image, label_overlay(image, labels, to_class)]
        if with_gt:
            cell.append(blend(image, load_mask(row), ignore=255))
        cells.append(cell)
        names.append(row.id)
    shown_as = {"Predictions": "prediction", "LabelBank": "pseudo labels"}.get(maps.kind, f"{maps.kind} labels")
    columns = ["image", shown_as + (" (matched)" if to_class else ""), "ground truth"][: len(cells[0])]
    return OverlayRows(cells, names, columns, class_names, bool(to_class), with_gt)


def _class_names(manifest: Path) -> list[str]:
    classes_path = manifest.parent / "classes.json"
    return read_classes(classes_path)["classes"] if classes_path.exists() else []


def method_overlays(columns: dict[str, LabelMaps], n: int, manifest: Path, longest: int = 96) -> np.ndarray:
    """The same N evaluation images under every method side by side: image | ground truth | one column per
    method, labels in the colour of the class each method's Hungarian matching gave them (black: unmatched),
    with a legend of the classes."""
    rows = read_rows(manifest)
    class_names = _class_names(manifest)
    first = next(iter(columns.values()))
    picked = [(first.ids[int(r)], rows[int(first.index[int(r)])]) for r in pick_rows(len(first), n)]
    with_gt = all(row.mask_path for _, row in picked)
    images = [thumbnail(row, longest) for _, row in picked]
    cells = [[image] + ([blend(image, load_mask(row), ignore=255)] if with_gt else []) for image, (_, row) in zip(images, picked)]
    for name, maps in columns.items():
        position = {image_id: i for i, image_id in enumerate(maps.ids)}
        missing = [image_id for image_id, _ in picked if image_id not in position]
        if missing:
            raise DataError(f"{maps.path}: no prediction for {missing[0]} (column {name}); every column must predict the evaluation split")
        to_class = class_lookup(maps, class_names)
        labels = maps.read(np.array([position[image_id] for image_id, _ in picked]))
        for cell, image, label_map in zip(cells, images, labels):
            cell.append(label_overlay(image, label_map, to_class))
    titles = ["image"] + (["ground truth"] if with_gt else []) + list(columns)
    table = _uniform(cells, titles, [row.id for _, row in picked])
    entries = [(name, colour_of(i)) for i, name in enumerate(class_names)] + [("unmatched", IGNORE_COLOUR)]
    return stack([table, legend(entries, table.shape[1], "classes")])


def render_overlays(maps: LabelMaps, n: int, manifest: Path | None = None, longest: int = 160, title: str = "") -> np.ndarray:
    """A PNG-ready grid of N images (`overlay_rows`) with a title and a legend of classes and/or labels."""
    rows = overlay_rows(maps, n, manifest, longest)
    width = sum(c.shape[1] for c in rows.cells[0]) + 4 * len(rows.columns) + 100
    parts = [_uniform(rows.cells, rows.columns, rows.names)]
    if rows.matched or rows.with_gt:
        entries = [(name, colour_of(i)) for i, name in enumerate(rows.class_names)]
        if rows.matched:
            entries.append(("unmatched", IGNORE_COLOUR))
        parts.append(legend(entries, width, "classes"))
    if not rows.matched:
        parts.append(legend([(name, colour_of(k)) for k, name in enumerate(maps.label_names())], width, "labels"))
    if title:
        parts.insert(0, legend([], width, title))
    return stack(parts)


def _uniform(cells: list[list[np.ndarray]], columns: list[str], names: list[str]) -> np.ndarray:
    """Grid of cells padded to the largest cell size (images of different aspect ratios)."""
    h = max(c.shape[0] for row in cells for c in row)
    w = max(c.shape[1] for row in cells for c in row)
    padded = [[np.pad(c, ((0, h - c.shape[0]), (0, w - c.shape[1]), (0, 0)), constant_values=255) for c in row] for row in cells]
    return grid(padded, columns, names)
