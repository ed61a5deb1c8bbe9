"""Segmenter mask-transformer decoder over frozen patch tokens (TransFGU eq. 2, Segmenter [33])."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from useg.errors import StoreError, check_choice
from useg.train.checkpoint import save_model


MASK_FORMS = ("release", "paper")
CLASS_INITS = ("release", "segmenter")


@dataclass(frozen=True)
class SegmenterConfig:
    """Decoder architecture: input width, labels, width, layers, heads, dropout, mask form (eq. 2), class init."""

    in_dim: int
    num_labels: int
    dim: int = 384
    layers: int = 2
    heads: int = 6
    dropout: float = 0.1
    mask: str = "release"
    mask_norm: bool = True
    class_init: str = "release"

    def __post_init__(self) -> None:
        check_choice("transfgu.decoder.mask", self.mask, MASK_FORMS)
        check_choice("transfgu.decoder.class_init", self.class_init, CLASS_INITS)


class Segmenter(nn.Module):
    """Pre-norm GELU transformer layers over [patch tokens; K class embeddings]; masks = MASK(x′, C) (eq. 2).

    C is L2-normalised (eq. 15 speaks of cosine similarities between class embeddings); see
    `mask_logits` for x′. With `mask_norm` a LayerNorm over the K logits of each patch follows (release).
    Weights are initialised as Segmenter [33] and the release do (`init_weights`).
    """

    def __init__(self, cfg: SegmenterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj_in = nn.Linear(cfg.in_dim, cfg.dim)
        self.class_embed = nn.Parameter(class_embeddings(cfg.num_labels, cfg.dim, cfg.class_init))
        layer = nn.TransformerEncoderLayer(
            cfg.dim, cfg.heads, 4 * cfg.dim, dropout=cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.proj_patch = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.proj_class = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.mask_norm = nn.LayerNorm(cfg.num_labels) if cfg.mask_norm else nn.Identity()
        init_weights(self)

    def forward(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        """Patch tokens [B, h, w, D] -> (masks [B, K, h, w], final class embeddings C [B, K, d])."""
        batch, h, w, _ = patches.shape
        x = self.proj_in(patches.reshape(batch, h * w, -1))
        x = self.norm(self.blocks(torch.cat([x, self.class_embed.expand(batch, -1, -1)], dim=1)))
        x_patch = self.proj_patch(x[:, : h * w])
        classes = F.normalize(self.proj_class(x[:, h * w :]), dim=-1)
        masks = self.mask_norm(mask_logits(x_patch, classes, self.cfg.mask))
        return masks.transpose(1, 2).reshape(batch, -1, h, w), classes


def mask_logits(x_patch: Tensor, classes: Tensor, form: str) -> Tensor:
    """MASK(x′, C) [B, hw, K] for unit-norm C: cos(x′, C) (`release`) or x′Cᵀ/√d (`paper`, TransFGU eq. 2)."""
    if form == "release":
        return F.normalize(x_patch, dim=-1) @ classes.transpose(1, 2)
    return x_patch @ classes.transpose(1, 2) / math.sqrt(classes.shape[-1])


def class_embeddings(num_labels: int, dim: int, init: str) -> Tensor:
    """Initial class embeddings [1, K, d]: `release` is its `nn.init.orthogonal_` on this 3-d tensor, which
    flattens it to one row — a single Gaussian direction over all K·d entries, unit Frobenius norm (the K rows
    are not orthogonal); `segmenter` is Segmenter's truncated normal with std 0.02."""
    if init == "release":
        embed = torch.randn(1, num_labels, dim)
        return embed / embed.norm()
    return nn.init.trunc_normal_(torch.empty(1, num_labels, dim), std=0.02)


def init_weights(model: Segmenter) -> None:
    """Segmenter's and the release's init: linear maps (attention included) truncated normal std 0.02 with zero
    bias, the two final projections N(0, 1/d) as their `scale · randn` matrices; LayerNorms stay (1, 0)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            nn.init.trunc_normal_(module.in_proj_weight, std=0.02)
            nn.init.zeros_(module.in_proj_bias)
    for proj in (model.proj_patch, model.proj_class):
        nn.init.normal_(proj.weight, std=model.cfg.dim**-0.5)


def build_segmenter(cfg: SegmenterConfig, seed: int) -> Segmenter:
    """A freshly initialised decoder; the same seed gives the same initial state (students are reset to it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Segmenter(cfg)


def save_segmenter(model: Segmenter, path: str | Path, extra: dict[str, Any]) -> None:
    """Write the decoder checkpoint atomically."""
    save_model(path, "transfgu", asdict(model.cfg), model.state_dict(), **extra)


def load_segmenter(path: str | Path) -> tuple[Segmenter, dict[str, Any]]:
    """Read a decoder checkpoint (weights only: it can never run code)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise StoreError(f"cannot read the decoder checkpoint {path}: {exc}") from exc
    model = Segmenter(SegmenterConfig(**checkpoint["config"]))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise StoreError(
            f"{path} does not fit the decoder its config describes (written by an older useg?): rerun its "
            f"transfgu_train round. {exc}"
        ) from exc
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
