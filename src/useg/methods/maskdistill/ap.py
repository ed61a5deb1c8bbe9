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
from useg.data.frame import Frame
from useg.data.labels import load_instances, load_mask
from useg.data.manifest import read_classes, read_manifest
from useg.errors import StoreError
from useg.methods.maskdistill.clusters import read_clusters
from useg.stores.candidates import CandidateBank
from useg.stores.maskbank import MaskBank

log = logging.getLogger(__name__)


@dataclass
class Instances:
    """Masks of one image [H, W] as COCO run-length encodings (pycocotools, a fraction of the pixels' bytes),
    class ids [n] and (detections only) scores [n]: what mask AP keeps of every image of the split."""

    rles: list[dict[str, Any]]
    classes: np.ndarray
    scores: np.ndarray | None = None

    @classmethod
    def of(cls, masks: np.ndarray, classes: np.ndarray, scores: np.ndarray | None = None) -> Instances:
        """Instances of binary masks [n, H, W]."""
        return cls([encode(mask) for mask in masks], np.asarray(classes), scores)

    def take(self, keep: np.ndarray | slice) -> Instances:
        """The instances selected by a boolean mask or a slice."""
        picked = np.arange(len(self.classes))[keep]
        scores = None if self.scores is None else self.scores[picked]
        return Instances([self.rles[i] for i in picked], self.classes[picked], scores)


def encode(mask: np.ndarray) -> dict[str, Any]:
    """The COCO RLE of a binary [H, W] mask."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def rle_box(rle: dict[str, Any]) -> np.ndarray:
    """Tight box (x0, y0, x1, y1) of an encoded mask, x1/y1 exclusive."""
    from pycocotools import mask as mask_utils

    x, y, w, h = mask_utils.toBbox(rle)
    return np.array([x, y, x + w, y + h])


def rle_area(rle: dict[str, Any]) -> float:
    """Pixels of an encoded mask."""
    from pycocotools import mask as mask_utils

    return float(mask_utils.area(rle))


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
        det = det.take(slice(top, top + 1))
    if not len(gt.classes):
        return gt, det
    if not len(det.classes):
        keep = int(np.argmax([rle_area(r) for r in gt.rles]))
    else:
        box = rle_box(det.rles[0])
        keep = int(np.argmax([box_iou(box, rle_box(r)) for r in gt.rles]))
    return gt.take(slice(keep, keep + 1)), det


def mask_ap(gts: list[Instances], dets: list[Instances], sizes: list[tuple[int, int]]) -> dict[str, float]:
    """COCO mask AP (IoU .50:.95), AP50 and AP75 with pycocotools, up to 100 detections per image (image i of
    size `sizes[i]`)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    categories = sorted({int(c) for g in gts for c in g.classes} | {int(c) for d in dets for c in d.classes})
    for image_id, (gt, det, size) in enumerate(zip(gts, dets, sizes), start=1):
        images.append({"id": image_id, "height": int(size[0]), "width": int(size[1])})
        for rle, cls in zip(gt.rles, gt.classes):
            x0, y0, x1, y1 = rle_box(rle)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls), "segmentation": rle,
                "area": rle_area(rle), "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "iscrowd": 0,
            })  # fmt: skip
        for rle, cls, score in zip(det.rles, det.classes, det.scores):
            results.append({"image_id": image_id, "category_id": int(cls), "segmentation": rle, "score": float(score)})
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
    rles, classes = [], []
    for i in np.unique(instances):
        values = semantic[(instances == i) & (semantic != ignore)] if i != 0 else []
        if len(values):
            rles.append(encode(instances == i))
            classes.append(int(np.bincount(values).argmax()))
    return Instances(rles, np.array(classes, np.int64))


def in_image(masks: np.ndarray, classes: np.ndarray, scores: np.ndarray, frame: Frame, size: tuple[int, int]) -> Instances:
    """Detections [n, h, w] of a working frame mapped back (nearest) onto the ground truth of `size`."""
    return Instances([encode(frame.unfit_labels(m.astype(np.uint8), size, fill=0)) for m in masks], classes, scores)


def semantic(det: Instances, matching: dict[str, str | None], class_ids: dict[str, int]) -> Instances:
    """Detections with clusters replaced by their matched classes (unmatched clusters dropped)."""
    mapped = np.array([class_ids.get(matching.get(str(int(c))) or "", -1) for c in det.classes], np.int64)
    keep = mapped >= 0
    return Instances(det.take(keep).rles, mapped[keep], det.scores[keep])


def agnostic(instances: Instances) -> Instances:
    """The instances as one category."""
    return Instances(instances.rles, np.zeros(len(instances.classes), np.int64), instances.scores)


def ap_table(
    gts: list[Instances], dets: list[Instances], sizes: list[tuple[int, int]], matching: dict[str, str | None], class_ids: dict[str, int]
) -> dict[str, Any]:  # fmt: skip
    """The four AP blocks of one source: class-agnostic / semantic × multi / single."""
    sem = [semantic(d, matching, class_ids) for d in dets]
    out = {}
    for name, g_list, d_list in (("class-agnostic", [agnostic(g) for g in gts], [agnostic(d) for d in dets]), ("semantic", gts, sem)):
        out[f"{name}/multi"] = mask_ap(g_list, d_list, sizes)
        pairs = [single_object(g, d) for g, d in zip(g_list, d_list)]
        out[f"{name}/single"] = mask_ap([p[0] for p in pairs], [p[1] for p in pairs], sizes)
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
    gts, initial, maskrcnn, sizes = [], [], [], []
    stream = zip(tqdm(bank.index, desc="mask AP", unit="img"), bank.pixel_masks(), candidates.images(), strict=True)
    for row_index, mask, (candidate_row, c) in stream:
        if int(candidate_row) != int(row_index):
            raise StoreError(
                f"the candidate bank lists manifest row {candidate_row} where the mask bank has {row_index}: rerun maskdistill_candidates"
            )
        row = manifest[int(row_index)]
        gts.append(ground_truth(row, ignore) if row.instance_path else Instances([], np.zeros(0, np.int64)))
        sizes.append((row.height, row.width))
        cluster = np.array([cluster_of[int(row_index)]])
        none = Instances([], np.zeros(0, np.int64), np.zeros(0))
        initial.append(in_image(mask[None], cluster, np.ones(1), bank.frame, sizes[-1]) if mask.any() else none)
        maskrcnn.append(in_image(c["masks"], c["labels"].astype(np.int64), c["scores"], candidates.frame, sizes[-1]))
    if not any(len(g.classes) for g in gts):
        log.warning("no ground-truth instances in the evaluation split: mask AP is not defined (all 0)")
    result = {
        **context,
        "num_images": len(gts),
        "initial": ap_table(gts, initial, sizes, matchings["initial"], class_ids),
        "maskrcnn": ap_table(gts, maskrcnn, sizes, matchings["maskrcnn"], class_ids),
    }
    write_json(out_path, result)
    for source in ("initial", "maskrcnn"):
        for setting, block in result[source].items():
            log.info("%s %s: AP %.1f AP50 %.1f AP75 %.1f", source, setting, 100 * block["ap"], 100 * block["ap50"], 100 * block["ap75"])
    return result
