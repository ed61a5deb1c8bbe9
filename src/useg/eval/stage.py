"""The evaluate stage: predictions + manifest ground truth -> metrics.json."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from useg.atomic import write_json
from useg.data.labels import load_mask
from useg.data.manifest import ManifestRow
from useg.data.frame import Frame
from useg.data.transforms import resize_labels
from useg.errors import DataError
from useg.eval.imagenet_s import PROTOCOL, ImageNetSEvaluator, image_stats, read_matching
from useg.eval.metrics import AlignSegMeans, confusion_matrix, evaluate_confusion, nearest_resize, per_image_matched
from useg.stores.predictions import Predictions

log = logging.getLogger(__name__)

# Protocols reported beside `hungarian` (which any of them brings along).
HUNGARIAN_FAMILY = {"hungarian", "hungarian-discard", "hungarian-iou", "alignseg"}


ScoredAt = Literal["image", "frame"]


def frame_truth(truth: np.ndarray, frame: Frame, ignore: int) -> np.ndarray:
    """The ground truth in a prediction's working frame, as TransFGU's release scores it: squashed by torch's
    nearest rule (nearest_resize), else cropped or padded by the frame (padding `ignore`)."""
    if frame.mode == "squash":
        return nearest_resize(truth, frame.size)
    return frame.fit_labels(truth, ignore)


def scored_maps(
    truth: np.ndarray, labels: np.ndarray, frame: Frame, ignore: int, scored_at: ScoredAt
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ground truth, the predicted labels that show it, those labels at the ground truth's size): at the
    image (the part its frame shows, the prediction mapped back) or in the prediction's frame."""
    if scored_at == "frame":
        return frame_truth(truth, frame, ignore), labels, labels
    gt, shown = frame.overlap(truth, labels)
    return gt, shown, resize_labels(np.ascontiguousarray(shown), gt.shape)


