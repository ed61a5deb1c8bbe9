"""Typed, self-describing Zarr stores: FeatureStore, LabelBank, MaskBank, Predictions."""

from useg.stores.base import open_store, provenance, read_attrs, write_store
from useg.stores.features import FeatureStore, FeatureWriter
from useg.stores.predictions import Predictions, PredictionsWriter

__all__ = [
    "FeatureStore",
    "FeatureWriter",
    "Predictions",
    "PredictionsWriter",
    "open_store",
    "provenance",
    "read_attrs",
    "write_store",
]
