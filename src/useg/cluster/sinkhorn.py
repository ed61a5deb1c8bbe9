"""Entropy-regularised optimal transport by Sinkhorn-Knopp, batched and in the log domain."""

from __future__ import annotations

import torch
from torch import Tensor

from useg.train.distributed import global_extrema


def sinkhorn(
    cost: Tensor, r: Tensor, c: Tensor, lam: float = 20.0, iters: int = 100, tol: float = 1e-5
) -> Tensor:
    """Q* = argmin_{Q in U(r, c)} <Q, T> - H(Q)/lam for a batch of costs [B, N, K] (CrOC eq. 11-12).

    r [B, N] and c [B, K] are the row and column marginals (each sums to the same mass). Iterates
    until the column marginals of every problem, on every training process, are within `tol` (checked
    every 10 iterations) or `iters` is reached; the last update matches the rows exactly.
    """
    log_k = -lam * cost.float()
    log_r, log_c = r.float().clamp_min(1e-30).log(), c.float().clamp_min(1e-30).log()
    f = torch.zeros_like(log_r)
    g = torch.zeros_like(log_c)
    for step in range(iters):
        g = log_c - torch.logsumexp(log_k + f[..., :, None], dim=1)
        f = log_r - torch.logsumexp(log_k + g[..., None, :], dim=2)
        if step % 10 == 9:
            cols = torch.exp(log_k + f[..., :, None] + g[..., None, :]).sum(dim=1)
            if global_extrema((cols - c.float()).abs())[1] < tol:
                break
    return torch.exp(log_k + f[..., :, None] + g[..., None, :]).to(cost.dtype)
