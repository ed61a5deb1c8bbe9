"""Metrics from class x cluster confusion matrices, one named protocol per block of metrics.json.

Dataset-level protocols: `hungarian` (one-to-one matching maximising matched pixels, the
standard; clusters left unmatched count as misses), `overcluster` (many-to-one, when clusters
outnumber classes), `hungarian-discard` (TransFGU supplementary Table 1: as `hungarian`, but the
pixels of unmatched clusters are discarded instead of counted as misses), `hungarian-iou`
(MaskDistill's release: the one-to-one matching maximises the sum of IoU, and a class with an
empty union counts 0 in the mean) and `linear-probe` (supervised: labels are already class ids).
Per-image protocols, reported only beside `hungarian` and marked not comparable: `per-image`
(one Hungarian matching per image over the classes present in it) and `alignseg` (AlignSeg's
release: each label to the present class it is most precise for, IoU over the present classes,
mean over images). Outside `hungarian-iou`, a class enters the mean IoU when it occurs in the
ground truth or in the matched predictions; classes with an empty union are reported as null.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from useg.cluster.hungarian import hungarian_match, many_to_one_match


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, num_labels: int, ignore_index: int = 255
) -> np.ndarray:
    """Counts [C, K] of ground-truth class c predicted as label k; ignore pixels excluded."""
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in size")
    valid = gt != ignore_index
    gt, pred = gt[valid].astype(np.int64), pred[valid].astype(np.int64)
    if gt.size and (gt.max() >= num_classes or pred.max() >= num_labels or pred.min() < 0):
        raise ValueError("ids out of range for the confusion matrix")
    return np.bincount(gt * num_labels + pred, minlength=num_classes * num_labels).reshape(num_classes, num_labels)


def mapped_confusion(confusion: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Class x class confusion after mapping clusters to classes; unmatched clusters are dropped.

    Pixels in an unmatched cluster then count as missed for their class (false negatives) and as
    a false positive of no class.
    """
    num_classes = confusion.shape[0]
    out = np.zeros((num_classes, num_classes), np.int64)
    for cluster, cls in enumerate(mapping):
        if cls >= 0:
            out[:, cls] += confusion[:, cluster]
    return out


