"""Mask AP / AP50 / AP75 of object mask candidates against ground-truth instances (MaskDistill §4.3.2, §A.4).

Settings: `multi` (every detection against every instance) and `single` (per image only the most
confident detection, against the instance whose box overlaps it most). Class-agnostic: one category;
semantic: each cluster mapped to a class by the Hungarian matching of the same column's metrics.json.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from useg.atomic import write_json
from useg.data.labels import load_instances, load_mask
from useg.data.manifest import read_classes, read_manifest
from useg.data.transforms import resize_labels
from useg.methods.maskdistill.clusters import read_clusters
from useg.methods.maskdistill.masks import mask_box
from useg.stores.candidates import CandidateBank
from useg.stores.maskbank import MaskBank

log = logging.getLogger(__name__)


@dataclass
class Instances:
    """Masks [n, H, W] (binary), class ids [n] and (detections only) scores [n] of one image."""

    masks: np.ndarray
    classes: np.ndarray
    scores: np.ndarray | None = None


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boxes (x0, y0, x1, y1)."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def single_object(gt: Instances, det: Instances) -> tuple[Instances, Instances]:
    """`single` setting: the most confident detection and the instance with the largest box IoU to it
    (without a detection, the largest instance, which then counts as missed; without an instance, the
    most confident detection alone, which then counts as a false positive, as the release's evaluation)."""
    if len(det.classes):
        top = int(np.argmax(det.scores))
        det = Instances(det.masks[top : top + 1], det.classes[top : top + 1], det.scores[top : top + 1])
    if not len(gt.classes):
        return gt, det
    if not len(det.classes):
        keep = int(gt.masks.reshape(len(gt.masks), -1).sum(1).argmax())
    else:
        box = mask_box(det.masks[0])
        keep = int(np.argmax([box_iou(box, mask_box(m)) for m in gt.masks]))
    return Instances(gt.masks[keep : keep + 1], gt.classes[keep : keep + 1]), det


def mask_ap(gts: list[Instances], dets: list[Instances]) -> dict[str, float]:
    """COCO mask AP (IoU .50:.95), AP50 and AP75 with pycocotools, up to 100 detections per image."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    categories = sorted({int(c) for g in gts for c in g.classes} | {int(c) for d in dets for c in d.classes})
    for image_id, (gt, det) in enumerate(zip(gts, dets), start=1):
        height, width = gt.masks.shape[1:] if gt.masks.ndim == 3 else det.masks.shape[1:]
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        for mask, cls in zip(gt.masks, gt.classes):
            x0, y0, x1, y1 = mask_box(mask)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls), "segmentation": _rle(mask),
                "area": float(mask.sum()), "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "iscrowd": 0,
            })  # fmt: skip
        for mask, cls, score in zip(det.masks, det.classes, det.scores):
            results.append({"image_id": image_id, "category_id": int(cls), "segmentation": _rle(mask), "score": float(score)})
    if not annotations or not results:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0, "num_instances": len(annotations), "num_detections": len(results)}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations, "categories": [{"id": c} for c in categories]}
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [max(0.0, float(s)) for s in evaluator.stats[:3]]  # -1 (no ground truth of a category) counts as 0
    return {"ap": stats[0], "ap50": stats[1], "ap75": stats[2], "num_instances": len(annotations), "num_detections": len(results)}


def ground_truth(row, ignore: int) -> Instances:
    """Instances of an image with the majority class of their pixels."""
    instances, semantic = load_instances(row), load_mask(row)
    ids = [i for i in np.unique(instances) if i != 0]
    masks = np.stack([instances == i for i in ids]) if ids else np.zeros((0, *instances.shape), bool)
    classes = []
    for mask in masks:
        values = semantic[mask & (semantic != ignore)]
        classes.append(int(np.bincount(values).argmax()) if len(values) else -1)
    keep = np.array([c >= 0 for c in classes], bool)
    return Instances(masks[keep] if len(masks) else masks, np.array(classes, np.int64)[keep] if classes else np.zeros(0, np.int64))


def to_size(det: Instances, size: tuple[int, int]) -> Instances:
    """Detections resized (nearest) to the ground-truth size."""
    masks = np.stack([resize_labels(m, size) for m in det.masks]) if len(det.masks) else np.zeros((0, *size), np.uint8)
    return Instances(masks, det.classes, det.scores)


def semantic(det: Instances, matching: dict[str, str | None], class_ids: dict[str, int]) -> Instances:
    """Detections with clusters replaced by their matched classes (unmatched clusters dropped)."""
    mapped = np.array([class_ids.get(matching.get(str(int(c))) or "", -1) for c in det.classes], np.int64)
    keep = mapped >= 0
    return Instances(det.masks[keep], mapped[keep], det.scores[keep])


def ap_table(gts: list[Instances], dets: list[Instances], matching: dict[str, str | None], class_ids: dict[str, int]) -> dict[str, Any]:
    """The four AP blocks of one source: class-agnostic / semantic × multi / single."""
    agnostic = [Instances(d.masks, np.zeros(len(d.classes), np.int64), d.scores) for d in dets]
    gts_agnostic = [Instances(g.masks, np.zeros(len(g.classes), np.int64)) for g in gts]
    sem = [semantic(d, matching, class_ids) for d in dets]
    out = {}
    for name, g_list, d_list in (("class-agnostic", gts_agnostic, agnostic), ("semantic", gts, sem)):
        out[f"{name}/multi"] = mask_ap(g_list, d_list)
        pairs = [single_object(g, d) for g, d in zip(g_list, d_list)]
        out[f"{name}/single"] = mask_ap([p[0] for p in pairs], [p[1] for p in pairs])
    return out


def matching(metrics_path: str | Path) -> dict[str, str | None]:
    """Cluster -> class name of the `hungarian` protocol in a metrics.json."""
    return json.loads(Path(metrics_path).read_text())["protocols"]["hungarian"]["matching"]


def evaluate_ap(
    manifest_path: str | Path,
    classes_path: str | Path,
    bank: MaskBank,
    clusters_path: str | Path,
    candidates: CandidateBank,
    matchings: dict[str, dict[str, str | None]],
    out_path: str | Path,
    context: dict[str, Any],
) -> dict[str, Any]:
    """ap.json: mask AP of the initial object masks and of the Mask R-CNN candidates on the evaluation split
    (`matchings`: cluster -> class of the `initial` and `maskrcnn` columns)."""
    manifest, classes = read_manifest(manifest_path), read_classes(classes_path)
    class_ids = {name: i for i, name in enumerate(classes["classes"])}
    ignore = int(classes.get("ignore_index", 255))
    _, cluster_of = read_clusters(clusters_path)
    gts, initial, maskrcnn = [], [], []
    cands = dict(candidates.images())
    for row_index, mask in zip(tqdm(bank.index, desc="mask AP", unit="img"), bank.pixel_masks()):
        row = manifest[int(row_index)]
        gt = ground_truth(row, ignore) if row.instance_path else Instances(np.zeros((0, 1, 1), bool), np.zeros(0, np.int64))
        size = tuple(load_mask(row).shape) if row.mask_path else bank.input_size
        if not len(gt.classes):
            gt = Instances(np.zeros((0, *size), bool), gt.classes)
        gts.append(gt)
        first = Instances(mask[None], np.array([cluster_of[int(row_index)]]), np.ones(1)) if mask.any() else Instances(mask[:0], np.zeros(0, np.int64), np.zeros(0))
        initial.append(to_size(first, size))
        c = cands[int(row_index)]
        maskrcnn.append(to_size(Instances(c["masks"], c["labels"].astype(np.int64), c["scores"]), size))
    if not any(len(g.classes) for g in gts):
        log.warning("no ground-truth instances in the evaluation split: mask AP is not defined (all 0)")
    result = {
        **context,
        "num_images": len(gts),
        "initial": ap_table(gts, initial, matchings["initial"], class_ids),
        "maskrcnn": ap_table(gts, maskrcnn, matchings["maskrcnn"], class_ids),
    }
    write_json(out_path, result)
    for source in ("initial", "maskrcnn"):
        for setting, block in result[source].items():
            log.info("%s %s: AP %.1f AP50 %.1f AP75 %.1f", source, setting, 100 * block["ap"], 100 * block["ap50"], 100 * block["ap75"])
    return result
