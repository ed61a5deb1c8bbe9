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
from useg.data.frame import Frame
from useg.data.manifest import ManifestRow, row_keys
from useg.data.pipeline import ordered_batches
from useg.methods.common import write_feature_predictions
from useg.methods.transfgu.gradcam import LabelConfig, pseudo_label_maps
from useg.methods.transfgu.losses import peer_alpha
from useg.methods.transfgu.segmenter import Segmenter, SegmenterConfig, build_segmenter, save_segmenter
from useg.methods.transfgu.training import step_setup, train_epoch, training_stream
from useg.train import distributed
from useg.train.descent import build_optimiser
from useg.stores.background import stream_to_store
from useg.stores.features import FeatureStore, feature_frame
from useg.stores.labelbank import LabelBank, LabelBankWriter
from useg.stores.predictions import PredictionsWriter

log = logging.getLogger(__name__)


def build_label_bank(
    backbone: ViTBackbone,
    rows: list[tuple[int, ManifestRow]],
    concepts: np.ndarray,
    groups: np.ndarray,
    cfg: dict[str, Any],
    frame: Frame,
    out_path: str | Path,
    prov: dict[str, Any],
    device: torch.device,
    threads: int = 1,
) -> None:
    """Grad-CAM response maps and labels of every image of a shard into a LabelBank (eq. 4–8); decoding in
    `stream_workers` loader workers, the store written in the background (useg.stores.background)."""
    backbone = backbone.to(device).eval().requires_grad_(False)
    grid = backbone.grid_for(*frame.size)
    num_labels = len(concepts) + int(cfg["foreground_only"])
    index, ids = row_keys(rows)
    attrs = {
        **frame.attrs(),
        "background_label": len(concepts) if cfg["foreground_only"] else None,
        "concept_groups": groups.tolist(),
    }
    s, g, labelling = torch.from_numpy(concepts).to(device), torch.from_numpy(groups), LabelConfig.from_cfg(cfg)

    def label(start: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        maps, labels, fg = pseudo_label_maps(backbone, images, s, g, labelling)
        return {"maps": maps.detach(), "labels": labels, "foreground": fg}

    batches = ordered_batches([row.path for _, row in rows], frame, cfg["bank_batch_size"], threads, device)
    with LabelBankWriter(out_path, index, ids, num_labels, grid, prov, **attrs) as writer:
        stream_to_store(tqdm(batches, desc=f"grad-cam {Path(out_path).name}", unit="batch"), label, writer.write)
    log.info("label bank: %d images, %d labels, grid %dx%d -> %s", len(rows), num_labels, *grid, out_path)


def predict_initial(bank: LabelBank, out_path: str | Path, prov: dict[str, Any]) -> None:
    """`initial` predictions: the bank's arg-max labels upsampled (nearest) to its working frame (eq. 6)."""
    labels, size = torch.from_numpy(bank.read("labels").astype(np.int64)), bank.frame.size
    with PredictionsWriter(out_path, bank.index, bank.ids, bank.frame, bank.num_labels, "transfgu-initial", prov) as writer:
        for start in range(0, len(labels), 64):
            chunk = labels[start : start + 64, None].float()
            up = torch.nn.functional.interpolate(chunk, size=size, mode="nearest")[:, 0]
            writer.write(start, up.numpy().astype(np.uint16))
    log.info("transfgu-initial: %d images -> %s", len(labels), out_path)


def train_round(
    backbone: ViTBackbone,
    rows: list[ManifestRow],
    bank: LabelBank,
    teacher: Segmenter | None,
    cfg: dict[str, Any],
    seed: int,
    round_index: int,
    device: torch.device,
    history: list[dict[str, Any]] | None = None,
    threads: int = 1,
) -> Segmenter:
    """Train a freshly initialised student on the arg-max of the bank's maps M (round 0) or of M̂ = ½(M + P̂) with
    P̂ from `teacher` on the whole unaugmented image (rounds > 0), images and maps streamed per batch and cropped
    with each §4.2 view; α linear over the round (eq. 11, 13–16).

    Appends each epoch's mean loss, loss terms, share of skipped steps (`skipped`) and label shares to `history` when given.
    Under torchrun each process trains on its share of every global batch, the student DDP-wrapped (the frozen
    backbone and the teacher run on each process's share unwrapped)."""
    world, device = distributed.start(device)
    backbone = backbone.to(device).eval().requires_grad_(False)
    key = seed * 1000 + round_index
    stream = training_stream(backbone, rows, bank, cfg, key, teacher is not None, world, device, threads)
    student = build_segmenter(SegmenterConfig(backbone.embed_dim, bank.num_labels, **cfg["decoder"]), seed).to(device)
    trained = distributed.wrap(student, device)
    teacher = None if teacher is None else teacher.to(device).eval()
    optimiser = build_optimiser(student, cfg["optimiser"], cfg["lr"], cfg["weight_decay"])
    setup = step_setup(cfg, device)
    torch.manual_seed(key)  # the decoder's dropout draws
    generator = torch.Generator().manual_seed(key)
    epochs = cfg["epochs"]
    for epoch in tqdm(range(epochs), desc=f"transfgu round {round_index}", unit="epoch", disable=not world.is_main):
        alpha = peer_alpha(epoch, epochs, *cfg["alpha"])
        means = train_epoch(trained, optimiser, backbone, stream, teacher, setup, epoch, alpha, (seed, round_index, epoch), generator, device)
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
    seed: int,
    round_index: int,
    out_path: str | Path,
    device: torch.device,
    out_log: str | Path | None = None,
    threads: int = 1,
) -> None:
    """Train one round on the images and the bank's maps streamed per batch (the teacher, if any, run per
    batch), save the student (and its train log): rank 0 writes under torchrun, the others wait for it."""
    history: list[dict[str, Any]] = []
    student = train_round(backbone, rows, bank, teacher, cfg, seed, round_index, device, history, threads)
    if distributed.is_main():
        save_segmenter(student, out_path, {"round": round_index, "background_label": bank.attrs.get("background_label")})
        if out_log is not None:
            write_json(out_log, {"round": round_index, "images": len(rows), "epochs": history})
    distributed.finish()
    log.info("round %d: trained on %d images -> %s", round_index, len(rows), out_path)


@torch.inference_mode()
def predict_segmenter(
    model: Segmenter,
    stores: list[FeatureStore],
    out_path: str | Path,
    method: str,
    prov: dict[str, Any],
    device: torch.device,
    batch_size: int = 32,
) -> None:
    """Decoder masks on the frozen patch tokens, upsampled bilinearly to the shards' frame, arg-max (eq. 2)."""
    model = model.to(device)
    index = np.concatenate([s.index for s in stores])
    ids = [i for s in stores for i in s.ids]
    with PredictionsWriter(out_path, index, ids, feature_frame(stores), model.cfg.num_labels, method, prov) as writer:
        write_feature_predictions(writer, stores, lambda patches: model(patches)[0], batch_size, f"{method} predict", device)
    log.info("%s: predicted %d images -> %s", method, len(index), out_path)
