"""Typed, self-describing Zarr stores: FeatureStore, LabelBank, MaskBank, Predictions.

The names below are imported on first use (PEP 562), so that `useg --help` and the CLI parser,
which import the stores' `commands` module, do not import zarr and numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "open_store": "useg.stores.base",
    "provenance": "useg.stores.base",
    "read_attrs": "useg.stores.base",
    "write_store": "useg.stores.base",
    "FeatureStore": "useg.stores.features",
    "FeatureWriter": "useg.stores.features",
    "Predictions": "useg.stores.predictions",
    "PredictionsWriter": "useg.stores.predictions",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    """The store class or helper `name`, from the module that defines it."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'useg.stores' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
