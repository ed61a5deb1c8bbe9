"""Mask R-CNN distilled from the clustered object masks, and its candidate bank (MaskDistill §3.2, §A.1)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from useg.data.frame import Frame
from useg.data.manifest import ManifestRow, row_keys
from useg.data.pipeline import EpochBatches, LabelledDataset, epoch_cycle, make_loader, ordered_loader, unit_image
from useg.errors import DataError
from useg.methods.maskdistill.models import build_maskrcnn, for_rebuild, inference_size, num_parameters, save_model, sgd, step_lr
from useg.stores.candidates import write_candidates
from useg.stores.maskbank import MaskBank, ObjectRows
from useg.train import LossGuard
from useg.train.amp import Precision, resolve_precision

log = logging.getLogger(__name__)

KIND = "MaskRCNN"


@dataclass(frozen=True)
class PseudoTargets:
    """The pseudo ground truth of Mask R-CNN, read on demand: sample i is bank position `positions[i]` (an image
    with a non-empty mask), its target one (cluster + 1, box, mask) object read from the bank's shards."""

    objects: ObjectRows
    positions: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)

    def __call__(self, index: int) -> dict[str, torch.Tensor]:
        mask, box = self.objects(int(self.positions[index]))
        return {
            "boxes": torch.from_numpy(box[None].astype(np.float32)),
            "labels": torch.tensor([int(self.labels[index])]),
            "masks": torch.from_numpy(np.ascontiguousarray(mask[None])),
        }


def pseudo_targets(bank: MaskBank, clusters: dict[int, int]) -> PseudoTargets:
    """The targets of the images with a non-empty mask (found chunk by chunk), labelled by their cluster + 1."""
    keep = np.flatnonzero(bank.nonempty())
    labels = np.array([clusters[int(bank.index[i])] + 1 for i in keep], np.int64)
    return PseudoTargets(ObjectRows(bank), keep, labels)


