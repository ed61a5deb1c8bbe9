"""Segmenter mask-transformer decoder over frozen patch tokens (TransFGU eq. 2, Segmenter [33])."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from useg.atomic import atomic_output
from useg.errors import StoreError


@dataclass(frozen=True)
class SegmenterConfig:
    """Decoder architecture: input width, number of labels, width, layers, heads."""

    in_dim: int
    num_labels: int
    dim: int = 64
    layers: int = 2
    heads: int = 2


class Segmenter(nn.Module):
    """Transformer layers over [patch tokens; K class embeddings]; masks = x′Cᵀ/√d (eq. 2).

    C is L2-normalised (eq. 15 speaks of cosine similarities between class embeddings); x′ is
    not, so the decoder can learn the scale of its logits.
    """

    def __init__(self, cfg: SegmenterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj_in = nn.Linear(cfg.in_dim, cfg.dim)
        self.class_embed = nn.Parameter(torch.randn(1, cfg.num_labels, cfg.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 4 * cfg.dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.proj_patch = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.proj_class = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        """Patch tokens [B, h, w, D] -> (masks [B, K, h, w], final class embeddings C [B, K, d])."""
        batch, h, w, _ = patches.shape
        x = self.proj_in(patches.reshape(batch, h * w, -1))
        x = self.norm(self.blocks(torch.cat([x, self.class_embed.expand(batch, -1, -1)], dim=1)))
        x_patch = self.proj_patch(x[:, : h * w])
        classes = F.normalize(self.proj_class(x[:, h * w :]), dim=-1)
        return mask_logits(x_patch, classes).transpose(1, 2).reshape(batch, -1, h, w), classes


def mask_logits(x_patch: Tensor, classes: Tensor) -> Tensor:
    """MASK(x′, C) = x′Cᵀ/√d, [B, hw, K] (TransFGU eq. 2)."""
    return x_patch @ classes.transpose(1, 2) / math.sqrt(classes.shape[-1])


def build_segmenter(cfg: SegmenterConfig, seed: int) -> Segmenter:
    """A freshly initialised decoder; the same seed gives the same initial state (students are reset to it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Segmenter(cfg)


def save_segmenter(model: Segmenter, path: str | Path, extra: dict[str, Any]) -> None:
    """Write the decoder checkpoint atomically."""
    with atomic_output(path) as tmp:
        torch.save({"config": asdict(model.cfg), "state_dict": model.state_dict(), **extra}, tmp)


def load_segmenter(path: str | Path) -> tuple[Segmenter, dict[str, Any]]:
    """Read a decoder checkpoint (weights only: it can never run code)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise StoreError(f"cannot read the decoder checkpoint {path}: {exc}") from exc
    model = Segmenter(SegmenterConfig(**checkpoint["config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


class EndToEnd(nn.Module):
    """Frozen backbone + trained decoder: normalised images [B, 3, H, W] -> masks [B, K, h, w] (eq. 2)."""

    def __init__(self, backbone: nn.Module, decoder: Segmenter) -> None:
        super().__init__()
        self.backbone, self.decoder = backbone, decoder

    def forward(self, images: Tensor) -> Tensor:
        return self.decoder(self.backbone(images).patches)[0]


def load_predictor(path: Path, backbone: nn.Module, device: torch.device) -> EndToEnd:
    """`useg predict` loader: the decoder checkpoint of a round on top of the run's backbone."""
    decoder, _ = load_segmenter(path)
    if decoder.cfg.in_dim != backbone.embed_dim:
        raise StoreError(
            f"{path} decodes {decoder.cfg.in_dim}-d patch tokens but the configured backbone gives {backbone.embed_dim}: "
            "pass the config file(s) the model was trained with"
        )
    return EndToEnd(backbone, decoder).to(device).eval()
