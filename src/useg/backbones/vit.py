"""Wrapper over timm VisionTransformer returning what the methods need from one forward pass.

For a batch it returns the CLS token and patch tokens (after the final norm), the last block's
CLS -> patch attention per head, and q, k, v per head of any requested blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import timm
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from useg.data.frame import Frame, Resize
from useg.errors import ConfigError


@dataclass(frozen=True)
class BackboneConfig:
    """Architecture and weights of a ViT backbone (the `backbone` config section)."""

    model: str = "vit_small_patch16_224"
    weights: str = "random"
    input_size: tuple[int, int] = (224, 224)
    resize: Resize = "squash"
    patch_size: int | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    name: str = "backbone"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> BackboneConfig:
        """Build from the `backbone` config mapping (unknown keys are architecture overrides)."""
        known = {"model", "weights", "input_size", "resize", "patch_size", "embed_dim", "depth", "num_heads", "name"}
        extra = {k: v for k, v in cfg.items() if k not in known}
        args = {k: v for k, v in cfg.items() if k in known}
        if "input_size" in args:
            args["input_size"] = tuple(args["input_size"])
        return cls(**args, extra=extra)

    @property
    def frame(self) -> Frame:
        """The working frame of the images this backbone sees."""
        return Frame(self.input_size, self.resize)

    def timm_overrides(self) -> dict[str, Any]:
        """Keyword arguments that override the timm model's default architecture."""
        overrides = {
            k: v
            for k, v in (
                ("patch_size", self.patch_size),
                ("embed_dim", self.embed_dim),
                ("depth", self.depth),
                ("num_heads", self.num_heads),
            )
            if v is not None
        }
        return {**overrides, **self.extra.get("timm_kwargs", {})}


@dataclass
class ViTOutput:
    """Outputs of one forward pass (token axis of q/k/v includes the prefix tokens)."""

    cls: Tensor  # [B, D]
    patches: Tensor  # [B, h, w, D]
    attn: Tensor  # [B, H, h, w] last-block CLS -> patch attention
    qkv: dict[int, tuple[Tensor, Tensor, Tensor]]  # block -> (q, k, v), each [B, H, T, D/H]
    grid: tuple[int, int]


def attention_with_maps(attn: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """timm Attention forward with explicit softmax; returns (out, q, k, v, probs)."""
    batch, tokens, _ = x.shape
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    qkv = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    probs = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    out = (attn.attn_drop(probs) @ v).transpose(1, 2).reshape(batch, tokens, -1)
    out = attn.norm(out)
    if gate is not None:
        out = out * gate
    return attn.proj_drop(attn.proj(out)), q, k, v, probs


def block_with_maps(block: Block, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """timm Block forward that also returns (q, k, v, attention probabilities)."""
    out, q, k, v, probs = attention_with_maps(block.attn, block.norm1(x))
    x = x + block.drop_path1(block.ls1(out))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, q, k, v, probs


class ViTBackbone(nn.Module):
    """A timm ViT with an output that carries CLS, patch tokens, attention and q/k/v."""

    def __init__(self, model: VisionTransformer, name: str = "backbone") -> None:
        super().__init__()
        if not isinstance(model, VisionTransformer) or not all(isinstance(b, Block) for b in model.blocks):
            raise ConfigError("backbone.model must be a timm VisionTransformer with standard blocks")
        self.model, self.name = model, name
        self.patch_size: int = model.patch_embed.patch_size[0]
        self.embed_dim: int = model.embed_dim
        self.num_heads: int = model.blocks[-1].attn.num_heads
        self.depth: int = len(model.blocks)
        self.num_prefix_tokens: int = model.num_prefix_tokens

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid of an input of the given size."""
        return height // self.patch_size, width // self.patch_size

    def forward(self, images: Tensor, qkv_blocks: tuple[int, ...] = ()) -> ViTOutput:
        """Run the ViT on normalised images [B, 3, H, W] (H, W multiples of the patch size)."""
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {self.patch_size}")
        grid = self.grid_for(height, width)
        wanted = {b % self.depth for b in qkv_blocks}
        m = self.model
        x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(images))))
        qkv: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        probs = None
        for index, block in enumerate(m.blocks):
            if index in wanted or index == self.depth - 1:
                x, q, k, v, probs = block_with_maps(block, x)
                if index in wanted:
                    qkv[index] = (q, k, v)
            else:
                x = block(x)
        x = m.norm(x)
        batch, p = x.shape[0], self.num_prefix_tokens
        patches = x[:, p:].reshape(batch, *grid, self.embed_dim)
        attn = probs[:, :, 0, p:].reshape(batch, self.num_heads, *grid)
        return ViTOutput(cls=x[:, 0], patches=patches, attn=attn, qkv=qkv, grid=grid)


def create_vit(cfg: BackboneConfig, drop_path_rate: float = 0.0) -> VisionTransformer:
    """Instantiate the timm architecture (random init) at the configured input size; `drop_path_rate`
    is the stochastic depth of the last block, rising linearly from 0 at the first (timm, DINO)."""
    try:
        model = timm.create_model(
            cfg.model,
            pretrained=False,
            num_classes=0,
            img_size=tuple(cfg.input_size),
            dynamic_img_size=True,
            drop_path_rate=drop_path_rate,
            **cfg.timm_overrides(),
        )
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"backbone.model {cfg.model!r} cannot be built: {exc}") from exc
    return model
