"""Cross-view online clustering (CrOC Sec. 3.3): join, locate by Sinkhorn + merging, split, prune.

Everything is batched over a leading axis (images x heads); no Python loop runs over tokens. The
loop over merge steps runs K_start - 1 times. Where the authors' release computes a rule differently
from the paper's text, ClusterConfig names both readings (`release` | `paper`); the release's is the
default (docs/methods/croc.md, "Release and paper variants").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from useg.cluster.sinkhorn import sinkhorn
from useg.errors import ConfigError, check_choice
from useg.train.distributed import gather_rows, global_extrema, local_rows

POS_SCALE = math.sqrt(2.0)  # largest distance between two positions in the unit square
Reading = Literal["release", "paper"]
READINGS = ("release", "paper")


@dataclass(frozen=True)
class ClusterConfig:
    """Hyper-parameters of the clustering (paper: K_start 12, lambda_pos 4, lambda 20) and its rules."""

    k_start: int = 12
    lambda_pos: float = 4.0
    lam: float = 20.0
    sinkhorn_iters: int = 200
    k_max: int | None = 4  # largest K the a-posteriori choice considers (release); None: every K (paper)
    token_marginal: Reading = "release"
    centroid_marginal: Reading = "release"
    marginal_temperature: float = 2.0
    cost_scaling: Reading = "release"
    merge: Reading = "release"
    prune: Reading = "release"
    transport_cost: Reading = "release"

    def __post_init__(self) -> None:
        for key in ("token_marginal", "centroid_marginal", "cost_scaling", "merge", "prune", "transport_cost"):
            check_choice(f"croc.{key}", getattr(self, key), READINGS)
        if self.k_start < 2 or (self.k_max is not None and self.k_max < 2):
            raise ConfigError(f"croc.k_start ({self.k_start}) and croc.k_max ({self.k_max}) must be at least 2")


@dataclass(frozen=True)
class TokenPrior:
    """Per-token inputs of the marginals over the joint views [B, 2N]: the cosine of each token with
    its view's CLS token of the same kind (release) and the CLS attention of each view (paper)."""

    cls_cosine: Tensor
    cls_attention: Tensor

    def flatten(self) -> TokenPrior:
        """[B, H, 2N] -> [B * H, 2N]."""
        return TokenPrior(self.cls_cosine.flatten(0, 1), self.cls_attention.flatten(0, 1))


@dataclass
class Clustering:
    """Result for a batch: assignments [B, 2N, K_start] (zero beyond the chosen K), their hard version
    M [B, 2N, K_start], kept clusters [B, K_start], chosen K [B] and d_c per step [B, K_start - 1]."""

    assign: Tensor
    hard: Tensor
    valid: Tensor
    k: Tensor  # chosen number of clusters per batch element, before pruning
    costs: Tensor  # d_c per step, for K = K_start .. 2


def token_marginal(prior: TokenPrior, cfg: ClusterConfig) -> Tensor:
    """r over the 2N joint tokens: softmax(cos(z_i, z_cls) / T) (release) or the CLS attention (CrOC eq. 10)."""
    if cfg.token_marginal == "release":
        return torch.softmax(prior.cls_cosine.float() / cfg.marginal_temperature, dim=1)
    attention = prior.cls_attention.float()
    return attention / attention.sum(dim=1, keepdim=True)


def column_normalised(plan: Tensor) -> Tensor:
    """Each column of [B, n, K] divided by its sum over the tokens (empty columns stay zero)."""
    return plan / plan.sum(dim=1, keepdim=True).clamp_min(1e-30)


def centroid_marginal(
    seeds: Tensor, plan: Tensor | None, r: Tensor, prior: TokenPrior, cfg: ClusterConfig
) -> Tensor:
    """c over the centroids (CrOC eq. 10): paper softmax(Y^T r); release softmax(Y^T cos / T) at
    K_start and, after a merge, the mean r of each cluster under the merged plan, normalised."""
    if cfg.centroid_marginal == "paper":
        return torch.softmax(torch.einsum("bnk,bn->bk", seeds, r), dim=-1)
    if plan is None:
        return torch.softmax(torch.einsum("bnk,bn->bk", seeds, prior.cls_cosine.float()) / cfg.marginal_temperature, dim=-1)
    mass = torch.einsum("bn,bnk->bk", r, column_normalised(plan))
    return mass / mass.sum(dim=-1, keepdim=True)


