"""Exports: any store to HDF5 (`useg export`), predictions as ImageNet-S test-server PNGs (`useg export-imagenet-s`).

HDF5: groups become HDF5 groups, arrays become datasets with the same name, dtype, shape and
chunks (string arrays as UTF-8 strings). Attrs: numbers, strings and booleans are stored as they
are; everything else (provenance, lists, null) as JSON text, and the names of those attrs are
listed in the attr `json_attrs`, so `read_hdf5_attrs` gives back exactly the Zarr attrs.

ImageNet-S: one RGB PNG per image at the image's size, the matched class id as R + 256 G (the
encoding of the benchmark's masks and of its server), named by the image's path under the split
folder (`<wnid>/<name>.png`); labels the matching leaves unmatched are written as 1000, an id no
class has, which the official evaluator counts as foreground of no class (as useg does).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import zarr
from PIL import Image
from tqdm import tqdm

from useg.atomic import atomic_output
from useg.data.labels import IMAGENET_S_IGNORE, encode_rg
from useg.data.manifest import ManifestRow
from useg.data.transforms import resize_labels
from useg.errors import DataError
from useg.eval.imagenet_s import read_matching
from useg.stores.base import open_store
from useg.stores.predictions import Predictions

log = logging.getLogger(__name__)
JSON_ATTRS = "json_attrs"
ROWS_PER_COPY = 256


def _write_attrs(target: h5py.Group | h5py.Dataset, attrs: dict[str, Any]) -> None:
    encoded = []
    for key, value in attrs.items():
        if isinstance(value, (bool, int, float, str)):
            target.attrs[key] = value
        else:
            target.attrs[key] = json.dumps(value)
            encoded.append(key)
    if encoded:
        target.attrs[JSON_ATTRS] = json.dumps(encoded)


def read_hdf5_attrs(obj: h5py.Group | h5py.Dataset) -> dict[str, Any]:
    """The attrs of an exported group or dataset, JSON-encoded ones decoded."""
    encoded = set(json.loads(obj.attrs[JSON_ATTRS])) if JSON_ATTRS in obj.attrs else set()
    out: dict[str, Any] = {}
    for key, value in obj.attrs.items():
        if key == JSON_ATTRS:
            continue
        value = value.item() if isinstance(value, np.generic) else value
        out[key] = json.loads(value) if key in encoded else value
    return out


def _members(group: zarr.Group) -> list[tuple[str, Any]]:
    with warnings.catch_warnings():  # Snakemake's `.snakemake_timestamp` in directory outputs
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        return sorted(group.members(), key=lambda kv: kv[0])


def _copy_array(array: zarr.Array, parent: h5py.Group, name: str, compression: str | None) -> None:
    if array.dtype.kind in ("T", "U", "O"):  # variable-length strings
        values = np.asarray(array[:], dtype=object).astype(str)
        dataset = parent.create_dataset(name, data=values.astype(object), dtype=h5py.string_dtype())
    else:
        chunks = tuple(array.chunks) if array.ndim and all(array.shape) else None
        dataset = parent.create_dataset(
            name, shape=array.shape, dtype=array.dtype, chunks=chunks, compression=compression if chunks else None
        )
        if array.ndim == 0:
            dataset[()] = array[()]
        else:
            for start in range(0, array.shape[0], ROWS_PER_COPY):
                dataset[start : start + ROWS_PER_COPY] = array[start : start + ROWS_PER_COPY]
    _write_attrs(dataset, dict(array.attrs))


def _copy_group(group: zarr.Group, target: h5py.Group, compression: str | None, bar: tqdm) -> None:
    _write_attrs(target, dict(group.attrs))
    for name, item in _members(group):
        if isinstance(item, zarr.Group):
            _copy_group(item, target.create_group(name), compression, bar)
        else:
            _copy_array(item, target, name, compression)
            bar.update(1)


def export_hdf5(store: str | Path, out: str | Path, compression: str | None = "gzip") -> Path:
    """Write a store as an HDF5 file, atomically (the file appears only when complete)."""
    group = open_store(store)
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as h5, tqdm(desc=f"export {Path(store).name}", unit="array") as bar:
        _copy_group(group, h5, compression, bar)
    log.info("exported %s (%s) -> %s (%.1f MB)", store, group.attrs.get("kind"), out, Path(out).stat().st_size / 2**20)
    return Path(out)


def submission_path(row: ManifestRow, split_dir: Path | None) -> Path:
    """A prediction's file in the submission: the image's path under `split_dir` as .png, else `<id>.png`."""
    if split_dir is None:
        return Path(f"{row.id}.png")
    try:
        return Path(row.path).resolve().relative_to(split_dir.resolve()).with_suffix(".png")
    except ValueError:
        raise DataError(f"{row.path} is not under --split-dir {split_dir}: pass the folder of the split's images") from None


def export_imagenet_s(
    predictions_path: str | Path,
    rows: list[ManifestRow],
    out: str | Path,
    matching_path: str | Path | None = None,
    split_dir: str | Path | None = None,
) -> int:
    """Write every prediction as an ImageNet-S server PNG (matched class ids, R + 256 G, image size), atomically.

    `matching_path`: a metrics.json or matching JSON (`useg.eval.imagenet_s.read_matching`); without
    it the labels are written as they are (predictions that already hold class ids).
    """
    predictions = Predictions(predictions_path)
    lut = np.arange(predictions.num_labels)
    if matching_path is not None:
        mapping = read_matching(matching_path, predictions.num_labels)
        lut = np.where(mapping >= 0, mapping, IMAGENET_S_IGNORE)
    folder = None if split_dir is None else Path(split_dir)
    with atomic_output(out) as tmp, tqdm(total=len(predictions), desc="imagenet-s pngs", unit="img") as bar:
        for index, labels in predictions.batches():
            for i, label_map in zip(index, labels):
                row = rows[i]
                path = tmp / submission_path(row, folder)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(encode_rg(lut[resize_labels(label_map, (row.height, row.width))])).save(path)
            bar.update(len(index))
    unmatched = int((lut == IMAGENET_S_IGNORE).sum())
    log.info("%d ImageNet-S PNGs -> %s (%d labels unmatched, written as %d)", len(predictions), out, unmatched, IMAGENET_S_IGNORE)
    return len(predictions)
