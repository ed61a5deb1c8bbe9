"""The final segmentation model: DeepLab-v3 on the confident bank with hard-pixel CE (MaskDistill §3.3, eq. 4)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from useg.data.augment import normalise_images
from useg.data.frame import Frame, InFrame
from useg.data.manifest import ManifestRow, row_keys
from useg.data.pipeline import EpochBatches, LabelledDataset, make_loader
from useg.data.transforms import normalise, scale_rotate
from useg.methods.common import load_images
from useg.methods.maskdistill.models import build_deeplab, for_rebuild, load_model, num_parameters, save_model, sgd, step_lr
from useg.postprocess.crf import CRFConfig, dense_crf
from useg.stores.background import stream_to_store
from useg.stores.base import ShardedRows
from useg.stores.labelbank import LabelBank, LabelBankWriter
from useg.stores.predictions import PredictionsWriter
from useg.train import LossGuard, distributed, load_checkpoint, save_checkpoint
from useg.train.amp import Precision, resolve_precision
from useg.world import World

log = logging.getLogger(__name__)

KIND = "DeepLabV3"
IGNORE = 255


def hard_pixel_ce(logits: torch.Tensor, target: torch.Tensor, fraction: float, ignore: int = IGNORE) -> torch.Tensor:
    """Cross-entropy averaged over the top-`fraction` hardest pixels of the batch, T (MaskDistill eq. 4;
    eq. 4's constant 1/|C| is left out, so fraction 1 is the plain mean cross-entropy)."""
    losses = F.cross_entropy(logits, target.long(), ignore_index=ignore, reduction="none").flatten()
    valid = losses[target.flatten() != ignore]
    if not len(valid):
        return logits.sum() * 0
    count = max(1, int(round(fraction * len(valid))))
    return valid.topk(count, sorted=False).values.mean()


def global_hard_pixel_ce(logits: torch.Tensor, target: torch.Tensor, fraction: float, ignore: int = IGNORE) -> torch.Tensor:
    """Eq. 4 over the global batch under torchrun: the hardest `fraction` of every process's valid pixels,
    ranked together, so N processes compute the loss of one (ties at the threshold share its weight)."""
    if not distributed.active():
        return hard_pixel_ce(logits, target, fraction, ignore)
    losses = F.cross_entropy(logits, target.long(), ignore_index=ignore, reduction="none")
    valid = target != ignore
    everyone = distributed.gather_rows(torch.where(valid, losses.detach(), float("-inf")))
    ranked = everyone[torch.isfinite(everyone)]
    if not len(ranked):
        return logits.sum() * 0
    count = max(1, int(round(fraction * len(ranked))))
    threshold = ranked.topk(count, sorted=False).values.min()
    tie_share = (count - (ranked > threshold).sum()) / (ranked == threshold).sum()
    local = losses.detach()
    weights = (valid & (local > threshold)).float() + tie_share * (valid & (local == threshold)).float()
    return distributed.global_sum((losses * weights).sum()) / count


@dataclass(frozen=True)
class SegmentationAugment:
    """DeepLab-v3's training augmentation (§A.3 after Van Gansbeke et al. 2021): a horizontal flip with
    probability 1/2, then a rotation uniform in ±`degrees` and a zoom uniform in `scale` (ScaleNRotate)."""

    degrees: float = 5.0
    scale: tuple[float, float] = (0.75, 1.25)

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> SegmentationAugment:
        """The augmentation of a `maskdistill.deeplab` section."""
        return cls(float(cfg["rotate"]), tuple(cfg["scale"]))  # type: ignore[arg-type]


def augmented_pair(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, augment: SegmentationAugment, background: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training sample: the image and its label map (both already in the working frame), flipped and
    scale-rotated together, outside pixels background; returns (normalised image [3, H, W], labels [H, W])."""
    if rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    degrees = rng.uniform(-augment.degrees, augment.degrees)
    scale = rng.uniform(*augment.scale)
    image, labels = scale_rotate(np.ascontiguousarray(image), np.ascontiguousarray(labels), degrees, scale, background)
    return normalise(image), torch.from_numpy(labels.astype(np.int64))


def stack_pairs(items: list[tuple[int, tuple[torch.Tensor, torch.Tensor]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate (index, (image, labels)) items into images [B, 3, H, W] and labels [B, H, W]."""
    return torch.stack([x for _, (x, _) in items]), torch.stack([y for _, (_, y) in items])


def deeplab_step(
    model: torch.nn.Module, optimiser: torch.optim.Optimizer, precision: Precision, guard: LossGuard,
    batch: tuple[torch.Tensor, torch.Tensor], fraction: float, device: torch.device, where: tuple[int, int],
) -> float:  # fmt: skip
    """One SGD step on eq. 4's hard-pixel cross-entropy of the global batch (this process's share of it in
    `batch`); the guard sees the unscaled loss at (epoch, step) before the step; returns the loss."""
    x, y = (t.to(device, non_blocking=True) for t in batch)
    with precision.autocast():
        logits = model(x)["out"]
    loss = global_hard_pixel_ce(logits.float(), y, fraction)
    guard.check(loss, *where)
    precision.step(optimiser, loss)
    return float(loss.detach())


def training_batches(
    rows: list[ManifestRow], bank: LabelBank, cfg: dict[str, Any], seed: int, world: World, threads: int, device: torch.device
) -> tuple[tuple[int, int], EpochBatches, DataLoader]:
    """(frame, sampler, loader) of DeepLab-v3's training pairs: images and the bank's labels read per row in the
    workers, brought into DeepLab's frame (`input_size` and `resize`, each null: the bank's) and augmented
    (SegmentationAugment), this process's share of every whole global batch."""
    frame = Frame(cfg["input_size"] or bank.frame.size, cfg["resize"] or bank.frame.mode)
    background = int(bank.attrs.get("background_label", bank.num_labels - 1))
    sample = partial(augmented_pair, augment=SegmentationAugment.from_config(cfg), background=background)
    labels = InFrame(ShardedRows(bank.paths, "labels"), frame, background, bank.frame, tuple((r.height, r.width) for r in rows))
    dataset = LabelledDataset([row.path for row in rows], labels, sample, seed, frame.size, frame.mode)
    batch_size = min(cfg["batch_size"], len(rows))
    distributed.check_global_batch(batch_size, "maskdistill.deeplab.batch_size")
    batches = EpochBatches(len(rows), batch_size, seed, rank=world.rank, world=world.size)  # whole batches (BatchNorm needs > 1 sample)
    return frame, batches, make_loader(dataset, batches, stack_pairs, threads, device)  # type: ignore[return-value]


def train_deeplab(
    rows: list[ManifestRow],
    bank: LabelBank,
    cfg: dict[str, Any],
    seed: int,
    out_path: str | Path,
    device: torch.device,
    weights: str | None = None,
    threads: int = 1,
    resume: tuple[str | Path, str] | None = None,
) -> dict[str, Any]:
    """Train DeepLab-v3 on the bank's labels, streamed through the input pipeline: SGD (momentum 0.9), lr ×0.1
    after `lr_step` of the epochs, flips and ScaleNRotate (§4.1, A.3); at `input_size` (null: the bank's size).
    `weights`: checkpoint of a `pretrain` pipeline ViT (deeplab.backbone: vit). `resume`: (state file rewritten
    after every epoch, its config hash). Under torchrun each process takes a share of every global batch and
    rank 0 writes (useg.train.distributed); returns the per-epoch losses."""
    world, device = distributed.start(device)
    frame, batches, loader = training_batches(rows, bank, cfg, seed, world, threads, device)
    model = build_deeplab(cfg, bank.num_labels, seed, weights).to(device)
    optimiser, precision = sgd(model, cfg), resolve_precision(cfg["amp"], device)
    history, start = [], 0
    state = load_checkpoint(resume[0], resume[1]) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        history, start = state["history"], state["epoch"] + 1
    trained = distributed.wrap(model, device)
    epochs = cfg["epochs"]
    log.info("deeplab-v3 (%s): %s, %d images at %dx%d, %d epochs", cfg["backbone"], num_parameters(model), len(rows), *frame.size, epochs)
    guard = LossGuard("lower maskdistill.deeplab.lr")
    for epoch in tqdm(range(start, epochs), desc="deeplab-v3", unit="epoch", disable=not world.is_main):
        batches.epoch = epoch
        trained.train()
        for group in optimiser.param_groups:
            group["lr"] = step_lr(cfg["lr"], epoch, epochs, 0, [cfg["lr_step"]])
        losses = [
            deeplab_step(trained, optimiser, precision, guard, batch, cfg["hard_fraction"], device, (epoch, step))
            for step, batch in enumerate(loader)
        ]
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "steps": losses})
        log.info("epoch %d: loss %.4f", epoch, losses[-1])
        if resume and world.is_main:
            state = {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "epoch": epoch, "history": history}
            save_checkpoint(resume[0], {**state, "config_hash": resume[1]})
    if world.is_main:
        save_model(out_path, model.cpu(), KIND, cfg, num_labels=bank.num_labels, **frame.attrs())
        log.info("deeplab-v3 -> %s", out_path)
    distributed.finish()
    return {"epochs": history, "resumed_from_epoch": start}


