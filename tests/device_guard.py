"""A stand-in accelerator on the CPU: tensors on device `cpu:0` versus host tensors, and an error
wherever an operation mixes the two, the way CUDA refuses it.

Host tensors are those made by a factory (`torch.tensor`, `zeros`, `full`, `from_numpy`, ...)
without `device=cpu:0`, moved by `.cpu()` / `.to("cpu")`, or computed from host tensors only.
Everything else (parameters, tensors moved with `.to(cpu:0)`, results of device tensors) sits on
the device, and a device tensor reports `cpu:0` as its device, so `device=x.device` stays on it.
As on CUDA, 0-d host tensors may join device operations and indexing accepts host indices.
Modules built and never moved are not caught (their parameters count as device tensors).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

DEVICE = torch.device("cpu", 0)
HOST_MARK = "_on_host"
FACTORIES = {
    torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.full, torch.empty, torch.arange, torch.linspace,
    torch.logspace, torch.eye, torch.rand, torch.randn, torch.randint, torch.randperm,
    torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.rand_like, torch.randn_like,
    torch.randint_like,
}  # fmt: skip
LIKE = {torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.rand_like, torch.randn_like,
        torch.randint_like}  # fmt: skip
NEW = {torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_full, torch.Tensor.new_empty,
       torch.Tensor.new_tensor}  # fmt: skip
UNCHECKED = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.copy_, torch.Tensor.to}
MOVES = {"_has_compatible_shallow_copy_type", "__set__"}  # nn.Module.to / .cpu swapping a parameter's data


class MixedDevices(RuntimeError):
    """An operation took a host tensor beside a device tensor."""


def on_host(t: torch.Tensor) -> bool:
    return bool(getattr(t, HOST_MARK, False))


def mark(out: Any, host: bool) -> Any:
    """Mark every tensor of `out` as a host (or device) tensor."""

    def one(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            try:
                setattr(x, HOST_MARK, host)
            except (AttributeError, RuntimeError):  # tensors without a __dict__
                pass
        return x

    return tree_map(one, out)


def target_host(args: tuple, kwargs: dict) -> bool | None:
    """Where `.to(...)` sends a tensor: True (host), False (device), None (stays: dtype only)."""
    for a in (*args[1:], kwargs.get("device"), kwargs.get("other")):
        if isinstance(a, torch.Tensor):
            return on_host(a)
        if isinstance(a, (str, torch.device)):
            return torch.device(a) != DEVICE
    return None


class DeviceGuard(TorchFunctionMode):
    """Runs the wrapped code on the CPU and raises MixedDevices where a real accelerator would fail."""

    def __enter__(self) -> DeviceGuard:
        self.from_numpy = torch.from_numpy  # not dispatched to modes: wrapped while the guard is on
        torch.from_numpy = lambda array: mark(self.from_numpy(array), True)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        torch.from_numpy = self.from_numpy
        super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - the TorchFunctionMode protocol
        kwargs = kwargs or {}
        if func == torch.Tensor.device.__get__:
            return torch.device("cpu") if on_host(args[0]) else DEVICE
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if func not in UNCHECKED and getattr(func, "__name__", "") not in MOVES:
            host = [t for t in tensors if on_host(t) and t.ndim > 0]
            if host and not all(on_host(t) for t in tensors):
                shapes = ", ".join(str(tuple(t.shape)) for t in host)
                raise MixedDevices(f"{getattr(func, '__name__', func)} mixes host tensors {shapes} with device tensors")
        result = func(*args, **kwargs)
        return self.place(func, args, kwargs, tensors, result)

    def place(self, func, args: tuple, kwargs: dict, tensors: list[torch.Tensor], result: Any) -> Any:  # noqa: ANN001
        """Mark the result: where a factory or a move put it, else where its inputs live."""
        if func in FACTORIES - LIKE or (func in NEW and "device" in kwargs):
            return mark(result, torch.device(kwargs.get("device") or "cpu") != DEVICE)
        if func in LIKE and "device" in kwargs:
            return mark(result, torch.device(kwargs["device"]) != DEVICE)
        if func is torch.Tensor.to:
            host = target_host(args, kwargs)
            if host is None or host == on_host(args[0]):
                return mark(result, on_host(args[0]))
            return mark(result.view_as(result) if result is args[0] else result, host)  # a new object for the move
        if func is torch.Tensor.cpu:
            return mark(result.view_as(result) if result is args[0] else result, True)
        if not tensors:
            return result
        if func in (torch.Tensor.numpy, torch.Tensor.tolist, torch.Tensor.item):
            return result
        return mark(result, all(on_host(t) for t in tensors))
