"""TransFGU concept probe: are a run's pseudo labels limited by the concepts it found or by Grad-CAM?

Reads a finished run (manifest, train crop bank, concepts, backbone weights) and computes the
Grad-CAM pseudo labels (eq. 4–8) of a labelled split for two concept sets, each with and without
the foreground prior's zeroing (§4.2):

- `discovered`: the run's `concepts.zarr`, k-means of the crop CLS tokens (§3.2);
- `ground_truth`: per class, the mean CLS token of the train crops that the class fills to at
  least `--purity` — concepts a perfect clustering of the same crops could find (in the spirit
  of the supplement's upper bound that crops by ground truth instead of sliding windows);
  thing classes are foreground concepts, the rest background.

The Grad-CAM rule is the run's (from its train label bank's provenance); the zeroing gives the
patches of the attention prior's foreground 0 in the background concepts and vice versa
(`zero_other_group`). Labels are scored like the `transfgu-initial` column (grid labels upsampled nearest to
the working size, then to the mask size; dataset-level Hungarian mIoU), so `discovered` with the
run's own `zero_other_group` reproduces that column. Beside them: the classes of the pure crops
each discovered concept takes, and the share of each class's crops that the foreground prior
calls foreground. When `ground_truth` scores far above `discovered`, concept discovery is what
fails; when both stay low, the Grad-CAM mapping (CLS attention and values) is.

    python benchmarks/transfgu_concepts.py --results results/shapes --out benchmarks/results/transfgu_concepts.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hungarian_miou, save  # noqa: E402

from useg.backbones import BackboneConfig, build_backbone  # noqa: E402
from useg.backbones.vit import ViTBackbone  # noqa: E402
from useg.data.frame import Frame  # noqa: E402
from useg.data.images import IGNORE_INDEX  # noqa: E402
from useg.data.labels import load_mask  # noqa: E402
from useg.data.manifest import ManifestRow, read_classes, read_manifest, split_rows  # noqa: E402
from useg.data.pipeline import ordered_batches  # noqa: E402
from useg.data.transforms import resize_labels  # noqa: E402
from useg.eval.metrics import confusion_matrix  # noqa: E402
from useg.methods.transfgu.concepts import KIND as CONCEPTS_KIND, read_concepts  # noqa: E402
from useg.methods.transfgu.crops import BACKGROUND, FOREGROUND, UNUSED, KIND as CROPS_KIND  # noqa: E402
from useg.methods.transfgu.gradcam import LabelConfig, pseudo_label_maps  # noqa: E402
from useg.stores.base import open_store  # noqa: E402
from useg.stores.labelbank import KIND as BANK_KIND  # noqa: E402

def read_crop_bank(paths: list[Path]) -> dict[str, np.ndarray]:
    """Image rows, boxes, groups and CLS tokens of every crop of the bank's shards."""
    shards = [open_store(p, CROPS_KIND) for p in paths]
    return {key: np.concatenate([s[key][:] for s in shards]) for key in ("image", "boxes", "group", "cls")}


