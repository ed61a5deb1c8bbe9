"""Dataset-level metrics from a class x cluster confusion matrix.

Protocols: `hungarian` (one-to-one matching, the standard), `overcluster` (many-to-one, used
when clusters outnumber classes), `per-image` (one Hungarian matching per image, AlignSeg's own
evaluation: reported only beside `hungarian`, never comparable to the dataset-level protocols) and
`linear-probe` (supervised: labels are already class ids). A class enters the mean IoU when it
occurs in the ground truth or in the matched predictions; classes with an empty union are
reported as null.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


def per_image_matched(confusion: np.ndarray) -> np.ndarray:
    """Class x class confusion of one image after its own one-to-one Hungarian matching (`per-image`)."""
    return mapped_confusion(confusion, hungarian_match(confusion))


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


def evaluate_confusion(
    confusion: np.ndarray, class_names: list[str], supervised: bool = False, per_image: np.ndarray | None = None
) -> dict[str, dict[str, Any]]:
    """Results under `hungarian`, plus `overcluster` when there are more clusters than classes, plus
    `per-image` when `per_image` (the summed per-image matched confusions) is given.

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
    return results
