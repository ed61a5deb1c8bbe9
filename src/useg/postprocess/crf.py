"""Dense CRF with Gaussian edge potentials (Krähenbühl & Koltun 2011; MaskDistill's "+CRF" rows).

Energy E(x) = Σ_i ψ_u(x_i) + Σ_{i<j} μ(x_i, x_j) k(f_i, f_j) with the Potts compatibility μ and
k = w_app · exp(−|p_i−p_j|²/2θ_α² − |I_i−I_j|²/2θ_β²) + w_smooth · exp(−|p_i−p_j|²/2θ_γ²).
Inference is the mean-field update of the paper; message passing sums over the pixels in a
(2r+1)² window around each pixel (r = `window`) instead of the permutohedral lattice: exact when
the window covers the image, and close to exact once it spans about 3θ_α.

`normalise: symmetric` (pydensecrf's default, NORMALIZE_SYMMETRIC, which MaskDistill's release calls)
replaces each Gaussian kernel k by D^{-1/2} k D^{-1/2}, D_i = Σ_j k(f_i, f_j) with the self term
k(f_i, f_i) = 1 included, as the permutohedral filter includes it; `none` is the paper's kernel as
written, without the self term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class CRFConfig:
    """Kernel weights and widths (pixels of the working size, colour in 0–255) and mean-field steps."""

    iterations: int = 5
    window: int = 10
    w_app: float = 4.0
    theta_alpha: float = 10.0
    theta_beta: float = 10.0
    w_smooth: float = 3.0
    theta_gamma: float = 3.0
    normalise: str = "symmetric"


def neighbours(values: Tensor, radius: int) -> Tensor:
    """Values [C, H, W] of every pixel's (2r+1)² window, zero off the image -> [C, (2r+1)², H·W]."""
    channels, height, width = values.shape
    size = 2 * radius + 1
    return F.unfold(values[None], size, padding=radius).view(channels, size * size, height * width)


def window_message(values: Tensor, kernel: Tensor, radius: int) -> Tensor:
    """Σ_j k_ij v_j over each pixel's window: values [C, H, W], kernel [(2r+1)², H·W] -> [C, H, W].

    Equal to (neighbours(values) · kernel).sum over the window, as one multiply-add per offset on the
    padded image instead of materialising the [C, (2r+1)², H·W] windows (about 50x faster on a CPU)."""
    _, height, width = values.shape
    size = 2 * radius + 1
    padded = F.pad(values, (radius, radius, radius, radius))
    weights = kernel.view(size, size, height, width)
    message = torch.zeros_like(values)
    for dy in range(size):
        for dx in range(size):
            message.addcmul_(weights[dy, dx], padded[:, dy : dy + height, dx : dx + width])
    return message


def symmetric_normalised(kernel: Tensor, height: int, width: int, radius: int) -> Tensor:
    """D^{-1/2} k D^{-1/2} with D_i = Σ_j k_ij over the window (pydensecrf's NORMALIZE_SYMMETRIC)."""
    norm = kernel.sum(dim=0).clamp_min(1e-20).rsqrt()  # [H·W]
    return kernel * norm[None] * neighbours(norm.view(1, height, width), radius)[0]


def pairwise_kernel(image: Tensor, cfg: CRFConfig) -> Tensor:
    """k(f_i, f_j) for every pixel i and each neighbour j of its window, zero for off-image j [(2r+1)², H·W];
    the self term j = i is kept by `symmetric` and zero with `none`."""
    _, height, width = image.shape
    r = cfg.window
    dy, dx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    dist2 = (dy**2 + dx**2).reshape(-1, 1)
    colour2 = ((neighbours(image, r) - image.reshape(3, 1, -1)) ** 2).sum(dim=0)
    inside = neighbours(torch.ones(1, height, width), r)[0]
    appearance = torch.exp(-dist2 / (2 * cfg.theta_alpha**2) - colour2 / (2 * cfg.theta_beta**2)) * inside
    smoothness = torch.exp(-dist2 / (2 * cfg.theta_gamma**2)) * inside
    if cfg.normalise == "symmetric":
        appearance = symmetric_normalised(appearance, height, width, r)
        smoothness = symmetric_normalised(smoothness, height, width, r)
        return cfg.w_app * appearance + cfg.w_smooth * smoothness
    kernel = cfg.w_app * appearance + cfg.w_smooth * smoothness
    kernel[len(kernel) // 2] = 0  # no message from a pixel to itself
    return kernel


def dense_crf(image: Tensor, probs: Tensor, cfg: CRFConfig) -> Tensor:
    """Mean-field inference: Q ← softmax(−ψ_u + Σ_j k(f_i, f_j) Q_j) with Potts μ (Krähenbühl & Koltun, Alg. 1).

    image [3, H, W] float in 0–255, probs [C, H, W] (the unary is −log probs) -> refined probs [C, H, W].
    """
    kernel = pairwise_kernel(image.float(), cfg)
    logits = probs.float().clamp_min(1e-8).log()
    q = probs.float()
    for _ in range(cfg.iterations):
        message = window_message(q, kernel, cfg.window)
        # Potts: the cost of label l is the mass of the other labels, Σ_{l'≠l} m_l' = Σ m − m_l; the
        # label-independent Σ m cancels in the softmax.
        q = torch.softmax(logits + message, dim=0)
    return q
