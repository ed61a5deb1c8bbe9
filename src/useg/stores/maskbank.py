"""MaskBank: one object mask per image distilled from the last block's attention (MaskDistill §3.2).

Layout of `shard-<i>.zarr`::

    index    int64   [N]            manifest row of each image
    ids      str     [N]
    masks    uint8   [N, h, w]      object mask M_s at the patch grid (1 = object)
    boxes    int32   [N, 4]         box of the upsampled mask (x0, y0, x1, y1; working-size pixels, x1/y1 exclusive)
    source   int32   [N]            source patch s (row-major index in the grid)
    cls      float32 [N, D]         CLS token each mask is clustered by (its box crop's or its masked image's)

attrs: kind="MaskBank", grid [h, w], input_size [H, W], resize (the frame), patch_size, topk, background,
cluster_input, mask_short_side (null: mined in the frame; S: mined at each image's short side S and carried
into the frame's grid), provenance.
An empty mask has the box (0, 0, 0, 0).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from useg.stores.base import ShardedRows, ShardedStore, create_array, string_array, write_store

KIND = "MaskBank"


class MaskBankWriter:
    """Streams batches of object masks into a new MaskBank, atomically."""

    def __init__(
        self, path: str | Path, index: np.ndarray, ids: list[str], grid: tuple[int, int], embed_dim: int, prov: dict[str, Any], **attrs: Any
    ) -> None:
        self.path, self.index, self.ids, self.grid = Path(path), np.asarray(index, np.int64), ids, grid
        self.embed_dim, self.prov, self.attrs = embed_dim, prov, attrs
        self._stack = ExitStack()

    def __enter__(self) -> MaskBankWriter:
        n, (h, w) = len(self.index), self.grid
        group = self._stack.enter_context(write_store(self.path, KIND, self.prov, grid=[h, w], **self.attrs))
        create_array(group, "index", (n,), "int64", max(n, 1))[:] = self.index
        string_array(group, "ids", self.ids)
        self.arrays = {
            "masks": create_array(group, "masks", (n, h, w), "uint8", 256),
            "boxes": create_array(group, "boxes", (n, 4), "int32", max(n, 1)),
            "source": create_array(group, "source", (n,), "int32", max(n, 1)),
            "cls": create_array(group, "cls", (n, self.embed_dim), "float32", 1024),
        }
        return self

    def write(self, start: int, **batch: np.ndarray) -> None:
        """Write rows [start, start + batch size) of `masks`, `boxes`, `source` and `cls`."""
        for name, values in batch.items():
            self.arrays[name][start : start + len(values)] = values

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)


class MaskBank(ShardedStore):
    """Read access to MaskBank shards (of one or more splits), in the order given; `read` takes
    `masks`, `boxes`, `source` or `cls`."""

    KIND = KIND

    def __init__(self, paths: list[str | Path]) -> None:
        super().__init__(paths)
        self.grid: tuple[int, int] = tuple(self.attrs["grid"])  # type: ignore[assignment]
        self.input_size: tuple[int, int] = tuple(self.attrs["input_size"])  # type: ignore[assignment]

    def pixel_mask_chunks(self, rows: int = 64) -> Iterator[np.ndarray]:
        """Masks upsampled (nearest) from the patch grid to the working size, `rows` images at a time in bank
        order, [≤ rows, H, W] uint8: only the patch-grid masks are held whole, never the split's pixel masks."""
        grids = self.read("masks")
        for start in range(0, len(grids), rows):
            yield grid_to_pixels(grids[start : start + rows], self.grid, self.input_size)

    def pixel_masks(self) -> Iterator[np.ndarray]:
        """Every image's pixel mask [H, W] uint8 in bank order, upsampled chunk by chunk (pixel_mask_chunks)."""
        return (mask for chunk in self.pixel_mask_chunks() for mask in chunk)

    def nonempty(self, rows: int = 4096) -> np.ndarray:
        """Per-image flag of a non-empty object mask [N] bool, read `rows` masks at a time."""
        flags = [np.zeros(0, bool)]
        for group in self.groups:
            masks = group["masks"]
            flags += [masks[s : s + rows].reshape(-1, masks.shape[1] * masks.shape[2]).any(axis=1) for s in range(0, masks.shape[0], rows)]
        return np.concatenate(flags)


def grid_to_pixels(masks: np.ndarray, grid: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """Masks [..., h, w] at the patch grid upsampled (nearest) to the working size [..., H, W]."""
    (h, w), (height, width) = grid, input_size
    return masks.repeat(height // h, axis=-2).repeat(width // w, axis=-1)


class ObjectRows:
    """(pixel mask [H, W] uint8, box [4] int32) of one bank position, read on demand (ShardedRows):
    picklable, so each loader worker reads only the objects of its batch."""

    def __init__(self, bank: MaskBank) -> None:
        self.masks, self.boxes = ShardedRows(bank.paths, "masks"), ShardedRows(bank.paths, "boxes")
        self.grid, self.input_size = bank.grid, bank.input_size

    def __call__(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        return grid_to_pixels(self.masks(position), self.grid, self.input_size), self.boxes(position)
