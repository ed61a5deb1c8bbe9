"""Any store holding per-image label maps (`ids` + `labels` [N, H, W]): Predictions, LabelBank, and every
bank a method adds with the same two arrays. Summaries and agreement between two of them."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zarr

from useg.cluster.hungarian import hungarian_match
from useg.errors import StoreError
from useg.stores.base import open_store

CHUNK = 64  # images read at once


@dataclass
class LabelMaps:
    """Read access to the label maps of one store."""

    path: Path
    group: zarr.Group
    ids: list[str]
    index: np.ndarray
    num_labels: int

    @property
    def kind(self) -> str:
        return str(self.group.attrs.get("kind", "?"))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.group["labels"].shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, rows: np.ndarray | slice) -> np.ndarray:
        """Label maps of the given rows [n, H, W] as int64."""
        if isinstance(rows, slice):
            return self.group["labels"][rows].astype(np.int64)
        if not len(rows):
            return np.zeros((0, *self.shape), np.int64)
        return np.stack([self.group["labels"][int(r)] for r in rows]).astype(np.int64)

    def chunks(self):
        """Label maps in chunks of CHUNK images."""
        for start in range(0, len(self), CHUNK):
            yield self.read(slice(start, start + CHUNK))

    def label_names(self) -> list[str]:
        """A name per label id: 'background' for a bank's background label, else the id."""
        background = self.group.attrs.get("background_label")
        return ["background" if k == background else str(k) for k in range(self.num_labels)]

    def matching(self) -> dict[int, str] | None:
        """Label -> class name from a metrics.json beside the store, if there is one: the Hungarian
        matching, or the class ids themselves for supervised predictions."""
        path = self.path.parent / "metrics.json"
        if not path.exists():
            return None
        metrics = json.loads(path.read_text())
        if metrics.get("supervised"):
            return dict(enumerate(metrics["class_names"]))
        match = metrics.get("protocols", {}).get("hungarian", {}).get("matching")
        return {int(k): v for k, v in match.items()} if match else None


def _array_names(group: zarr.Group) -> set[str]:
    with warnings.catch_warnings():  # Snakemake's `.snakemake_timestamp` in directory outputs
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        return {name for name, _ in group.arrays()}


def has_label_maps(path: str | Path) -> bool:
    """Whether a store holds per-image label maps (`ids` and `labels` [N, H, W])."""
    group = open_store(path)
    names = _array_names(group)
    return {"ids", "labels"} <= names and group["labels"].ndim == 3


def open_label_maps(path: str | Path) -> LabelMaps:
    """Open a store with `labels` [N, H, W]; say which stores have them when this one does not."""
    path = Path(path)
    group = open_store(path)
    names = _array_names(group)
    if not has_label_maps(path):
        raise StoreError(
            f"{path} is a {group.attrs.get('kind')!r} store without per-image label maps (`labels` [N, H, W]): "
            "--show and --compare read Predictions, LabelBank and other label banks"
        )
    labels = group["labels"]
    index = group["index"][:] if "index" in names else np.arange(labels.shape[0])
    maps = LabelMaps(path, group, [str(s) for s in group["ids"][:]], index, int(group.attrs.get("num_labels") or 0))
    if not maps.num_labels:  # a bank without the attr: the largest id + 1
        maps.num_labels = max((int(chunk.max(initial=0)) for chunk in maps.chunks()), default=0) + 1
    return maps


def pixel_share(maps: LabelMaps) -> np.ndarray:
    """Share of all pixels carrying each label id [num_labels]."""
    counts = np.zeros(maps.num_labels, np.int64)
    for chunk in maps.chunks():
        counts += np.bincount(chunk.ravel(), minlength=maps.num_labels)[: maps.num_labels]
    return counts / max(1, counts.sum())


