"""TransFGU stages after the crop bank: pseudo-label bank, training rounds, predictions (§3.2–3.3)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from useg.atomic import write_json
from useg.backbones.vit import ViTBackbone
from useg.data.augment import normalise_images
from useg.data.manifest import ManifestRow, row_keys
from useg.data.pipeline import ordered_batches
from useg.methods.common import load_images, write_feature_predictions
from useg.train import LossGuard
from useg.train.amp import resolve_precision
from useg.train.descent import build_optimiser
from useg.methods.transfgu.augment import training_views, view_augment
from useg.methods.transfgu.gradcam import LabelConfig, pseudo_label_maps
from useg.methods.transfgu.losses import LossConfig, bootstrapped_maps, peer_alpha
from useg.methods.transfgu.segmenter import Segmenter, SegmenterConfig, build_segmenter, save_segmenter
from useg.methods.transfgu.training import EpochProbe, train_step
from useg.stores.background import stream_to_store
from useg.stores.features import FeatureStore
from useg.stores.labelbank import LabelBank, LabelBankWriter
from useg.stores.predictions import PredictionsWriter

log = logging.getLogger(__name__)


def build_label_bank(
    backbone: ViTBackbone,
    rows: list[tuple[int, ManifestRow]],
    concepts: np.ndarray,
    groups: np.ndarray,
    cfg: dict[str, Any],
    input_size: tuple[int, int],
    out_path: str | Path,
    prov: dict[str, Any],
    device: torch.device,
    threads: int = 1,
) -> None:
    """Grad-CAM response maps and labels of every image of a shard into a LabelBank (eq. 4–8); decoding in
    `threads - 1` loader workers, the store written by a background thread."""
    backbone = backbone.to(device).eval().requires_grad_(False)
    grid = backbone.grid_for(*input_size)
    num_labels = len(concepts) + int(cfg["foreground_only"])
    index, ids = row_keys(rows)
    attrs = {
        "input_size": list(input_size),
        "background_label": len(concepts) if cfg["foreground_only"] else None,
        "concept_groups": groups.tolist(),
    }
    s, g, labelling = torch.from_numpy(concepts).to(device), torch.from_numpy(groups), LabelConfig.from_cfg(cfg)

    def label(start: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        maps, labels, fg = pseudo_label_maps(backbone, images, s, g, labelling)
        return {"maps": maps.detach(), "labels": labels, "foreground": fg}

    batches = ordered_batches([row.path for _, row in rows], input_size, cfg["bank_batch_size"], threads, device)
    with LabelBankWriter(out_path, index, ids, num_labels, grid, prov, **attrs) as writer:
        stream_to_store(tqdm(batches, desc=f"grad-cam {Path(out_path).name}", unit="batch"), label, writer.write)
    log.info("label bank: %d images, %d labels, grid %dx%d -> %s", len(rows), num_labels, *grid, out_path)


def predict_initial(bank: LabelBank, out_path: str | Path, size: tuple[int, int], prov: dict[str, Any]) -> None:
    """`initial` predictions: the bank's arg-max labels upsampled (nearest) to the working size (eq. 6)."""
    labels = torch.from_numpy(bank.read("labels").astype(np.int64))
    with PredictionsWriter(out_path, bank.index, bank.ids, size, bank.num_labels, "transfgu-initial", prov) as writer:
        for start in range(0, len(labels), 64):
            chunk = labels[start : start + 64, None].float()
            up = torch.nn.functional.interpolate(chunk, size=size, mode="nearest")[:, 0]
            writer.write(start, up.numpy().astype(np.uint16))
    log.info("transfgu-initial: %d images -> %s", len(labels), out_path)


