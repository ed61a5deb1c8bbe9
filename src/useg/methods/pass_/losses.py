"""PASS losses: SwAV swapped prediction with Sinkhorn codes, image-to-pixel and pixel-to-pixel
alignment on the overlap of two views (LUSS Sec. 4), pixel-attention prior.

L_s(t, s): embeddings `s` predict the Sinkhorn codes of embeddings `t` (rows paired), so
L_I2P = L_s(v^_1, v~_2) + L_s(v^_2, v~_1) aligns pixel embeddings to the other view's image
embedding and L_P2P = L_s(v~_1, v~_2) + L_s(v~_2, v~_1) aligns overlapping pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from useg.data.augment import Crop
from useg.methods.common import roi_crop
from useg.train import distributed


@torch.no_grad()
def swav_codes(scores: Tensor, eps: float, iters: int) -> Tensor:
    """Codes Q [n, P] with equipartition over the prototypes, rows summing to 1 (SwAV's Sinkhorn-Knopp,
    its `distributed_sinkhorn`): under torchrun the problem is the global batch's, every sum all-reduced."""
    s = scores.detach().float()
    p = s.shape[1]
    n = distributed.global_sum(s.new_tensor(float(len(s))))
    top = s.amax() if len(s) else s.new_tensor(float("-inf"))
    if distributed.active():
        torch.distributed.all_reduce(top, op=torch.distributed.ReduceOp.MAX)
    q = torch.exp((s - top) / eps)  # the global maximum taken out: the same Q after normalising, no overflow
    q /= distributed.global_sum(q.sum())
    for _ in range(iters):
        q /= distributed.global_sum(q.sum(dim=0, keepdim=True)) * p  # every prototype 1 / P of the mass
        q /= q.sum(dim=1, keepdim=True) * n  # every row 1 / n
    return (q * n).to(scores.dtype)


class EmbeddingQueue:
    """SwAV's queue: the last `length` image embeddings of each view, scored with the current
    prototypes and put before the batch in the Sinkhorn problem so that small batches can still
    be equipartitioned; used once full. Under torchrun every process keeps the global queue (the
    gathered batches) and puts its 1 / world share of the rows into the global Sinkhorn problem, so
    the problem is one process's and rank 0's checkpoint resumes on any number of processes."""

    def __init__(self, length: int, views: int, dim: int, device: torch.device | str = "cpu") -> None:
        self.embeddings = torch.zeros(views, length, dim, device=device)
        self.filled = 0

    @property
    def full(self) -> bool:
        return self.filled == self.embeddings.shape[1] > 0

    @torch.no_grad()
    def codes(self, view: int, scores: Tensor, prototypes: torch.nn.Module, eps: float, iters: int) -> Tensor:
        """Codes of the batch rows of `scores` [n, P], equipartitioned jointly with the queue."""
        if not self.full:
            return swav_codes(scores, eps, iters)
        past = prototypes(self.embeddings[view][distributed.rank() :: distributed.world_size()])
        return swav_codes(torch.cat([past, scores.detach()]), eps, iters)[len(past) :]

    @torch.no_grad()
    def push(self, embeddings: list[Tensor]) -> None:
        """Put each view's batch embeddings [n, D] (every process's, in rank order) first, dropping the oldest."""
        length = self.embeddings.shape[1]
        embeddings = [distributed.gather_rows(e.detach()) for e in embeddings]
        for view, e in enumerate(embeddings):
            self.embeddings[view] = torch.cat([e, self.embeddings[view]])[:length]
        self.filled = min(length, self.filled + len(embeddings[0]))


def swapped_loss(codes: Tensor, scores: Tensor, temperature: float) -> Tensor:
    """-sum_k q_k log softmax(scores / T)_k, averaged over rows (of every process): the SwAV prediction term."""
    return distributed.global_row_mean(-(codes * F.log_softmax(scores / temperature, dim=1)).sum(dim=1))


def swapped_pair(codes: tuple[Tensor, Tensor], scores: tuple[Tensor, Tensor], temperature: float) -> Tensor:
    """(L_s(1 -> 2) + L_s(2 -> 1)) / 2: each view predicts the other's codes."""
    return swapped_multi(list(codes), list(scores), temperature)


def swapped_multi(codes: list[Tensor], scores: list[Tensor], temperature: float) -> Tensor:
    """SwAV's multi-crop swapped prediction: every view predicts the codes of each of the first
    len(codes) views but its own, averaged over the V - 1 predicting views and the coded views
    (SwAV, crops_for_assign 0 1)."""
    total = [
        torch.stack([swapped_loss(q, s, temperature) for v, s in enumerate(scores) if v != i]).mean() for i, q in enumerate(codes)
    ]
    return torch.stack(total).mean()


def overlap_box(a: Crop, b: Crop) -> tuple[float, float, float, float] | None:
    """The intersection (y0, x0, y1, x1) of two crop boxes in the original frame, or None."""
    y0, x0 = max(a.top, b.top), max(a.left, b.left)
    y1, x1 = min(a.top + a.height, b.top + b.height), min(a.left + a.width, b.left + b.width)
    return (y0, x0, y1, x1) if y1 > y0 and x1 > x0 else None


def box_in_view(box: tuple[float, float, float, float], crop: Crop, grid: tuple[int, int]) -> list[float]:
    """A box of the original frame in feature coordinates (x0, y0, x1, y1) of an unflipped view."""
    sy, sx = grid[0] / crop.height, grid[1] / crop.width
    y0, x0, y1, x1 = box
    return [(x0 - crop.left) * sx, (y0 - crop.top) * sy, (x1 - crop.left) * sx, (y1 - crop.top) * sy]


def unflip(z: Tensor, crops: list[Crop]) -> Tensor:
    """Features of flipped views mirrored back, so feature columns follow the original frame."""
    flips = torch.tensor([c.flip for c in crops], device=z.device)
    return torch.where(flips[:, None, None, None], z.flip(3), z)


def overlap_features(
    z1: Tensor, z2: Tensor, crops1: list[Crop], crops2: list[Crop], size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel features z~ of the overlap of both views, resampled on one size x size grid of the
    original frame: rows [n * size^2, L] paired between the views, and the image of every row."""
    boxes = [overlap_box(a, b) for a, b in zip(crops1, crops2)]
    keep = [i for i, box in enumerate(boxes) if box is not None]
    if not keep:
        empty = z1.new_zeros((0, z1.shape[1]))
        return empty, empty, torch.zeros(0, dtype=torch.long)
    grid = tuple(z1.shape[2:])
    index = torch.tensor(keep)
    rows = []
    for z, crops in ((z1, crops1), (z2, crops2)):
        view_boxes = torch.tensor([box_in_view(boxes[i], crops[i], grid) for i in keep], dtype=z.dtype)
        patches = roi_crop(unflip(z, crops), view_boxes, (size, size), image_of_box=index)
        rows.append(patches.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
    return rows[0], rows[1], index.repeat_interleave(size * size)
