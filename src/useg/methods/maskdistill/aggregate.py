"""Confident aggregation of the mask candidates into semantic pseudo labels (MaskDistill §3.3)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from useg.stores.candidates import CandidateBank
from useg.stores.labelbank import LabelBank, LabelBankWriter
from useg.stores.predictions import PredictionsWriter

log = logging.getLogger(__name__)


def confident_labels(
    scores: np.ndarray, labels: np.ndarray, masks: np.ndarray, tau: float, background: int
) -> tuple[np.ndarray, int]:
    """Label map [H, W] from candidates: keep {M_i | s_i > τ} (the single most confident when none passes);
    where kept masks overlap the most confident wins; uncovered pixels get `background`. Returns (map, kept)."""
    out = np.full(masks.shape[1:], background, np.uint16)
    if not len(scores):
        return out, 0
    order = np.argsort(-scores, kind="stable")
    kept = [i for i in order if scores[i] > tau] or [order[0]]
    free = np.ones(masks.shape[1:], bool)
    for i in kept:
        paint = free & (masks[i] > 0)
        out[paint] = labels[i]
        free &= ~paint
    return out, len(kept)


def aggregate_bank(candidates: CandidateBank, tau: float, out_path: str | Path, prov: dict[str, Any]) -> None:
    """Pseudo-label maps of every image of a split -> LabelBank (labels 0..C−1 clusters, C background)."""
    k = int(candidates.attrs["num_classes"])
    frame = candidates.frame
    with LabelBankWriter(
        out_path, candidates.index, candidates.ids, k + 1, frame.size, prov, with_maps=False,
        **frame.attrs(), background_label=k, tau=tau,
    ) as writer:  # fmt: skip
        kept_total = 0
        for i, (_, cand) in enumerate(tqdm(candidates.images(), total=len(candidates), desc="aggregate", unit="img")):
            labels, kept = confident_labels(cand["scores"], cand["labels"], cand["masks"], tau, k)
            writer.write(i, None, labels[None], (labels != k)[None])
            kept_total += kept
    log.info("confident bank: %d images, %.2f masks kept per image (tau %.2f) -> %s", len(candidates), kept_total / max(1, len(candidates)), tau, out_path)


def bank_predictions(bank: LabelBank, method: str, out_path: str | Path, prov: dict[str, Any]) -> None:
    """A pixel-level LabelBank as a Predictions store (the `maskdistill-maskrcnn` column)."""
    labels = bank.read("labels")
    with PredictionsWriter(out_path, bank.index, bank.ids, bank.frame, bank.num_labels, method, prov) as writer:
        writer.write(0, labels)
    log.info("%s: %d images -> %s", method, len(labels), out_path)