def _image_eval(
    row: ManifestRow,
    labels: np.ndarray,
    frame: Frame,
    num_classes: int,
    num_labels: int,
    ignore: int,
    imagenet_s: bool,
    alignseg: AlignSegMeans | None,
    scored_at: ScoredAt = "image",
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One image's confusion where `scored_at` says (`scored_maps`), its imagenet-s statistics and its
    confusion on the alignseg protocol's resized maps (the last two when asked)."""
    gt, shown, pred = scored_maps(load_mask(row), labels, frame, ignore, scored_at)
    stats = image_stats(gt, pred, num_classes, num_labels, ignore) if imagenet_s else None
    confusion = confusion_matrix(gt, pred, num_classes, num_labels, ignore)
    if alignseg is None:
        return confusion, stats, None
    if alignseg.size is None:
        return confusion, stats, confusion
    size = (alignseg.size, alignseg.size)
    small = confusion_matrix(nearest_resize(gt, size), nearest_resize(shown, size), num_classes, num_labels, ignore)
    return confusion, stats, small


def scan_predictions(
    predictions: Predictions,
    rows: list[ManifestRow],
    num_classes: int,
    ignore_index: int,
    threads: int = 1,
    imagenet_s: bool = False,
    alignseg: AlignSegMeans | None = None,
    scored_at: ScoredAt = "image",
) -> tuple[np.ndarray, np.ndarray, ImageNetSEvaluator | None]:
    """Sum of per-image confusions [C, K], sum of the per-image matched class x class confusions
    [C, C] (`per-image` protocol), and the imagenet-s statistics when asked; each prediction is mapped
    (nearest) through its frame to its ground-truth size, or the ground truth into the frame (`scored_at`).
    `alignseg` accumulates AlignSeg's per-image protocol."""
    confusion = np.zeros((num_classes, predictions.num_labels), np.int64)
    matched = np.zeros((num_classes, num_classes), np.int64)
    evaluator = ImageNetSEvaluator(num_classes, predictions.num_labels, ignore_index) if imagenet_s else None
    with ThreadPoolExecutor(max(1, threads)) as pool, tqdm(total=len(predictions), desc="evaluate", unit="img") as bar:
        for index, labels in predictions.batches():
            missing = [rows[i].id for i in index if not rows[i].mask_path]
            if missing:
                raise DataError(f"no ground-truth mask for images {missing[:5]}: evaluation needs masks/")
            jobs = [
                pool.submit(
                    _image_eval, rows[i], lab, predictions.frame, num_classes, predictions.num_labels, ignore_index, imagenet_s, alignseg,
                    scored_at,
                )
                for i, lab in zip(index, labels)
            ]
            for job in jobs:
                image_confusion, stats, alignseg_confusion = job.result()
                confusion += image_confusion
                matched += per_image_matched(image_confusion)
                if evaluator is not None:
                    evaluator.add_stats(stats)
                if alignseg is not None:
                    alignseg.add(alignseg_confusion)
            bar.update(len(index))
    return confusion, matched, evaluator


def evaluate_predictions(
    predictions_path: str | Path,
    rows: list[ManifestRow],
    class_names: list[str],
    out_path: str | Path,
    context: dict[str, Any],
    ignore_index: int = 255,
    threads: int = 1,
    protocols: tuple[str, ...] = ("hungarian",),
    matching_path: str | Path | None = None,
    alignseg_size: int | None = 100,
    scored_at: ScoredAt = "image",
) -> dict[str, Any]:
    """Write metrics.json for one predictions store and return it.

    `protocols`: `hungarian` (with `overcluster` when K > C and `per-image` beside it, unsupervised only),
    `hungarian-discard`, `hungarian-iou`, `alignseg` (scored on nearest-resized `alignseg_size`²
    maps; None: at the ground-truth size), each reported beside `hungarian`, and/or `imagenet-s`
    (label 0 = background);
    `matching_path` reuses a saved imagenet-s matching instead of matching anew; `scored_at` (`scored_maps`):
    at each image's ground-truth size or in each prediction's working frame (TransFGU's release).
    """
    if not class_names:
        raise DataError("the dataset has no classes.txt: cannot evaluate without class names")
    predictions = Predictions(predictions_path)
    imagenet_s = PROTOCOL in protocols
    unsupervised = not predictions.supervised
    alignseg = AlignSegMeans(len(class_names), alignseg_size) if "alignseg" in protocols and unsupervised else None
    confusion, matched, evaluator = scan_predictions(
        predictions, rows, len(class_names), ignore_index, threads, imagenet_s, alignseg, scored_at
    )
    if not confusion.sum():
        raise DataError(
            f"the {len(predictions)} evaluated images hold no labelled pixel: every ground-truth pixel is the "
            f"ignore id {ignore_index} (or the masks are missing). Check the masks of dataset.eval_split."
        )
    per_image = matched if unsupervised else None
    results = (
        evaluate_confusion(confusion, class_names, predictions.supervised, per_image, protocols)
        if HUNGARIAN_FAMILY & set(protocols) or predictions.supervised
        else {}
    )
    if alignseg is not None:
        results["alignseg"] = alignseg.result(class_names)
    if evaluator is not None:
        mapping = read_matching(matching_path, predictions.num_labels) if matching_path else None
        results[PROTOCOL] = evaluator.result(class_names, mapping)
    metrics = {
        **context,
        "method": context.get("method", predictions.method),
        "num_images": len(predictions),
        "num_classes": len(class_names),
        "num_clusters": predictions.num_labels,
        "scored_at": scored_at,
        "class_names": class_names,
        "supervised": predictions.supervised,
        "protocols": results,
        "confusion": confusion.tolist(),
    }
    write_json(out_path, metrics)
    for name, result in metrics["protocols"].items():
        log.info(
            "%s [%s]: mIoU %.2f %%, pixel accuracy %.2f %%",
            metrics["method"],
            name,
            100 * result["miou"],
            100 * result["pixel_accuracy"],
        )
    if PROTOCOL in results:
        r = results[PROTOCOL]
        log.info(
            "imagenet-s: F %.2f %%, image accuracy %.2f %%, NMI %.2f %%, boundary mIoU %.2f %%",
            *(100 * r[k] for k in ("f_measure", "image_accuracy", "nmi", "boundary_miou")),
        )
    log.info("metrics written to %s", out_path)
    return metrics
