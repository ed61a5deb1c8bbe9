"""PASS after pretraining (LUSS Sec. 3.1): image-level k-means into C pseudo categories (step 2),
fine-tuning of a 1x1-conv + global-pooling head on them (step 3), CAM inference with a foreground
threshold tau (step 4), tau chosen on a held-out split. Under torchrun (`pass.finetune.gpus`) each
process fine-tunes on its share of every global batch (useg.train.distributed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from useg.atomic import write_json
from useg.cluster.kmeans import assign, fit_kmeans, l2_normalise
from useg.data.augment import ViewAugment, make_view
from useg.data.frame import Frame, Resize
from useg.data.pipeline import EpochBatches, ImageDataset, make_loader, ordered_loader, stack_images
from useg.data.labels import load_mask
from useg.data.manifest import ManifestRow
from useg.errors import DataError
from useg.eval.imagenet_s import ImageNetSEvaluator, nmi
from useg.methods.pass_.model import NetConfig, PASSNet, SegmentationNet
from useg.runtime import resolve_device
from useg.stores.background import stream_to_store
from useg.stores.predictions import PredictionsWriter
from useg.train import LossGuard, cosine_schedule, distributed, load_checkpoint, save_checkpoint
from useg.train.amp import resolve_precision
from useg.train.optim import build_optimiser
from useg.world import World

log = logging.getLogger(__name__)


def read_checkpoint(path: str | Path, stage: str) -> dict[str, Any]:
    """A checkpoint written by a PASS stage (tensors only, never code)."""
    if not Path(path).is_file():
        raise DataError(f"{path} does not exist: run the {stage} stage first")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_pass_net(path: str | Path) -> tuple[PASSNet, NetConfig]:
    """The pretrained PASSNet of a `pass-pretrain` checkpoint (eval mode) and its config."""
    state = read_checkpoint(path, "pass-pretrain")
    cfg = NetConfig(**{**state["net_config"], "weights": "random"})
    net = PASSNet(cfg)
    net.load_state_dict(state["net"])
    return net.eval(), cfg


Batches = Iterable[tuple[np.ndarray, torch.Tensor]]  # (manifest positions, normalised images) from the pipeline


def view_image(aug: ViewAugment, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """The fine-tuning sample: one random resized crop of the working image [3, H, W]."""
    return make_view(image, aug, 1, rng).image


@torch.no_grad()
def pooled_features(net: PASSNet, batches: Batches) -> np.ndarray:
    """Image-level features z^ [N, L]: the pixel-attention weighted average of z (Sec. 3.1 step 2)."""
    out = []
    for _, batch in tqdm(batches, desc="pass features", unit="batch"):
        z = net.trunk(batch)
        out.append((net.pixel_attention(z) * z).mean(dim=(2, 3)).numpy())
    return np.concatenate(out).astype(np.float32)


def largest_class(row: ManifestRow, ignore: int) -> int:
    """The ground-truth foreground class with the most pixels in an image (0 when none)."""
    gt = load_mask(row)
    counts = np.bincount(gt[(gt > 0) & (gt != ignore)].ravel())
    return int(counts.argmax()) if counts.size else 0


def image_classes(rows: list[ManifestRow], ignore: int) -> tuple[np.ndarray, str] | None:
    """Each image's ground-truth class for the train NMI (LUSS Tab. 2): its class folder (ImageNet-S
    train has no masks), else its largest mask class; None when the split has neither."""
    if all(r.image_class for r in rows):
        return np.array([r.image_class for r in rows]), "class folders"
    if all(r.mask_path for r in rows):
        return np.array([largest_class(r, ignore) for r in rows]), "largest mask class"
    return None


def cluster_images(
    checkpoint: str | Path,
    rows: list[ManifestRow],
    k: int,
    cfg: dict[str, Any],
    input_size: tuple[int, int],
    seed: int,
    out_path: str | Path,
    prov: dict[str, Any],
    ignore: int,
    threads: int = 1,
    resize: Resize = "squash",
) -> dict[str, Any]:
    """k-means of the pooled image features into K pseudo categories; NMI vs the images' classes when known."""
    net, _ = load_pass_net(checkpoint)
    batches = ordered_loader([r.path for r in rows], input_size, cfg["batch_size"], threads, resize)
    feats = l2_normalise(pooled_features(net, batches))
    result = fit_kmeans(feats, k, niter=cfg["niter"], seed=seed, spherical=True, nredo=cfg["nredo"], key="pass.k")
    labels, _ = assign(feats, result.centroids)
    out = {
        "provenance": prov,
        "k": k,
        "inertia": result.inertia,
        "ids": [r.id for r in rows],
        "labels": labels.tolist(),
        "sizes": np.bincount(labels, minlength=k).tolist(),
    }
    truth = image_classes(rows, ignore)
    if truth is not None:
        out["train_nmi"], out["train_nmi_classes"] = nmi(labels, truth[0]), truth[1]
        log.info("pass: pseudo-label NMI vs the %s on the train split %.2f %%", truth[1], 100 * out["train_nmi"])
    write_json(out_path, out)
    log.info("pass: %d images in %d pseudo categories (sizes %s)", len(rows), k, out["sizes"])
    return out


