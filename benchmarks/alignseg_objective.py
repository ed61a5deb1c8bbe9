"""AlignSeg objective probe: does eq. 7 prefer the ground-truth partition of a run's frozen features?

Reads a finished run (its manifest, feature store and trained AlignSeg decoder) and computes, on
the patch tokens of a labelled split, the global–local alignment loss L_corr (eq. 7, with the 0-clamp
of eq. 8 and the run's shift h) with every whole image as both the global and the local crop, for
three sets of prototypes:

- `trained`: the decoder's image-aligned prototypes P^x (eq. 1),
- `ground_truth_centroids`: one fixed prototype per class, the mean unit-norm token of the class,
- `kmeans_centroids`: spherical k-means of the tokens with K = the number of classes.

Beside each loss it reports the patch-level dataset-Hungarian mIoU of the arg-max assignment (eq. 3).
When `trained` scores a lower loss than `ground_truth_centroids` while its mIoU is lower, the
objective itself, not the optimiser, prefers the wrong partition on these features.

    python benchmarks/alignseg_objective.py --results results/shapes --out benchmarks/results/alignseg_objective.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hungarian_miou  # noqa: E402

from useg.cluster.kmeans import fit_kmeans  # noqa: E402
from useg.data.images import IGNORE_INDEX  # noqa: E402
from useg.data.labels import load_mask  # noqa: E402
from useg.data.manifest import read_classes, read_manifest  # noqa: E402
from useg.eval.metrics import confusion_matrix  # noqa: E402
from useg.methods.alignseg.decoder import load_decoder, similarity  # noqa: E402
from useg.methods.alignseg.losses import corr_loss  # noqa: E402
from useg.stores.features import open_shards  # noqa: E402

def mask_at_grid(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour class ids of a full-size mask at the patch grid [h, w]."""
    rows = (np.arange(grid[0]) + 0.5) * mask.shape[0] / grid[0]
    cols = (np.arange(grid[1]) + 0.5) * mask.shape[1] / grid[1]
    return mask[rows.astype(int)[:, None], cols.astype(int)[None, :]]


def class_centroids(tokens: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean unit-norm token of every class present [C, D] (absent classes: zero rows)."""
    unit = F.normalize(tokens, dim=-1).reshape(-1, tokens.shape[-1])
    flat = labels.reshape(-1)
    centroids = torch.zeros(num_classes, tokens.shape[-1])
    for c in range(num_classes):
        if (flat == c).any():
            centroids[c] = unit[flat == c].mean(0)
    return centroids


def whole_image_corr_loss(tokens: Tensor, scores: Tensor, shift: float, chunk: int = 64) -> float:
    """L_corr (eq. 7–8) with each image as its own global and local crop, averaged over images."""
    total = 0.0
    for start in range(0, len(tokens), chunk):
        x, s = tokens[start : start + chunk], scores[start : start + chunk]
        total += float(corr_loss(s, [s], x, [x], shift)) * len(x)
    return total / len(tokens)


def patch_miou(scores: Tensor, labels: Tensor, num_classes: int) -> float:
    """Dataset-level Hungarian mIoU of the arg-max prototype of every patch (eq. 3)."""
    pred = scores.argmax(-1).numpy()
    return hungarian_miou(confusion_matrix(labels.numpy(), pred, num_classes, scores.shape[-1], IGNORE_INDEX))


def fixed(prototypes: Tensor, tokens: Tensor) -> Tensor:
    """s = cos(x, P) for one prototype set shared by every image [N, n, K]."""
    return similarity(tokens, prototypes.expand(len(tokens), -1, -1))


def probe(tokens: Tensor, labels: Tensor, trained: Tensor, num_classes: int, shift: float, seed: int = 0) -> dict:
    """Loss and patch mIoU of the trained, ground-truth-centroid and k-means prototypes."""
    unit = F.normalize(tokens, dim=-1).reshape(-1, tokens.shape[-1]).numpy()
    kmeans = torch.from_numpy(fit_kmeans(unit, num_classes, niter=30, seed=seed, spherical=True, nredo=3).centroids)
    sets = {
        "trained": trained,
        "ground_truth_centroids": fixed(class_centroids(tokens, labels, num_classes), tokens),
        "kmeans_centroids": fixed(kmeans, tokens),
    }
    return {
        name: {"loss_corr": whole_image_corr_loss(tokens, s, shift), "patch_miou": patch_miou(s, labels, num_classes)}
        for name, s in sets.items()
    }


def load_split(results: Path, backbone: str, split: str) -> tuple[Tensor, Tensor]:
    """Patch tokens [N, n, D] of a split and the class ids of its patches [N, n] (255 = ignore)."""
    manifest = read_manifest(results / "manifest.csv")
    stores = open_shards(sorted((results / "features" / backbone / split).glob("shard-*.zarr")))
    tokens, labels = [], []
    for store in stores:
        for batch in store.batches(64):
            tokens.append(torch.from_numpy(batch.patches.astype(np.float32)).flatten(1, 2))
            masks = [mask_at_grid(load_mask(manifest[i]), store.grid).reshape(-1) for i in batch.index]
            labels.append(torch.from_numpy(np.stack(masks).astype(np.int64)))
    return torch.cat(tokens), torch.cat(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/shapes", help="a finished run's results/<dataset> folder")
    parser.add_argument("--backbone", default="vit-tiny-p8", help="feature folder name (backbone.name)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--shift", type=float, default=0.3, help="h of eq. 7 (alignseg.shift of the run)")
    parser.add_argument("--out", default="benchmarks/results/alignseg_objective.json")
    args = parser.parse_args()
    results = Path(args.results)
    num_classes = len(read_classes(results / "classes.json")["classes"])
    tokens, labels = load_split(results, args.backbone, args.split)
    decoder = load_decoder(results / "alignseg" / "decoder.pt")
    with torch.no_grad():
        trained = similarity(tokens, decoder(tokens))
    report = {"results": str(results), "split": args.split, "shift": args.shift, "images": len(tokens)}
    report["prototypes"] = probe(tokens, labels, trained, num_classes, args.shift)
    for name, row in report["prototypes"].items():
        print(f"{name:24s} L_corr {row['loss_corr']:+.4f}   patch mIoU {100 * row['patch_miou']:.2f} %")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
