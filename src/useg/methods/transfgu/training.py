"""The TransFGU student's data path, one optimisation step, one epoch and the per-epoch probe of its losses
and label shares (eq. 10–16), shared by the `rounds` and `release` schedules: images and the bank's maps M are
streamed per batch, the teacher run on each batch. Under torchrun each process takes its share of every global
batch and the step's statistics are those of the global batch (useg.train.distributed)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from useg.backbones.vit import ViTBackbone
from useg.data.augment import normalise_images
from useg.data.manifest import ManifestRow
from useg.data.pipeline import EpochBatches, LabelledDataset, make_loader
from useg.methods.common import roi_crop
from useg.methods.transfgu.augment import batch_photometric, bootstrap_sample, half_size, stack_samples, view_augment
from useg.methods.transfgu.losses import LossConfig, bootstrapped_maps, shuffled_labels, total_loss
from useg.methods.transfgu.segmenter import Segmenter
from useg.stores.base import ShardedRows
from useg.stores.labelbank import LabelBank
from useg.train import LossGuard, distributed
from useg.train.amp import Precision, resolve_precision
from useg.train.descent import descend
from useg.world import World


@dataclass
class Stream:
    """The training batches of one job: its loader, the sampler whose `epoch` selects the order, the view's
    patch grid, the augmentation rule, whether samples carry the whole image for the teacher, the bank's labels."""

    loader: DataLoader
    batches: EpochBatches
    out_grid: tuple[int, int]
    rule: str
    whole: bool
    num_labels: int


def training_stream(
    backbone: ViTBackbone, rows: Sequence[ManifestRow], bank: LabelBank, cfg: dict[str, Any], seed: int,
    whole: bool, world: World, device: torch.device, threads: int = 1,
) -> Stream:  # fmt: skip
    """Images and the bank's maps M read per sample from their Zarr shards (LabelledDataset + ShardedRows), each
    cropped and flipped as its view inside the loader worker, from a generator of (seed, epoch, sample) (§4.2);
    this process's share of every global batch."""
    frame = bank.frame
    out_size, out_grid = half_size(frame.size, backbone.patch_size)
    rule = cfg["augment_rule"]
    sample = partial(bootstrap_sample, rule=rule, aug=view_augment(cfg["augment"]), out_size=out_size, out_grid=out_grid, whole=whole)
    dataset = LabelledDataset([row.path for row in rows], ShardedRows(bank.paths, "maps"), sample, seed, frame.size, frame.mode)
    batch_size = min(cfg["batch_size"], len(rows))
    distributed.check_global_batch(batch_size, "transfgu.batch_size")
    batches = EpochBatches(len(rows), batch_size, seed, rank=world.rank, world=world.size)
    return Stream(make_loader(dataset, batches, stack_samples, threads, device), batches, out_grid, rule, whole, bank.num_labels)


def teacher_probs_of_batch(
    teacher: Segmenter, backbone: ViTBackbone, batch: dict[str, Tensor], patches: Tensor,
    out_grid: tuple[int, int], whole: bool, device: torch.device,
) -> Tensor:  # fmt: skip
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


@dataclass
class StepSetup:
    """What every step of a job shares: the losses' settings, the `transfgu` section, precision and guard."""

    losses: LossConfig
    cfg: dict[str, Any]
    precision: Precision
    guard: LossGuard


def step_setup(cfg: dict[str, Any], device: torch.device) -> StepSetup:
    """The step settings of a `transfgu` section: its losses (eq. 13–16), precision on `device`, the NaN guard."""
    losses = LossConfig(**cfg["losses"], w_div=cfg["w_div"], w_unc=cfg["w_unc"], diversity_form=cfg["diversity_form"])
    return StepSetup(losses, cfg, resolve_precision(cfg.get("amp", "auto"), device), LossGuard("lower transfgu.lr"))


