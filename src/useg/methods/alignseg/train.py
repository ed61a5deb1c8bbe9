"""The `alignseg-train` stage: decoder and prototypes trained on crops through the frozen backbone (§IV-B).

Per step: one global and v_l local crops per image (each local crop overlaps the global one by a
minimum share); the frozen ViT gives patch tokens x and the CLS attention of every crop, from which
the saliency masks keep 60 % of the attention mass; the decoder extracts P^x per crop and the
loss αL_proto + βL_corr (eq. 11) trains decoder and prototypes with `build_optimiser` / `build_schedule`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import torch
from torch import Tensor
from tqdm import tqdm

from useg.atomic import write_json
from useg.backbones.saliency import attention_mass_mask
from useg.backbones.vit import ViTBackbone
from useg.data.augment import OverlapRule
from useg.data.pipeline import EpochBatches, ImageDataset, make_loader
from useg.errors import ConfigError, DataError
from useg.methods.alignseg.crops import CropBatch, CropConfig, collate_crops, crop_augment, image_crops
from useg.methods.alignseg.decoder import Activation, DecoderConfig, Init, build_decoder, save_decoder, similarity
from useg.methods.alignseg.losses import LossConfig, Reduction, Source, total_loss
from useg.methods.alignseg.optim import Schedule, build_optimiser, build_schedule
from useg.train import CollapseGuard, LossGuard, distributed, load_checkpoint, mean_pairwise_cosine, save_checkpoint
from useg.train.amp import resolve_precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignSegConfig:
    """The `alignseg` config section; defaults are the release's (workflow/schemas/config.schema.yaml)."""

    k: int | None = 5
    layers: int = 1
    heads: int = 3
    ffn_dim: int | None = 768
    ffn_activation: Activation = "relu"
    decoder_init: Init = "trunc_normal"
    local_crops: int = 2
    overlap_rule: OverlapRule = "area"
    min_overlap: float = 0.05
    global_size: list[int] = field(default_factory=lambda: [224, 224])
    local_size: list[int] = field(default_factory=lambda: [224, 224])
    global_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.25])
    augment: dict[str, float] = field(default_factory=dict)
    attention_mass: float = 0.6
    attention_blur: float = 0.6
    attention_min_component: int = 3
    alpha: float = 1.0
    beta: float = 0.15
    tau: float = 1.0
    shift: float = 0.11
    proto_loss: Source = "release"
    proto_corr: Source = "release"
    dense_corr: Source = "release"
    corr_reduction: Reduction = "sum"
    losses: dict[str, bool] = field(default_factory=dict)
    clamp: bool = True
    saliency_mask: bool = True
    epochs: int = 10
    batch_size: int = 32
    lr: float = 5e-4
    schedule: Schedule = "step"
    step_epochs: int = 3
    step_gamma: float = 0.5
    min_lr: float = 1e-6
    warmup_epochs: int = 1
    weight_decay: float = 0.04
    weight_decay_exempt: bool = True
    device: str = "auto"
    amp: str = "auto"

    def __post_init__(self) -> None:
        for key, hint in get_type_hints(AlignSegConfig).items():
            options = get_args(hint) if get_origin(hint) is Literal else ()
            if options and getattr(self, key) not in options:
                raise ConfigError(f"alignseg.{key} is {getattr(self, key)!r}; use one of {', '.join(options)}")

    def crops(self) -> CropConfig:
        return CropConfig(
            crop_augment(self.global_size, self.global_scale, self.augment),
            crop_augment(self.local_size, self.local_scale, self.augment),
            self.local_crops, self.min_overlap, self.overlap_rule,
        )  # fmt: skip

    def loss(self) -> LossConfig:
        flags = {"proto": True, "corr": True, **self.losses}
        if not (flags["proto"] or flags["corr"]):
            raise ConfigError("alignseg.losses: at least one of proto and corr must be true")
        return LossConfig(
            self.alpha, self.beta, self.tau, self.shift, flags["proto"], flags["corr"], self.clamp, self.saliency_mask,
            self.proto_loss, self.proto_corr, self.dense_corr, self.corr_reduction,
        )  # fmt: skip

    def decoder(self, dim: int, k: int) -> DecoderConfig:
        if dim % self.heads:
            raise ConfigError(f"alignseg.heads ({self.heads}) must divide the backbone width {dim}")
        return DecoderConfig(dim, k, self.layers, self.heads, self.ffn_dim, self.ffn_activation, self.decoder_init)

    def uses_saliency(self) -> bool:
        """The saliency masks enter the loss only through L_corr under the attention-map constraint (eq. 10)."""
        return self.saliency_mask and self.loss().corr


@dataclass
class CropOutputs:
    """Frozen-backbone outputs of one crop position: tokens [B, n, D] and saliency [B, n] (None when unused)."""

    tokens: Tensor
    saliency: Tensor | None


@torch.no_grad()
def encode(backbone: ViTBackbone, views: Tensor, cfg: AlignSegConfig) -> CropOutputs:
    """Patch tokens and, when the loss uses it, the attention-mass saliency mask of a stack of views (§IV-A)."""
    out = backbone(views)
    batch, h, w, dim = out.patches.shape
    if not cfg.uses_saliency():
        return CropOutputs(out.patches.reshape(batch, h * w, dim), None)
    mask = attention_mass_mask(out.attn, cfg.attention_mass, cfg.attention_blur, cfg.attention_min_component)
    return CropOutputs(out.patches.reshape(batch, h * w, dim), mask.reshape(batch, h * w))


