"""Backbones: a timm ViT wrapper exposing CLS, patch tokens, attention and q/k/v."""

from useg.backbones.vit import BackboneConfig, ViTBackbone, ViTOutput
from useg.backbones.weights import build_backbone

__all__ = ["BackboneConfig", "ViTBackbone", "ViTOutput", "build_backbone"]