def train_batch(
    student: nn.Module, optimiser: torch.optim.Optimizer, backbone: ViTBackbone, stream: Stream,
    teacher: Segmenter | None, setup: StepSetup, batch: dict[str, Tensor], epoch: int, step: int, alpha: float,
    key: Sequence[int], generator: torch.Generator, device: torch.device,
) -> dict[str, Any]:  # fmt: skip
    """One step of `student` (its training forward: DDP-wrapped under torchrun) on one streamed batch: labels are
    the arg-max of the cropped maps M, or of M̂ = ½(M + P̂) with P̂ from `teacher` on the same batch (eq. 11–12);
    the batch's photometric draw comes from (key, step), the same on every process."""
    rng = np.random.default_rng([*key, step, 1])  # the batch's shared photometric draw
    views = batch_photometric(batch["view"], stream.rule, rng).to(device)
    with setup.precision.autocast(), torch.no_grad():
        patches = backbone(views).patches
        maps = batch["maps"].to(device)
        if teacher is not None:
            maps = bootstrapped_maps(maps, teacher_probs_of_batch(teacher, backbone, batch, patches, stream.out_grid, stream.whole, device))
    labels = maps.argmax(dim=1)
    return train_step(student, optimiser, patches, labels, generator, alpha, setup.losses, setup.cfg, setup.precision, setup.guard, epoch, step)


def train_epoch(
    student: nn.Module, optimiser: torch.optim.Optimizer, backbone: ViTBackbone, stream: Stream,
    teacher: Segmenter | None, setup: StepSetup, epoch: int, alpha: float, key: Sequence[int],
    generator: torch.Generator, device: torch.device,
) -> dict[str, Any]:  # fmt: skip
    """One epoch of `train_batch` over the stream in the order of (seed, epoch); returns the probe's means."""
    stream.batches.epoch = epoch
    probe = EpochProbe(stream.num_labels, device)
    for b, batch in enumerate(stream.loader):
        probe.add(train_batch(student, optimiser, backbone, stream, teacher, setup, batch, epoch, b, alpha, key, generator, device))
    return probe.means()


def train_step(
    student: nn.Module,
    optimiser: torch.optim.Optimizer,
    patches: Tensor,
    labels: Tensor,
    generator: torch.Generator,
    alpha: float,
    losses: LossConfig,
    cfg: dict[str, Any],
    precision: Precision,
    guard: LossGuard,
    epoch: int,
    step: int,
) -> dict[str, Any]:
    """L = L_peer + ω₁·L_div + ω₂·L_unc on one batch of patch tokens and labels [B, h, w], one descent step;
    returns the global batch's loss and terms, whether the step was skipped and this process's predicted label
    of every patch. The guard and the skip of a loss ≤ 0 judge the global loss: every process decides alike."""
    with precision.autocast():
        logits, classes = student(patches)
        negatives = shuffled_labels(labels, logits.shape[1], generator)
        loss, terms = total_loss(logits, classes, labels, negatives, alpha, losses)
    logged = {"loss": distributed.global_mean(loss), **{f"loss_{k}": distributed.global_mean(v) for k, v in terms.items()}}
    guard.check(logged["loss"], epoch, step)
    stepped = descend(optimiser, loss, cfg["grad_clamp"], cfg["skip_nonpositive_loss"], precision, logged["loss"])
    return {**logged, "skipped": float(not stepped), "predicted": logits.detach().argmax(dim=1)}


class EpochProbe:
    """Per-epoch means of the step values and the share of each label in the student's predictions on the
    training batches (the label-share probe: a collapse shows as shares piling onto few labels); the counts
    are kept on `device` and summed over every process's predictions."""

    def __init__(self, num_labels: int, device: torch.device = torch.device("cpu")) -> None:
        self.sums: dict[str, float] = {}
        self.counts = torch.zeros(num_labels, dtype=torch.long, device=device)
        self.steps = 0

    def add(self, values: dict[str, Any]) -> None:
        """Add one step's values; `predicted` (labels [B, h, w]) goes into the label counts."""
        self.counts += torch.bincount(values["predicted"].flatten(), minlength=len(self.counts))
        for name, value in values.items():
            if name != "predicted":
                self.sums[name] = self.sums.get(name, 0.0) + value
        self.steps += 1

    def means(self) -> dict[str, Any]:
        """The epoch's mean values and `label_shares` of the global batches (fractions summing to 1, 4 decimals)."""
        counts = distributed.global_sum(self.counts).cpu()
        shares = (counts / max(1, int(counts.sum()))).tolist()
        return {**{k: v / max(1, self.steps) for k, v in self.sums.items()}, "label_shares": [round(s, 4) for s in shares]}
