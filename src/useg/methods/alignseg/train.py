"""The `alignseg-train` stage: decoder and prototypes trained on crops through the frozen backbone (§IV-B).

Per step: one global and v_l local crops per image (each local crop overlaps the global one by a
minimum share); the frozen ViT gives patch tokens x and the CLS attention of every crop, from which
the saliency masks keep 60 % of the attention mass; the decoder extracts P^x per crop and the
loss αL_proto + βL_corr (eq. 11) trains decoder and prototypes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from useg.atomic import write_json
from useg.backbones.saliency import attention_mass_mask
from useg.backbones.vit import ViTBackbone
from useg.data.augment import ViewAugment
from useg.data.images import load_rgb_all
from useg.errors import ConfigError, DataError
from useg.methods.alignseg.crops import CropBatch, CropConfig, make_crop_batch
from useg.methods.alignseg.decoder import DecoderConfig, PrototypeDecoder, build_decoder, save_decoder, similarity
from useg.methods.alignseg.losses import LossConfig, total_loss
from useg.train import check_finite, cosine_schedule, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignSegConfig:
    """The `alignseg` config section (paper values in workflow/schemas/config.schema.yaml)."""

    k: int | None = 5
    layers: int = 1
    heads: int = 4
    local_crops: int = 2
    min_overlap: float = 0.3
    global_size: list[int] = field(default_factory=lambda: [224, 224])
    local_size: list[int] = field(default_factory=lambda: [96, 96])
    global_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])
    augment: dict[str, float] = field(default_factory=dict)
    attention_mass: float = 0.6
    alpha: float = 1.0
    beta: float = 1.0
    tau: float = 0.1
    shift: float = 0.3
    losses: dict[str, bool] = field(default_factory=dict)
    clamp: bool = True
    saliency_mask: bool = True
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_epochs: int = 1
    weight_decay: float = 0.0
    device: str = "auto"

    def crops(self) -> CropConfig:
        def aug(size: list[int], scale: list[float]) -> ViewAugment:
            return ViewAugment(size=tuple(size), scale=tuple(scale), **self.augment)

        return CropConfig(
            aug(self.global_size, self.global_scale), aug(self.local_size, self.local_scale), self.local_crops, self.min_overlap
        )

    def loss(self) -> LossConfig:
        flags = {"proto": True, "corr": True, **self.losses}
        if not (flags["proto"] or flags["corr"]):
            raise ConfigError("alignseg.losses: at least one of proto and corr must be true")
        return LossConfig(self.alpha, self.beta, self.tau, self.shift, flags["proto"], flags["corr"], self.clamp, self.saliency_mask)

    def decoder(self, dim: int, k: int) -> DecoderConfig:
        if dim % self.heads:
            raise ConfigError(f"alignseg.heads ({self.heads}) must divide the backbone width {dim}")
        return DecoderConfig(dim, k, self.layers, self.heads)


@dataclass
class CropOutputs:
    """Frozen-backbone outputs of one crop position: tokens [B, n, D] and saliency [B, n]."""

    tokens: Tensor
    saliency: Tensor


@torch.no_grad()
def encode(backbone: ViTBackbone, views: Tensor, mass: float) -> CropOutputs:
    """Patch tokens and the attention-mass saliency mask of a stack of views (§IV-A)."""
    out = backbone(views)
    batch, h, w, dim = out.patches.shape
    return CropOutputs(out.patches.reshape(batch, h * w, dim), attention_mass_mask(out.attn, mass).reshape(batch, h * w))


def step_loss(
    decoder: PrototypeDecoder, backbone: ViTBackbone, batch: CropBatch, cfg: AlignSegConfig, losses: LossConfig, device: torch.device
) -> tuple[Tensor, dict[str, float]]:
    """Loss of one batch of crops (eq. 11)."""
    crops = [encode(backbone, v.to(device), cfg.attention_mass) for v in (batch.global_views, *batch.local_views)]
    protos = [decoder(c.tokens) for c in crops]
    sims = [similarity(c.tokens, p) for c, p in zip(crops, protos)]
    return total_loss(
        losses,
        (protos[0], protos[1:]),
        (sims[0], sims[1:]),
        (crops[0].tokens, [c.tokens for c in crops[1:]]),
        (crops[0].saliency, [c.saliency for c in crops[1:]]),
    )


def check_sizes(cfg: AlignSegConfig, patch: int) -> None:
    """Crop sizes must be whole patches."""
    for key in ("global_size", "local_size"):
        size = getattr(cfg, key)
        if size[0] % patch or size[1] % patch:
            raise ConfigError(f"alignseg.{key} {size} must be a multiple of the patch size {patch}")


def train_alignseg(
    cfg: AlignSegConfig,
    backbone: ViTBackbone,
    image_paths: list[str],
    k: int,
    out_path: str | Path,
    out_log: str | Path,
    resume_path: str | Path,
    config_hash: str,
    seed: int,
    device: torch.device,
    threads: int = 1,
) -> dict[str, Any]:
    """Train decoder + prototypes on `image_paths` through the frozen `backbone`; write the decoder and the training log."""
    if not image_paths:
        raise DataError("AlignSeg training needs images: the train split of the manifest is empty")
    check_sizes(cfg, backbone.patch_size)
    losses, crops = cfg.loss(), cfg.crops()
    backbone = backbone.to(device).eval().requires_grad_(False)
    decoder = build_decoder(cfg.decoder(backbone.embed_dim, k), seed).to(device)
    optimiser = torch.optim.AdamW(decoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch_size = min(cfg.batch_size, len(image_paths))
    iters = len(image_paths) // batch_size
    lr = cosine_schedule(cfg.lr, cfg.min_lr, cfg.epochs, iters, cfg.warmup_epochs)
    images = load_rgb_all(image_paths, threads)
    history: list[dict[str, Any]] = []
    start = 0
    state = load_checkpoint(resume_path, config_hash)
    if state is not None:
        decoder.load_state_dict(state["decoder"])
        optimiser.load_state_dict(state["optimiser"])
        history, start = state["history"], state["epoch"] + 1
    began = time.perf_counter()
    for epoch in range(start, cfg.epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(images))
        decoder.train()
        totals: dict[str, float] = {}
        for b in tqdm(range(iters), desc=f"alignseg epoch {epoch + 1}/{cfg.epochs}", unit="step"):
            idx = order[b * batch_size : (b + 1) * batch_size]
            rngs = [np.random.default_rng([seed, epoch, int(i)]) for i in idx]
            batch = make_crop_batch([images[i] for i in idx], crops, backbone.patch_size, rngs)
            for group in optimiser.param_groups:
                group["lr"] = float(lr[epoch * iters + b])
            loss, terms = step_loss(decoder, backbone, batch, cfg, losses, device)
            check_finite(loss, epoch, b, "lower alignseg.lr")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            for name, value in {"loss": float(loss.detach()), **terms}.items():
                totals[name] = totals.get(name, 0.0) + value / iters
        history.append({"epoch": epoch + 1, **totals})
        log.info("alignseg epoch %d/%d: %s", epoch + 1, cfg.epochs, " ".join(f"{k} {v:.4f}" for k, v in totals.items()))
        state = {"decoder": decoder.state_dict(), "optimiser": optimiser.state_dict()}
        save_checkpoint(resume_path, {**state, "epoch": epoch, "history": history, "config_hash": config_hash})
    wall = time.perf_counter() - began
    info = {"images": len(image_paths), "steps_per_epoch": iters, "resumed_from_epoch": start}
    save_decoder(decoder.cpu().eval(), out_path, {"history": history, **info})
    write_json(out_log, {"epochs": history, **info, "wall_seconds_this_run": wall})
    Path(resume_path).unlink(missing_ok=True)  # only an interrupted run resumes
    log.info("alignseg: %d epochs on %d images in %.1f s -> %s", cfg.epochs, len(image_paths), wall, out_path)
    return {"epochs": history, **info}
