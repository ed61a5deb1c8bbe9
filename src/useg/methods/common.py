"""Parts every method shares: turning per-patch scores into label maps at the working size."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def scores_to_labels(scores: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly upsample per-patch scores [B, K, h, w] to `size` and take the arg-max label."""
    up = F.interpolate(scores.float(), size=size, mode="bilinear", align_corners=False)
    return up.argmax(dim=1).cpu().numpy().astype(np.uint16)
