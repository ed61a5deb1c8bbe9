"""FeatureStore: per-shard backbone outputs (CLS, patch tokens, last-block CLS attention).

Layout of `shard-<i>.zarr`::

    index    int64   [N]             manifest row of each image
    ids      str     [N]             image ids
    cls      float32 [N, D]          CLS token after the final norm
    patches  float16 [N, h, w, D]    patch tokens after the final norm
    attn     float16 [N, H, h, w]    last-block CLS -> patch attention per head

attrs: kind="FeatureStore", grid=[h, w], embed_dim, num_heads, patch_size, input_size, resize (the frame,
useg.data.frame), provenance.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from useg.data.frame import Frame
from useg.errors import check_choice
from useg.stores.base import CODECS, create_array, open_store, string_array, write_store

KIND = "FeatureStore"
FEATURE_CODECS = ("auto", *CODECS)
# `features.codec: auto`: the codec of each array chosen by benchmarks/feature_codecs.py (docs/measurements.md)
AUTO_CODECS = {"cls": "none", "patches": "zstd", "attn": "lz4"}


def array_codec(codec: str, name: str) -> str:
    """The codec of array `name` under `features.codec` (auto: the measured choice)."""
    check_choice("features.codec", codec, FEATURE_CODECS)
    return AUTO_CODECS[name] if codec == "auto" else codec


class FeatureWriter:
    """Streams batches of backbone outputs into a new FeatureStore, atomically."""

    def __init__(
        self,
        path: str | Path,
        index: np.ndarray,
        ids: list[str],
        grid: tuple[int, int],
        embed_dim: int,
        num_heads: int,
        prov: dict[str, Any],
        rows_per_chunk: int = 16,
        codec: str = "auto",
        **attrs: Any,
    ) -> None:
        self.path, self.index, self.ids, self.grid = Path(path), np.asarray(index, np.int64), ids, grid
        self.embed_dim, self.num_heads, self.prov = embed_dim, num_heads, prov
        self.rows_per_chunk, self.attrs = rows_per_chunk, attrs
        self.codecs = {name: array_codec(codec, name) for name in AUTO_CODECS}
        self._stack = ExitStack()

    def __enter__(self) -> FeatureWriter:
        n, (h, w), d = len(self.index), self.grid, self.embed_dim
        group = self._stack.enter_context(
            write_store(self.path, KIND, self.prov, grid=[h, w], embed_dim=d, num_heads=self.num_heads, **self.attrs)
        )
        create_array(group, "index", (n,), "int64", max(n, 1))[:] = self.index
        string_array(group, "ids", self.ids)
        shapes = {"cls": ((n, d), "float32"), "patches": ((n, h, w, d), "float16"), "attn": ((n, self.num_heads, h, w), "float16")}
        self.cls, self.patches, self.attn = (
            create_array(group, name, shape, dtype, self.rows_per_chunk, self.codecs[name]) for name, (shape, dtype) in shapes.items()
        )
        return self

    def write(self, start: int, cls: np.ndarray, patches: np.ndarray, attn: np.ndarray) -> None:
        """Write rows [start, start + len(cls)) of every array."""
        stop = start + len(cls)
        self.cls[start:stop] = cls.astype(np.float32)
        self.patches[start:stop] = patches.astype(np.float16)
        self.attn[start:stop] = attn.astype(np.float16)

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)


@dataclass
class FeatureBatch:
    """A batch of rows read from a FeatureStore."""

    index: np.ndarray
    ids: list[str]
    cls: np.ndarray
    patches: np.ndarray
    attn: np.ndarray


class FeatureStore:
    """Read access to one FeatureStore shard."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.group: zarr.Group = open_store(self.path, KIND)
        self.attrs = dict(self.group.attrs)
        self.grid: tuple[int, int] = tuple(self.attrs["grid"])  # type: ignore[assignment]
        self.embed_dim: int = self.attrs["embed_dim"]
        self.index: np.ndarray = self.group["index"][:]
        self.ids: list[str] = [str(s) for s in self.group["ids"][:]]

    def __len__(self) -> int:
        return len(self.index)

    def batches(self, batch_size: int) -> Iterator[FeatureBatch]:
        """Stream the shard in batches of at most `batch_size` images."""
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            yield FeatureBatch(
                index=self.index[start:stop],
                ids=self.ids[start:stop],
                cls=self.group["cls"][start:stop],
                patches=self.group["patches"][start:stop],
                attn=self.group["attn"][start:stop],
            )


def feature_batches(stores: list[FeatureStore], batch_size: int) -> Iterator[tuple[int, FeatureBatch]]:
    """(first row over all shards, batch) of every shard in order."""
    start = 0
    for store in stores:
        for batch in store.batches(batch_size):
            yield start, batch
            start += len(batch.index)


def feature_frame(stores: list[FeatureStore]) -> Frame:
    """The working frame the shards' images were extracted in."""
    return Frame.of(stores[0].attrs)


def open_shards(paths: list[str | Path]) -> list[FeatureStore]:
    """Open every shard of a split, checking they share grid and width."""
    stores = [FeatureStore(p) for p in paths]
    shapes = {(s.grid, s.embed_dim) for s in stores if len(s)}
    if len(shapes) > 1:
        raise ValueError(f"feature shards disagree on grid/width: {sorted(shapes)}")
    return stores