def step_loss(
    decode: Callable[[list[Tensor]], list[Tensor]],
    backbone: ViTBackbone,
    batch: CropBatch,
    cfg: AlignSegConfig,
    losses: LossConfig,
    device: torch.device,
) -> tuple[Tensor, dict[str, float]]:
    """Loss of one batch of crops (eq. 11) and its terms, with the global prototypes' mean pairwise cosine;
    `decode` maps the crops' tokens to their prototypes P^x (eq. 1)."""
    crops = [encode(backbone, v.to(device), cfg) for v in (batch.global_views, *batch.local_views)]
    protos = decode([c.tokens for c in crops])
    sims = [similarity(c.tokens, p) for c, p in zip(crops, protos)]
    loss, terms = total_loss(
        losses,
        (protos[0], protos[1:]),
        (sims[0], sims[1:]),
        (crops[0].tokens, [c.tokens for c in crops[1:]]),
        (crops[0].saliency, [c.saliency for c in crops[1:]]),
    )
    if protos[0].shape[-2] > 1:  # the collapse statistic of the global crops' prototypes (useg.train.guard)
        terms["prototype_cosine"] = mean_pairwise_cosine(protos[0])
    return loss, terms


def check_sizes(cfg: AlignSegConfig, patch: int) -> None:
    """Crop sizes must be whole patches, and at least 4 patches a side where the saliency map is blurred."""
    for key in ("global_size", "local_size"):
        size = getattr(cfg, key)
        if size[0] % patch or size[1] % patch:
            raise ConfigError(f"alignseg.{key} {size} must be a multiple of the patch size {patch}")
        if cfg.uses_saliency() and cfg.attention_blur > 0 and min(size) < 4 * patch:
            raise ConfigError(
                f"alignseg.{key} {size} gives fewer than 4 patches a side, too few for the 7x7 blur of "
                f"alignseg.attention_blur: use crops of at least {4 * patch} px or set attention_blur: 0"
            )


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
    """Train decoder + prototypes on `image_paths` through the frozen `backbone`; write the decoder and the
    training log (under torchrun: each process a share of every batch, rank 0 writing; useg.train.distributed)."""
    if not image_paths:
        raise DataError("AlignSeg training needs images: the train split of the manifest is empty")
    check_sizes(cfg, backbone.patch_size)
    losses, crops = cfg.loss(), cfg.crops()
    world, device = distributed.start(device)
    backbone = backbone.to(device).eval().requires_grad_(False)
    decoder = build_decoder(cfg.decoder(backbone.embed_dim, k), seed).to(device)
    decode = distributed.wrap(distributed.EachInput(decoder), device)
    optimiser = build_optimiser(decoder, cfg)
    precision = resolve_precision(cfg.amp, device)
    batch_size = min(cfg.batch_size, len(image_paths))
    iters = len(image_paths) // batch_size
    lr = build_schedule(cfg, iters)
    distributed.check_global_batch(batch_size, "alignseg.batch_size")
    batches = EpochBatches(len(image_paths), batch_size, seed, rank=world.rank, world=world.size)
    dataset = ImageDataset(image_paths, partial(image_crops, crops, backbone.patch_size), seed)
    loader = make_loader(dataset, batches, partial(collate_crops, crops.num_local), threads, device)
    history: list[dict[str, Any]] = []
    start = 0
    state = load_checkpoint(resume_path, config_hash)
    if state is not None:
        decoder.load_state_dict(state["decoder"])
        optimiser.load_state_dict(state["optimiser"])
        history, start = state["history"], state["epoch"] + 1
    began, guard, collapse = time.perf_counter(), LossGuard("lower alignseg.lr"), CollapseGuard("lower alignseg.lr")
    for epoch in range(start, cfg.epochs):
        batches.epoch = epoch
        decoder.train()
        totals: dict[str, float] = {}
        steps = tqdm(loader, desc=f"alignseg epoch {epoch + 1}/{cfg.epochs}", unit="step", disable=not world.is_main)
        for b, batch in enumerate(steps):
            for group in optimiser.param_groups:
                group["lr"] = float(lr[epoch * iters + b])
            with precision.autocast():
                loss, terms = step_loss(decode, backbone, batch, cfg, losses, device)
            logged = {name: distributed.global_mean(value) for name, value in {"loss": loss, **terms}.items()}
            guard.check(logged["loss"], epoch, b)  # the global batch's loss: every process stops together
            if "prototype_cosine" in logged:
                collapse.check(logged["prototype_cosine"], epoch, b)
            precision.step(optimiser, loss)
            for name, value in logged.items():
                totals[name] = totals.get(name, 0.0) + value / iters
        history.append({"epoch": epoch + 1, **totals})
        log.info("alignseg epoch %d/%d: %s", epoch + 1, cfg.epochs, " ".join(f"{k} {v:.4f}" for k, v in totals.items()))
        if world.is_main:
            state = {"decoder": decoder.state_dict(), "optimiser": optimiser.state_dict()}
            save_checkpoint(resume_path, {**state, "epoch": epoch, "history": history, "config_hash": config_hash})
    wall = time.perf_counter() - began
    info = {"images": len(image_paths), "steps_per_epoch": iters, "resumed_from_epoch": start}
    if world.is_main:
        save_decoder(decoder.cpu().eval(), out_path, {"history": history, **info})
        write_json(out_log, {"epochs": history, **info, "wall_seconds_this_run": wall})
        Path(resume_path).unlink(missing_ok=True)  # only an interrupted run resumes
    distributed.finish()
    log.info("alignseg: %d epochs on %d images in %.1f s -> %s", cfg.epochs, len(image_paths), wall, out_path)
    return {"epochs": history, **info}
