"""Backbones: a timm ViT wrapper exposing CLS, patch tokens, attention and q/k/v.

The names below load on first use, so that `useg` subcommands which never touch a backbone
(evaluation, clustering, reports) start without importing torch and timm.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "BackboneConfig": "useg.backbones.vit",
    "ViTBackbone": "useg.backbones.vit",
    "ViTOutput": "useg.backbones.vit",
    "build_backbone": "useg.backbones.weights",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    """Import the module that defines `name` on first access (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'useg.backbones' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
