"""DINO-style projection heads: image-level h-bar and centroid h share all but their last layer."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class CrOCHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> two weight-normalised output layers (L-bar and L dims)."""

    def __init__(
        self, in_dim: int, hidden_dim: int, bottleneck_dim: int, global_dim: int, dense_dim: int, layers: int = 3
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck_dim]
        blocks: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            blocks.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                blocks.append(nn.GELU())
        self.mlp = nn.Sequential(*blocks)
        self.global_last = self._last(bottleneck_dim, global_dim)
        self.dense_last = self._last(bottleneck_dim, dense_dim)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    @staticmethod
    def _last(bottleneck_dim: int, out_dim: int) -> nn.Module:
        layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        layer.parametrizations.weight.original0.data.fill_(1)
        layer.parametrizations.weight.original0.requires_grad_(False)  # DINO: fixed norm of the last layer
        return layer

    def _shared(self, x: Tensor) -> Tensor:
        return F.normalize(self.mlp(x), dim=-1)

    def image(self, x: Tensor) -> Tensor:
        """h-bar: logits over L-bar dims of image-level representations [..., D]."""
        return self.global_last(self._shared(x))

    def centroid(self, x: Tensor) -> Tensor:
        """h: logits over L dims of centroid representations [..., D]."""
        return self.dense_last(self._shared(x))
