"""Package attributes imported on first use (PEP 562), so that commands which never need a heavy library
(`useg --help`, evaluation, reports) start without importing it."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_attributes(package: str, module_of: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that returns `name` from the module `module_of[name]` names."""

    def __getattr__(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module_of[name]), name)

    return __getattr__