def scores_from_mapping(confusion: np.ndarray, mapping: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-class IoU (nan for an empty union) and pixel accuracy of a cluster -> class mapping."""
    return scores_from_matched(mapped_confusion(confusion, mapping), confusion.sum(axis=1))


def present_classes(confusion: np.ndarray) -> np.ndarray:
    """Ids of the classes with ground-truth pixels in a confusion [C, K]."""
    return np.flatnonzero(confusion.sum(axis=1))


def per_image_matched(confusion: np.ndarray) -> np.ndarray:
    """Class x class confusion of one image after its own one-to-one Hungarian matching over the
    classes present in it (`per-image`); labels left over count as misses, never as an absent class."""
    present = present_classes(confusion)
    mapping = np.full(confusion.shape[1], -1, np.int64)
    if present.size:
        sub = hungarian_match(confusion[present])
        mapping[sub >= 0] = present[sub[sub >= 0]]
    return mapped_confusion(confusion, mapping)


def iou_matrix(confusion: np.ndarray) -> np.ndarray:
    """IoU [C, K] of every class with every cluster (0 where the union is empty)."""
    union = confusion.sum(axis=1, keepdims=True) + confusion.sum(axis=0, keepdims=True) - confusion
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, confusion / union, 0.0)


def iou_match(confusion: np.ndarray) -> np.ndarray:
    """One-to-one matching maximising the summed IoU (MaskDistill's release); -1 for unmatched clusters."""
    classes, clusters = linear_sum_assignment(iou_matrix(confusion), maximize=True)
    mapping = np.full(confusion.shape[1], -1, np.int64)
    mapping[clusters] = classes
    return mapping


def alignseg_match(confusion: np.ndarray) -> np.ndarray:
    """AlignSeg's release: every label to the present class where its precision is highest, many-to-one
    (ties: the lowest class id; a label without pixels gets the first present class)."""
    present = present_classes(confusion)
    return present[np.argmax(confusion[present], axis=0)]


def nearest_resize(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`labels` [H, W] resampled to `size` by nearest neighbour as torch's interpolate(mode="nearest"):
    output index i reads input index floor(i · in / out), the scale in float32."""

    def index(n_in: int, n_out: int) -> np.ndarray:
        if n_in == n_out:
            return np.arange(n_out)
        scale = np.float32(n_in) / np.float32(n_out)
        return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64), n_in - 1)

    return labels[np.ix_(index(labels.shape[0], size[0]), index(labels.shape[1], size[1]))]


def scores_from_matched(matched: np.ndarray, gt_total: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-class IoU and pixel accuracy of a class x class confusion; `gt_total` counts every
    ground-truth pixel of a class, those in unmatched clusters included."""
    tp = np.diag(matched).astype(np.float64)
    gt_total = gt_total.astype(np.float64)
    pred_total = matched.sum(axis=0).astype(np.float64)
    union = gt_total + pred_total - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = gt_total.sum()
    return iou, float(tp.sum() / total) if total else float("nan")


def scores_block(protocol: str, iou: np.ndarray, accuracy: float, class_names: list[str]) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU of one protocol."""
    return {
        "protocol": protocol,
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pixel_accuracy": accuracy,
        "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou)},
    }


def protocol_result(protocol: str, confusion: np.ndarray, mapping: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """The JSON block of one protocol: mIoU, pixel accuracy, per-class IoU and the matching."""
    return {
        **scores_block(protocol, *scores_from_mapping(confusion, mapping), class_names),
        "matching": {str(k): (class_names[c] if c >= 0 else None) for k, c in enumerate(mapping)},
    }


PER_IMAGE_NOTE = (
    "per-image: every image has its own cluster -> class matching with its own ground truth; "
    "not comparable to the dataset-level protocols (hungarian), reported only beside them"
)


def per_image_result(matched: np.ndarray, confusion: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """The `per-image` block from the sum of the per-image matched confusions."""
    iou, accuracy = scores_from_matched(matched, confusion.sum(axis=1))
    return {**scores_block("per-image", iou, accuracy, class_names), "comparable": False, "note": PER_IMAGE_NOTE}


def discard_result(confusion: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """`hungarian-discard` (TransFGU supplementary Table 1): the Hungarian matching, the pixels of
    unmatched clusters left out of every class's union and of the accuracy."""
    mapping = hungarian_match(confusion)
    matched = mapped_confusion(confusion, mapping)
    return {
        **scores_block("hungarian-discard", *scores_from_matched(matched, matched.sum(axis=1)), class_names),
        "matching": {str(k): (class_names[c] if c >= 0 else None) for k, c in enumerate(mapping)},
    }


def iou_result(confusion: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """`hungarian-iou` (MaskDistill's release): matching on the summed IoU; empty unions count 0."""
    mapping = iou_match(confusion)
    iou, accuracy = scores_from_mapping(confusion, mapping)
    return {
        **scores_block("hungarian-iou", np.nan_to_num(iou, nan=0.0), accuracy, class_names),
        "matching": {str(k): (class_names[c] if c >= 0 else None) for k, c in enumerate(mapping)},
    }


ALIGNSEG_NOTE = (
    "alignseg: AlignSeg's own evaluation - per image, each label to the present class it is most precise for "
    "(many-to-one), IoU over the image's present classes, mean over images; not comparable to hungarian"
)


@dataclass
class AlignSegMeans:
    """AlignSeg's per-image protocol accumulated over images (each image's confusion scored on its own)."""

    num_classes: int
    size: int | None = None  # images are scored on nearest-resized size x size maps (None: ground-truth size)
    miou_sum: float = 0.0
    images: int = 0
    correct: int = 0
    pixels: int = 0
    class_sum: np.ndarray = field(init=False)
    class_images: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.class_sum = np.zeros(self.num_classes)
        self.class_images = np.zeros(self.num_classes, np.int64)

    def add(self, confusion: np.ndarray) -> None:
        """Score one image's confusion [C, K]; an image without valid pixels is skipped."""
        present = present_classes(confusion)
        if not present.size:
            return
        matched = mapped_confusion(confusion, alignseg_match(confusion))
        iou, _ = scores_from_matched(matched, confusion.sum(axis=1))
        self.miou_sum += float(iou[present].mean())
        self.images += 1
        self.class_sum[present] += iou[present]
        self.class_images[present] += 1
        self.correct += int(np.trace(matched))
        self.pixels += int(confusion.sum())

    def result(self, class_names: list[str]) -> dict[str, Any]:
        """The `alignseg` block: mean over images of the per-image mIoU; per class, its mean over the
        images it is present in; pixel accuracy of the mapped labels over every scored pixel."""
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = np.where(self.class_images > 0, self.class_sum / np.maximum(self.class_images, 1), np.nan)
        accuracy = self.correct / self.pixels if self.pixels else float("nan")
        block = scores_block("alignseg", per_class, accuracy, class_names)
        block["miou"] = self.miou_sum / self.images if self.images else float("nan")
        return {**block, "images": self.images, "size": self.size, "comparable": False, "note": ALIGNSEG_NOTE}


def evaluate_confusion(
    confusion: np.ndarray,
    class_names: list[str],
    supervised: bool = False,
    per_image: np.ndarray | None = None,
    protocols: tuple[str, ...] = ("hungarian",),
) -> dict[str, dict[str, Any]]:
    """Results under `hungarian`, plus `overcluster` when there are more clusters than classes, plus
    `per-image` when `per_image` (the summed per-image matched confusions) is given, then the other
    dataset-level `protocols` asked for (`hungarian-discard`, `hungarian-iou`).

    Supervised predictions (labels are class ids, e.g. a linear probe) are scored as they are,
    under `linear-probe`, marked `supervised: true`.
    """
    if supervised:
        identity = np.arange(confusion.shape[1])
        return {"linear-probe": {**protocol_result("linear-probe", confusion, identity, class_names), "supervised": True}}
    results = {"hungarian": protocol_result("hungarian", confusion, hungarian_match(confusion), class_names)}
    if confusion.shape[1] > confusion.shape[0]:
        results["overcluster"] = protocol_result(
            "overcluster", confusion, many_to_one_match(confusion), class_names
        )
    if per_image is not None:
        results["per-image"] = per_image_result(per_image, confusion, class_names)
    if "hungarian-discard" in protocols:
        results["hungarian-discard"] = discard_result(confusion, class_names)
    if "hungarian-iou" in protocols:
        results["hungarian-iou"] = iou_result(confusion, class_names)
    return results
