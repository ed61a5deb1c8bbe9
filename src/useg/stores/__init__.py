"""Typed, self-describing Zarr stores: FeatureStore, LabelBank, MaskBank, Predictions.

The names below are imported on first use (PEP 562), so that `useg --help` and the CLI parser,
which import the stores' `commands` module, do not import zarr and numpy.
"""

from __future__ import annotations

from useg.lazy import lazy_attributes

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
__getattr__ = lazy_attributes(__name__, _MODULE_OF)
