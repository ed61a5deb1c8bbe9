"""Whether this machine has a GPU, without importing torch (the workflow asks while building its DAG)."""

from __future__ import annotations

from pathlib import Path

NVIDIA_CONTROL_DEVICE = Path("/dev/nvidiactl")  # the NVIDIA driver creates it with the first GPU


def has_nvidia_gpu() -> bool:
    """True when the NVIDIA driver exposes a device on this machine."""
    return NVIDIA_CONTROL_DEVICE.exists()
