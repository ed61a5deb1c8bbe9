"""Mixed precision for every trainer: `amp: auto | bf16 | fp16 | off`.

`auto` is bf16 on a CUDA device that supports it, else fp16 with a GradScaler there, and off on
the CPU. Losses are computed under autocast and are never scaled themselves (only their backward
pass is), so the NaN guard sees the true loss before the step.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from useg.errors import check_choice

AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass
class Precision:
    """Autocast dtype (None: full precision) on a device type, and the fp16 gradient scaler."""

    dtype: torch.dtype | None
    device_type: str
    scaler: torch.amp.GradScaler | None = None

    def autocast(self) -> AbstractContextManager:
        """The forward pass's context: autocast to `dtype`, or nothing when off."""
        return torch.autocast(self.device_type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def step(self, optimiser: torch.optim.Optimizer, loss: torch.Tensor, before_step: Callable[[], None] | None = None) -> None:
        """Backward (scaled under fp16), gradients unscaled, `before_step` (clipping, freezing), optimiser step."""
        optimiser.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(optimiser)
        if before_step is not None:
            before_step()
        if self.scaler is None:
            optimiser.step()
        else:
            self.scaler.step(optimiser)
            self.scaler.update()


FULL_PRECISION = Precision(None, "cpu")  # no autocast, no scaler: plain backward and step on any device


def resolve_precision(mode: str, device: torch.device | str) -> Precision:
    """The precision of `amp: mode` on `device` (see the module docstring)."""
    check_choice("amp", mode, AMP_MODES)
    device = torch.device(device)
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return Precision(None, device.type)
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mode == "bf16":
        return Precision(torch.bfloat16, device.type)
    return Precision(torch.float16, device.type, torch.amp.GradScaler(device.type))
