"""The release's bootstrapping schedule (TransFGU §3.3 as its trainval loop runs it): one resumable job of
`epochs` epochs; from epoch `bootstrap_start` on, every `bootstrap_every` epochs the student is copied into
the teacher and reset to its initial weights (the optimiser's state is kept, as in the release); α steps by
`alpha_step` per epoch since the last update; before the first update the student learns from the initial
labels with plain cross-entropy (no peer term, no teacher)."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from useg.atomic import write_json
from useg.backbones.vit import ViTBackbone
from useg.data.augment import normalise_images
from useg.data.manifest import ManifestRow
from useg.data.pipeline import EpochBatches, LabelledDataset, make_loader
from useg.methods.common import roi_crop
from useg.methods.transfgu.augment import batch_photometric, bootstrap_sample, stack_samples, view_augment
from useg.methods.transfgu.losses import LossConfig, bootstrapped_maps
from useg.methods.transfgu.segmenter import Segmenter, SegmenterConfig, build_segmenter, save_segmenter
from useg.methods.transfgu.stages import half_size
from useg.methods.transfgu.training import EpochProbe, train_step
from useg.stores.base import ShardedRows, config_hash
from useg.stores.labelbank import LabelBank
from useg.train import LossGuard, load_checkpoint, save_checkpoint
from useg.train.amp import resolve_precision
from useg.train.descent import build_optimiser

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochPlan:
    """One epoch of the schedule: teacher update at its start, bootstrapping on, peer-loss α."""

    epoch: int
    update: bool
    bootstrapping: bool
    alpha: float


def release_alpha(since_update: int, start: float, end: float, step: float) -> float:
    """α = min(start + step·n, end), n the epochs since the last teacher update (the release's alpha_list)."""
    return min(start + step * since_update, end)


def bootstrap_schedule(epochs: int, start: int, every: int, alpha: tuple[float, float], step: float) -> list[EpochPlan]:
    """The release's loop: an update at every epoch e ≥ `start` with e mod `every` = 0, which resets the
    epochs-since-update counter to 0; every other epoch adds one to it (the counter starts at 0)."""
    plans, since = [], 0
    for epoch in range(epochs):
        update = epoch >= start and epoch % every == 0
        since = 0 if update else since + 1
        plans.append(EpochPlan(epoch, update, epoch >= start, release_alpha(since, *alpha, step)))
    return plans


def teacher_probs_of_batch(
    teacher: Segmenter, backbone: ViTBackbone, batch: dict[str, torch.Tensor], patches: torch.Tensor,
    out_grid: tuple[int, int], whole: bool, device: torch.device,
) -> torch.Tensor:  # fmt: skip
    """P̂ of a batch at the view's grid: the teacher on the student's view (`augmented`, the release), or on the
    whole unaugmented image cropped and flipped as the view (`whole`) (eq. 10)."""
    with torch.no_grad():
        if not whole:
            return teacher(patches)[0].softmax(dim=1)
        images = batch["image"].to(device)
        probs = teacher(backbone(normalise_images(images)).patches)[0].softmax(dim=1)
        crops = roi_crop(probs, batch["box"].to(device), out_grid, spatial_scale=probs.shape[-1] / images.shape[-1])
        flip = batch["flip"].to(device)
        crops[flip] = crops[flip].flip(-1)
        return crops


def restore(
    state: dict[str, Any] | None, student: Segmenter, teacher: Segmenter, optimiser: torch.optim.Optimizer
) -> tuple[list[dict[str, Any]], int]:
    """Load a resume state into the student, teacher and optimiser; returns its history and the next epoch."""
    if state is None:
        return [], 0
    student.load_state_dict(state["student"])
    teacher.load_state_dict(state["teacher"])
    optimiser.load_state_dict(state["optimiser"])
    return state["history"], state["epoch"] + 1


def train_bootstrap(
    backbone: ViTBackbone,
    rows: list[ManifestRow],
    bank: LabelBank,
    cfg: dict[str, Any],
    seed: int,
    device: torch.device,
    resume_path: str | Path,
    threads: int = 1,
) -> tuple[Segmenter, list[dict[str, Any]]]:
    """Run the release's schedule on the bank's maps M, images and maps streamed per batch; a resume state is
    written after every epoch that precedes a teacher update and the run continues from it after a kill.
    Returns the final student and the per-epoch history (losses, α, teacher updates, label shares)."""
    backbone = backbone.to(device).eval().requires_grad_(False)
    size = tuple(bank.attrs["input_size"])
    out_size, out_grid = half_size(size, backbone.patch_size)
    whole, rule = cfg["teacher_view"] == "whole", cfg["augment_rule"]
    sample = partial(bootstrap_sample, rule=rule, aug=view_augment(cfg["augment"]), out_size=out_size, out_grid=out_grid, whole=whole)
    dataset = LabelledDataset([row.path for row in rows], ShardedRows(bank.paths, "maps"), sample, seed, size)
    batch_size = min(cfg["batch_size"], len(rows))
    batches = EpochBatches(len(rows), batch_size, seed)
    loader = make_loader(dataset, batches, stack_samples, threads, device)
    seg_cfg = SegmenterConfig(backbone.embed_dim, bank.num_labels, **cfg["decoder"])
    student = build_segmenter(seg_cfg, seed).to(device)
    initial = copy.deepcopy(student.state_dict())
    teacher = build_segmenter(seg_cfg, seed).to(device).eval()
    optimiser = build_optimiser(student, cfg["optimiser"], cfg["lr"], cfg["weight_decay"])
    precision = resolve_precision(cfg.get("amp", "auto"), device)
    losses = LossConfig(**cfg["losses"], w_div=cfg["w_div"], w_unc=cfg["w_unc"], diversity_form=cfg["diversity_form"])
    plans = bootstrap_schedule(cfg["epochs"], cfg["bootstrap_start"], cfg["bootstrap_every"], tuple(cfg["alpha"]), cfg["alpha_step"])
    update_epochs = {p.epoch for p in plans if p.update}
    digest = config_hash({"transfgu": cfg, "seed": seed, "images": len(rows)})
    history, begin = restore(load_checkpoint(resume_path, digest), student, teacher, optimiser)
    guard = LossGuard("lower transfgu.lr")
    for plan in tqdm(plans[begin:], desc="transfgu bootstrap", unit="epoch"):
        if plan.update:
            teacher.load_state_dict(student.state_dict())
            student.load_state_dict(initial)
        batches.epoch = plan.epoch
        torch.manual_seed(seed * 100_003 + plan.epoch)  # the decoder's dropout draws
        generator = torch.Generator().manual_seed(seed * 100_003 + plan.epoch)
        epoch_losses = replace(losses, peer=losses.peer and plan.bootstrapping)
        probe = EpochProbe(bank.num_labels)
        for b, batch in enumerate(loader):
            rng = np.random.default_rng([seed, plan.epoch, b, 1])  # the batch's shared photometric draw
            views = batch_photometric(batch["view"], rule, rng).to(device)
            with precision.autocast(), torch.no_grad():
                patches = backbone(views).patches
                maps = batch["maps"].to(device)
                if plan.bootstrapping:
                    maps = bootstrapped_maps(maps, teacher_probs_of_batch(teacher, backbone, batch, patches, out_grid, whole, device))
            values = train_step(student, optimiser, patches, maps.argmax(dim=1), generator, plan.alpha, epoch_losses, cfg, precision, guard, plan.epoch, b)
            probe.add(values)
        history.append({"epoch": plan.epoch + 1, **probe.means(), "alpha": plan.alpha, "teacher_update": plan.update, "peer": epoch_losses.peer})
        log.info("bootstrap epoch %d: loss %.4f, label shares %s", plan.epoch + 1, history[-1]["loss"], history[-1]["label_shares"])
        if plan.epoch + 1 in update_epochs:
            state = {"student": student.state_dict(), "teacher": teacher.state_dict(), "optimiser": optimiser.state_dict()}
            save_checkpoint(resume_path, {**state, "epoch": plan.epoch, "history": history, "config_hash": digest})
    return student.cpu().eval(), history


def run_bootstrap(
    backbone: ViTBackbone,
    rows: list[ManifestRow],
    bank: LabelBank,
    cfg: dict[str, Any],
    seed: int,
    out_path: str | Path,
    out_log: str | Path,
    resume_path: str | Path,
    device: torch.device,
    threads: int = 1,
) -> None:
    """Train the release's schedule, save the final student and its train log, drop the resume state."""
    student, history = train_bootstrap(backbone, rows, bank, cfg, seed, device, resume_path, threads)
    updates = sum(1 for h in history if h["teacher_update"])
    save_segmenter(student, out_path, {"schedule": "release", "teacher_updates": updates, "background_label": bank.attrs.get("background_label")})
    write_json(out_log, {"schedule": "release", "images": len(rows), "teacher_updates": updates, "epochs": history})
    Path(resume_path).unlink(missing_ok=True)  # only an interrupted run resumes
    log.info("bootstrap: %d epochs, %d teacher updates on %d images -> %s", len(history), updates, len(rows), out_path)
