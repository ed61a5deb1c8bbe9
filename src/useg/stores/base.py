"""Shared store mechanics: provenance attrs, atomic creation, opening with kind checks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from useg import __version__
from useg.atomic import atomic_output, unfinished_target
from useg.data.frame import Frame
from useg.errors import StoreError, check_choice

SCHEMA_VERSION = 1


def config_hash(config_slice: Any) -> str:
    """Stable short hash of a JSON-serialisable config slice."""
    canonical = json.dumps(config_slice, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def provenance(stage: str, config_slice: Any, seed: int | None) -> dict[str, Any]:
    """The attrs every artifact carries: stage, config slice and hash, code version, seed, time."""
    return {
        "stage": stage,
        "config": config_slice,
        "config_hash": config_hash(config_slice),
        "useg_version": __version__,
        "seed": seed,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@contextmanager
def write_store(path: str | Path, kind: str, prov: dict[str, Any], **attrs: Any) -> Iterator[zarr.Group]:
    """Create a Zarr group of `kind` at a temporary path; it appears at `path` only when complete."""
    with atomic_output(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        group.attrs.update({"kind": kind, "schema_version": SCHEMA_VERSION, "provenance": prov, **attrs})
        yield group


def open_store(path: str | Path, kind: str | None = None) -> zarr.Group:
    """Open a finished store read-only, checking that it exists and is of the expected kind."""
    path = Path(path)
    target = unfinished_target(path)
    if target is not None:
        raise StoreError(
            f"{path} is incomplete: the temporary copy of {target} left by a writer that was killed or failed. "
            f"Rerun the workflow to write {target}; it removes this leftover."
        )
    if not path.exists():
        raise StoreError(f"{path} does not exist: check the path, or run the stage that writes it")
    if not (path / "zarr.json").exists():
        raise StoreError(f"{path} is not a useg store (no zarr.json): was the stage that writes it run?")
    group = zarr.open_group(str(path), mode="r")
    found = group.attrs.get("kind")
    if kind is not None and found != kind:
        raise StoreError(f"{path} is a {found!r} store, expected {kind!r}")
    return group


class ShardedStore:
    """Read access to the shards of one store kind (of one or more splits), in the order given:
    per-image arrays concatenated over the shards, attrs of the first shard."""

    KIND = ""

    def __init__(self, paths: list[str | Path]) -> None:
        self.paths = [str(p) for p in paths]
        self.groups = [open_store(p, self.KIND) for p in paths]
        self.attrs = dict(self.groups[0].attrs)
        self.index: np.ndarray = np.concatenate([g["index"][:] for g in self.groups])
        self.ids: list[str] = [str(s) for g in self.groups for s in g["ids"][:]]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def frame(self) -> Frame:
        """The working frame the store's maps are in (attrs input_size and resize)."""
        return Frame.of(self.attrs)

    def read(self, name: str) -> np.ndarray:
        """One per-image array of every shard, concatenated."""
        return np.concatenate([g[name][:] for g in self.groups])


class ShardedRows:
    """Row i of one per-image array over the shards' concatenation, read on demand: picklable, each loader
    worker opens the shards itself, so a training stage reads one batch of labels at a time."""

    def __init__(self, paths: list[str], name: str) -> None:
        self.paths, self.name = list(paths), name
        self._arrays: list[zarr.Array] | None = None
        self._starts = np.zeros(0, np.int64)

    def __getstate__(self) -> dict[str, Any]:
        return {"paths": self.paths, "name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["paths"], state["name"])

    def __call__(self, position: int) -> np.ndarray:
        if self._arrays is None:
            self._arrays = [zarr.open_group(p, mode="r")[self.name] for p in self.paths]
            self._starts = np.cumsum([0] + [a.shape[0] for a in self._arrays])
        shard = int(np.searchsorted(self._starts, position, side="right")) - 1
        return self._arrays[shard][position - self._starts[shard]]


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The attrs of any store (provenance included)."""
    return dict(open_store(path).attrs)


CODECS = ("none", "lz4", "zstd")


def compressors(codec: str | None) -> Any:
    """The Zarr v3 compressors of a codec name: `none`, `lz4` (blosc, bit shuffle), `zstd` (level 1; levels 3 and 9
    measured no smaller on float16 tokens); None keeps Zarr's default (zstd level 0)."""
    if codec is None:
        return "auto"
    check_choice("codec", codec, CODECS)
    if codec == "none":
        return None
    if codec == "lz4":
        return (BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),)
    return (ZstdCodec(level=1),)


def create_array(
    group: zarr.Group, name: str, shape: tuple[int, ...], dtype: Any, rows_per_chunk: int, codec: str | None = None
) -> zarr.Array:
    """Create an array chunked along its first (image) axis only, compressed by `codec` (Zarr's default: None)."""
    chunks = (max(1, min(rows_per_chunk, shape[0] or 1)),) + tuple(shape[1:])
    return group.create_array(
        name, shape=shape, dtype=dtype, chunks=chunks, fill_value=0 if dtype is not str else "", compressors=compressors(codec)
    )


def string_array(group: zarr.Group, name: str, values: list[str]) -> None:
    """Store a list of strings (e.g. image ids) as a variable-length string array."""
    arr = group.create_array(name, shape=(len(values),), dtype=str, chunks=(max(1, len(values)),))
    if values:
        arr[:] = np.asarray(values, dtype=object)