def crop_classes(boxes: np.ndarray, mask: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Dominant class of each box (x0, y0, x1, y1) of one mask and the share of the box's labelled pixels it fills."""
    dominant, share = np.full(len(boxes), -1), np.zeros(len(boxes))
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        ids = mask[y0:y1, x0:x1].ravel()
        counts = np.bincount(ids[ids != IGNORE_INDEX], minlength=num_classes)[:num_classes]
        if counts.sum():
            dominant[i], share[i] = counts.argmax(), counts.max() / counts.sum()
    return dominant, share


def ground_truth_concepts(
    cls: np.ndarray, dominant: np.ndarray, pure: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean CLS token of each class's pure crops [C', D], and which classes have pure crops."""
    members = [pure & (dominant == c) for c in range(num_classes)]
    present = np.flatnonzero([m.any() for m in members])
    if not len(present):
        raise ValueError("no crop is filled by one class to the purity asked: lower --purity")
    return np.stack([cls[members[c]].mean(0) for c in present]).astype(np.float32), present


def concept_purity(cls: np.ndarray, groups: np.ndarray, pure: np.ndarray, dominant: np.ndarray,
                   concepts: np.ndarray, concept_groups: np.ndarray, num_classes: int) -> list[list[int]]:  # fmt: skip
    """Class histogram of the pure crops nearest (Euclidean) to each concept of their own group, [K][C]."""
    distance = ((cls[:, None, :] - concepts[None]) ** 2).sum(-1)
    same_group = (groups[:, None] == concept_groups[None]) | (concept_groups[None] < 0)
    nearest = np.where(same_group, distance, np.inf).argmin(1)
    keep = pure & (same_group.any(1))
    return [np.bincount(dominant[keep & (nearest == k)], minlength=num_classes).tolist() for k in range(len(concepts))]


def foreground_share(groups: np.ndarray, dominant: np.ndarray, num_classes: int) -> list[float | None]:
    """Per class, the share of its fg-or-bg crops that the foreground prior calls foreground."""
    shares: list[float | None] = []
    for c in range(num_classes):
        used = (dominant == c) & (groups != UNUSED)
        shares.append(float((groups[used] == FOREGROUND).mean()) if used.any() else None)
    return shares


def initial_miou(backbone: ViTBackbone, rows: list[ManifestRow], concepts: np.ndarray, concept_groups: np.ndarray,
                 labelling: LabelConfig, input_size: tuple[int, int], num_classes: int) -> float:  # fmt: skip
    """Dataset-level Hungarian mIoU of the Grad-CAM arg-max labels (eq. 6), scored as `transfgu-initial`."""
    s, g = torch.from_numpy(concepts), torch.from_numpy(concept_groups)
    confusion = np.zeros((num_classes, len(concepts)), np.int64)
    masks = iter(load_mask(row) for row in rows)
    for _, images in ordered_batches([row.path for row in rows], Frame(input_size), 16, 1, torch.device("cpu")):
        _, labels, _ = pseudo_label_maps(backbone, images, s, g, labelling)
        for grid_labels in labels.numpy():
            gt = next(masks)
            pred = resize_labels(resize_labels(grid_labels.astype(np.int64), input_size), gt.shape)
            confusion += confusion_matrix(gt, pred, num_classes, len(concepts), IGNORE_INDEX)
    return hungarian_miou(confusion)


def label_crops(
    crops: dict[str, np.ndarray], manifest: list[ManifestRow], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Dominant class and its share for every crop of the bank, from its image's mask."""
    dominant, share = np.full(len(crops["cls"]), -1), np.zeros(len(crops["cls"]))
    for image in np.unique(crops["image"]):
        at = crops["image"] == image
        dominant[at], share[at] = crop_classes(crops["boxes"][at], load_mask(manifest[image]), num_classes)
    return dominant, share


def run_backbone(results: Path, bank_path: Path, weights: str | None) -> tuple[ViTBackbone, tuple[int, int]]:
    """The frozen backbone the run's crop bank was made with (its provenance), and the working size."""
    config = dict(open_store(bank_path, CROPS_KIND).attrs)["provenance"]["config"]
    cfg = BackboneConfig.from_dict(config["backbone"])
    weights = weights or (str(results / "croc" / "checkpoint.pth") if cfg.weights == "pretrain" else None)
    backbone = build_backbone(cfg, weights, seed=config["seed"]).eval().requires_grad_(False)
    return backbone, tuple(cfg.input_size)  # type: ignore[return-value]


def run_labelling(results: Path) -> LabelConfig:
    """The run's Grad-CAM rule and its keys, from its train label bank's provenance (K labels, no eq. 8 map)."""
    bank = sorted((results / "transfgu" / "bank" / "train").glob("shard-*.zarr"))[0]
    cfg = LabelConfig.from_cfg(dict(open_store(bank, BANK_KIND).attrs)["provenance"]["config"]["transfgu"])
    return replace(cfg, foreground_only=False)


def probe(results: Path, split: str, purity: float, weights: str | None) -> dict[str, Any]:
    """Concept sets x fg / bg zeroing on/off -> initial mIoU, plus concept purity and the prior's fg shares."""
    classes = read_classes(results / "classes.json")
    names, things = classes["classes"], set(classes.get("things", []))
    manifest = read_manifest(results / "manifest.csv")
    bank_paths = sorted((results / "transfgu" / "crops" / "train").glob("shard-*.zarr"))
    crops = read_crop_bank(bank_paths)
    dominant, share = label_crops(crops, manifest, len(names))
    pure = share >= purity
    concepts_path = results / "transfgu" / "concepts.zarr"
    if dict(open_store(concepts_path, CONCEPTS_KIND).attrs)["provenance"]["config"]["transfgu"]["foreground_only"]:
        raise ValueError("the probe compares K-concept labels; transfgu.foreground_only runs (eq. 8) are not supported")
    discovered, discovered_groups = read_concepts(concepts_path)
    truth, truth_classes = ground_truth_concepts(crops["cls"], dominant, pure, len(names))
    truth_groups = np.array([FOREGROUND if names[c] in things else BACKGROUND for c in truth_classes], np.int8)
    backbone, input_size = run_backbone(results, bank_paths[0], weights)
    rows = [row for _, row in split_rows(manifest, split)]
    sets = {"discovered": (discovered, discovered_groups), "ground_truth": (truth, truth_groups)}
    labelling = run_labelling(results)
    scores = {
        name: {
            f"zero_other_group_{str(zero).lower()}": initial_miou(
                backbone, rows, c, g, replace(labelling, zero_other_group=zero), input_size, len(names)
            )
            for zero in (True, False)
        }
        for name, (c, g) in sets.items()
    }
    purity_table = concept_purity(crops["cls"], crops["group"], pure, dominant, discovered, discovered_groups, len(names))
    return {
        "classes": names,
        "crops": len(dominant),
        "pure_crops": int(pure.sum()),
        "initial_miou": scores,
        "ground_truth_classes": [names[c] for c in truth_classes],
        "discovered_concepts": {"group": discovered_groups.tolist(), "pure_crops_per_class": purity_table},
        "foreground_share": dict(zip(names, foreground_share(crops["group"], dominant, len(names)))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/shapes", help="a finished run's results/<dataset> folder")
    parser.add_argument("--split", default="val", help="labelled split to score the pseudo labels on")
    parser.add_argument("--purity", type=float, default=0.6, help="least share of a crop one class must fill")
    parser.add_argument("--weights", default=None, help="backbone weights (default: the run's CrOC checkpoint)")
    parser.add_argument("--out", default="benchmarks/results/transfgu_concepts.json")
    args = parser.parse_args()
    report = {"results": args.results, "split": args.split, "purity": args.purity}
    report.update(probe(Path(args.results), args.split, args.purity, args.weights))
    save(report, args.out)
    for name, row in report["initial_miou"].items():
        cells = "   ".join(f"{key} {100 * value:.2f} %" for key, value in row.items())
        print(f"{name:14s} initial mIoU   {cells}")


if __name__ == "__main__":
    main()
