"""A fixed ImageNet-S-like test set and an independent reference of the official evaluator's figures.

`fixed_set()` draws, deterministically, 43 images with 50 classes + background: objects from 1 %
to 70 % of the image (and exactly 5 / 25 / 50 % in three images), ignore rims, wrong labels,
misses, spills, shifts, split objects, false positives of classes absent from the set, labels
predicted only on ignore pixels, and one image with no object and no prediction.

`reference_figures()` recomputes every figure of the official evaluator
(github.com/LUSSeg/ImageNet-S, evaluation/evaluator.py, metric.py, data/data.py, data/utils.py)
image by image with dense numpy, following its definitions literally and sharing no code with
`useg.eval.imagenet_s`: ignore pixels removed first; boundaries as the per-class inner band of
3 % of the diagonal with the image border counted (zero padding); per-size buckets with the
ratio over the valid pixels, ceil'd to a percent, the background pixels joining only the buckets
that hold an object of the image; absent classes averaged in as 0 (mIoU, boundary mIoU) or
left out (size buckets: classes without ground truth in the bucket).
"""

from __future__ import annotations

import math

import numpy as np

NUM_CLASSES = 50  # C: classes 1..50, background 0
IGNORE = 1000
SHAPES = ((40, 56), (48, 64), (45, 60), (64, 48))
FRACTIONS = (0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.45, 0.6, 0.7)
GT_CLASSES = 44  # classes 45..50 never occur in the ground truth
EDITS = ("exact", "exact", "miss", "wrong", "spill", "shrink", "shift", "split")


def _object(shape: tuple[int, int], fraction: float, rng: np.random.Generator, ellipse: bool) -> np.ndarray:
    """A rectangle or ellipse covering about `fraction` of the image at a random place."""
    h, w = shape
    aspect = rng.uniform(0.6, 1.6)
    area = fraction * h * w * (4 / math.pi if ellipse else 1)
    oh = int(np.clip(round(math.sqrt(area * aspect)), 2, h))
    ow = int(np.clip(round(area / oh), 2, w))
    top, left = rng.integers(0, h - oh + 1), rng.integers(0, w - ow + 1)
    ys, xs = np.mgrid[:h, :w]
    if not ellipse:
        return (ys >= top) & (ys < top + oh) & (xs >= left) & (xs < left + ow)
    cy, cx = top + (oh - 1) / 2, left + (ow - 1) / 2
    return ((ys - cy) / (oh / 2)) ** 2 + ((xs - cx) / (ow / 2)) ** 2 <= 1


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(px):
        padded = np.pad(out, 1)
        out = padded[1:-1, 1:-1] | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    return out