@dataclass(frozen=True)
class FinetuneConfig:
    """The `pass.finetune` config section."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.001
    min_lr: float = 1e-6
    weight_decay: float = 1e-4
    crop_scale: list[float] | None = None  # random resized crops of the working image; null: [0.5, 1]
    head: str = "fcn"  # fcn | deeplabv3plus ("Ours-D")
    optimiser: str = "adamw"  # adamw | sgd | larc
    momentum: float = 0.9
    larc_trust: float = 0.001
    larc_clip: bool = False


class Finetuner:
    """SegmentationNet (trunk from the pretrained PASSNet), optimiser and lr schedule of one fine-tuning
    run; under torchrun (`pass.finetune.gpus`) the forward is DDP's and each process takes a share of the batch."""

    def __init__(
        self, checkpoint: str | Path, k: int, cfg: FinetuneConfig, iters_per_epoch: int, seed: int, device: str, amp: str = "auto"
    ) -> None:
        torch.manual_seed(seed)
        self.world, self.device = distributed.start(resolve_device(device))
        self.precision = resolve_precision(amp, self.device)
        pretrained, self.net_cfg = load_pass_net(checkpoint)
        self.model = SegmentationNet(self.net_cfg, k, cfg.head)
        self.model.trunk.load_state_dict(pretrained.trunk.state_dict())
        self.model.to(self.device)
        self.forward = distributed.wrap(self.model, self.device)
        self.lr = cosine_schedule(cfg.lr, cfg.min_lr, cfg.epochs, iters_per_epoch)
        self.optimizer = build_optimiser(
            cfg.optimiser, self.model.parameters(), cfg.lr, cfg.weight_decay, "pass.finetune.optimiser", cfg.momentum, cfg.larc_trust, cfg.larc_clip
        )
        self.guard = LossGuard("lower pass.finetune.lr")

    def step(self, images: torch.Tensor, targets: torch.Tensor, it: int, where: tuple[int, int]) -> tuple[float, int]:
        """One step on the cross-entropy of the image logits with the pseudo labels (Sec. 3.1 step 3; this
        process's share of the global batch); the guard sees the global batch's loss at (epoch, step), so
        every process stops together. Returns that loss and this process's correct predictions."""
        for group in self.optimizer.param_groups:
            group["lr"] = float(self.lr[it])
        targets = targets.to(self.device)
        with self.precision.autocast():
            logits = self.forward(images.to(self.device))
            loss = F.cross_entropy(logits, targets)
        total = distributed.global_mean(loss)
        self.guard.check(total, *where)
        self.precision.step(self.optimizer, loss)
        return total, int((logits.argmax(1) == targets).sum())

    def global_count(self, count: int) -> int:
        """`count` summed over the processes."""
        return int(distributed.global_sum(torch.tensor(count, device=self.device)))


def finetune_batch(cfg: FinetuneConfig, rows: list[ManifestRow]) -> int:
    """The global fine-tuning batch: `pass.finetune.batch_size`, at most the number of images."""
    return min(cfg.batch_size, len(rows))


def finetune_loader(
    rows: list[ManifestRow], cfg: FinetuneConfig, input_size: tuple[int, int], seed: int, world: World, threads: int,
    device: torch.device, resize: Resize = "squash",
) -> tuple[EpochBatches, Batches]:  # fmt: skip
    """(sampler, loader) of the fine-tuning crops: this process's share of every whole global batch."""
    batch_size = finetune_batch(cfg, rows)
    distributed.check_global_batch(batch_size, "pass.finetune.batch_size")
    aug = ViewAugment(size=input_size, scale=tuple(cfg.crop_scale or (0.5, 1.0)), blur_p=0.0, solarize_p=0.0)
    batches = EpochBatches(len(rows), batch_size, seed, rank=world.rank, world=world.size)
    dataset = ImageDataset([r.path for r in rows], partial(view_image, aug), seed, input_size, resize)
    return batches, make_loader(dataset, batches, stack_images, threads, device)


