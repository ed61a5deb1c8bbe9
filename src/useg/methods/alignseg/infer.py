"""End-to-end inference of AlignSeg §IV-C: per image, P^x from the decoder, ŷ = argmax cos(x, P^x)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from useg.methods.alignseg.decoder import PrototypeDecoder, segment
from useg.methods.common import scores_to_labels
from useg.stores.features import FeatureStore
from useg.stores.predictions import PredictionsWriter

log = logging.getLogger(__name__)


@torch.inference_mode()
def predict_alignseg(
    decoder: PrototypeDecoder,
    stores: list[FeatureStore],
    out_path: str | Path,
    size: tuple[int, int],
    prov: dict[str, Any],
    device: torch.device,
    batch_size: int = 32,
) -> None:
    """Similarity maps of every image's own prototypes, upsampled bilinearly to `size`, arg-max (eq. 1–3).

    No clustering across images and no classifier: each image is segmented on its own.
    """
    decoder = decoder.to(device).eval()
    index = np.concatenate([s.index for s in stores])
    ids = [i for s in stores for i in s.ids]
    with PredictionsWriter(out_path, index, ids, size, decoder.cfg.prototypes, "alignseg", prov) as writer:
        start = 0
        for store in stores:
            for batch in tqdm(store.batches(batch_size), desc="alignseg predict", unit="batch"):
                scores = segment(decoder, torch.from_numpy(batch.patches.astype(np.float32)).to(device))
                writer.write(start, scores_to_labels(scores, size))
                start += len(batch.index)
    log.info("alignseg: segmented %d images -> %s", len(index), out_path)
