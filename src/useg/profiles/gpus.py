"""Whether this machine has a GPU and what a stage asks for, without importing torch (the workflow asks while
building its DAG)."""

from __future__ import annotations

from pathlib import Path

NVIDIA_CONTROL_DEVICE = Path("/dev/nvidiactl")  # the NVIDIA driver creates it with the first GPU


def has_nvidia_gpu() -> bool:
    """True when the NVIDIA driver exposes a device on this machine."""
    return NVIDIA_CONTROL_DEVICE.exists()


def gpu_resource(count: int, on_cluster: bool) -> int:
    """The `gpu` resource of a stage that trains on `count` GPUs: `count` on a cluster, where the Slurm
    plugin asks for --gpus and routes the job to a GPU partition, or on a machine with an NVIDIA
    device; else 0, as on a CPU-only machine profiles/default's `gpu` limit would otherwise run these
    jobs one at a time."""
    return count if on_cluster or has_nvidia_gpu() else 0
