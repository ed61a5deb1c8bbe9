"""The `pass-pretrain` stage: shape-enhanced SwAV representation learning (LUSS Sec. 4).

Per step, two global views of every image (and SwAV's local views, `local_crops`) go through the
trunk; the pixel-attention pooled image embeddings are trained with the SwAV swapped-prediction
loss (multi-crop), the overlap of the two global views with
image-to-pixel and pixel-to-pixel alignment, and (optionally) the pixel attention is supervised by
an unsupervised saliency prior: the CLS attention of the configured ViT backbone. Under torchrun
(`pass.pretrain.gpus`) each process takes its share of every global batch (useg.train.distributed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from useg.atomic import write_json
from useg.data.augment import Crop, View, ViewAugment, make_view, two_views
from useg.data.frame import Resize
from useg.data.pipeline import EpochBatches, ImageDataset, make_loader
from useg.errors import ConfigError, DataError
from useg.methods.common import roi_crop
from useg.methods.pass_.losses import EmbeddingQueue, overlap_features, swapped_multi, swapped_pair, swav_codes, unflip
from useg.methods.pass_.model import NetConfig, PASSNet
from useg.runtime import resolve_device
from useg.stores.features import FeatureStore, feature_frame
from useg.train import LossGuard, cosine_schedule, distributed, load_checkpoint, save_checkpoint
from useg.train.amp import resolve_precision
from useg.train.optim import build_optimiser

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """The `pass.pretrain` config section."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 0.01
    min_lr: float = 1e-5
    warmup_epochs: int = 0
    weight_decay: float = 1e-6
    temperature: float = 0.1
    epsilon: float = 0.05  # Sinkhorn entropy weight of the SwAV codes
    sinkhorn_iters: int = 3
    w_i2p: float = 1.0
    w_p2p: float = 1.0
    w_prior: float = 1.0  # used when pass.saliency_prior is true
    overlap_size: int = 7  # overlap grid side for the pixel alignments
    freeze_prototypes_epochs: int = 1  # SwAV: the prototypes get no update in the first epochs
    queue_length: int = 0  # SwAV's embedding queue for small batches (0: none)
    queue_start_epoch: int = 0
    view_size: list[int] = field(default_factory=lambda: [224, 224])
    crop_scale: list[float] = field(default_factory=lambda: [0.14, 1.0])
    local_crops: int = 0  # SwAV multi-crop: small views that predict the global views' codes
    local_size: list[int] = field(default_factory=lambda: [96, 96])
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.14])
    optimiser: str = "adamw"  # adamw | sgd | larc (the release: LARC-wrapped SGD)
    momentum: float = 0.9  # sgd and larc
    larc_trust: float = 0.001
    larc_clip: bool = False
    augment: dict[str, float] = field(default_factory=dict)

    def view_augment(self) -> ViewAugment:
        return ViewAugment(size=tuple(self.view_size), scale=tuple(self.crop_scale), **self.augment)

    def local_augment(self) -> ViewAugment:
        return ViewAugment(size=tuple(self.local_size), scale=tuple(self.local_scale), **self.augment)


def multi_crop(
    image: np.ndarray, aug: ViewAugment, local: ViewAugment, n_local: int, patch: int, rng: np.random.Generator
) -> tuple[View, ...]:
    """SwAV's multi-crop: two global views, then `n_local` independent local views of the same image."""
    return two_views(image, (aug, aug), patch, rng) + tuple(make_view(image, local, patch, rng) for _ in range(n_local))


def attention_priors(stores: list[FeatureStore], rows: list[int], resize: Resize) -> np.ndarray:
    """Saliency priors [N, h, w] in [0, 1] of manifest rows: head-averaged CLS attention of the
    backbone's FeatureStores, min-max normalised per image; their frame must fit images as PASS does."""
    if stores and feature_frame(stores).mode != resize:
        raise ConfigError(
            f"pass.saliency_prior reads features made with backbone.resize {feature_frame(stores).mode!r}, but PASS "
            f"fits its images by pass.resize {resize!r}: set both to the same mode"
        )
    maps = {}
    for store in stores:
        for batch in store.batches(64):
            attn = batch.attn.astype(np.float32).mean(axis=1)
            lo, hi = attn.min(axis=(1, 2), keepdims=True), attn.max(axis=(1, 2), keepdims=True)
            maps |= {int(i): m for i, m in zip(batch.index, (attn - lo) / np.maximum(hi - lo, 1e-8))}
    missing = [r for r in rows if r not in maps]
    if missing:
        raise DataError(
            f"pass.saliency_prior: {len(missing)} train images have no backbone features (manifest rows {missing[:3]})"
        )
    return np.stack([maps[r] for r in rows])