def flip(image: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Horizontal flip of an image [3, H, W] and its target."""
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes, "masks": target["masks"].flip(-1)}


def training_pair(
    image: np.ndarray, target: dict[str, torch.Tensor], rng: np.random.Generator
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training sample: the image in [0, 1] [3, H, W] and its target, flipped together with probability 1/2."""
    pair = unit_image(image), target
    return flip(*pair) if rng.random() < 0.5 else pair


def pairs_of(items: list[tuple[int, Any]]) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Collate (index, (image, target)) items into the list of pairs Mask R-CNN takes (sizes may differ)."""
    return [pair for _, pair in items]


def training_loader(
    rows: list[ManifestRow], bank: MaskBank, clusters: dict[int, int], cfg: dict[str, Any], seed: int, threads: int, device: torch.device
) -> tuple[EpochBatches, DataLoader]:
    """(sampler, loader) of Mask R-CNN's training pairs: each pseudo-labelled image and its object read in the
    workers, flipped from the sample's generator of (seed, epoch, index); `rows` are the bank's rows."""
    targets = pseudo_targets(bank, clusters)
    if not len(targets):
        raise DataError("every object mask is empty: no pseudo ground truth to train Mask R-CNN on")
    dataset = LabelledDataset([rows[i].path for i in targets.positions], targets, training_pair, seed, bank.frame.size, bank.frame.mode)
    batches = EpochBatches(len(targets), min(cfg["batch_size"], len(targets)), seed)
    return batches, make_loader(dataset, batches, pairs_of, threads, device)


def maskrcnn_step(
    model: torch.nn.Module, optimiser: torch.optim.Optimizer, precision: Precision, guard: LossGuard,
    pairs: list[tuple[torch.Tensor, dict[str, torch.Tensor]]], device: torch.device, iteration: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
    """One SGD step on eq. 3's class + box + mask losses of (image, target) pairs, the forward under `precision`;
    the guard sees the unscaled total before the step. Returns (total, the loss terms)."""
    images = [image.to(device, non_blocking=True) for image, _ in pairs]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for _, t in pairs]
    with precision.autocast():
        losses = model(images, targets)
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
    threads: int = 1,
) -> None:
    """Train Mask R-CNN on the pseudo ground truth (eq. 3: class + box + mask losses) for a fixed number of
    iterations over epochs of the input pipeline (`threads - 1` workers); SGD with warmup and steps.
    `weights`: checkpoint of a `pretrain` pipeline ViT (maskrcnn.backbone: vit)."""
    batches, loader = training_loader(rows, bank, clusters, cfg, seed, threads, device)
    model = build_maskrcnn(cfg, num_clusters, bank.input_size, seed, weights).to(device).train()
    optimiser, precision = sgd(model, cfg), resolve_precision(cfg["amp"], device)
    torch.manual_seed(seed)  # torchvision draws the multi-scale training size from the global generator
    total, guard = cfg["iterations"], LossGuard("lower maskdistill.maskrcnn.lr")
    log.info("mask r-cnn: %s, %d pseudo-labelled images, %d iterations", num_parameters(model), batches.size, total)
    for it, pairs in enumerate(tqdm(epoch_cycle(loader, batches, total), total=total, desc="mask r-cnn", unit="it")):
        for group in optimiser.param_groups:
            group["lr"] = step_lr(cfg["lr"], it, total, cfg["warmup_iters"], cfg["steps"])
        loss, losses = maskrcnn_step(model, optimiser, precision, guard, pairs, device, it)
        if it % max(1, total // 5) == 0 or it == total - 1:
            log.info("iter %d: loss %.4f %s", it, loss.item(), {k: round(v.item(), 4) for k, v in losses.items()})
    save_model(out_path, model.cpu(), KIND, cfg, num_clusters=num_clusters, **bank.frame.attrs())
    log.info("mask r-cnn -> %s", out_path)


def load_maskrcnn(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, int, Frame]:
    """A trained Mask R-CNN in eval mode at the working size, its number of clusters and its working frame."""
    from useg.methods.maskdistill.models import load_model

    state, ckpt = load_model(path, KIND)
    input_size = tuple(ckpt["input_size"])
    cfg = for_rebuild(ckpt["config"])
    model = build_maskrcnn(cfg, ckpt["num_clusters"], input_size, 0)
    model.load_state_dict(state)
    inference_size(model, input_size, cfg["train_scales"])
    return model.to(device).eval(), int(ckpt["num_clusters"]), Frame.of(ckpt)


@torch.inference_mode()
def predict_candidates(
    model: torch.nn.Module,
    rows: list[tuple[int, ManifestRow]],
    num_clusters: int,
    frame: Frame,
    batch_size: int,
    out_path: str | Path,
    prov: dict[str, Any],
    device: torch.device,
    threads: int = 1,
) -> None:
    """Every mask candidate (score, cluster, box, binary mask) of every image of a shard -> CandidateBank (§3.3);
    images decoded in order by `threads - 1` loader workers."""
    per_image: list[dict[str, np.ndarray]] = []
    loader = ordered_loader([row.path for _, row in rows], frame.size, batch_size, threads, frame.mode, device=device, sample=unit_image)
    for _, images in tqdm(loader, desc=f"candidates {Path(out_path).name}", unit="batch"):
        for det in model(list(images.to(device, non_blocking=True))):
            per_image.append(
                {
                    "scores": det["scores"].cpu().numpy(),
                    "labels": det["labels"].cpu().numpy() - 1,
                    "boxes": det["boxes"].cpu().numpy(),
                    "masks": (det["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8),
                }
            )
    index, ids = row_keys(rows)
    write_candidates(out_path, index, ids, per_image, frame, prov, num_classes=num_clusters)
    counts = [len(c["scores"]) for c in per_image]
    log.info("candidates: %d images, %d candidates (%.1f per image) -> %s", len(rows), sum(counts), np.mean(counts) if counts else 0, out_path)