def half_size(input_size: tuple[int, int], patch: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Training view size (H/2, W/2) rounded down to whole patches (at least one), and its grid (§4.2)."""
    grid = tuple(max(1, s // 2 // patch) for s in input_size)
    return (grid[0] * patch, grid[1] * patch), grid  # type: ignore[return-value]


@torch.no_grad()
def teacher_probabilities(
    teacher: Segmenter, backbone: ViTBackbone, images: torch.Tensor, device: torch.device, batch_size: int = 32
) -> torch.Tensor:
    """P̂ = TEACHER(x^patch) of every whole, unaugmented image: probabilities at the patch grid [N, K, h, w] (eq. 10)."""
    teacher, backbone = teacher.to(device).eval(), backbone.to(device).eval()
    probs = []
    for start in range(0, len(images), batch_size):
        patches = backbone(normalise_images(images[start : start + batch_size]).to(device)).patches
        probs.append(teacher(patches)[0].softmax(dim=1).cpu())
    return torch.cat(probs)


def train_round(
    backbone: ViTBackbone,
    images: torch.Tensor,
    maps: torch.Tensor,
    cfg: dict[str, Any],
    seed: int,
    round_index: int,
    device: torch.device,
    history: list[dict[str, float]] | None = None,
) -> Segmenter:
    """Train a freshly initialised student on the arg-max of `maps` (M in round 0, M̂ after) under the §4.2
    augmentations, the maps cropped with each view (eq. 11, 13–16).

    Appends each epoch's mean loss, loss terms, share of skipped steps (`skipped`) and label shares to `history` when given."""
    backbone = backbone.to(device).eval().requires_grad_(False)
    num_labels = maps.shape[1]
    student = build_segmenter(SegmenterConfig(backbone.embed_dim, num_labels, **cfg["decoder"]), seed).to(device)
    optimiser = build_optimiser(student, cfg["optimiser"], cfg["lr"], cfg["weight_decay"])
    precision = resolve_precision(cfg.get("amp", "auto"), device)
    torch.manual_seed(seed * 1000 + round_index)  # the decoder's dropout draws
    generator = torch.Generator().manual_seed(seed * 1000 + round_index)
    out_size, out_grid = half_size(tuple(images.shape[-2:]), backbone.patch_size)
    augment = view_augment(cfg["augment"])
    rng = np.random.default_rng([seed, round_index])
    losses = LossConfig(**cfg["losses"], w_div=cfg["w_div"], w_unc=cfg["w_unc"], diversity_form=cfg["diversity_form"])
    epochs, batch_size = cfg["epochs"], cfg["batch_size"]
    guard = LossGuard("lower transfgu.lr")
    for epoch in tqdm(range(epochs), desc=f"transfgu round {round_index}", unit="epoch"):
        alpha = peer_alpha(epoch, epochs, *cfg["alpha"])
        order = torch.randperm(len(images), generator=generator)
        probe = EpochProbe(num_labels)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            views, crop_maps = training_views(images[idx], maps[idx], out_size, out_grid, augment, rng, cfg["augment_rule"])
            with precision.autocast(), torch.no_grad():
                patches = backbone(views.to(device)).patches
            labels = crop_maps.to(device).argmax(dim=1)
            probe.add(train_step(student, optimiser, patches, labels, generator, alpha, losses, cfg, precision, guard, epoch, start // batch_size))
        means = probe.means()
        if history is not None:
            history.append({"epoch": epoch + 1, **means, "alpha": alpha})
        log.info("round %d epoch %d: loss %.4f, label shares %s (alpha %.3f)", round_index, epoch + 1, means["loss"], means["label_shares"], alpha)
    return student.cpu().eval()


def run_training_round(
    backbone: ViTBackbone,
    rows: list[ManifestRow],
    bank: LabelBank,
    teacher: Segmenter | None,
    cfg: dict[str, Any],
    input_size: tuple[int, int],
    seed: int,
    round_index: int,
    out_path: str | Path,
    device: torch.device,
    out_log: str | Path | None = None,
) -> None:
    """Load the train images and pseudo-label maps M (round 0) or M̂ = 0.5·(M + P̂) with P̂ from the teacher
    (rounds > 0), train one round, save the student (and its train log)."""
    images = load_images(rows, input_size)
    maps = torch.from_numpy(bank.read("maps").astype(np.float32))
    if teacher is not None:
        maps = bootstrapped_maps(maps, teacher_probabilities(teacher, backbone, images, device))
    history: list[dict[str, float]] = []
    student = train_round(backbone, images, maps, cfg, seed, round_index, device, history)
    save_segmenter(student, out_path, {"round": round_index, "background_label": bank.attrs.get("background_label")})
    if out_log is not None:
        write_json(out_log, {"round": round_index, "images": len(rows), "epochs": history})
    log.info("round %d: trained on %d images -> %s", round_index, len(rows), out_path)


@torch.inference_mode()
def predict_segmenter(
    model: Segmenter,
    stores: list[FeatureStore],
    out_path: str | Path,
    size: tuple[int, int],
    method: str,
    prov: dict[str, Any],
    device: torch.device,
    batch_size: int = 32,
) -> None:
    """Decoder masks on the frozen patch tokens, upsampled bilinearly to the working size, arg-max (eq. 2)."""
    model = model.to(device)
    index = np.concatenate([s.index for s in stores])
    ids = [i for s in stores for i in s.ids]
    with PredictionsWriter(out_path, index, ids, size, model.cfg.num_labels, method, prov) as writer:
        write_feature_predictions(writer, stores, lambda patches: model(patches)[0], size, batch_size, f"{method} predict", device)
    log.info("%s: predicted %d images -> %s", method, len(index), out_path)