def collate_crops(items: list[tuple[int, tuple[View, ...]]]) -> tuple[np.ndarray, list[list[View]]]:
    """The input pipeline's collate: (index, views) items -> the indices and, per crop, the batch's views."""
    return np.array([i for i, _ in items], np.int64), [list(crop) for crop in zip(*(v for _, v in items))]


def view_prior(prior: Tensor, crops: list[Crop], frame: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """The saliency prior [B, 1, gh, gw] of full images cropped (and flipped) like the views
    (crop boxes in pixels of the `frame`-sized images)."""
    ph, pw = prior.shape[2:]
    boxes = torch.tensor(
        [
            [
                c.left * pw / frame[1],
                c.top * ph / frame[0],
                (c.left + c.width) * pw / frame[1],
                (c.top + c.height) * ph / frame[0],
            ]
            for c in crops
        ]
    )
    return unflip(roi_crop(prior, boxes, grid), crops)  # mirroring is its own inverse


@dataclass
class Step:
    """Losses of one batch."""

    total: Tensor
    parts: dict[str, float]


class PASSTrainer:
    """PASSNet, optimiser and schedules of one run."""

    def __init__(
        self, net_cfg: NetConfig, cfg: PretrainConfig, iters_per_epoch: int, seed: int, device: str, amp: str = "auto"
    ) -> None:
        torch.manual_seed(seed)
        self.cfg = cfg
        self.world, self.device = distributed.start(resolve_device(device))
        self.precision = resolve_precision(amp, self.device)
        self.net = PASSNet(net_cfg).to(self.device)
        self.forward = distributed.wrap(self.net, self.device)
        self.optimizer = build_optimiser(
            cfg.optimiser, self.net.parameters(), cfg.lr, cfg.weight_decay, "pass.pretrain.optimiser", cfg.momentum, cfg.larc_trust, cfg.larc_clip
        )
        self.iters_per_epoch = iters_per_epoch
        self.lr = cosine_schedule(cfg.lr, cfg.min_lr, cfg.epochs, iters_per_epoch, cfg.warmup_epochs)
        self.queue = EmbeddingQueue(cfg.queue_length, 2, net_cfg.projector_dim, self.device)
        self.guard = LossGuard("lower pass.pretrain.lr")

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs: network, optimiser and the SwAV queue."""
        return {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "queue": self.queue.embeddings,
            "queue_filled": self.queue.filled,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.queue.embeddings, self.queue.filled = state["queue"].to(self.device), state["queue_filled"]

    def losses(self, views: list[list[View]], prior: Tensor | None, frame: tuple[int, int], epoch: int = 0) -> Step:
        """SwAV + I2P + P2P (+ prior) losses of a batch of two global views and any local views (LUSS Sec. 4;
        the local views only predict the global views' codes, as in SwAV's multi-crop)."""
        cfg, net = self.cfg, self.net
        net.normalise_prototypes()
        z, c, embeddings, image_scores = self.forward([torch.stack([v.image for v in vs]).to(self.device) for vs in views])
        codes = [
            self.queue.codes(i, s, net.prototypes, cfg.epsilon, cfg.sinkhorn_iters) for i, s in enumerate(image_scores[:2])
        ]
        if cfg.queue_length and epoch >= cfg.queue_start_epoch:
            self.queue.push(embeddings[:2])
        parts = {"swav": swapped_multi(codes, image_scores, cfg.temperature)}
        z, c, crops = z[:2], c[:2], [[v.crop for v in vs] for vs in views[:2]]
        rows1, rows2, image = overlap_features(z[0], z[1], crops[0], crops[1], cfg.overlap_size)
        if distributed.global_sum(torch.tensor(float(len(image)), device=self.device)) > 0:  # rows on any process
            pixel_scores = [net.scores(net.pixel_embedding(r)) for r in (rows1, rows2)]
            pixel_codes = [swav_codes(s, cfg.epsilon, cfg.sinkhorn_iters) for s in pixel_scores]
            image = image.to(self.device)
            i2p = swapped_pair((codes[0][image], codes[1][image]), pixel_scores, cfg.temperature)
            p2p = swapped_pair(pixel_codes, pixel_scores, cfg.temperature)
            parts |= {"i2p": cfg.w_i2p * i2p, "p2p": cfg.w_p2p * p2p}
        if prior is not None:
            bce = [
                F.binary_cross_entropy(ci, view_prior(prior, cr, frame, tuple(ci.shape[2:])).to(ci))
                for ci, cr in zip(c, crops)
            ]
            parts["prior"] = cfg.w_prior * (bce[0] + bce[1]) / 2
        total = torch.stack(list(parts.values())).sum()
        return Step(total, {k: distributed.global_mean(v) for k, v in parts.items()})

    def step(self, views: list[list[View]], prior: Tensor | None, frame: tuple[int, int], it: int) -> Step:
        """One optimisation step; `frame` is the size of the images the views were cut from."""
        for group in self.optimizer.param_groups:
            group["lr"] = float(self.lr[it])
        epoch = it // self.iters_per_epoch
        with self.precision.autocast():
            out = self.losses(views, prior, frame, epoch)
        self.guard.check(distributed.global_mean(out.total), epoch, it % self.iters_per_epoch)  # every process stops together

        def freeze_prototypes() -> None:
            if epoch < self.cfg.freeze_prototypes_epochs:
                self.net.prototypes.weight.grad = None

        self.precision.step(self.optimizer, out.total, freeze_prototypes)
        return out


def pretrain(
    net_cfg: NetConfig,
    cfg: PretrainConfig,
    image_paths: list[str],
    input_size: tuple[int, int],
    priors: np.ndarray | None,
    out_checkpoint: str | Path,
    out_log: str | Path,
    resume_path: str | Path,
    config_hash: str,
    seed: int,
    device: str = "auto",
    threads: int = 1,
    resize: Resize = "squash",
    amp: str = "auto",
) -> dict[str, Any]:
    """Train PASSNet on the images (priors [N, h, w] in [0, 1], or None) fitted to `input_size` by `resize`;
    write the network and a log (under torchrun: each process a share of every batch, rank 0 writing)."""
    if not image_paths:
        raise DataError("PASS pretraining needs images: the train split of the manifest is empty")
    aug = cfg.view_augment()
    for key, size in (("view_size", cfg.view_size), ("local_size", cfg.local_size)):
        if size[0] % net_cfg.output_stride or size[1] % net_cfg.output_stride:
            raise ConfigError(f"pass.pretrain.{key} {list(size)} must be a multiple of pass.net.output_stride")
    batch_size = min(cfg.batch_size, len(image_paths))
    iters = len(image_paths) // batch_size
    trainer = PASSTrainer(net_cfg, cfg, iters, seed, device, amp)
    distributed.check_global_batch(batch_size, "pass.pretrain.batch_size")
    batches = EpochBatches(len(image_paths), batch_size, seed, rank=trainer.world.rank, world=trainer.world.size)
    sample = partial(multi_crop, aug=aug, local=cfg.local_augment(), n_local=cfg.local_crops, patch=net_cfg.output_stride)
    loader = make_loader(ImageDataset(image_paths, sample, seed, input_size, resize), batches, collate_crops, threads, trainer.device)
    prior_t = None if priors is None else torch.from_numpy(priors.astype(np.float32))[:, None]
    history: list[dict[str, Any]] = []
    start = 0
    state = load_checkpoint(resume_path, config_hash)
    if state is not None:
        trainer.load(state)
        history, start = state["history"], state["epoch"] + 1
    began = time.perf_counter()
    for epoch in range(start, cfg.epochs):
        batches.epoch = epoch
        sums: dict[str, float] = {}
        trainer.net.train()
        steps = tqdm(loader, desc=f"pass epoch {epoch + 1}/{cfg.epochs}", unit="step", disable=not trainer.world.is_main)
        for b, (idx, views) in enumerate(steps):
            out = trainer.step(views, None if prior_t is None else prior_t[idx], input_size, epoch * iters + b)
            for k, v in {"loss": sum(out.parts.values()), **out.parts}.items():
                sums[k] = sums.get(k, 0.0) + v / iters
        history.append({"epoch": epoch + 1, **sums, "lr": float(trainer.lr[(epoch + 1) * iters - 1])})
        log.info("pass epoch %d/%d: %s", epoch + 1, cfg.epochs, ", ".join(f"{k} {v:.4f}" for k, v in sums.items()))
        if trainer.world.is_main:
            save_checkpoint(resume_path, {**trainer.state(), "epoch": epoch, "history": history, "config_hash": config_hash})
    wall = time.perf_counter() - began
    if trainer.world.is_main:
        save_checkpoint(out_checkpoint, {"method": "pass", "net": trainer.net.state_dict(), "net_config": net_cfg.__dict__})
    summary = {
        "epochs": history,
        "images": len(image_paths),
        "steps_per_epoch": iters,
        "resumed_from_epoch": start,
        "wall_seconds_this_run": wall,
    }
    if trainer.world.is_main:
        write_json(out_log, summary)
    distributed.finish()
    log.info("pass: %d epochs on %d images in %.1f s -> %s", cfg.epochs, len(image_paths), wall, out_checkpoint)
    return summary