def finetune(
    checkpoint: str | Path,
    pseudo: dict[str, Any],
    rows: list[ManifestRow],
    cfg: FinetuneConfig,
    input_size: tuple[int, int],
    seed: int,
    out_path: str | Path,
    resume_path: str | Path,
    config_hash: str,
    device: str = "auto",
    threads: int = 1,
    resize: Resize = "squash",
    amp: str = "auto",
) -> list[dict[str, float]]:
    """Train trunk + head (1x1 conv, or DeepLabV3+) with cross-entropy on the image pseudo labels (Sec. 3.1 step 3);
    under torchrun each process takes a share of every global batch and rank 0 writes."""
    by_id = dict(zip(pseudo["ids"], pseudo["labels"]))
    missing = [r.id for r in rows if r.id not in by_id]
    if missing:
        raise DataError(f"no pseudo label for {len(missing)} train images, e.g. {missing[:3]}: rerun pass-cluster")
    targets = torch.tensor([by_id[r.id] for r in rows])
    iters = len(rows) // finetune_batch(cfg, rows)
    trainer = Finetuner(checkpoint, pseudo["k"], cfg, iters, seed, device, amp)
    batches, loader = finetune_loader(rows, cfg, input_size, seed, trainer.world, threads, trainer.device, resize)
    history, start = [], 0
    state = load_checkpoint(resume_path, config_hash)
    if state is not None:
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        history, start = state["history"], state["epoch"] + 1
    for epoch in range(start, cfg.epochs):
        batches.epoch = epoch
        trainer.model.train()
        total, correct = 0.0, 0
        steps = tqdm(loader, desc=f"pass finetune {epoch + 1}/{cfg.epochs}", unit="step", disable=not trainer.world.is_main)
        for b, (idx, batch) in enumerate(steps):
            loss, right = trainer.step(batch, targets[idx], epoch * iters + b, (epoch, b))
            total, correct = total + loss / iters, correct + right
        accuracy = trainer.global_count(correct) / (iters * batches.batch_size)
        history.append({"epoch": epoch + 1, "loss": total, "pseudo_label_accuracy": accuracy})
        log.info("pass finetune %d/%d: loss %.4f, pseudo-label accuracy %.3f", epoch + 1, cfg.epochs, total, accuracy)
        if trainer.world.is_main:
            state = {"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(), "epoch": epoch, "history": history}
            save_checkpoint(resume_path, {**state, "config_hash": config_hash})
    if trainer.world.is_main:
        save_checkpoint(
            out_path,
            {
                "method": "pass", "model": trainer.model.cpu().state_dict(), "net_config": trainer.net_cfg.__dict__,
                "k": pseudo["k"], "head": cfg.head, "history": history,
            },  # fmt: skip
        )
    distributed.finish()
    return history


def load_segmentation_net(path: str | Path) -> SegmentationNet:
    """The fine-tuned network of a `pass-finetune` checkpoint (eval mode)."""
    state = read_checkpoint(path, "pass-finetune")
    model = SegmentationNet(NetConfig(**state["net_config"]), state["k"], state["head"])
    model.load_state_dict(state["model"])
    return model.eval()


def normalised_cams(model: SegmentationNet, images: torch.Tensor) -> torch.Tensor:
    """The CAMs [B, C, H, W] of images [B, 3, H, W] at their size, ReLU'd and divided by each image's maximum
    (in [0, 1])."""
    y = F.interpolate(model.cam(images), size=images.shape[2:], mode="bilinear", align_corners=False).relu()
    return y / y.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)