def summarize(maps: LabelMaps) -> dict[str, Any]:
    """Images, label-map size, number of labels, per-label pixel share (and matched class, when evaluated)."""
    share = pixel_share(maps)
    match = maps.matching() or {}
    return {
        "kind": maps.kind,
        "images": len(maps),
        "size": list(maps.shape),
        "num_labels": maps.num_labels,
        "labels_present": int((share > 0).sum()),
        "pixel_share": {name: float(s) for name, s in zip(maps.label_names(), share)},
        "matched_class": {str(k): v for k, v in match.items()},
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Text of a summary: one line per label, with a bar of its pixel share."""
    lines = [
        f"label maps: {summary['images']} images, {summary['size'][0]}x{summary['size'][1]} px, "
        f"{summary['num_labels']} labels ({summary['labels_present']} present)",
        "pixel share per label:",
    ]
    for name, share in summary["pixel_share"].items():
        matched = summary["matched_class"].get(name)
        bar = "#" * int(round(40 * share))
        lines.append(f"  {name:>10} {100 * share:6.2f} % {bar}" + (f"  -> {matched}" if matched else ""))
    return "\n".join(lines)


def _aligned(a: LabelMaps, b: LabelMaps) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a and b holding the same image ids, in a's order."""
    where = {i: r for r, i in enumerate(b.ids)}
    rows_a = np.array([r for r, i in enumerate(a.ids) if i in where], np.int64)
    if not len(rows_a):
        raise StoreError(f"{a.path} and {b.path} share no image ids: compare banks of the same images")
    return rows_a, np.array([where[a.ids[r]] for r in rows_a], np.int64)


def _resize(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if labels.shape[1:] == size:
        return labels
    return np.stack([cv2.resize(m.astype(np.int32), size[::-1], interpolation=cv2.INTER_NEAREST) for m in labels]).astype(np.int64)


def compare(a: LabelMaps, b: LabelMaps) -> dict[str, Any]:
    """Agreement of two label-map stores on their common images, at the larger of the two sizes.

    Same-id agreement (banks sharing label ids, e.g. bootstrap rounds): changed-pixel share and, per
    label of A, the share of its pixels B gives the same label and the IoU of the two regions. Matched
    agreement: pixels that agree after a one-to-one (Hungarian) matching of B's labels to A's, for
    stores whose label ids mean different things (two methods).
    """
    rows_a, rows_b = _aligned(a, b)
    size = max(a.shape, b.shape, key=lambda s: s[0] * s[1])
    n = max(a.num_labels, b.num_labels)
    confusion = np.zeros((n, n), np.int64)
    for start in range(0, len(rows_a), CHUNK):
        la = _resize(a.read(rows_a[start : start + CHUNK]), size)
        lb = _resize(b.read(rows_b[start : start + CHUNK]), size)
        confusion += np.bincount(la.ravel() * n + lb.ravel(), minlength=n * n).reshape(n, n)
    total = confusion.sum()
    same = np.diag(confusion)
    in_a, in_b = confusion.sum(1), confusion.sum(0)
    mapping = hungarian_match(confusion)  # B label -> A label
    matched = sum(confusion[mapping[k], k] for k in range(n) if mapping[k] >= 0)
    per_label = {
        str(k): {
            "pixels_a": int(in_a[k]),
            "agreement": float(same[k] / in_a[k]) if in_a[k] else None,
            "iou": float(same[k] / (in_a[k] + in_b[k] - same[k])) if in_a[k] + in_b[k] else None,
        }
        for k in range(n)
    }
    return {
        "images": int(len(rows_a)),
        "size": list(size),
        "changed_pixel_share": float(1 - same.sum() / total),
        "agreement": float(same.sum() / total),
        "matched_agreement": float(matched / total),
        "per_label": per_label,
    }


def format_comparison(a: Path, b: Path, result: dict[str, Any]) -> str:
    """Text of a comparison."""
    lines = [
        f"A: {a}",
        f"B: {b}",
        f"{result['images']} common images at {result['size'][0]}x{result['size'][1]} px",
        f"changed pixels (A != B): {100 * result['changed_pixel_share']:.2f} %",
        f"agreement (same label id): {100 * result['agreement']:.2f} %",
        f"agreement after one-to-one matching of B's labels to A's: {100 * result['matched_agreement']:.2f} %",
        "per label of A:          pixels   kept in B      IoU",
    ]
    for k, row in result["per_label"].items():
        if not row["pixels_a"] and row["iou"] is None:
            continue
        kept = "     -" if row["agreement"] is None else f"{100 * row['agreement']:6.2f} %"
        iou = "     -" if row["iou"] is None else f"{100 * row['iou']:6.2f} %"
        lines.append(f"  {k:>10} {row['pixels_a']:>12}   {kept}   {iou}")
    return "\n".join(lines)
