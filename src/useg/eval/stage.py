"""The evaluate stage: predictions + manifest ground truth -> metrics.json."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from useg.atomic import write_json
from useg.data.labels import load_mask
from useg.data.manifest import ManifestRow
from useg.data.transforms import resize_labels
from useg.errors import DataError
from useg.eval.metrics import confusion_matrix, evaluate_confusion, per_image_matched
from useg.stores.predictions import Predictions

log = logging.getLogger(__name__)


def _image_confusion(row: ManifestRow, labels: np.ndarray, num_classes: int, num_labels: int, ignore: int) -> np.ndarray:
    gt = load_mask(row)
    pred = resize_labels(labels, gt.shape)
    return confusion_matrix(gt, pred, num_classes, num_labels, ignore)


def dataset_confusion(
    predictions: Predictions, rows: list[ManifestRow], num_classes: int, ignore_index: int, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of per-image confusions [C, K] (each prediction resized (nearest) to its ground-truth size)
    and sum of the per-image matched class x class confusions [C, C] (`per-image` protocol)."""
    confusion = np.zeros((num_classes, predictions.num_labels), np.int64)
    matched = np.zeros((num_classes, num_classes), np.int64)
    with ThreadPoolExecutor(max(1, threads)) as pool, tqdm(total=len(predictions), desc="evaluate", unit="img") as bar:
        for index, labels in predictions.batches():
            missing = [rows[i].id for i in index if not rows[i].mask_path]
            if missing:
                raise DataError(f"no ground-truth mask for images {missing[:5]}: evaluation needs masks/")
            jobs = [
                pool.submit(_image_confusion, rows[i], lab, num_classes, predictions.num_labels, ignore_index)
                for i, lab in zip(index, labels)
            ]
            for job in jobs:
                image = job.result()
                confusion += image
                matched += per_image_matched(image)
            bar.update(len(index))
    return confusion, matched


def evaluate_predictions(
    predictions_path: str | Path,
    rows: list[ManifestRow],
    class_names: list[str],
    out_path: str | Path,
    context: dict[str, Any],
    ignore_index: int = 255,
    threads: int = 1,
) -> dict[str, Any]:
    """Write metrics.json for one predictions store and return it."""
    if not class_names:
        raise DataError("the dataset has no classes.txt: cannot evaluate without class names")
    predictions = Predictions(predictions_path)
    confusion, matched = dataset_confusion(predictions, rows, len(class_names), ignore_index, threads)
    per_image = None if predictions.supervised else matched
    metrics = {
        **context,
        "method": context.get("method", predictions.method),
        "num_images": len(predictions),
        "num_classes": len(class_names),
        "num_clusters": predictions.num_labels,
        "class_names": class_names,
        "supervised": predictions.supervised,
        "protocols": evaluate_confusion(confusion, class_names, predictions.supervised, per_image),
        "confusion": confusion.tolist(),
    }
    write_json(out_path, metrics)
    for name, result in metrics["protocols"].items():
        log.info("%s [%s]: mIoU %.2f %%, pixel accuracy %.2f %%", metrics["method"], name, 100 * result["miou"], 100 * result["pixel_accuracy"])
    log.info("metrics written to %s", out_path)
    return metrics
