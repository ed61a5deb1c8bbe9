"""Data-parallel training inside one job: the processes `torchrun --standalone --nproc_per_node N`
starts, one per GPU (gloo on the CPU, nccl on CUDA), with DistributedDataParallel.

The configured batch is the global batch: every process takes its share of each step's batch
(useg.data.pipeline.EpochBatches with rank and world), gradients are averaged by DDP, and the
statistics a trainer takes over the whole batch (means, extrema, random draws) go through the
collectives here so that N processes compute the step of one. Without torchrun's environment
every function is the identity of a single process.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from useg.errors import ConfigError
from useg.world import World, world_from_env


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """True on the process that writes checkpoints, logs and stores (rank 0, or the only one)."""
    return not active() or dist.get_rank() == 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def start(device: torch.device) -> tuple[World, torch.device]:
    """Join torchrun's process group when there is one (nccl on CUDA, gloo on the CPU); the device of
    this process: GPU `LOCAL_RANK` on CUDA, else `device`."""
    world = world_from_env()
    if world.size == 1:
        return world, device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def finish() -> None:
    """Wait for every process, then leave the process group (nothing to do for one process)."""
    if active():
        dist.barrier()
        dist.destroy_process_group()


def without_gpus(section: dict[str, Any]) -> dict[str, Any]:
    """A training section without its `gpus` key: how many GPUs share the global batch is execution,
    not the result, so it stays out of the stage's config and hash (a run resumes on any number)."""
    return {key: value for key, value in section.items() if key != "gpus"}


def check_global_batch(batch_size: int, key: str) -> None:
    """The global batch must split evenly over the processes."""
    n = world_size()
    if batch_size % n:
        raise ConfigError(f"{key} ({batch_size}) must be a multiple of the {n} GPUs the job trains on; change {key} or the gpus key")


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` for the training forward: DDP across processes, itself for one. On CUDA its batch norms
    become SyncBatchNorm in place (statistics of the global batch; torch has no CPU SyncBatchNorm, so
    gloo processes normalise their own shares)."""
    if not active():
        return model
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # a module that is no batch norm itself is converted in place
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


class EachInput(nn.Module):
    """`model` applied to each of several inputs in one forward: DDP expects one forward per backward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        return [self.model(x) for x in inputs]


def global_mean(value: Tensor | float) -> float:
    """The mean of a scalar over the processes (the global batch's loss for logs and the LossGuard)."""
    tensor = torch.as_tensor(float(value.detach() if isinstance(value, Tensor) else value), dtype=torch.float64)
    if active():
        tensor = _on_backend(tensor)
        dist.all_reduce(tensor)
        tensor /= world_size()
    return float(tensor)


def global_sum(x: Tensor) -> Tensor:
    """The sum of `x` over the processes, differentiable (its gradient is summed back to every process)."""
    if not active():
        return x
    with warnings.catch_warnings():  # deprecated in favour of a private module; still torch's public autograd all-reduce
        warnings.simplefilter("ignore", FutureWarning)
        return dist_nn.all_reduce(x)


def global_row_mean(x: Tensor) -> Tensor:
    """The mean of per-row values over every process's rows (which may differ in number), scaled so that
    DDP's average of the processes' gradients is the gradient of that global mean: sum * world / rows."""
    if not active():
        return x.mean()
    rows = global_sum(torch.tensor(float(len(x)), device=x.device))
    return x.sum() * world_size() / rows.clamp_min(1.0)


@torch.no_grad()
def global_extrema(x: Tensor) -> tuple[Tensor, Tensor]:
    """The minimum and maximum of `x` over every process's values."""
    low, high = x.amin(), x.amax()
    if active():
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return low, high


@torch.no_grad()
def gather_rows(x: Tensor) -> Tensor:
    """Every process's rows of `x` (equal shapes) concatenated in rank order: the global batch's rows."""
    if not active():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def local_rows(x: Tensor) -> Tensor:
    """This process's share of rows of a global-batch tensor (the inverse of gather_rows)."""
    if not active():
        return x
    share = len(x) // world_size()
    return x[dist.get_rank() * share : (dist.get_rank() + 1) * share]


def _on_backend(tensor: Tensor) -> Tensor:
    """`tensor` on the device the backend communicates from (the current GPU for nccl)."""
    return tensor.cuda() if dist.get_backend() == "nccl" else tensor
