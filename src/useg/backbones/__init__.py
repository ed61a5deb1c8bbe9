"""Backbones: a timm ViT wrapper exposing CLS, patch tokens, attention and q/k/v.

The names below load on first use, so that `useg` subcommands which never touch a backbone
(evaluation, clustering, reports) start without importing torch and timm.
"""

from __future__ import annotations

from useg.lazy import lazy_attributes

_LAZY = {
    "BackboneConfig": "useg.backbones.vit",
    "ViTBackbone": "useg.backbones.vit",
    "ViTOutput": "useg.backbones.vit",
    "build_backbone": "useg.backbones.weights",
}

__all__ = list(_LAZY)
__getattr__ = lazy_attributes(__name__, _LAZY)
