"""The `pretrain` stage: CrOC self-distillation of a student ViT from its EMA teacher (CrOC Sec. 3.2).

Per step: two views per image; the teacher's last-block keys/values/queries of both views are
clustered jointly per head (Sec. 3.3); teacher and student centroids of each view are distilled
across views (dense loss) beside the DINO image-level loss. The teacher backbone is the product.
Release and paper readings of the clustering, the centroids and the recipe are named switches of
CrOCConfig (docs/methods/croc.md).
"""

from __future__ import annotations

import copy
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from useg.atomic import write_json
from useg.backbones.vit import BackboneConfig, ViTBackbone, create_vit
from useg.backbones.weights import with_grid
from useg.data.augment import View, ViewAugment, two_views
from useg.data.pipeline import EpochBatches, ImageDataset, make_loader
from useg.errors import ConfigError, DataError, check_choice
from useg.methods.croc.clustering import READINGS, ClusterConfig, Clustering, TokenPrior, multi_head_clustering
from useg.methods.croc.heads import CrOCHead
from useg.methods.croc.losses import cluster_centroids, dense_loss, global_loss, mean_norm, total_loss, update_center
from useg.runtime import resolve_device
from useg.train import LossGuard, cosine_schedule, distributed, ema_update, load_checkpoint, save_checkpoint
from useg.train.amp import resolve_precision
from useg.train.clip import clip_gradients

log = logging.getLogger(__name__)

TOKEN_INDEX = {"queries": 0, "keys": 1, "values": 2}


