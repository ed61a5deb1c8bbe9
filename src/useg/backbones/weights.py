"""Backbone weights: timm pretrained tags, local .pth/.safetensors files (DINO layout too), random.

`.pth` files are read with `torch.load(..., weights_only=True)`: a checkpoint can never run code.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor

from useg.backbones.sources import is_weight_file, missing_weights_message
from useg.backbones.vit import BackboneConfig, ViTBackbone, create_vit
from useg.errors import ConfigError, WeightsError

log = logging.getLogger(__name__)

WRAPPER_KEYS = ("teacher", "state_dict", "model", "student")
KEY_PREFIXES = ("module.", "backbone.", "encoder.", "model.")
GRID_KEY = "pos_embed_grid"  # [h, w] of the position embedding, in checkpoints useg writes


def unpickling_reason(exc: Exception) -> str:
    """What torch.load found wrong, without its advice to load with weights_only=False (useg never does)."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\s*Please use|\n\n|$)", text, re.S)
    return (found.group(1) if found else text.splitlines()[0] if text else type(exc).__name__).strip().rstrip(".")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read tensors from a .safetensors or a torch file (weights_only: no code execution)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(missing_weights_message(str(path)))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused or file damaged
        raise WeightsError(
            f"cannot read backbone weights {path}: {unpickling_reason(exc)}. The file is damaged, or holds "
            "Python objects besides tensors, which useg never loads: save the model's state_dict() with "
            "torch.save, or convert it to .safetensors."
        ) from exc
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def backbone_state(state: dict) -> dict[str, Tensor]:
    """Unwrap training checkpoints (DINO teacher, `model`, `state_dict`) and strip key prefixes."""
    for key in WRAPPER_KEYS:
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    cleaned = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            continue
        stripped = True
        while stripped:
            stripped = False
            for prefix in KEY_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        if not key.startswith("head."):
            cleaned[key] = value
    return cleaned


def with_grid(model) -> dict[str, Tensor]:
    """A ViT's state dict with its position embedding's patch grid (a rectangular grid cannot be inferred)."""
    return {**model.state_dict(), GRID_KEY: torch.tensor(model.patch_embed.grid_size)}


def source_grid(state: dict[str, Tensor], positions: int, source: str) -> tuple[int, int]:
    """The patch grid of a checkpoint's `positions` position embeddings: recorded (with_grid), else square."""
    if GRID_KEY in state:
        return tuple(int(g) for g in state[GRID_KEY])  # type: ignore[return-value]
    side = math.isqrt(positions)
    if side * side != positions:
        raise WeightsError(
            f"weights {source}: the position embedding holds {positions} patch positions, not a square grid, and the "
            "file does not record its grid: set backbone.input_size to the size the weights were trained at"
        )
    return side, side


def _fit_pos_embed(state: dict[str, Tensor], model, source: str) -> None:
    """Resample a checkpoint's position embedding to this model's patch grid (dropping the recorded grid)."""
    pos = state.get("pos_embed")
    if pos is not None and pos.shape[1] != model.pos_embed.shape[1]:  # a width mismatch is reported by the strict load
        prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        state["pos_embed"] = resample_abs_pos_embed(
            pos.float(), new_size=model.patch_embed.grid_size, old_size=source_grid(state, pos.shape[1] - prefix, source),
            num_prefix_tokens=prefix,
        )
    state.pop(GRID_KEY, None)


def check_finite_state(state: dict[str, Tensor], source: str) -> None:
    """Refuse a state dict with NaN or infinite values (a damaged or diverged checkpoint), naming its tensors."""
    bad = [key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise WeightsError(
            f"weights {source} hold NaN or infinite values in {len(bad)} tensor(s) ({', '.join(bad[:5])}"
            f"{', ...' if len(bad) > 5 else ''}): the checkpoint is damaged or comes from a diverged run. "
            "Use another checkpoint in backbone.weights."
        )


def load_state_into(model, state: dict[str, Tensor], source: str) -> None:
    """Load a backbone state dict strictly, explaining any mismatch or non-finite value."""
    state = backbone_state(state)
    check_finite_state(state, source)
    _fit_pos_embed(state, model, source)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise WeightsError(
            f"weights {source} do not fit the configured backbone: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"shape mismatch {mismatched[:5]}. Check backbone.model/patch_size/embed_dim/depth/num_heads."
        )
    model.load_state_dict(state)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (HF_ENDPOINT, default huggingface.co) accepts a connection within `timeout` s."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def load_timm_pretrained(cfg: BackboneConfig) -> dict[str, Tensor]:
    """Fetch weights by timm pretrained tag (needs internet or a populated hub cache). Offline, the
    hub client is put in offline mode first: a cached checkpoint loads, a missing one fails at once
    instead of after the client's retries."""
    if not hub_reachable():
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True
        log.info("the Hugging Face hub is unreachable: looking for %s in the local cache only", cfg.weights)
    try:
        return timm.create_model(cfg.weights, pretrained=True, num_classes=0).state_dict()
    except Exception as exc:
        raise WeightsError(
            f"could not get timm pretrained weights {cfg.weights!r}: {exc}. Offline? Download the "
            "checkpoint elsewhere and set backbone.weights to the local file."
        ) from exc


def load_weights(model, cfg: BackboneConfig, weights_path: str | Path | None = None) -> None:
    """Fill `model` according to backbone.weights: random | pretrain | <file> | <timm tag>."""
    source = cfg.weights
    if source == "random":
        log.info("backbone %s: random initialisation", cfg.name)
        return
    if source == "pretrain":
        if weights_path is None:
            raise ConfigError("backbone.weights: pretrain needs the checkpoint of the pretrain stage")
        state, label = read_state_dict(weights_path), str(weights_path)
    elif is_weight_file(source):
        state, label = read_state_dict(source), source
    else:
        state, label = load_timm_pretrained(cfg), f"timm:{source}"
    load_state_into(model, state, label)
    log.info("backbone %s: loaded weights from %s", cfg.name, label)


def build_backbone(cfg: BackboneConfig, weights_path: str | Path | None = None, seed: int = 0) -> ViTBackbone:
    """The configured backbone, weights loaded, in eval mode (random init seeded by `seed`)."""
    torch.manual_seed(seed)
    model = create_vit(cfg)
    load_weights(model, cfg, weights_path)
    return ViTBackbone(model.eval(), name=cfg.name)