def sample_seeds(r: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Y: K_start one-hot columns at tokens drawn without replacement in proportion to r (CrOC eq. 8);
    drawn for the global batch, so that any number of training processes draws the same seeds."""
    picks = torch.multinomial(gather_rows(r).float().cpu(), k, replacement=False, generator=generator)
    picks = local_rows(picks).to(r.device)
    return F.one_hot(picks, r.shape[1]).transpose(1, 2).to(r.dtype)


def positional_cost(coords: Tensor, centres: Tensor, scaling: Reading = "paper") -> Tensor:
    """T_pos = ||e_i - e_j||_2 / S (CrOC eq. 17): S = sqrt(2) for positions in [0, 1]^2 (paper) or
    each problem's largest token-centroid distance (release); T_pos in [0, 1] either way."""
    distance = torch.cdist(coords, centres, compute_mode="donot_use_mm_for_euclid_dist")
    if scaling == "release":
        return distance / distance.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return distance / POS_SCALE


def semantic_cost(tokens: Tensor, centroids: Tensor) -> Tensor:
    """T_sem = -Z C^T on L2-normalised tokens and centroids (CrOC eq. 9)."""
    return -tokens @ centroids.transpose(1, 2)


def total_cost(semantic: Tensor, positional: Tensor, cfg: ClusterConfig) -> Tensor:
    """T_tot = T_sem + lambda_pos T_pos (CrOC eq. 18); release: min-max normalised over the whole (global) batch."""
    cost = semantic + cfg.lambda_pos * positional
    if cfg.cost_scaling == "paper":
        return cost
    low, high = global_extrema(cost)
    return (cost - low) / (high - low).clamp_min(1e-12)


def transport_cost(assign: Tensor, cost: Tensor) -> Tensor:
    """d_c = <Q*, T> per batch element (CrOC eq. 13: T = T_sem; release: the normalised T_tot)."""
    return (assign * cost).sum(dim=(1, 2))


def most_similar_pair(centroids: Tensor, rule: Reading = "paper") -> tuple[Tensor, Tensor]:
    """Indices (i*, j*), i* < j*, of the two most similar centroids: highest cosine (CrOC eq. 14) or
    highest dot product of the unnormalised means (release)."""
    unit = F.normalize(centroids, dim=-1) if rule == "paper" else centroids
    sim = unit @ unit.transpose(1, 2)
    k = sim.shape[-1]
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=sim.device), diagonal=1)
    flat = sim.masked_fill(~upper, -math.inf).flatten(1).argmax(dim=1)
    return flat // k, flat % k


def merge(tensors: list[Tensor], i: Tensor, j: Tensor, axes: list[int], weight: float = 0.5) -> list[Tensor]:
    """Slice i <- weight * (slice i + slice j) along each tensor's cluster axis, then drop slice j
    (CrOC eq. 14 averages, weight 0.5; the release sums, weight 1)."""
    out = []
    for x, axis in zip(tensors, axes):
        x = x.movedim(axis, 1)
        batch = torch.arange(len(x), device=x.device)
        merged = x.clone()
        merged[batch, i] = weight * (x[batch, i] + x[batch, j])
        keep = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        keep[batch, j] = False
        merged = merged[keep].reshape(len(x), x.shape[1] - 1, *x.shape[2:])
        out.append(merged.movedim(1, axis))
    return out


@dataclass
class MergeState:
    """What one merge step carries to the next: seeds Y, plan, centroids C and their positions E_cen."""

    seeds: Tensor
    plan: Tensor | None
    centroids: Tensor
    centres: Tensor


def merge_step(state: MergeState, plan: Tensor, z: Tensor, coords: Tensor, rule: Reading) -> MergeState:
    """Update C = Z^T Q* (column-normalised) and merge the most similar pair (CrOC eq. 14).

    paper: cosine pair; Y, C, Q and the positions averaged. release: dot-product pair; Y and the plan
    columns summed (a mass-weighted union), then C and the positions re-estimated from the merged plan.
    """
    centroids = column_normalised(plan).transpose(1, 2) @ z
    i, j = most_similar_pair(centroids, rule)
    if rule == "paper":
        seeds, centroids, centres, merged = merge([state.seeds, centroids, state.centres, plan], i, j, [2, 1, 1, 2])
        return MergeState(seeds, merged, centroids, centres)
    seeds, merged = merge([state.seeds, plan], i, j, [2, 2], weight=1.0)
    weights = column_normalised(merged).transpose(1, 2)
    return MergeState(seeds, merged, weights @ z, weights @ coords)


