"""The release's bootstrapping schedule (TransFGU §3.3 as its trainval loop runs it): one resumable job of
`epochs` epochs; from epoch `bootstrap_start` on, every `bootstrap_every` epochs the student is copied into
the teacher and reset to its initial weights (the optimiser's state is kept, as in the release); α steps by
`alpha_step` per epoch since the last update; before the first update the student learns from the initial
labels with plain cross-entropy (no peer term, no teacher)."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from useg.atomic import write_json
from useg.backbones.vit import ViTBackbone
from useg.data.manifest import ManifestRow
from useg.methods.transfgu.segmenter import Segmenter, SegmenterConfig, build_segmenter, save_segmenter
from useg.methods.transfgu.training import step_setup, train_epoch, training_stream
from useg.stores.base import config_hash
from useg.stores.labelbank import LabelBank
from useg.train import distributed, load_checkpoint, save_checkpoint
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
    Returns the final student and the per-epoch history (losses, α, teacher updates, label shares). Under torchrun
    each process trains the DDP-wrapped student on its share of every global batch (backbone and teacher
    unwrapped), rank 0 writes the resume state and every process resumes from it."""
    world, device = distributed.start(device)
    backbone = backbone.to(device).eval().requires_grad_(False)
    stream = training_stream(backbone, rows, bank, cfg, seed, cfg["teacher_view"] == "whole", world, device, threads)
    seg_cfg = SegmenterConfig(backbone.embed_dim, bank.num_labels, **cfg["decoder"])
    student = build_segmenter(seg_cfg, seed).to(device)
    initial = copy.deepcopy(student.state_dict())
    teacher = build_segmenter(seg_cfg, seed).to(device).eval()
    optimiser = build_optimiser(student, cfg["optimiser"], cfg["lr"], cfg["weight_decay"])
    setup = step_setup(cfg, device)
    plans = bootstrap_schedule(cfg["epochs"], cfg["bootstrap_start"], cfg["bootstrap_every"], tuple(cfg["alpha"]), cfg["alpha_step"])
    update_epochs = {p.epoch for p in plans if p.update}
    digest = config_hash({"transfgu": cfg, "seed": seed, "images": len(rows)})
    history, begin = restore(load_checkpoint(resume_path, digest), student, teacher, optimiser)
    trained = distributed.wrap(student, device)
    for plan in tqdm(plans[begin:], desc="transfgu bootstrap", unit="epoch", disable=not world.is_main):
        if plan.update:
            teacher.load_state_dict(student.state_dict())
            student.load_state_dict(initial)
        torch.manual_seed(seed * 100_003 + plan.epoch)  # the decoder's dropout draws
        generator = torch.Generator().manual_seed(seed * 100_003 + plan.epoch)
        peer = setup.losses.peer and plan.bootstrapping
        epoch_setup = replace(setup, losses=replace(setup.losses, peer=peer))
        active = teacher if plan.bootstrapping else None
        means = train_epoch(trained, optimiser, backbone, stream, active, epoch_setup, plan.epoch, plan.alpha, (seed, plan.epoch), generator, device)
        history.append({"epoch": plan.epoch + 1, **means, "alpha": plan.alpha, "teacher_update": plan.update, "peer": peer})
        log.info("bootstrap epoch %d: loss %.4f, label shares %s", plan.epoch + 1, history[-1]["loss"], history[-1]["label_shares"])
        if plan.epoch + 1 in update_epochs and world.is_main:
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
    """Train the release's schedule, save the final student and its train log, drop the resume state: rank 0
    writes under torchrun, the others wait for it."""
    student, history = train_bootstrap(backbone, rows, bank, cfg, seed, device, resume_path, threads)
    updates = sum(1 for h in history if h["teacher_update"])
    if distributed.is_main():
        extra = {"schedule": "release", "teacher_updates": updates, "background_label": bank.attrs.get("background_label")}
        save_segmenter(student, out_path, extra)
        write_json(out_log, {"schedule": "release", "images": len(rows), "teacher_updates": updates, "epochs": history})
        Path(resume_path).unlink(missing_ok=True)  # only an interrupted run resumes
    distributed.finish()
    log.info("bootstrap: %d epochs, %d teacher updates on %d images -> %s", len(history), updates, len(rows), out_path)
