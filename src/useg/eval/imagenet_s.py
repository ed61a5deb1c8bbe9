"""The `imagenet-s` protocol (LUSS paper Sec. 2.2) with the official evaluator's definitions.

The official evaluator is github.com/LUSSeg/ImageNet-S (evaluation/, data/); "official" below
names its behaviour. Predictions: label 0 is background, labels 1..K generated categories.
Ground truth: 0 is background, 1..C classes, `ignore` (1000) pixels are removed from the image
before anything is counted, the matching included (official data.py).

One pass over the images keeps, per image, sparse pixel counts of (class, label, in the class's
boundary band, in the label's boundary band) over the valid pixels. Every figure then comes from
these rows with vectorised numpy, so matching and scoring under another matching are cheap:

- matching: S[i, j] = images where label i and class j co-occur (background excluded), the
  bijection maximising sum S (`linear_sum_assignment`); ties are broken by the pixel overlap of
  label and class, and the labels that another optimum would match differently are reported;
- mIoU over the dataset, background included, classes absent from ground truth and prediction
  averaged in as 0 (official) — `miou_present` leaves them out;
- mIoU by object size: per image, a class's share of the valid pixels, ceil'd to a percent,
  puts it in S (<= 5) / MS (<= 25) / ML (<= 50) / L; a bucket's pixels are the image's
  background and its objects of that size, every class predicted there counts; mean over the
  classes with ground truth in the bucket, NaN (null) for a bucket without objects;
- boundary mIoU: IoU inside the inner bands of width d = 3 % of the image diagonal (>= 1 px) of
  every ground-truth and predicted region, the image border counted as a region edge; absent
  classes as 0 (official), by size as above;
- F-measure of foreground vs background per image, F = (1 + b2) P R / (b2 P + R) with b2 = 0.3,
  0 when nothing is right (both empty included), averaged over images;
- image accuracy: the matched class with the most predicted valid pixels is in the image;
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
from scipy.sparse.csgraph import connected_components

from useg.errors import DataError

PROTOCOL = "imagenet-s"
SIZE_BUCKETS = ("S", "MS", "ML", "L")
SIZE_PERCENT_EDGES = (5, 25, 50)
BETA2 = 0.3
BOUNDARY_DILATION = 0.03
TIE_BREAK = "pixel overlap"


def boundary_band(labels: np.ndarray, radius: int) -> np.ndarray:
    """Official inner boundary of every region (data/utils.py mask_to_boundary): pixels within
    `radius` px (square window) of another label or of the image border."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    shifted = labels.astype(np.uint16) + 1  # 0 is the border
    low = cv2.erode(shifted, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    high = cv2.dilate(shifted, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return low != high


def band_radius(shape: tuple[int, ...], dilation: float = BOUNDARY_DILATION) -> int:
    """Boundary band width: `dilation` of the image diagonal, at least one pixel (official)."""
    return max(1, int(round(dilation * float(np.sqrt(shape[0] ** 2 + shape[1] ** 2)))))


def image_stats(gt: np.ndarray, pred: np.ndarray, num_classes: int, num_labels: int, ignore: int) -> np.ndarray:
    """Rows (class, label, in the class's band, in the label's band, pixels) of one image's valid
    pixels [n, 5]; bands are drawn on the whole image, ignore pixels dropped afterwards (official)."""
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in size")
    code_type = np.int32 if num_classes * num_labels * 4 < 2**31 else np.int64
    g = np.where(gt == ignore, num_classes, gt).astype(code_type)
    p = pred.astype(code_type)
    if g.min() < 0 or g.max() > num_classes or p.min() < 0 or p.max() >= num_labels:
        raise ValueError("ids out of range for the imagenet-s evaluation")
    radius = band_radius(gt.shape)
    codes = (g * num_labels + p) * 4
    codes[boundary_band(g, radius)] += 2
    codes[boundary_band(p, radius)] += 1
    values, pixels = np.unique(codes[g < num_classes], return_counts=True)
    rest, pred_band = np.divmod(values, 2)
    pair, gt_band = np.divmod(rest, 2)
    return np.stack([pair // num_labels, pair % num_labels, gt_band, pred_band, pixels], axis=1).astype(np.int64)


@dataclass(frozen=True)
class PixelTable:
    """Every image's rows: image, class, label, band flags and pixels, one array each."""

    image: np.ndarray
    gt: np.ndarray
    label: np.ndarray
    gt_band: np.ndarray
    pred_band: np.ndarray
    pixels: np.ndarray


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


def optimal_pairs(weight: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """optimal[i, j]: row i may hold column j in an assignment as heavy as the optimal `cols`.

    Row i taking column j from its owner o costs w[o, j] - w[i, j]; these exchanges form a graph
    without negative cycles. With its shortest-path potentials d (Bellman-Ford from a source
    joined to every row at 0), every optimal assignment uses only pairs of zero reduced cost
    d[i] + w[o, j] - w[i, j] - d[o], and every perfect matching of those pairs is optimal.
    """
    n = len(cols)
    owner = np.argsort(cols)
    current = weight[owner, np.arange(n)]  # what each column weighs now
    dist = np.zeros(n)
    for _ in range(n):
        relaxed = dist.copy()
        relaxed[owner] = np.minimum(dist[owner], (dist[:, None] - weight).min(axis=0) + current)
        if np.array_equal(relaxed, dist):
            break
        dist = relaxed
    return dist[:, None] - weight + (current - dist[owner])[None, :] == 0


def moved_rows(optimal: np.ndarray, cols: np.ndarray, dummy_cols: np.ndarray) -> np.ndarray:
    """Rows that another optimal assignment puts in another column: those on a cycle of optimal
    exchanges (row i takes column j from its owner); one unmatched label taking another's dummy
    column is no move."""
    rows, targets = np.nonzero(optimal)
    keep = (targets != cols[rows]) & ~(dummy_cols[targets] & dummy_cols[cols[rows]])
    owner = np.argsort(cols)
    n = len(cols)
    edges = sparse.csr_matrix((np.ones(keep.sum()), (rows[keep], owner[targets[keep]])), shape=(n, n))
    _, component = connected_components(edges, directed=True, connection="strong")
    return np.bincount(component)[component] > 1


@dataclass(frozen=True)
class Matching:
    """A label -> class matching [K + 1] (0 -> background, -1 unmatched) and its ties."""

    mapping: np.ndarray
    cols: np.ndarray  # [n] column of every row of the padded square problem (label - 1 -> class - 1)
    free: np.ndarray  # [r] rows that another optimum of sum S moves (phantom rows included)
    free_cols: np.ndarray  # [r] the columns they hold between them
    free_optimal: np.ndarray  # [r, r] which of those columns each free row may hold in an optimum
    tied: np.ndarray  # labels that another bijection of the same sum S matches differently
    left_tied: np.ndarray  # of those, the labels the pixel-overlap tie-break does not settle

    def report(self, miou_range: tuple[float, float]) -> dict[str, Any]:
        """The `matching_ties` block of metrics.json; `miou_range`: lowest and highest mIoU of the optima."""
        return {
            "alternative_optima": bool(len(self.tied)),
            "labels_moved": len(self.tied),
            "moved_labels": self.tied.tolist(),
            "tie_break": TIE_BREAK,
            "labels_moved_after_tie_break": len(self.left_tied),
            "miou_over_optima": {"min": miou_range[0], "max": miou_range[1]},
        }

    def extreme_sums(self, pair_score: np.ndarray) -> tuple[float, float]:
        """Lowest and highest sum of `pair_score` [K, C] over the optimal bijections: the fixed rows'
        pairs, plus a Hungarian each way over the free rows and their columns."""
        n = len(self.cols)
        score = np.zeros((n, n))
        score[: pair_score.shape[0], : pair_score.shape[1]] = pair_score
        fixed = np.setdiff1d(np.arange(n), self.free)
        base = float(score[fixed, self.cols[fixed]].sum())
        if not len(self.free):
            return base, base
        sub = score[np.ix_(self.free, self.free_cols)]
        sums = []
        for sign in (-1, 1):
            rows, cols = linear_sum_assignment(np.where(self.free_optimal, sign * sub, -np.inf), maximize=True)
            sums.append(base + float(sub[rows, cols].sum()))
        return sums[0], sums[1]


def match_labels(s: np.ndarray, overlap: np.ndarray | None = None) -> Matching:
    """The bijection maximising sum S[i, f(i)] (LUSS Sec. 2.2, Hungarian); among the optima the one
    maximising the pixel overlap of label and class (`overlap` [K, C], default S itself).

    Only the rows some optimum moves can change: they permute the columns they hold between them,
    so the tie-break is a Hungarian over that block alone.
    """
    k, c = s.shape
    n = max(k, c)
    weight = np.zeros((n, n))
    weight[:k, :c] = s
    dummy_cols = np.arange(n) >= c
    cols = linear_sum_assignment(weight, maximize=True)[1]
    optimal = optimal_pairs(weight, cols)
    free = np.flatnonzero(moved_rows(optimal, cols, dummy_cols))
    held = cols[free]
    free_optimal = optimal[np.ix_(free, held)]
    second = np.zeros((n, n))
    second[:k, :c] = s if overlap is None else overlap
    among_optima = np.where(free_optimal, second[np.ix_(free, held)], -np.inf)
    order = linear_sum_assignment(among_optima, maximize=True)[1]
    left = free[moved_rows(optimal_pairs(among_optima, order), order, dummy_cols[held])]
    cols[free] = held[order]
    mapping = np.full(k + 1, -1, np.int64)
    mapping[0] = 0
    real = cols[:k] < c
    mapping[1:][real] = cols[:k][real] + 1
    return Matching(mapping, cols, free, held, free_optimal, free[free < k] + 1, left[left < k] + 1)


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
    """Per-image F_beta of foreground vs background, (1 + b2) P R / (b2 P + R); 0 without a true
    positive, both empty included (official metric.py FMeasureGPU)."""
    precision = np.divide(tp, pred_fg, out=np.zeros(len(tp)), where=pred_fg > 0)
    recall = np.divide(tp, gt_fg, out=np.zeros(len(tp)), where=gt_fg > 0)
    denom = beta2 * precision + recall
    return np.divide((1 + beta2) * precision * recall, denom, out=np.zeros(len(tp)), where=denom > 0)


def group_pixels(images: np.ndarray, ids: np.ndarray, pixels: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """(image, id, pixels) summed over the rows of each distinct (image, id); `size` bounds the ids."""
    keys, inverse = np.unique(images * size + ids, return_inverse=True)
    return keys // size, keys % size, np.bincount(inverse, weights=pixels, minlength=len(keys))


def largest(images: np.ndarray, ids: np.ndarray, pixels: np.ndarray, num_images: int) -> np.ndarray:
    """Per image, the id with the most pixels among distinct (image, id) rows (ties: smallest id); 0 when none."""
    out = np.zeros(num_images, np.int64)
    order = np.lexsort((ids, -pixels, images))
    first = np.ones(len(order), bool)
    first[1:] = images[order][1:] != images[order][:-1]
    out[images[order][first]] = ids[order][first]
    return out


def size_buckets(images: np.ndarray, gt: np.ndarray, pixels: np.ndarray, num_images: int, nc: int) -> np.ndarray:
    """Bucket [n, nc] of every object (image, class >= 1): its share of the image's valid pixels,
    ceil'd to a percent in float32 as the official does, <= 5 / 25 / 50 / more; -1 for no object."""
    total = np.bincount(images, weights=pixels, minlength=num_images).astype(np.float32)
    fg = gt >= 1
    image, cls, area = group_pixels(images[fg], gt[fg], pixels[fg], nc)
    percent = np.ceil(np.float32(100) * area.astype(np.float32) / total[image])
    out = np.full((num_images, nc), -1, np.int64)
    out[image, cls] = np.searchsorted(np.asarray(SIZE_PERCENT_EDGES, np.float32), percent, side="left")
    return out


def iou_sums(
    group: np.ndarray,
    gt: np.ndarray,
    mapped: np.ndarray,
    weights: tuple[np.ndarray, np.ndarray, np.ndarray],
    groups: int,
    nc: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group and class [groups, nc]: intersection, prediction and ground-truth pixels (official
    metric.py IoUGPU), with `weights` (intersection, prediction, ground truth) per row."""
    inter_w, pred_w, gt_w = weights
    gt_key, hit, pred = group * nc + gt, mapped == gt, mapped >= 0
    size = groups * nc
    return (
        np.bincount(gt_key[hit], weights=inter_w[hit], minlength=size).reshape(groups, nc),
        np.bincount((group * nc + mapped)[pred], weights=pred_w[pred], minlength=size).reshape(groups, nc),
        np.bincount(gt_key, weights=gt_w, minlength=size).reshape(groups, nc),
    )


def class_iou(inter: np.ndarray, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """IoU per class; NaN where ground truth and prediction are both empty."""
    union = pred + target - inter
    return np.divide(inter, union, out=np.full(inter.shape, np.nan), where=union > 0)


def absent_as_zero(iou: np.ndarray) -> float:
    """Mean IoU over every class, those absent from ground truth and prediction as 0 (official)."""
    return float(np.nan_to_num(iou, nan=0.0).mean())


def present_mean(iou: np.ndarray) -> float:
    """Mean IoU over the classes present in ground truth or prediction (NaN when none is)."""
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def _bucket_means(inter: np.ndarray, pred: np.ndarray, target: np.ndarray) -> dict[str, float | None]:
    """Per size bucket, the mean IoU over the classes with ground truth in it; None (official NaN) when none."""
    iou = np.nan_to_num(class_iou(inter, pred, target), nan=0.0)
    return {
        name: (float(iou[b][target[b] > 0].mean()) if (target[b] > 0).any() else None)
        for b, name in enumerate(SIZE_BUCKETS)
    }


@dataclass
class ImageNetSEvaluator:
    """Accumulates per-image rows (`image_stats`); `result()` scores them under a matching."""

    num_classes: int  # C + 1, background included
    num_labels: int  # K + 1, background label 0 included
    ignore: int = 1000
    _rows: list[np.ndarray] = field(default_factory=list)
    _table: PixelTable | None = field(default=None, repr=False)

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one image (prediction already at the ground truth's size)."""
        self.add_stats(image_stats(gt, pred, self.num_classes, self.num_labels, self.ignore))

    def add_stats(self, rows: np.ndarray) -> None:
        """Add the `image_stats` rows of the next image."""
        self._rows.append(np.column_stack([np.full(len(rows), len(self._rows)), rows]))
        self._table = None

    @property
    def num_images(self) -> int:
        return len(self._rows)

    def table(self) -> PixelTable:
        """The rows of every image added."""
        if not self._rows:
            raise ValueError("no images were added to the imagenet-s evaluation")
        if self._table is None:
            self._table = PixelTable(*np.concatenate(self._rows).T)
        return self._table

    def co_occurrence(self) -> np.ndarray:
        """S [K, C] over the valid pixels (official match.py)."""
        t = self.table()
        return co_occurrence(t.image, t.gt, t.label, self.num_images, self.num_classes - 1, self.num_labels - 1)

    def overlap(self) -> np.ndarray:
        """Valid pixels of class j predicted as label i [K, C] (foreground only): the tie-break."""
        t = self.table()
        c = self.num_classes - 1
        fg = (t.gt >= 1) & (t.label >= 1)
        keys = (t.label[fg] - 1) * c + t.gt[fg] - 1
        return np.bincount(keys, weights=t.pixels[fg], minlength=(self.num_labels - 1) * c).reshape(-1, c)

    def match(self) -> Matching:
        """The image-level co-occurrence matching, ties broken by pixel overlap."""
        return match_labels(self.co_occurrence(), self.overlap())

    def matching(self) -> np.ndarray:
        """The matching label -> class [K + 1]."""
        return self.match().mapping

    def result(self, class_names: list[str], mapping: np.ndarray | None = None) -> dict[str, Any]:
        """Every figure of the protocol under `mapping` (default: the co-occurrence matching)."""
        found = self.match() if mapping is None else None
        mapping = found.mapping if found is not None else np.asarray(mapping, np.int64)
        if len(mapping) != self.num_labels:
            raise ValueError(f"the matching covers {len(mapping)} labels, the predictions have {self.num_labels}")
        t, n, nc = self.table(), self.num_images, self.num_classes
        mapped = mapping[t.label]
        pixel_w = (t.pixels,) * 3
        band_w = (t.pixels * t.gt_band * t.pred_band, t.pixels * t.pred_band, t.pixels * t.gt_band)
        overall = iou_sums(np.zeros_like(t.gt), t.gt, mapped, pixel_w, 1, nc)
        iou = class_iou(*overall)[0]
        boundary = class_iou(*iou_sums(np.zeros_like(t.gt), t.gt, mapped, band_w, 1, nc))[0]
        by_size, boundary_by_size = self._size_miou(t, mapped, pixel_w, band_w)
        out = {
            "protocol": PROTOCOL,
            "miou": absent_as_zero(iou),
            "miou_present": present_mean(iou),
            "pixel_accuracy": float(overall[0].sum() / overall[2].sum()) if overall[2].sum() else float("nan"),
            "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou)},
            "miou_by_size": by_size,
            "boundary_miou": absent_as_zero(boundary),
            "boundary_miou_present": present_mean(boundary),
            "boundary_miou_by_size": boundary_by_size,
            "f_measure": self._f_measure(t),
            "image_accuracy": self._image_accuracy(t, mapped),
            "nmi": self._nmi(t),
            "num_images": n,
            "matching": {str(k): (class_names[c] if c >= 0 else None) for k, c in enumerate(mapping)},
            "matching_ids": {str(k): int(c) for k, c in enumerate(mapping)},
        }
        if found is not None:
            out["matching_ties"] = found.report(self._miou_range(found, overall))
        return out

    def _miou_range(self, found: Matching, overall: tuple[np.ndarray, ...]) -> tuple[float, float]:
        """Lowest and highest mIoU (absent as 0) over the bijections of the same sum S: class j's IoU
        depends only on its label i, so the mean is a sum of pair scores I_ij / (G_j + P_i - I_ij)."""
        t, nc = self.table(), self.num_classes
        inter = self.overlap()
        pred = np.bincount(t.label, weights=t.pixels, minlength=self.num_labels)[1:, None]
        target = overall[2][0, 1:][None, :]
        union = pred + target - inter
        pair = np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)
        background = float(np.nan_to_num(class_iou(*overall)[0, 0]))
        low, high = found.extreme_sums(pair)
        return (background + low) / nc, (background + high) / nc

    def _size_miou(
        self, t: PixelTable, mapped: np.ndarray, pixel_w: tuple[np.ndarray, ...], band_w: tuple[np.ndarray, ...]
    ) -> tuple[dict[str, float | None], dict[str, float | None]]:
        """mIoU and boundary mIoU per object-size bucket (official IoUDifferentSizeGPUWithBoundary)."""
        nc = self.num_classes
        bucket = size_buckets(t.image, t.gt, t.pixels, self.num_images, nc)
        has = np.stack([(bucket == b).any(axis=1) for b in range(len(SIZE_BUCKETS))], axis=1)
        fg = np.flatnonzero(t.gt >= 1)
        bg = [np.flatnonzero((t.gt == 0) & has[t.image, b]) for b in range(len(SIZE_BUCKETS))]
        rows = np.concatenate([fg, *bg])
        group = np.concatenate([bucket[t.image[fg], t.gt[fg]], *(np.full(len(r), b) for b, r in enumerate(bg))])

        def sums(weights: tuple[np.ndarray, ...]) -> dict[str, float | None]:
            w = tuple(x[rows] for x in weights)
            return _bucket_means(*iou_sums(group, t.gt[rows], mapped[rows], w, len(SIZE_BUCKETS), nc))

        return sums(pixel_w), sums(band_w)

    def _f_measure(self, t: PixelTable) -> float:
        """Mean over images of the foreground F-measure (label >= 1 vs class >= 1, valid pixels)."""
        n = self.num_images
        fg_gt, fg_pred = t.gt >= 1, t.label >= 1

        def per_image(mask: np.ndarray) -> np.ndarray:
            return np.bincount(t.image[mask], weights=t.pixels[mask], minlength=n)

        return float(f_measure(per_image(fg_gt & fg_pred), per_image(fg_pred), per_image(fg_gt)).mean())

    def _image_accuracy(self, t: PixelTable, mapped: np.ndarray) -> float:
        """Share of images whose matched class with the most predicted valid pixels (ties: the smallest
        id) is one of its classes (official evaluator.py)."""
        nc, n = self.num_classes, self.num_images
        top = largest(*group_pixels(t.image[mapped >= 1], mapped[mapped >= 1], t.pixels[mapped >= 1], nc), n)
        present = np.zeros((n, nc), bool)
        present[t.image, t.gt] = True
        return float((present[np.arange(n), top] & (top >= 1)).mean())

    def _nmi(self, t: PixelTable) -> float:
        """NMI of each image's largest predicted label vs its largest class (valid pixels)."""
        n = self.num_images
        fg_pred, fg_gt = t.label >= 1, t.gt >= 1
        top_label = largest(*group_pixels(t.image[fg_pred], t.label[fg_pred], t.pixels[fg_pred], self.num_labels), n)
        top_class = largest(*group_pixels(t.image[fg_gt], t.gt[fg_gt], t.pixels[fg_gt], self.num_classes), n)
        return nmi(top_label, top_class)


def read_matching(path: str | Path, num_labels: int) -> np.ndarray:
    """A saved matching label -> class [K + 1]: a metrics.json (its imagenet-s block), a JSON with
    `matching_ids`, or the official match.py output ({label: class})."""
    data = json.loads(Path(path).read_text())
    block = data.get("protocols", {}).get(PROTOCOL, data)
    saved = block.get("matching_ids", block)
    try:
        saved = {int(k): int(v) for k, v in saved.items()}
    except (TypeError, ValueError):
        raise DataError(
            f"{path} holds no imagenet-s matching: pass a metrics.json of that protocol or a {{label: class}} JSON"
        ) from None
    saved.setdefault(0, 0)
    if sorted(saved) != list(range(num_labels)):
        raise DataError(f"{path}: the matching covers {len(saved)} labels, the predictions have {num_labels} (0..{num_labels - 1})")
    return np.array([saved[k] for k in range(num_labels)], np.int64)
