"""Linear probe (supervised backbone evaluation, CrOC Sec. 4.2): a 1x1 conv on frozen patch tokens.

Trained with ground-truth masks of the train split (logits upsampled bilinearly to the working
size, cross-entropy, ignore pixels skipped), then applied to the evaluation split. Its predictions
are class ids, scored under the protocol `linear-probe` — a supervised protocol, unlike the
clustering ones.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from useg.data.labels import load_mask
from useg.data.manifest import ManifestRow
from useg.data.transforms import resize_labels
from useg.errors import DataError
from useg.methods.common import scores_to_labels
from useg.stores.features import FeatureStore
from useg.stores.predictions import PredictionsWriter
from useg.train import LossGuard

log = logging.getLogger(__name__)

PROTOCOL = "linear-probe"


def load_split(stores: list[FeatureStore]) -> tuple[np.ndarray, torch.Tensor]:
    """Manifest rows [N] and patch tokens [N, D, h, w] (float32) of every shard."""
    index = np.concatenate([s.index for s in stores])
    patches = np.concatenate([b.patches for s in stores for b in s.batches(256)])
    return index, torch.from_numpy(patches.astype(np.float32)).permute(0, 3, 1, 2).contiguous()


def load_targets(rows: list[ManifestRow], index: np.ndarray, size: tuple[int, int], ignore: int) -> torch.Tensor:
    """Ground-truth masks of the images, resized (nearest) to the working size [N, H, W]."""
    missing = [rows[i].id for i in index if not rows[i].mask_path]
    if missing:
        raise DataError(f"the linear probe needs ground-truth masks; none for {missing[:5]}")
    masks = np.stack([resize_labels(load_mask(rows[i]), size) for i in index]).astype(np.int64)
    masks[masks == ignore] = -100
    return torch.from_numpy(masks)


def train_probe(
    feats: torch.Tensor, targets: torch.Tensor, num_classes: int, cfg: dict[str, Any], seed: int
) -> torch.nn.Conv2d:
    """Fit a 1x1 convolution (after per-channel standardisation folded in) with Adam."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = feats.mean(dim=(0, 2, 3)), feats.std(dim=(0, 2, 3)).clamp_min(1e-6)
    x = (feats - mean[None, :, None, None]) / std[None, :, None, None]
    probe = torch.nn.Conv2d(feats.shape[1], num_classes, 1)
    opt = torch.optim.Adam(probe.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    size = tuple(targets.shape[-2:])
    guard = LossGuard("lower backbone_eval.probe.lr")
    for epoch in tqdm(range(cfg["epochs"]), desc="linear probe", unit="epoch"):
        for step, idx in enumerate(torch.randperm(len(x), generator=generator).split(cfg["batch_size"])):
            logits = F.interpolate(probe(x[idx]), size=size, mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, targets[idx], ignore_index=-100)
            guard.check(loss, epoch, step)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():  # fold the standardisation into the conv
        probe.bias -= (probe.weight[:, :, 0, 0] * (mean / std)).sum(dim=1)
        probe.weight /= std[None, :, None, None]
    log.info("linear probe: %d images, %d classes, final loss %.4f", len(x), num_classes, float(loss.detach()))
    return probe


def linear_probe(
    train: list[FeatureStore],
    evaluate: list[FeatureStore],
    rows: list[ManifestRow],
    num_classes: int,
    cfg: dict[str, Any],
    seed: int,
    out_path: str | Path,
    prov: dict[str, Any],
    ignore: int = 255,
) -> None:
    """Train the probe on `train` shards, write class predictions of `evaluate` shards."""
    size = tuple(train[0].attrs["input_size"])
    index, feats = load_split(train)
    probe = train_probe(feats, load_targets(rows, index, size, ignore), num_classes, cfg, seed)
    index, feats = load_split(evaluate)
    ids = [i for s in evaluate for i in s.ids]
    with PredictionsWriter(out_path, index, ids, size, num_classes, PROTOCOL, prov, supervised=True) as writer, torch.no_grad():
        for start in range(0, len(feats), 64):
            writer.write(start, scores_to_labels(probe(feats[start : start + 64]), size))
    log.info("linear probe: predicted %d images -> %s", len(index), out_path)