def choose_step(costs: Tensor, k_start: int, k_max: int | None) -> Tensor:
    """Index of the step with the smallest d_c per element (CrOC eq. 13), among K <= k_max if set."""
    k = k_start - torch.arange(costs.shape[1], device=costs.device)
    allowed = torch.ones_like(k, dtype=torch.bool) if k_max is None else k <= k_max
    return costs.masked_fill(~allowed, math.inf).argmin(dim=1)


def final_assignments(plan: Tensor, num_first: int, rule: Reading) -> Tensor:
    """The chosen plan normalised row-wise (paper, Sec. 3.3) or column-wise within each view (release)."""
    if rule == "paper":
        return plan / plan.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    return torch.cat([column_normalised(plan[:, :num_first]), column_normalised(plan[:, num_first:])], dim=1)


def hard_assignments(assign: Tensor, valid: Tensor) -> Tensor:
    """M: each token's arg-max over the clusters within the chosen K, one-hot [B, 2N, K] (CrOC eq. 15)."""
    scores = assign.masked_fill(~valid[:, None, :], -math.inf)
    return F.one_hot(scores.argmax(dim=-1), assign.shape[-1]).bool()


def prune(hard: Tensor, valid: Tensor, num_first: int) -> Tensor:
    """Keep the clusters that win at least one token in each view (CrOC eq. 16)."""
    return valid & hard[:, :num_first].any(dim=1) & hard[:, num_first:].any(dim=1)


@torch.no_grad()
def cross_view_clustering(
    tokens: Tensor, prior: TokenPrior, coords: Tensor, cfg: ClusterConfig, generator: torch.Generator | None = None
) -> Clustering:
    """Cluster the joint tokens of two views (first half view 1, second half view 2).

    tokens [B, 2N, d], prior [B, 2N], coords [B, 2N, 2] in the original frame. Merges from K_start
    down to 2 centroids, keeps the step with the smallest d_c per element, normalises the assignments
    and prunes clusters missing from either view.
    """
    batch, total, _ = tokens.shape
    z = F.normalize(tokens.float(), dim=-1)
    r = token_marginal(prior, cfg)
    seeds = sample_seeds(r, cfg.k_start, generator)
    state = MergeState(seeds, None, seeds.transpose(1, 2) @ z, seeds.transpose(1, 2) @ coords)
    steps, costs = [], []
    while True:
        semantic = semantic_cost(z, F.normalize(state.centroids, dim=-1))
        cost = total_cost(semantic, positional_cost(coords, state.centres, cfg.cost_scaling), cfg)
        q = sinkhorn(cost, r, centroid_marginal(state.seeds, state.plan, r, prior, cfg), cfg.lam, cfg.sinkhorn_iters)
        costs.append(transport_cost(q, semantic if cfg.transport_cost == "paper" else cost))
        steps.append(F.pad(q, (0, cfg.k_start - q.shape[-1])))
        if q.shape[-1] <= 2:
            break
        state = merge_step(state, q, z, coords, cfg.merge)
    costs_t = torch.stack(costs, dim=1)
    best = choose_step(costs_t, cfg.k_start, cfg.k_max)
    k = cfg.k_start - best
    valid = torch.arange(cfg.k_start, device=z.device)[None] < k[:, None]
    assign = final_assignments(torch.stack(steps, dim=1)[torch.arange(batch, device=z.device), best], total // 2, cfg.prune)
    hard = hard_assignments(assign, valid)
    return Clustering(assign, hard, prune(hard, valid, total // 2), k, costs_t)


def multi_head_clustering(
    head_tokens: Tensor, prior: TokenPrior, coords: Tensor, cfg: ClusterConfig, generator: torch.Generator | None = None
) -> Clustering:
    """Cluster each head's tokens independently and concatenate along the centroid axis (CrOC eq. 21).

    head_tokens [B, H, 2N, d_h], prior [B, H, 2N], coords [B, 2N, 2] -> assignments [B, 2N, H * K_start].
    """
    batch, heads, total, _ = head_tokens.shape
    result = cross_view_clustering(
        head_tokens.reshape(batch * heads, total, -1),
        prior.flatten(),
        coords[:, None].expand(batch, heads, total, 2).reshape(batch * heads, total, 2),
        cfg,
        generator,
    )

    def per_image(x: Tensor) -> Tensor:
        return x.reshape(batch, heads, total, cfg.k_start).permute(0, 2, 1, 3).reshape(batch, total, -1)

    return Clustering(
        assign=per_image(result.assign),
        hard=per_image(result.hard),
        valid=result.valid.reshape(batch, heads * cfg.k_start),
        k=result.k.reshape(batch, heads),
        costs=result.costs.reshape(batch, heads, -1),
    )
