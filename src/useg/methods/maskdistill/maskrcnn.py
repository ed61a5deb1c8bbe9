"""Mask R-CNN distilled from the clustered object masks, and its candidate bank (MaskDistill §3.2, §A.1)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from useg.data.manifest import ManifestRow, row_keys
from useg.errors import DataError
from useg.methods.common import load_images
from useg.methods.maskdistill.models import build_maskrcnn, for_rebuild, inference_size, num_parameters, save_model, sgd, step_lr
from useg.stores.candidates import write_candidates
from useg.stores.maskbank import MaskBank
from useg.train import LossGuard
from useg.train.amp import Precision, resolve_precision

log = logging.getLogger(__name__)

KIND = "MaskRCNN"


def pseudo_targets(bank: MaskBank, clusters: dict[int, int]) -> tuple[np.ndarray, list[dict[str, torch.Tensor]]]:
    """(kept positions in the bank, targets): one (cluster + 1, box, mask) per image with a non-empty mask."""
    masks, boxes = bank.pixel_masks(), bank.read("boxes")
    keep = np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1))
    targets = [
        {
            "boxes": torch.from_numpy(boxes[i : i + 1].astype(np.float32)),
            "labels": torch.tensor([clusters[int(bank.index[i])] + 1]),
            "masks": torch.from_numpy(masks[i : i + 1]),
        }
        for i in keep
    ]
    return keep, targets


def flip(image: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Horizontal flip of an image [3, H, W] and its target."""
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes, "masks": target["masks"].flip(-1)}


def maskrcnn_step(
    model: torch.nn.Module, optimiser: torch.optim.Optimizer, precision: Precision, guard: LossGuard,
    pairs: list[tuple[torch.Tensor, dict[str, torch.Tensor]]], device: torch.device, iteration: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
    """One SGD step on eq. 3's class + box + mask losses of (image, target) pairs, the forward under `precision`;
    the guard sees the unscaled total before the step. Returns (total, the loss terms)."""
    with precision.autocast():
        losses = model([image.to(device) for image, _ in pairs], [{k: v.to(device) for k, v in t.items()} for _, t in pairs])
    loss = sum(term.float() for term in losses.values())
    guard.check(loss, 0, iteration)
    precision.step(optimiser, loss)
    return loss, losses


def train_maskrcnn(
    rows: list[ManifestRow],
    bank: MaskBank,
    clusters: dict[int, int],
    num_clusters: int,
    cfg: dict[str, Any],
    seed: int,
    out_path: str | Path,
    device: torch.device,
    weights: str | None = None,
) -> None:
    """Train Mask R-CNN on the pseudo ground truth (eq. 3: class + box + mask losses); SGD with warmup and steps.
    `weights`: checkpoint of a `pretrain` pipeline ViT (maskrcnn.backbone: vit)."""
    keep, targets = pseudo_targets(bank, clusters)
    if not len(keep):
        raise DataError("every object mask is empty: no pseudo ground truth to train Mask R-CNN on")
    images = load_images([rows[i] for i in keep], bank.input_size)
    model = build_maskrcnn(cfg, num_clusters, bank.input_size, seed, weights).to(device).train()
    optimiser, precision = sgd(model, cfg), resolve_precision(cfg["amp"], device)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # torchvision draws the multi-scale training size from the global generator
    total, batch_size = cfg["iterations"], min(cfg["batch_size"], len(keep))
    log.info("mask r-cnn: %s, %d pseudo-labelled images, %d iterations", num_parameters(model), len(keep), total)
    order = torch.randperm(len(keep), generator=generator)
    cursor, guard = 0, LossGuard("lower maskdistill.maskrcnn.lr")
    for it in tqdm(range(total), desc="mask r-cnn", unit="it"):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(keep), generator=generator), 0
        idx, cursor = order[cursor : cursor + batch_size].tolist(), cursor + batch_size
        flips = torch.rand(len(idx), generator=generator) < 0.5
        pairs = [flip(images[i], targets[i]) if f else (images[i], targets[i]) for i, f in zip(idx, flips)]
        for group in optimiser.param_groups:
            group["lr"] = step_lr(cfg["lr"], it, total, cfg["warmup_iters"], cfg["steps"])
        loss, losses = maskrcnn_step(model, optimiser, precision, guard, pairs, device, it)
        if it % max(1, total // 5) == 0 or it == total - 1:
            log.info("iter %d: loss %.4f %s", it, loss.item(), {k: round(v.item(), 4) for k, v in losses.items()})
    save_model(out_path, model.cpu(), KIND, cfg, num_clusters=num_clusters, input_size=list(bank.input_size))
    log.info("mask r-cnn -> %s", out_path)


def load_maskrcnn(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, int]:
    """A trained Mask R-CNN in eval mode at the working size, and its number of clusters."""
    from useg.methods.maskdistill.models import load_model

    state, ckpt = load_model(path, KIND)
    input_size = tuple(ckpt["input_size"])
    cfg = for_rebuild(ckpt["config"])
    model = build_maskrcnn(cfg, ckpt["num_clusters"], input_size, 0)
    model.load_state_dict(state)
    inference_size(model, input_size, cfg["train_scales"])
    return model.to(device).eval(), int(ckpt["num_clusters"])


@torch.inference_mode()
def predict_candidates(
    model: torch.nn.Module,
    rows: list[tuple[int, ManifestRow]],
    num_clusters: int,
    input_size: tuple[int, int],
    batch_size: int,
    out_path: str | Path,
    prov: dict[str, Any],
    device: torch.device,
) -> None:
    """Every mask candidate (score, cluster, box, binary mask) of every image of a shard -> CandidateBank (§3.3)."""
    per_image: list[dict[str, np.ndarray]] = []
    for start in tqdm(range(0, len(rows), batch_size), desc=f"candidates {Path(out_path).name}", unit="batch"):
        images = load_images([row for _, row in rows[start : start + batch_size]], input_size)
        for det in model([im.to(device) for im in images]):
            per_image.append(
                {
                    "scores": det["scores"].cpu().numpy(),
                    "labels": det["labels"].cpu().numpy() - 1,
                    "boxes": det["boxes"].cpu().numpy(),
                    "masks": (det["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8),
                }
            )
    index, ids = row_keys(rows)
    write_candidates(out_path, index, ids, per_image, input_size, prov, num_classes=num_clusters)
    counts = [len(c["scores"]) for c in per_image]
    log.info("candidates: %d images, %d candidates (%.1f per image) -> %s", len(rows), sum(counts), np.mean(counts) if counts else 0, out_path)
