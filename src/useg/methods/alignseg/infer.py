"""End-to-end inference of AlignSeg §IV-C: per image, P^x from the decoder, ŷ = argmax cos(x, P^x)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from useg.errors import StoreError
from useg.methods.alignseg.decoder import PrototypeDecoder, load_decoder, segment
from useg.methods.common import write_feature_predictions
from useg.stores.features import FeatureStore, feature_frame
from useg.stores.predictions import PredictionsWriter

log = logging.getLogger(__name__)


@torch.inference_mode()
def predict_alignseg(
    decoder: PrototypeDecoder,
    stores: list[FeatureStore],
    out_path: str | Path,
    prov: dict[str, Any],
    device: torch.device,
    batch_size: int = 32,
) -> None:
    """Similarity maps of every image's own prototypes, upsampled bilinearly to the shards' frame, arg-max (eq. 1–3).

    No clustering across images and no classifier: each image is segmented on its own.
    """
    decoder = decoder.to(device).eval()
    index = np.concatenate([s.index for s in stores])
    ids = [i for s in stores for i in s.ids]
    with PredictionsWriter(out_path, index, ids, feature_frame(stores), decoder.cfg.prototypes, "alignseg", prov) as writer:
        write_feature_predictions(writer, stores, lambda patches: segment(decoder, patches), batch_size, "alignseg predict", device)
    log.info("alignseg: segmented %d images -> %s", len(index), out_path)


class EndToEnd(nn.Module):
    """Frozen backbone + trained decoder: normalised images [B, 3, H, W] -> cos(x, P^x) maps [B, K, h, w] (eq. 1–2)."""

    def __init__(self, backbone: nn.Module, decoder: PrototypeDecoder) -> None:
        super().__init__()
        self.backbone, self.decoder = backbone, decoder

    def forward(self, images: Tensor) -> Tensor:
        return segment(self.decoder, self.backbone(images).patches)


def load_predictor(path: Path, backbone: nn.Module, device: torch.device) -> EndToEnd:
    """`useg predict` loader: the trained decoder on top of the run's backbone."""
    decoder = load_decoder(path)
    if decoder.cfg.dim != backbone.embed_dim:
        raise StoreError(
            f"{path} decodes {decoder.cfg.dim}-d patch tokens but the configured backbone gives {backbone.embed_dim}: "
            "pass the config file(s) the model was trained with"
        )
    return EndToEnd(backbone, decoder).to(device).eval()
