"""Mask R-CNN distilled from the clustered object masks, and its candidate bank (MaskDistill §3.2, §A.1)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from useg.data.frame import Frame
from useg.data.manifest import ManifestRow, row_keys
from useg.data.pipeline import EpochBatches, LabelledDataset, epoch_cycle, loader_workers, make_loader, ordered_loader, ordered_samples, unit_image
from useg.errors import DataError
from useg.methods.maskdistill.masks import mask_box
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
    with a non-empty mask), its target one (cluster + 1, box, mask) object read from the bank's shards; with
    `frame`, carried from that working frame into the image of shape `shapes[i]` (its box the mask's there)."""

    objects: ObjectRows
    positions: np.ndarray
    labels: np.ndarray
    frame: Frame | None = None
    shapes: tuple[tuple[int, int], ...] = ()

    def __len__(self) -> int:
        return len(self.positions)

    def __call__(self, index: int) -> dict[str, torch.Tensor]:
        mask, box = self.objects(int(self.positions[index]))
        if self.frame is not None:
            mask = self.frame.unfit_labels(mask, self.shapes[index], 0)
            box = mask_box(mask)
        return {
            "boxes": torch.from_numpy(box[None].astype(np.float32)),
            "labels": torch.tensor([int(self.labels[index])]),
            "masks": torch.from_numpy(np.ascontiguousarray(mask[None])),
        }


def pseudo_targets(bank: MaskBank, clusters: dict[int, int], rows: list[ManifestRow] | None = None) -> PseudoTargets:
    """The targets of the images with a non-empty mask (found chunk by chunk), labelled by their cluster + 1;
    given the bank's `rows`, in each image's own pixels (`maskrcnn.frame: image`)."""
    keep = np.flatnonzero(bank.nonempty())
    labels = np.array([clusters[int(bank.index[i])] + 1 for i in keep], np.int64)
    if rows is None:
        return PseudoTargets(ObjectRows(bank), keep, labels)
    return PseudoTargets(ObjectRows(bank), keep, labels, bank.frame, tuple((rows[i].height, rows[i].width) for i in keep))


def in_image(cfg: dict[str, Any]) -> bool:
    """Whether Mask R-CNN works on each image at its own size (`maskrcnn.frame: image`; checkpoints before the key: no)."""
    return cfg.get("frame", "working") == "image"


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
    targets = pseudo_targets(bank, clusters, rows if in_image(cfg) else None)
    if not len(targets):
        raise DataError("every object mask is empty: no pseudo ground truth to train Mask R-CNN on")
    size, mode = (None, "squash") if in_image(cfg) else (bank.frame.size, bank.frame.mode)
    dataset = LabelledDataset([rows[i].path for i in targets.positions], targets, training_pair, seed, size, mode)
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


def load_maskrcnn(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, int, Frame, bool]:
    """A trained Mask R-CNN in eval mode at the working size, its number of clusters, its working frame and
    whether it runs on the images at their own sizes."""
    from useg.methods.maskdistill.models import load_model

    state, ckpt = load_model(path, KIND)
    input_size = tuple(ckpt["input_size"])
    cfg = for_rebuild(ckpt["config"])
    model = build_maskrcnn(cfg, ckpt["num_clusters"], input_size, 0)
    model.load_state_dict(state)
    inference_size(model, input_size, cfg["train_scales"])
    return model.to(device).eval(), int(ckpt["num_clusters"]), Frame.of(ckpt), in_image(cfg)


def image_batches(
    paths: list[str], frame: Frame, batch_size: int, threads: int, device: torch.device, own_size: bool
) -> Iterator[list[torch.Tensor]]:
    """Mask R-CNN's input images in [0, 1], in order: in the working frame, or each at its own size."""
    if own_size:
        for _, images in ordered_samples(paths, unit_image, batch_size, threads, device, loader_workers(threads)):
            yield images
    else:
        for _, images in ordered_loader(paths, frame.size, batch_size, threads, frame.mode, device=device, sample=unit_image):
            yield list(images)


def candidates_of(detections: dict[str, torch.Tensor], frame: Frame | None) -> dict[str, np.ndarray]:
    """A detection result's candidates (cluster = label - 1, binary masks); masks at an image's own size (with
    `frame`) carried into the working frame, their boxes the masks' boxes there."""
    masks = (detections["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)
    boxes = detections["boxes"].cpu().numpy()
    if frame is not None:
        masks = np.array([frame.fit_labels(m, 0) for m in masks], np.uint8).reshape(-1, *frame.size)
        boxes = np.array([mask_box(m) for m in masks], np.float32).reshape(-1, 4)
    return {"scores": detections["scores"].cpu().numpy(), "labels": detections["labels"].cpu().numpy() - 1, "boxes": boxes, "masks": masks}


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
    own_size: bool = False,
) -> None:
    """Every mask candidate (score, cluster, box, binary mask) of every image of a shard -> CandidateBank (§3.3),
    in the working frame; images decoded in order by `threads - 1` loader workers, in the frame or (`own_size`)
    each at its own size."""
    per_image: list[dict[str, np.ndarray]] = []
    batches = image_batches([row.path for _, row in rows], frame, batch_size, threads, device, own_size)
    for images in tqdm(batches, desc=f"candidates {Path(out_path).name}", unit="batch"):
        for det in model([image.to(device, non_blocking=True) for image in images]):
            per_image.append(candidates_of(det, frame if own_size else None))
    index, ids = row_keys(rows)
    write_candidates(out_path, index, ids, per_image, frame, prov, num_classes=num_clusters)
    counts = [len(c["scores"]) for c in per_image]
    log.info("candidates: %d images, %d candidates (%.1f per image) -> %s", len(rows), sum(counts), np.mean(counts) if counts else 0, out_path)
