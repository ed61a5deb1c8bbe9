"""The `imagenet-s` protocol (LUSS paper Sec. 2.2): image-level co-occurrence matching and its metrics.

Predictions: label 0 is background, labels 1..K are generated categories. Ground truth: 0 is
background, 1..C are classes, `ignore` (1000 for ImageNet-S) is left out of every pixel count.

One pass over the images keeps, per image, sparse counts of (ground-truth class, predicted label)
pixel pairs, and dataset-wide counts inside the boundary bands. Every metric then comes from these
tables with vectorised numpy, so matching once and scoring under a given matching are cheap:

- matching: S[i, j] = images where label i and class j co-occur (background excluded), the
  bijection maximising sum S by `linear_sum_assignment`;
- mIoU over the dataset, background included; pixel accuracy;
- mIoU by object size: each (image, class) pair falls in a bucket by the class's share of the
  image's pixels, S <= 5 % < MS <= 25 % < ML <= 50 % < L; its intersection and union go to that
  bucket, the background's to every bucket; predicted classes absent from an image's ground truth
  have no size and enter no bucket;
- boundary mIoU: IoU restricted to the bands within d px of a label change (d = 2 % of the image
  diagonal, at least 1 px) of the ground truth and of the prediction;
- F-measure of foreground vs background per image, F = (1 + b2) P R / (b2 P + R) with b2 = 0.3,
  averaged over images (1 when both are empty);
- image accuracy: the largest predicted non-background label, matched, is in the image's classes;
- NMI (arithmetic normalisation) of the images' largest predicted label vs their largest class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from useg.errors import DataError
from useg.eval.metrics import scores_from_mapping

PROTOCOL = "imagenet-s"
SIZE_EDGES = (0.05, 0.25, 0.5)
SIZE_BUCKETS = ("S", "MS", "ML", "L")
BETA2 = 0.3
BOUNDARY_DILATION = 0.02


def pair_counts(a: np.ndarray, b: np.ndarray, nb: int) -> np.ndarray:
    """Rows (a, b, pixels) of every distinct pair of two equally shaped id arrays [n, 3]."""
    codes, counts = np.unique(a.astype(np.int64).ravel() * nb + b.astype(np.int64).ravel(), return_counts=True)
    return np.stack([codes // nb, codes % nb, counts], axis=1)


def boundary_band(labels: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within `radius` px (square window) of a pixel with another label; the image border is no boundary."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    lab = labels.astype(np.uint16)
    low = cv2.erode(lab, kernel, borderType=cv2.BORDER_REPLICATE)
    high = cv2.dilate(lab, kernel, borderType=cv2.BORDER_REPLICATE)
    return low != high


def band_radius(shape: tuple[int, ...], dilation: float = BOUNDARY_DILATION) -> int:
    """Boundary band width: `dilation` of the image diagonal, at least one pixel."""
    return max(1, int(round(dilation * float(np.hypot(*shape[:2])))))


@dataclass
class ImageStats:
    """What one image contributes: sparse pixel pairs and boundary-band counts."""

    pairs: np.ndarray  # [n, 3] (gt id with ignore -> C + 1, label, pixels)
    band_pairs: np.ndarray  # [m, 3] (gt class, label, pixels) in both bands, ignore excluded
    gt_band: np.ndarray  # [a, 2] (gt class, pixels in the ground-truth band)
    pred_band: np.ndarray  # [b, 2] (label, pixels in the predicted band)
    area: int


def _counts(ids: np.ndarray) -> np.ndarray:
    values, counts = np.unique(ids.ravel(), return_counts=True)
    return np.stack([values.astype(np.int64), counts], axis=1)


def image_stats(gt: np.ndarray, pred: np.ndarray, num_classes: int, num_labels: int, ignore: int) -> ImageStats:
    """Sparse statistics of one image (`gt` ids 0..num_classes-1 or `ignore`, `pred` ids 0..num_labels-1)."""
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in size")
    g = np.where(gt == ignore, num_classes, gt).astype(np.int64)
    p = pred.astype(np.int64)
    if g.min() < 0 or g.max() > num_classes or p.min() < 0 or p.max() >= num_labels:
        raise ValueError("ids out of range for the imagenet-s evaluation")
    radius = band_radius(gt.shape)
    valid = g < num_classes
    gb, pb = boundary_band(g, radius) & valid, boundary_band(p, radius) & valid
    both = gb & pb
    return ImageStats(
        pairs=pair_counts(g, p, num_labels),
        band_pairs=pair_counts(g[both], p[both], num_labels),
        gt_band=_counts(g[gb]),
        pred_band=_counts(p[pb]),
        area=int(gt.size),
    )


def co_occurrence(
    images: np.ndarray, gt: np.ndarray, labels: np.ndarray, num_images: int, c: int, k: int
) -> np.ndarray:
    """S [K, C]: images where label i (1..K) and class j (1..C) co-occur (LUSS Sec. 2.2)."""
    fg_gt, fg_pred = (gt >= 1) & (gt <= c), labels >= 1
    a_gt = sparse.coo_matrix((np.ones(fg_gt.sum()), (images[fg_gt], gt[fg_gt] - 1)), shape=(num_images, c)).tocsr()
    a_pred = sparse.coo_matrix((np.ones(fg_pred.sum()), (images[fg_pred], labels[fg_pred] - 1)), shape=(num_images, k))
    a_gt.data[:] = 1  # duplicates summed: presence only
    a_pred = a_pred.tocsr()
    a_pred.data[:] = 1
    return np.asarray((a_pred.T @ a_gt).todense())


def match_labels(s: np.ndarray) -> np.ndarray:
    """Label -> class [K + 1] (0 -> background, -1 unmatched) maximising sum S[i, f(i)] (Hungarian)."""
    rows, cols = linear_sum_assignment(s, maximize=True)
    mapping = np.full(s.shape[0] + 1, -1, np.int64)
    mapping[0] = 0
    mapping[rows + 1] = cols + 1
    return mapping


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information with the arithmetic mean of the entropies (scikit-learn's default)."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    na, nb = ai.max(initial=-1) + 1, bi.max(initial=-1) + 1
    if na == nb == 1 or na == nb == 0:
        return 1.0
    joint = np.bincount(ai * nb + bi, minlength=na * nb).reshape(na, nb) / len(ai)
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum())
    entropy = (-(pa[pa > 0] * np.log(pa[pa > 0])).sum() - (pb[pb > 0] * np.log(pb[pb > 0])).sum()) / 2
    return 0.0 if mi <= 0 else mi / max(float(entropy), np.finfo(float).eps)


def f_measure(tp: np.ndarray, pred_fg: np.ndarray, gt_fg: np.ndarray, beta2: float = BETA2) -> np.ndarray:
    """Per-image F_beta of foreground vs background: (1 + b2) P R / (b2 P + R); 1 when both are empty."""
    precision = np.divide(tp, pred_fg, out=np.zeros(len(tp)), where=pred_fg > 0)
    recall = np.divide(tp, gt_fg, out=np.zeros(len(tp)), where=gt_fg > 0)
    denom = beta2 * precision + recall
    f = np.divide((1 + beta2) * precision * recall, denom, out=np.zeros(len(tp)), where=denom > 0)
    return np.where((pred_fg == 0) & (gt_fg == 0), 1.0, f)


def largest(images: np.ndarray, ids: np.ndarray, pixels: np.ndarray, num_images: int) -> np.ndarray:
    """Per image, the id with the most pixels among the given rows (ties: smallest id); 0 when none."""
    out = np.zeros(num_images, np.int64)
    order = np.lexsort((ids, -pixels, images))
    first = np.ones(len(order), bool)
    first[1:] = images[order][1:] != images[order][:-1]
    out[images[order][first]] = ids[order][first]
    return out


def _group_sum(keys: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(keys, weights=values, minlength=size)


@dataclass
class ImageNetSEvaluator:
    """Accumulates ImageStats image by image; `result()` scores them under a matching."""

    num_classes: int  # C + 1, background included
    num_labels: int  # K + 1, background label 0 included
    ignore: int = 1000
    _pairs: list[np.ndarray] = field(default_factory=list)
    _areas: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.band = np.zeros((self.num_classes, self.num_labels), np.int64)
        self.gt_band = np.zeros(self.num_classes, np.int64)
        self.pred_band = np.zeros(self.num_labels, np.int64)

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one image (prediction already at the ground truth's size)."""
        self.add_stats(image_stats(gt, pred, self.num_classes, self.num_labels, self.ignore))

    def add_stats(self, stats: ImageStats) -> None:
        image = len(self._areas)
        self._pairs.append(np.column_stack([np.full(len(stats.pairs), image), stats.pairs]))
        self._areas.append(stats.area)
        np.add.at(self.band, (stats.band_pairs[:, 0], stats.band_pairs[:, 1]), stats.band_pairs[:, 2])
        np.add.at(self.gt_band, stats.gt_band[:, 0], stats.gt_band[:, 1])
        np.add.at(self.pred_band, stats.pred_band[:, 0], stats.pred_band[:, 1])

    def table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(image, gt id, label, pixels) of every pixel pair of every image added."""
        if not self._pairs:
            raise ValueError("no images were added to the imagenet-s evaluation")
        t = np.concatenate(self._pairs)
        return t[:, 0], t[:, 1], t[:, 2], t[:, 3]

    def matching(self) -> np.ndarray:
        """The image-level co-occurrence matching label -> class [K + 1]."""
        images, gt, labels, _ = self.table()
        c, k = self.num_classes - 1, self.num_labels - 1
        return match_labels(co_occurrence(images, gt, labels, len(self._areas), c, k))

    def result(self, class_names: list[str], mapping: np.ndarray | None = None) -> dict[str, Any]:
        """Every metric of the protocol under `mapping` (default: the co-occurrence matching)."""
        mapping = self.matching() if mapping is None else np.asarray(mapping, np.int64)
        images, gt, labels, pixels = self.table()
        n, nc = len(self._areas), self.num_classes
        valid = gt < nc
        confusion = np.zeros((nc, self.num_labels), np.int64)
        np.add.at(confusion, (gt[valid], labels[valid]), pixels[valid])
        iou, accuracy = scores_from_mapping(confusion, mapping)
        top_label = largest(images[labels >= 1], labels[labels >= 1], pixels[labels >= 1], n)
        fg_gt = valid & (gt >= 1)
        top_class = largest(images[fg_gt], gt[fg_gt], pixels[fg_gt], n)
        in_gt = np.isin(np.arange(n) * nc + mapping[top_label], images[fg_gt] * nc + gt[fg_gt]) & (
            mapping[top_label] >= 1
        )
        fg_pred = valid & (labels >= 1)
        f = f_measure(
            _group_sum(images[fg_gt & fg_pred], pixels[fg_gt & fg_pred], n),
            _group_sum(images[fg_pred], pixels[fg_pred], n),
            _group_sum(images[fg_gt], pixels[fg_gt], n),
        )
        return {
            "protocol": PROTOCOL,
            "miou": _nanmean(iou),
            "pixel_accuracy": accuracy,
            "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou)},
            "miou_by_size": self._size_miou(images, gt, labels, pixels, mapping),
            "boundary_miou": self._boundary_miou(mapping),
            "f_measure": float(f.mean()),
            "image_accuracy": float(in_gt.mean()),
            "nmi": nmi(top_label, top_class),
            "num_images": n,
            "matching": {str(k): (class_names[c] if c >= 0 else None) for k, c in enumerate(mapping)},
            "matching_ids": {str(k): int(c) for k, c in enumerate(mapping)},
        }

    def _size_miou(
        self, images: np.ndarray, gt: np.ndarray, labels: np.ndarray, pixels: np.ndarray, mapping: np.ndarray
    ) -> dict[str, float]:
        """mIoU per object-size bucket (S, MS, ML, L), background in every bucket."""
        nc = self.num_classes
        mapped = mapping[labels]
        valid = gt < nc
        pv, hit = valid & (mapped >= 0), valid & (mapped == gt)
        gt_keys, pred_keys, hit_keys = (
            images[valid] * nc + gt[valid],
            images[pv] * nc + mapped[pv],
            images[hit] * nc + gt[hit],
        )
        keys, inverse = np.unique(np.concatenate([gt_keys, pred_keys, hit_keys]), return_inverse=True)
        parts = np.split(inverse, [len(gt_keys), len(gt_keys) + len(pred_keys)])
        gt_area, pred_area, inter = (
            _group_sum(part, pixels[mask], len(keys)) for part, mask in zip(parts, (valid, pv, hit))
        )
        key_image, key_class = np.divmod(keys, nc)
        ratio = gt_area / np.asarray(self._areas, np.float64)[key_image]
        bucket = np.searchsorted(SIZE_EDGES, ratio, side="left")
        union = gt_area + pred_area - inter
        out = {}
        for b, name in enumerate(SIZE_BUCKETS):
            keep = (key_class == 0) | ((gt_area > 0) & (bucket == b))
            i_sum = np.bincount(key_class[keep], weights=inter[keep], minlength=nc)
            u_sum = np.bincount(key_class[keep], weights=union[keep], minlength=nc)
            out[name] = _nanmean(np.divide(i_sum, u_sum, out=np.full(nc, np.nan), where=u_sum > 0))
        return out

    def _boundary_miou(self, mapping: np.ndarray) -> float:
        """mIoU inside the boundary bands of ground truth and prediction."""
        nc = self.num_classes
        matched = mapping >= 0
        inter = np.zeros(nc)
        pred = np.zeros(nc)
        np.add.at(inter, mapping[matched], self.band[mapping[matched], np.flatnonzero(matched)])
        np.add.at(pred, mapping[matched], self.pred_band[matched])
        union = self.gt_band + pred - inter
        return _nanmean(np.divide(inter, union, out=np.full(nc, np.nan), where=union > 0))


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def read_matching(path: str | Path, num_labels: int) -> np.ndarray:
    """A saved matching label -> class [K + 1] from a metrics.json (its imagenet-s block) or a matching JSON."""
    data = json.loads(Path(path).read_text())
    block = data.get("protocols", {}).get(PROTOCOL, data)
    if "matching_ids" not in block:
        raise DataError(
            f"{path} holds no imagenet-s matching (no 'matching_ids'): pass a metrics.json of that protocol"
        )
    saved = {int(k): int(v) for k, v in block["matching_ids"].items()}
    if len(saved) != num_labels:
        raise DataError(f"{path}: the matching covers {len(saved)} labels, the predictions have {num_labels}")
    return np.array([saved[k] for k in range(num_labels)], np.int64)
