"""The linear-classifier rows (MaskDistill Table 2a, §4.1 protocol (i), §A.2): a 1×1 convolution on the frozen
features of a trained DeepLab-v3, trained with the train split's ground truth and scored as class ids.

As the release's `linear_finetune.py`: the last 1×1 convolution of the DeepLab head (over its 256 ASPP
channels) is replaced by a fresh one for the dataset's classes (weights N(0, 0.01²), bias 0) and is the only
trained layer; every BatchNorm keeps its statistics (`freeze_batchnorm: all`); the images and labels stream
through the input pipeline with DeepLab's flips and ScaleNRotate; plain cross-entropy skips ignore pixels.
The result is saved as a DeepLab-v3 checkpoint marked `supervised`, so `maskdistill-predict` (with or
without CRF) writes it as a supervised Predictions store."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from useg.data.frame import Frame, InFrame
from useg.data.labels import load_mask
from useg.data.manifest import ManifestRow
from useg.data.pipeline import EpochBatches, LabelledDataset, make_loader
from useg.errors import DataError
from useg.methods.maskdistill.deeplab import KIND, SegmentationAugment, augmented_pair, load_deeplab, stack_pairs
from useg.methods.maskdistill.models import num_parameters, save_model, sgd
from useg.train import LossGuard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroundTruth:
    """Picklable label source of the input pipeline: row i's ground-truth mask (class ids, `ignore` kept)."""

    rows: tuple[ManifestRow, ...]

    def __call__(self, index: int) -> np.ndarray:
        return load_mask(self.rows[index])


def linear_lr(base: float, epoch: int, steps: list[int], gamma: float = 0.1) -> float:
    """§A.2's schedule: `base` × gamma for every step epoch reached (0.1 → 0.01 after epoch 25)."""
    return base * gamma ** sum(epoch >= step for step in steps)


def classifier_conv(model: nn.Module) -> nn.Conv2d:
    """The DeepLab head's last 1×1 convolution (torchvision's `classifier[4]`, the release's `head.4`)."""
    conv = model.classifier[-1]
    if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1):
        raise TypeError(f"the DeepLab head ends in {type(conv).__name__}, not a 1x1 convolution")
    return conv


def linear_classifier(model: nn.Module, num_classes: int, seed: int) -> nn.Module:
    """`model` frozen whole, its head's last 1×1 conv replaced by a fresh trainable one for `num_classes`
    (N(0, 0.01²) weights, zero bias, as the release initialises it)."""
    model.requires_grad_(False).eval()
    old = classifier_conv(model)
    torch.manual_seed(seed)
    conv = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    model.classifier[-1] = conv
    return model


def check_ground_truth(rows: list[ManifestRow]) -> None:
    """The classifier is supervised: every train image needs its ground-truth mask."""
    missing = [row.id for row in rows if not row.mask_path]
    if missing:
        raise DataError(
            f"maskdistill.linear trains on ground-truth masks of the train split; none for {missing[:5]}"
            " (set maskdistill.linear.enabled: false for a dataset without them)"
        )


def train_linear(
    rows: list[ManifestRow],
    model_path: str | Path,
    num_classes: int,
    cfg: dict[str, Any],
    seed: int,
    out_path: str | Path,
    device: torch.device,
    ignore: int = 255,
    threads: int = 1,
) -> None:
    """Train the 1×1 classifier on the frozen DeepLab-v3 of `model_path` (§A.2: SGD, momentum 0.9, `lr` ×0.1
    at each of `lr_epochs`, `epochs` epochs of batch `batch_size`), at the model's own input size."""
    check_ground_truth(rows)
    model, ckpt = load_deeplab(model_path)
    frame = Frame.of(ckpt)
    model = linear_classifier(model, num_classes, seed).to(device)
    sample = partial(augmented_pair, augment=SegmentationAugment.from_config(ckpt["config"]), background=ignore)
    labels = InFrame(GroundTruth(tuple(rows)), frame, ignore)
    dataset = LabelledDataset([row.path for row in rows], labels, sample, seed, frame.size, frame.mode)
    batches = EpochBatches(len(rows), min(cfg["batch_size"], len(rows)), seed)
    loader = make_loader(dataset, batches, stack_pairs, threads, device)
    optimiser = sgd(model, cfg)
    guard = LossGuard("lower maskdistill.linear.lr")
    log.info("linear classifier on %s: %s, %d images at %dx%d, %d epochs", model_path, num_parameters(model), len(rows), *frame.size, cfg["epochs"])
    for epoch in tqdm(range(cfg["epochs"]), desc="linear classifier", unit="epoch"):
        batches.epoch = epoch
        for group in optimiser.param_groups:
            group["lr"] = linear_lr(cfg["lr"], epoch, cfg["lr_epochs"])
        for step, (x, y) in enumerate(loader):
            logits = model(x.to(device, non_blocking=True))["out"]
            loss = F.cross_entropy(logits, y.to(device, non_blocking=True), ignore_index=ignore)
            guard.check(loss, epoch, step)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        log.info("epoch %d: loss %.4f", epoch, loss.item())
    save_model(out_path, model.cpu(), KIND, ckpt["config"], num_labels=num_classes, **frame.attrs(), supervised=True)
    log.info("linear classifier -> %s", out_path)