def load_deeplab(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained DeepLab-v3 (its own backbone included) and its checkpoint's fields."""
    state, ckpt = load_model(path, KIND)
    model = build_deeplab(for_rebuild(ckpt["config"]), ckpt["num_labels"], 0)
    model.load_state_dict(state)
    return model.eval(), ckpt


class DeepLabPredictor(torch.nn.Module):
    """The final model on normalised images [B, 3, H, W] -> logits [B, K, H, W] (MaskDistill §3.3)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)["out"]


def load_predictor(path: Path, backbone: torch.nn.Module, device: torch.device) -> DeepLabPredictor:
    """`useg predict` loader: the model holds its own backbone, so the run's backbone is not used."""
    return DeepLabPredictor(load_deeplab(path)[0]).to(device).eval()


@torch.inference_mode()
def label_maps(
    model: torch.nn.Module, rows: list[ManifestRow], frame: Frame, device: torch.device, batch_size: int, crf: CRFConfig | None, desc: str
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, label maps [B, H, W] uint16) per batch in the working frame: arg-max of the logits, after a dense
    CRF on their softmax when `crf` is given."""
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch"):
        images = load_images(rows[start : start + batch_size], frame)
        logits = model(normalise_images(images).to(device))["out"].cpu()
        if crf is not None:
            logits = torch.stack([dense_crf(image * 255, p, crf) for image, p in zip(images, logits.softmax(dim=1))])
        yield start, logits.argmax(1).numpy().astype(np.uint16)


def column_name(supervised: bool, crf: bool) -> str:
    """The column a DeepLab-v3 checkpoint's predictions fill: the clustering rows (Table 1), or with the
    linear classifier of `useg.methods.maskdistill.linear` the linear-classifier rows (Table 2a)."""
    return "maskdistill" + ("-linear" if supervised else "") + ("-crf" if crf else "")


def predict_deeplab(
    model_path: str | Path,
    rows: list[tuple[int, ManifestRow]],
    out_path: str | Path,
    prov: dict[str, Any],
    device: torch.device,
    batch_size: int = 16,
    crf: CRFConfig | None = None,
) -> None:
    """End-to-end inference per image at the working size, CRF-refined when `crf` is given (the "+CRF" rows);
    class ids of a supervised store for a linear-classifier checkpoint."""
    model, ckpt = load_deeplab(model_path)
    frame, index, ids = Frame.of(ckpt), *row_keys(rows)
    supervised = bool(ckpt.get("supervised", False))
    method = column_name(supervised, crf is not None)
    with PredictionsWriter(out_path, index, ids, frame, ckpt["num_labels"], method, prov, supervised=supervised) as writer:
        batches = label_maps(model.to(device), [row for _, row in rows], frame, device, batch_size, crf, f"{method} predict")
        stream_to_store(batches, lambda _, labels: {"labels": labels}, writer.write)
    log.info("%s: predicted %d images -> %s", method, len(rows), out_path)


def crf_label_bank(
    model_path: str | Path,
    rows: list[tuple[int, ManifestRow]],
    out_path: str | Path,
    prov: dict[str, Any],
    device: torch.device,
    crf: CRFConfig,
    batch_size: int = 16,
) -> None:
    """The CRF round's pseudo labels: the final model's CRF-refined label maps of the train split as a LabelBank
    (labels 0..C−1 clusters, C background), on which DeepLab-v3 is trained again (the release's +CRF rows)."""
    model, ckpt = load_deeplab(model_path)
    frame, index, ids = Frame.of(ckpt), *row_keys(rows)
    num_labels = int(ckpt["num_labels"])
    background = num_labels - 1
    with LabelBankWriter(
        out_path, index, ids, num_labels, frame.size, prov, with_maps=False, **frame.attrs(), background_label=background, crf_round=True
    ) as writer:  # fmt: skip
        batches = label_maps(model.to(device), [row for _, row in rows], frame, device, batch_size, crf, "crf labels")
        stream_to_store(batches, lambda _, labels: {"maps": None, "labels": labels, "foreground": labels != background}, writer.write)
    log.info("crf round labels: %d images -> %s", len(rows), out_path)