@torch.no_grad()
def cams(model: SegmentationNet, batches: Batches) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Per batch: the positions and the normalised CAMs [B, C, H, W] at the working size."""
    for index, batch in batches:
        yield index, normalised_cams(model, batch)


def with_background(cam: torch.Tensor, tau: float) -> torch.Tensor:
    """Scores [B, 1 + C, H, W] whose arg-max is p = argmax_i(u_i * I{max(u) >= tau}) (Sec. 3.1 step 4): the
    background score is the largest float below tau, so a CAM equal to tau wins, and ties below go to 0."""
    below = torch.nextafter(torch.tensor(tau, dtype=cam.dtype), torch.tensor(-torch.inf, dtype=cam.dtype))
    return torch.cat([below.to(cam.device).expand_as(cam[:, :1]), cam], dim=1)


def cam_labels(cam: torch.Tensor, tau: float) -> np.ndarray:
    """Label 1..C where the CAM is confident, else 0 (Sec. 3.1 step 4)."""
    return with_background(cam, tau).argmax(dim=1).cpu().numpy().astype(np.uint16)


class ThresholdedCAM(torch.nn.Module):
    """PASS's model for `useg predict`: normalised images [B, 3, H, W] -> scores [B, 1 + C, H, W] whose arg-max
    is the label `pass-predict` writes (the fine-tuned net's CAMs with the chosen tau)."""

    def __init__(self, net: SegmentationNet, tau: float) -> None:
        super().__init__()
        self.net, self.tau = net, tau

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return with_background(normalised_cams(self.net, images), self.tau)


def load_predictor(path: Path, backbone: torch.nn.Module | None, device: torch.device) -> ThresholdedCAM:
    """`useg predict` loader: the fine-tuned net of `path` and the threshold of the tau.json beside it."""
    tau_path = Path(path).parent / "tau.json"
    if not tau_path.is_file():
        raise DataError(f"{tau_path} does not exist: PASS predicts with the tau its pass_threshold stage chose beside {path}")
    tau = json.loads(tau_path.read_text())["tau"]
    return ThresholdedCAM(load_segmentation_net(path), tau).to(device).eval()


def frame_of(config: dict[str, Any]) -> Frame:
    """The working frame of every PASS stage: `pass.input_size` and `pass.resize`."""
    return Frame(config["pass"]["input_size"], config["pass"]["resize"])


def choose_threshold(
    model_path: str | Path,
    rows: list[ManifestRow],
    class_names: list[str],
    ignore: int,
    taus: list[float],
    input_size: tuple[int, int],
    batch_size: int,
    out_path: str | Path,
    prov: dict[str, Any],
    threads: int = 1,
    resize: Resize = "squash",
) -> float:
    """tau maximising the imagenet-s mIoU on a held-out split (never the evaluation split)."""
    if any(not r.mask_path for r in rows):
        raise DataError("choosing pass.tau needs ground-truth masks on pass.tau_split")
    model = load_segmentation_net(model_path)
    k = model.head.out_channels
    evaluators = [ImageNetSEvaluator(len(class_names), k + 1, ignore) for _ in taus]
    batches = ordered_loader([r.path for r in rows], input_size, batch_size, threads, resize)
    frame = Frame(input_size, resize)
    for index, cam in tqdm(cams(model, batches), desc="pass threshold", unit="batch"):
        gts = [load_mask(rows[i]) for i in index]
        for tau, ev in zip(taus, evaluators):
            for gt, labels in zip(gts, cam_labels(cam, tau)):
                ev.add(*frame.aligned(gt, labels))
    sweep = []
    for tau, ev in zip(taus, evaluators):
        r = ev.result(class_names)
        sweep.append({"tau": tau, "miou": r["miou"], "f_measure": r["f_measure"]})
    best = max(sweep, key=lambda s: (s["miou"], -s["tau"]))
    write_json(out_path, {"provenance": prov, "tau": best["tau"], "images": len(rows), "sweep": sweep})
    log.info("pass: tau %.2f (held-out mIoU %.2f %%) from %d images", best["tau"], 100 * best["miou"], len(rows))
    return best["tau"]


def predict(
    model_path: str | Path,
    rows: list[tuple[int, ManifestRow]],
    tau: float,
    input_size: tuple[int, int],
    batch_size: int,
    out_path: str | Path,
    prov: dict[str, Any],
    threads: int = 1,
    resize: Resize = "squash",
) -> None:
    """Label maps of an evaluation split: 0 = background, 1..C = pseudo categories."""
    model = load_segmentation_net(model_path)
    batches = ordered_loader([r.path for _, r in rows], input_size, batch_size, threads, resize)
    index = np.array([i for i, _ in rows])
    with PredictionsWriter(
        out_path, index, [r.id for _, r in rows], Frame(input_size, resize), model.head.out_channels + 1, "pass", prov
    ) as writer:
        labelled = ((int(positions[0]), cam) for positions, cam in tqdm(cams(model, batches), desc="pass predict", unit="batch"))
        stream_to_store(labelled, lambda _, cam: {"labels": cam_labels(cam, tau)}, writer.write)
    log.info("pass: predicted %d images with tau %.2f -> %s", len(rows), tau, out_path)
