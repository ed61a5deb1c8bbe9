"""Cross-view online clustering (CrOC Sec. 3.3): join, locate by Sinkhorn + merging, split, prune.

Everything is batched over a leading axis (images x heads); no Python loop runs over tokens. The
loop over merge steps runs K_start - 1 times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from useg.cluster.sinkhorn import sinkhorn

POS_SCALE = math.sqrt(2.0)  # largest distance between two positions in the unit square


@dataclass(frozen=True)
class ClusterConfig:
    """Hyper-parameters of the clustering (CrOC defaults: K_start 12, lambda_pos 4, lambda 20)."""

    k_start: int = 12
    lambda_pos: float = 4.0
    lam: float = 20.0
    sinkhorn_iters: int = 200


@dataclass
class Clustering:
    """Result for a batch: assignments [B, 2N, K_start] (zero beyond the chosen K), kept clusters [B, K_start]."""

    assign: Tensor
    valid: Tensor
    k: Tensor  # chosen number of clusters per batch element, before pruning
    costs: Tensor  # d_c per step, [B, K_start - 1] for K = K_start .. 2


def sample_seeds(r: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Y: K_start one-hot columns at tokens drawn without replacement in proportion to r (CrOC eq. 8)."""
    picks = torch.multinomial(r.float().cpu(), k, replacement=False, generator=generator).to(r.device)
    return F.one_hot(picks, r.shape[1]).transpose(1, 2).to(r.dtype)


def positional_cost(coords: Tensor, centres: Tensor) -> Tensor:
    """T_pos = ||e_i - e_j||_2 / S with S = sqrt(2) for positions in [0, 1]^2, so T_pos in [0, 1] (CrOC eq. 17)."""
    return torch.cdist(coords, centres) / POS_SCALE


def semantic_cost(tokens: Tensor, centroids: Tensor) -> Tensor:
    """T_sem = -Z C^T on L2-normalised tokens and centroids (CrOC eq. 9)."""
    return -tokens @ centroids.transpose(1, 2)


def centroid_marginal(seeds: Tensor, r: Tensor) -> Tensor:
    """c = softmax(Y^T r) (CrOC eq. 10)."""
    return torch.softmax(torch.einsum("bnk,bn->bk", seeds, r), dim=-1)


def transport_cost(assign: Tensor, cost: Tensor) -> Tensor:
    """d_c = <Q*, T_sem> per batch element (CrOC eq. 13)."""
    return (assign * cost).sum(dim=(1, 2))


def most_similar_pair(centroids: Tensor) -> tuple[Tensor, Tensor]:
    """Indices (i*, j*), i* < j*, of the two centroids with the highest cosine similarity."""
    unit = F.normalize(centroids, dim=-1)
    sim = unit @ unit.transpose(1, 2)
    k = sim.shape[-1]
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=sim.device), diagonal=1)
    flat = sim.masked_fill(~upper, -math.inf).flatten(1).argmax(dim=1)
    return flat // k, flat % k


def merge(tensors: list[Tensor], i: Tensor, j: Tensor, axes: list[int]) -> list[Tensor]:
    """Average slice j into slice i along each tensor's cluster axis, then drop slice j (CrOC eq. 14)."""
    out = []
    for x, axis in zip(tensors, axes):
        x = x.movedim(axis, 1)
        batch = torch.arange(len(x), device=x.device)
        merged = x.clone()
        merged[batch, i] = 0.5 * (x[batch, i] + x[batch, j])
        keep = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        keep[batch, j] = False
        merged = merged[keep].reshape(len(x), x.shape[1] - 1, *x.shape[2:])
        out.append(merged.movedim(1, axis))
    return out


def prune(assign: Tensor, valid: Tensor, num_first: int) -> Tensor:
    """Keep clusters that win at least one token (hard assignment) in each view (CrOC eq. 15-16)."""
    scores = assign.masked_fill(~valid[:, None, :], -math.inf)
    hard = F.one_hot(scores.argmax(dim=-1), assign.shape[-1]).bool()
    in_first = hard[:, :num_first].any(dim=1)
    in_second = hard[:, num_first:].any(dim=1)
    return valid & in_first & in_second


@torch.no_grad()
def cross_view_clustering(
    tokens: Tensor, r: Tensor, coords: Tensor, cfg: ClusterConfig, generator: torch.Generator | None = None
) -> Clustering:
    """Cluster the joint tokens of two views (first half view 1, second half view 2).

    tokens [B, 2N, d], r [B, 2N] (sums to one), coords [B, 2N, 2] in the original frame. Merges
    from K_start down to 2 centroids, keeps the step with the smallest d_c per element, normalises
    the assignments row-wise and prunes clusters missing from either view.
    """
    batch, total, _ = tokens.shape
    z = F.normalize(tokens.float(), dim=-1)
    r = r.float() / r.float().sum(dim=1, keepdim=True)
    seeds = sample_seeds(r, cfg.k_start, generator)
    centroids = seeds.transpose(1, 2) @ z
    centres = seeds.transpose(1, 2) @ coords
    steps, costs = [], []
    while True:
        sem = semantic_cost(z, F.normalize(centroids, dim=-1))
        cost = sem + cfg.lambda_pos * positional_cost(coords, centres)
        q = sinkhorn(cost, r, centroid_marginal(seeds, r), cfg.lam, cfg.sinkhorn_iters)
        costs.append(transport_cost(q, sem))
        steps.append(F.pad(q, (0, cfg.k_start - q.shape[-1])))
        if q.shape[-1] <= 2:
            break
        centroids = q.transpose(1, 2) @ z / q.sum(dim=1)[..., None].clamp_min(1e-12)
        i, j = most_similar_pair(centroids)
        seeds, centroids, centres = merge([seeds, centroids, centres], i, j, [2, 1, 1])
    costs_t = torch.stack(costs, dim=1)
    best = costs_t.argmin(dim=1)
    assign = torch.stack(steps, dim=1)[torch.arange(batch, device=z.device), best]
    k = cfg.k_start - best
    valid = torch.arange(cfg.k_start, device=z.device)[None] < k[:, None]
    assign = assign / assign.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return Clustering(assign, prune(assign, valid, total // 2), k, costs_t)


def multi_head_clustering(
    head_tokens: Tensor, r: Tensor, coords: Tensor, cfg: ClusterConfig, generator: torch.Generator | None = None
) -> Clustering:
    """Cluster each head's tokens independently and concatenate along the centroid axis (CrOC eq. 21).

    head_tokens [B, H, 2N, d_h], r [B, H, 2N], coords [B, 2N, 2] -> assignments [B, 2N, H * K_start].
    """
    batch, heads, total, _ = head_tokens.shape
    result = cross_view_clustering(
        head_tokens.reshape(batch * heads, total, -1),
        r.reshape(batch * heads, total),
        coords[:, None].expand(batch, heads, total, 2).reshape(batch * heads, total, 2),
        cfg,
        generator,
    )
    assign = result.assign.reshape(batch, heads, total, cfg.k_start).permute(0, 2, 1, 3).reshape(batch, total, -1)
    return Clustering(
        assign=assign,
        valid=result.valid.reshape(batch, heads * cfg.k_start),
        k=result.k.reshape(batch, heads),
        costs=result.costs.reshape(batch, heads, -1),
    )