def _edit(pred: np.ndarray, obj: np.ndarray, label: int, edit: str, rng: np.random.Generator) -> None:
    """Draw one object's prediction into `pred` as `edit` says."""
    if edit == "exact":
        pred[obj] = label
    elif edit == "wrong":
        pred[obj] = rng.integers(1, NUM_CLASSES + 1)
    elif edit == "spill":
        pred[_grow(obj, int(rng.integers(1, 4)))] = label
    elif edit == "shrink":
        pred[obj & ~_grow(~obj, 2)] = label
    elif edit == "shift":
        pred[np.roll(obj, int(rng.integers(2, 6)), axis=int(rng.integers(0, 2)))] = label
    elif edit == "split":
        rows = np.flatnonzero(obj.any(1))
        half = obj.copy()
        half[: rows[len(rows) // 2]] = False
        pred[obj & ~half] = label
        pred[half] = rng.integers(1, NUM_CLASSES + 1)
    # "miss": left as it is (background)


def _exact_fraction_image(class_id: int, label: int, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """A 40 x 50 image (2000 px, no ignore) with one rectangle of exactly `pixels` px, predicted right."""
    gt = np.zeros((40, 50), np.int64)
    gt.reshape(-1)[:pixels] = class_id  # whole rows first: a rectangle when pixels is a multiple of 50
    return gt, np.where(gt > 0, label, 0)


def fixed_set(seed: int = 29) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """(ground truth, raw prediction) pairs of the fixed set, and the hidden label of every class [C + 1]."""
    rng = np.random.default_rng(seed)
    label_of = np.concatenate([[0], rng.permutation(NUM_CLASSES) + 1])
    pairs = [(np.zeros(SHAPES[0], np.int64), np.zeros(SHAPES[0], np.int64))]  # no object, nothing predicted
    pairs[0][0][:2] = IGNORE
    for n in range(1, 40):
        shape = SHAPES[n % len(SHAPES)]
        gt, pred = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        count = int(rng.integers(1, 4))
        classes = rng.choice(GT_CLASSES, count, replace=False) + 1
        fractions = rng.choice(FRACTIONS, count, replace=False) / (1 if count == 1 else count - 0.5)
        objects = []
        for k, (c, f) in enumerate(zip(classes, fractions)):
            obj = _object(shape, float(f), rng, ellipse=bool((n + k) % 2))
            if rng.random() < 0.5:  # an ignore rim around the object
                gt[_grow(obj, 1) & ~obj & (gt == 0)] = IGNORE
            gt[obj] = c
            objects.append((obj, c))
        for obj, c in objects:
            if not (obj & (gt == c)).any():  # hidden by a later object
                continue
            _edit(pred, obj & (gt == c), label_of[c], EDITS[int(rng.integers(len(EDITS)))], rng)
        if n % 5 == 0:  # a false positive of a class absent from the set
            pred[_object(shape, 0.03, rng, ellipse=False) & (gt == 0)] = label_of[GT_CLASSES + 1 + n % 6]
        if n % 7 == 3:  # a label predicted on a wide ignore rim only (in some images the largest label)
            gt[_grow(gt > 0, 3) & (gt == 0)] = IGNORE
            pred[gt == IGNORE] = label_of[GT_CLASSES + 1 + n % 5]
        pairs.append((gt, pred))
    for class_id, pixels in ((7, 100), (8, 500), (9, 1000)):  # exactly 5 %, 25 %, 50 %
        pairs.append(_exact_fraction_image(class_id, label_of[class_id], pixels))
    return pairs, label_of


def inverse(label_of: np.ndarray) -> np.ndarray:
    """The matching label -> class that undoes `label_of`."""
    mapping = np.zeros(len(label_of), np.int64)
    mapping[label_of] = np.arange(len(label_of))
    return mapping


# ---- reference, from the official definitions --------------------------------------------------


def _erode(mask: np.ndarray) -> np.ndarray:
    """3 x 3 binary erosion; outside the array nothing erodes (cv2.erode's default border)."""
    padded = np.pad(mask, 1, constant_values=1)
    h, w = mask.shape
    return np.min([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0)


def boundary_map(ids: np.ndarray, ratio: float = 0.03) -> np.ndarray:
    """Official get_boundary_mask(ids + 1): v + 1 on the inner band of every region v, else 0."""
    h, w = ids.shape
    d = max(1, int(round(ratio * np.sqrt(h**2 + w**2))))
    out = np.zeros(ids.shape, np.int64)
    for v in np.unique(ids):
        mask = (ids == v).astype(np.uint8)
        eroded = np.pad(mask, 1)  # zero padding: the image border is boundary
        for _ in range(d):
            eroded = _erode(eroded)
        out[(mask == 1) & (eroded[1:-1, 1:-1] == 0)] = v + 1
    return out


def _hist(values: np.ndarray, bins: int) -> np.ndarray:
    values = values[(values >= 0) & (values < bins)]
    return np.bincount(values, minlength=bins).astype(np.float64)


def _iou_parts(pred: np.ndarray, gt: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Official IoUGPU: (intersection, predicted, target) histograms."""
    return _hist(pred[pred == gt], bins), _hist(pred, bins), _hist(gt, bins)


def _bucket(pixels: int, total: int) -> int:
    pct = math.ceil(100.0 * pixels / total)
    return 0 if pct <= 5 else 1 if pct <= 25 else 2 if pct <= 50 else 3


def reference_figures(pairs: list[tuple[np.ndarray, np.ndarray]], mapping: np.ndarray, c: int = NUM_CLASSES) -> dict:
    """Every figure of the official evaluator, in [0, 1], for raw predictions under `mapping` (label -> class)."""
    k = c + 1
    t, p, tp = np.zeros(k), np.zeros(k), np.zeros(k)
    bt, bp, btp = np.zeros(k), np.zeros(k), np.zeros(k)
    size = {name: np.zeros((4, k)) for name in ("t", "p", "tp", "bt", "bp", "btp")}
    f_sum = acc = 0.0
    for gt_full, pred_full in pairs:
        gb_full, pb_full = boundary_map(gt_full), boundary_map(pred_full)
        valid = gt_full != IGNORE
        gt, pred = gt_full[valid], mapping[pred_full[valid]]
        gb, pb = gb_full[valid], np.where(pb_full[valid] > 0, pred + 1, 0)
        inter, out, target = _iou_parts(pred, gt, k)
        t, p, tp = t + out, p + target, tp + inter
        b_inter, b_out, b_target = _iou_parts(pb, gb, k + 1)
        bt, bp, btp = bt + b_out[1:], bp + b_target[1:], btp + b_inter[1:]
        counts = np.bincount(gt)
        buckets: dict[int, list[int]] = {}
        for cls in np.unique(gt[gt > 0]):
            buckets.setdefault(_bucket(int(counts[cls]), int(counts.sum())), []).append(int(cls))
        for b, members in buckets.items():
            keep = (gt == 0) | np.isin(gt, members)
            for prefix, (x, y, bins) in (("", (pred, gt, k)), ("b", (pb, gb, k + 1))):
                i_, o_, t_ = _iou_parts(x[keep], y[keep], bins)
                s = slice(1, None) if prefix else slice(None)
                size[prefix + "t"][b] += o_[s]
                size[prefix + "p"][b] += t_[s]
                size[prefix + "tp"][b] += i_[s]
        t_fg, p_fg = gt > 0, pred > 0
        tp_fg = float((t_fg & p_fg).sum())
        recall, precision = tp_fg / (t_fg.sum() + 1e-20), tp_fg / (p_fg.sum() + 1e-20)
        f_sum += 1.3 * precision * recall / (0.3 * precision + recall + 1e-20)
        top = int(np.argmax(out[1:])) + 1
        acc += float(target[top] > 0 and out[top] > 0)
    n = len(pairs)
    iou, biou = tp / (t + p - tp + 1e-10), btp / (bt + bp - btp + 1e-10)

    def bucket_means(prefix: str) -> list[float]:
        i_, o_, t_ = size[prefix + "tp"], size[prefix + "t"], size[prefix + "p"]
        ratios = i_ / (o_ + t_ - i_ + 1e-10)
        return [float(ratios[b][t_[b] > 0].mean()) if (t_[b] > 0).any() else float("nan") for b in range(4)]

    return {
        "miou": float(iou.mean()),
        "iou": iou,
        "boundary_miou": float(biou.mean()),
        "miou_by_size": dict(zip(("S", "MS", "ML", "L"), bucket_means(""))),
        "boundary_miou_by_size": dict(zip(("S", "MS", "ML", "L"), bucket_means("b"))),
        "f_measure": f_sum / n,
        "image_accuracy": acc / n,
    }


def reference_cooccurrence(pairs: list[tuple[np.ndarray, np.ndarray]], c: int = NUM_CLASSES) -> np.ndarray:
    """Official match.py: S[i, j] = images whose valid pixels hold label i + 1 and class j + 1 [C, C]."""
    s = np.zeros((c, c), np.int64)
    for gt, pred in pairs:
        valid = gt != IGNORE
        labels = [v - 1 for v in np.unique(pred[valid]) if 1 <= v <= c]
        classes = [v - 1 for v in np.unique(gt[valid]) if 1 <= v <= c]
        for i in labels:
            s[i, classes] += 1
    return s
