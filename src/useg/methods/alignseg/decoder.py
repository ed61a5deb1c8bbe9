"""Segmentation module of AlignSeg §IV-A: learnable prototypes query the patch tokens through a decoder."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from useg.train.checkpoint import read_model, save_model

Activation = Literal["relu", "gelu"]
Init = Literal["trunc_normal", "default"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


@dataclass(frozen=True)
class DecoderConfig:
    """Width D (the backbone's), prototypes K, layers L, attention heads, FFN width (None: 4 D), activation, init."""

    dim: int
    prototypes: int = 5
    layers: int = 1
    heads: int = 3
    ffn_dim: int | None = 768
    activation: Activation = "relu"
    init: Init = "trunc_normal"


class DecoderLayer(nn.Module):
    """Cross-attention (prototypes -> patch tokens), self-attention among prototypes, FFN; post-norm
    residuals as Mask2Former. No positional codes: the output ignores the patch order."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, activation: Activation) -> None:
        super().__init__()
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), ACTIVATIONS[activation](), nn.Linear(ffn_dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))

    def forward(self, queries: Tensor, tokens: Tensor) -> Tensor:
        """Queries [B, K, D], patch tokens [B, n, D] -> updated queries [B, K, D]."""
        q = self.norms[0](queries + self.cross(queries, tokens, tokens, need_weights=False)[0])
        q = self.norms[1](q + self.self_attn(q, q, q, need_weights=False)[0])
        return self.norms[2](q + self.ffn(q))


class PrototypeDecoder(nn.Module):
    """K learnable prototypes P and L stacked decoder layers: P^x = Dec(P, x) (AlignSeg eq. 1)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.prototypes = nn.Parameter(torch.randn(cfg.prototypes, cfg.dim))
        ffn_dim = cfg.ffn_dim or 4 * cfg.dim
        self.layers = nn.ModuleList(DecoderLayer(cfg.dim, cfg.heads, ffn_dim, cfg.activation) for _ in range(cfg.layers))
        if cfg.init == "trunc_normal":
            self.layers.apply(trunc_normal_linear)

    def forward(self, tokens: Tensor) -> Tensor:
        """Patch tokens [B, n, D] -> image-aligned prototypes P^x [B, K, D] (eq. 1)."""
        queries = self.prototypes.expand(len(tokens), -1, -1)
        for layer in self.layers:
            queries = layer(queries, tokens)
        return queries


def trunc_normal_linear(module: nn.Module) -> None:
    """The release's init of every linear map (FFN, attention output): weights N(0, 0.02²) cut at ±2, biases 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


def similarity(tokens: Tensor, prototypes: Tensor) -> Tensor:
    """s = cos(x, P^x): patch tokens [B, n, D], prototypes [B, K, D] -> [B, n, K] (eq. 2)."""
    return F.normalize(tokens, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(1, 2)


def assign(scores: Tensor) -> Tensor:
    """ŷ = argmax_K s: the prototype of every patch, [B, n] (eq. 3)."""
    return scores.argmax(dim=-1)


def segment(decoder: PrototypeDecoder, patches: Tensor) -> Tensor:
    """Patch grid [B, h, w, D] -> prototype similarities as maps [B, K, h, w] (eq. 1–2)."""
    batch, h, w, dim = patches.shape
    tokens = patches.reshape(batch, h * w, dim)
    return similarity(tokens, decoder(tokens)).transpose(1, 2).reshape(batch, -1, h, w)


def build_decoder(cfg: DecoderConfig, seed: int) -> PrototypeDecoder:
    """A freshly initialised decoder; the same seed gives the same initial state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PrototypeDecoder(cfg)


def save_decoder(model: PrototypeDecoder, path: str | Path, extra: dict[str, Any]) -> None:
    """Write the decoder checkpoint atomically."""
    save_model(path, "alignseg", asdict(model.cfg), model.state_dict(), **extra)


def load_decoder(path: str | Path) -> PrototypeDecoder:
    """Read a decoder checkpoint (weights only: it can never run code)."""
    checkpoint = read_model(path, "alignseg-train")
    model = PrototypeDecoder(DecoderConfig(**checkpoint["config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