@dataclass(frozen=True)
class CrOCConfig(ClusterConfig):
    """The `croc` config section: the clustering's keys and the training's (defaults and sources in
    workflow/schemas/config.schema.yaml)."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum: float = 0.996
    momentum_end: float = 1.0
    clip_grad: float = 3.0
    clip_grad_per_parameter: bool = True
    drop_path_rate: float = 0.1
    freeze_last_layer_epochs: int = 1
    tau_t: float = 0.07
    tau_s: float = 0.1
    center_momentum: float = 0.9
    alpha: float = 1.0
    centroids: str = "release"
    tokens: str = "values"
    block: int = -1
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_global_dim: int = 65536
    head_dense_dim: int = 8192
    view_size: list[int] = field(default_factory=lambda: [224, 224])
    crop_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    augment: dict[str, float] = field(default_factory=dict)
    augment_views: list[dict[str, float]] = field(
        default_factory=lambda: [{"blur_p": 1.0, "solarize_p": 0.0}, {"blur_p": 0.1, "solarize_p": 0.2}]
    )
    device: str = "auto"
    amp: str = "auto"

    def view_augments(self) -> tuple[ViewAugment, ViewAugment]:
        """Augmentations of view 1 and view 2: `augment_views[i]`, overridden by `augment` (both views)."""
        if len(self.augment_views) != 2:
            raise ConfigError(f"croc.augment_views must list two views, got {len(self.augment_views)}")
        first, second = (
            ViewAugment(size=tuple(self.view_size), scale=tuple(self.crop_scale), **{**view, **self.augment})
            for view in self.augment_views
        )
        return first, second


def cls_attention(q: Tensor, k: Tensor, num_prefix: int) -> Tensor:
    """Attention of the CLS query to the patch keys, renormalised over patches [B, H, N] (CrOC eq. 10's r)."""
    probs = ((q[:, :, :1] * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)[:, :, 0, num_prefix:]
    return probs / probs.sum(dim=-1, keepdim=True)


def cls_cosine(tokens: Tensor, num_prefix: int) -> Tensor:
    """Cosine of every patch token with the CLS token of the same kind and head [B, H, N] (the release's r logits)."""
    unit = F.normalize(tokens, dim=-1)
    return (unit[:, :, num_prefix:] @ unit[:, :, 0, :, None])[..., 0]


class TeacherView(NamedTuple):
    """What the clustering and the centroids need from the teacher's pass over one view."""

    cls: Tensor  # [B, D]
    patches: Tensor  # [B, N, D]
    tokens: Tensor  # [B, H, N, d_h] clustered tokens of croc.block
    cls_cosine: Tensor  # [B, H, N]
    cls_attention: Tensor  # [B, H, N]


class Network(nn.Module):
    """Backbone + shared projection head (student or teacher)."""

    def __init__(self, backbone: ViTBackbone, head: CrOCHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, views: list[Tensor], split: list[tuple[Tensor, Tensor]], rule: str) -> tuple[list[Tensor], list[Tensor]]:
        """The student's pass: image logits of every view and centroid logits of the teacher's clusters
        `split` (soft, hard assignments per view) (CrOC eq. 2-5); the forward DDP wraps."""
        out = [self.backbone(v) for v in views]
        norm = mean_norm([o.cls for o in out])
        image = [self.head.image(o.cls) for o in out]
        dense = [
            self.head.centroid(cluster_centroids(o.patches.flatten(1, 2), q, m, norm, rule)) for o, (q, m) in zip(out, split)
        ]
        return image, dense


@dataclass
class Batch:
    """Two views of a batch of images: images [B, 3, h, w] each and patch positions [B, 2N, 2]."""

    views: tuple[Tensor, Tensor]
    coords: Tensor


def make_batch(
    images: list[np.ndarray], augs: tuple[ViewAugment, ViewAugment], patch: int, rngs: list[np.random.Generator]
) -> Batch:
    """Stack the two views of every image; coordinates of view 1 then view 2 along the token axis."""
    return stack_pairs([two_views(img, augs, patch, rng) for img, rng in zip(images, rngs)])


def collate_pairs(items: list[tuple[int, tuple[View, View]]]) -> Batch:
    """The input pipeline's collate: (index, view pair) items -> one Batch."""
    return stack_pairs([pair for _, pair in items])


def stack_pairs(pairs: list[tuple[View, View]]) -> Batch:
    """Stack view pairs into a Batch; coordinates of view 1 then view 2 along the token axis."""
    first = torch.stack([a.image for a, _ in pairs])
    second = torch.stack([b.image for _, b in pairs])
    coords = torch.stack([torch.cat([a.coords, b.coords]) for a, b in pairs])
    return Batch((first, second), coords)


@dataclass
class Losses:
    """Losses of one batch with the clustering and the teacher logits (for the centres)."""

    total: Tensor
    glob: Tensor
    dense: Tensor
    clusters: Clustering
    teacher_global: Tensor
    teacher_dense: Tensor


class CrOCTrainer:
    """Student/teacher pair, heads, centres, optimiser and schedules of one CrOC run."""

    def __init__(self, cfg: CrOCConfig, backbone_cfg: BackboneConfig, iters_per_epoch: int, seed: int) -> None:
        if cfg.tokens not in TOKEN_INDEX:
            raise ConfigError(f"croc.tokens must be one of {sorted(TOKEN_INDEX)}, got {cfg.tokens!r}")
        check_choice("croc.centroids", cfg.centroids, READINGS)
        self.cfg, self.seed = cfg, seed
        self.world, self.device = distributed.start(resolve_device(cfg.device))
        self.precision = resolve_precision(cfg.amp, self.device)
        torch.manual_seed(seed)
        backbone = ViTBackbone(create_vit(backbone_cfg, cfg.drop_path_rate), name=backbone_cfg.name)
        head = CrOCHead(
            backbone.embed_dim, cfg.head_hidden_dim, cfg.head_bottleneck_dim, cfg.head_global_dim, cfg.head_dense_dim
        )
        self.student = Network(backbone, head).to(self.device)
        self.student_pass = distributed.wrap(self.student, self.device)
        # the teacher has no stochastic depth (DINO): same weights, blocks without drop-path
        self.teacher = Network(ViTBackbone(create_vit(backbone_cfg), name=backbone_cfg.name), copy.deepcopy(head))
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher = self.teacher.to(self.device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.center_global = torch.zeros(cfg.head_global_dim, device=self.device)
        self.center_dense = torch.zeros(cfg.head_dense_dim, device=self.device)
        trainable = [p for p in self.student.parameters() if p.requires_grad]
        decay = [p for p in trainable if p.ndim > 1]
        no_decay = [p for p in trainable if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
        self.iters_per_epoch = iters_per_epoch
        self.lr = cosine_schedule(cfg.lr, cfg.min_lr, cfg.epochs, iters_per_epoch, cfg.warmup_epochs)
        self.wd = cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, cfg.epochs, iters_per_epoch)
        self.mom = cosine_schedule(cfg.momentum, cfg.momentum_end, cfg.epochs, iters_per_epoch)
        self.guard = LossGuard("lower croc.lr or raise croc.warmup_epochs")

    def state(self) -> dict[str, Any]:
        return {
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "center_global": self.center_global,
            "center_dense": self.center_dense,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.center_global, self.center_dense = state["center_global"], state["center_dense"]

    def _forward(self, net: Network, images: Tensor) -> TeacherView:
        """CLS, patch tokens, and the clustering tokens, CLS cosine and CLS attention of block
        `croc.block` (CrOC eq. 21: Z^(B-2) W feeds the last block, -1, with blocks counted from 0)."""
        block = self.cfg.block % net.backbone.depth
        out = net.backbone(images, qkv_blocks=(block,))
        qkv = out.qkv[block]
        p = net.backbone.num_prefix_tokens
        tokens = qkv[TOKEN_INDEX[self.cfg.tokens]]
        return TeacherView(out.cls, out.patches.flatten(1, 2), tokens[:, :, p:], cls_cosine(tokens, p), cls_attention(*qkv[:2], p))

    def losses(self, batch: Batch, generator: torch.Generator, position: tuple[int, int] = (0, 0)) -> Losses:
        """Cluster the teacher tokens of both views, then the global and dense losses (CrOC eq. 2-7);
        `position` (epoch, step) names the step if the teacher's tokens are no longer finite."""
        cfg = self.cfg
        views = [v.to(self.device) for v in batch.views]
        with torch.no_grad():
            t_out = [self._forward(self.teacher, v) for v in views]
            n = t_out[0].patches.shape[1]
            tokens = torch.cat([o.tokens for o in t_out], dim=2)
            self.guard.check_values(tokens, "teacher's clustering tokens", *position)
            prior = TokenPrior(*(torch.cat([getattr(o, key) for o in t_out], dim=2) for key in ("cls_cosine", "cls_attention")))
            clusters = multi_head_clustering(tokens, prior, batch.coords.to(self.device), cfg, generator)
            split = [(clusters.assign[:, part], clusters.hard[:, part]) for part in (slice(0, n), slice(n, None))]
            t_norm = mean_norm([o.cls for o in t_out])
            t_glob = [self.teacher.head.image(o.cls) for o in t_out]
            t_dense = [
                self.teacher.head.centroid(cluster_centroids(o.patches, q, m, t_norm, cfg.centroids))
                for o, (q, m) in zip(t_out, split)
            ]
        s_glob, s_dense = self.student_pass(views, split, cfg.centroids)
        glob = global_loss((t_glob[0], t_glob[1]), (s_glob[0], s_glob[1]), self.center_global, cfg.tau_t, cfg.tau_s)
        dense = dense_loss(
            (t_dense[0], t_dense[1]), (s_dense[0], s_dense[1]), clusters.valid, self.center_dense, cfg.tau_t, cfg.tau_s
        )
        return Losses(total_loss(dense, glob, cfg.alpha), glob, dense, clusters, torch.cat(t_glob), torch.cat(t_dense))

    def step(self, batch: Batch, it: int, generator: torch.Generator) -> dict[str, Any]:
        """One optimisation step; returns the losses and the chosen K per image and head."""
        cfg = self.cfg
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = float(self.lr[it])
            if i == 0:
                group["weight_decay"] = float(self.wd[it])
        position = (it // self.iters_per_epoch, it % self.iters_per_epoch)
        with self.precision.autocast():
            out = self.losses(batch, generator, position)
        loss = distributed.global_mean(out.total)  # every process stops together on the global batch's loss
        self.guard.check(loss, *position)

        def clip_and_freeze() -> None:
            clip_gradients(self.student.parameters(), cfg.clip_grad, cfg.clip_grad_per_parameter)
            if it < cfg.freeze_last_layer_epochs * self.iters_per_epoch:
                for layer in (self.student.head.global_last, self.student.head.dense_last):
                    for p in layer.parameters():
                        p.grad = None

        self.precision.step(self.optimizer, out.total, clip_and_freeze)
        ema_update(self.teacher, self.student, float(self.mom[it]))
        self.center_global = update_center(self.center_global, out.teacher_global, cfg.center_momentum)
        weight = torch.cat([out.clusters.valid, out.clusters.valid])
        self.center_dense = update_center(self.center_dense, out.teacher_dense, cfg.center_momentum, weight)
        return {
            "loss": loss,
            "global": distributed.global_mean(out.glob),
            "dense": distributed.global_mean(out.dense),
            "k": distributed.gather_rows(out.clusters.k).flatten().tolist(),
        }


def pretrain(
    cfg: CrOCConfig,
    backbone_cfg: BackboneConfig,
    image_paths: list[str],
    out_checkpoint: str | Path,
    out_log: str | Path,
    resume_path: str | Path,
    config_hash: str,
    seed: int,
    threads: int = 1,
) -> dict[str, Any]:
    """Train CrOC on `image_paths`; write the teacher backbone (timm keys) and the training log (under
    torchrun: each process a share of every batch, rank 0 writing; useg.train.distributed)."""
    if not image_paths:
        raise DataError("pretraining needs images: the train split of the manifest is empty")
    batch_size = min(cfg.batch_size, len(image_paths))
    iters = len(image_paths) // batch_size
    trainer = CrOCTrainer(cfg, backbone_cfg, iters, seed)
    distributed.check_global_batch(batch_size, "croc.batch_size")
    patch = trainer.student.backbone.patch_size
    augs = cfg.view_augments()
    if augs[0].size[0] % patch or augs[0].size[1] % patch:
        raise ConfigError(f"croc.view_size {list(augs[0].size)} must be a multiple of the patch size {patch}")
    batches = EpochBatches(len(image_paths), batch_size, seed, rank=trainer.world.rank, world=trainer.world.size)
    dataset = ImageDataset(image_paths, partial(two_views, augs=augs, patch=patch), seed)
    loader = make_loader(dataset, batches, collate_pairs, threads, trainer.device)
    history: list[dict[str, Any]] = []
    start = 0
    state = load_checkpoint(resume_path, config_hash)
    if state is not None:
        trainer.load(state)
        history, start = state["history"], state["epoch"] + 1
    began = time.perf_counter()
    for epoch in range(start, cfg.epochs):
        generator = torch.Generator().manual_seed(seed * 100003 + epoch)
        # the student's drop-path masks, the same after a resume; each process draws its own
        torch.manual_seed((seed * 100003 + epoch) * trainer.world.size + trainer.world.rank)
        batches.epoch = epoch
        losses, ks = [], Counter()
        trainer.student.train()
        steps = tqdm(loader, desc=f"croc epoch {epoch + 1}/{cfg.epochs}", unit="step", disable=not trainer.world.is_main)
        for b, batch in enumerate(steps):
            out = trainer.step(batch, epoch * iters + b, generator)
            losses.append((out["loss"], out["global"], out["dense"]))
            ks.update(out["k"])
        mean = np.mean(losses, axis=0)
        history.append(
            {"epoch": epoch + 1, "loss": float(mean[0]), "loss_global": float(mean[1]), "loss_dense": float(mean[2]),
             "lr": float(trainer.lr[(epoch + 1) * iters - 1]), "k_histogram": {str(k): v for k, v in sorted(ks.items())}}
        )  # fmt: skip
        log.info("croc epoch %d/%d: loss %.4f (global %.4f, dense %.4f)", epoch + 1, cfg.epochs, *mean)
        if trainer.world.is_main:
            save_checkpoint(resume_path, {**trainer.state(), "epoch": epoch, "history": history, "config_hash": config_hash})
    wall = time.perf_counter() - began
    if trainer.world.is_main:
        save_checkpoint(out_checkpoint, with_grid(trainer.teacher.backbone.model))
    total_k: Counter = Counter()
    for h in history:
        total_k.update({int(k): v for k, v in h["k_histogram"].items()})
    summary = {
        "epochs": history,
        "k_histogram": {str(k): v for k, v in sorted(total_k.items())},
        "images": len(image_paths),
        "steps_per_epoch": iters,
        "resumed_from_epoch": start,
        "wall_seconds_this_run": wall,
    }
    if trainer.world.is_main:
        write_json(out_log, summary)
    distributed.finish()
    log.info("croc: %d epochs on %d images in %.1f s -> %s", cfg.epochs, len(image_paths), wall, out_checkpoint)
    return summary
