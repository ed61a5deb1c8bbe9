"""LabelBank: per-image pseudo-label response maps and their arg-max labels at the patch grid.

Layout of `shard-<i>.zarr`::

    index       int64   [N]              manifest row of each image
    ids         str     [N]
    maps        float32 [N, L, h, w]     response map of every label (L = K, or K + 1 with a background map);
                                         absent in banks written with `with_maps=False` (MaskDistill). Float32:
                                         TransFGU's release maps share A/max A and differ between concepts
                                         by less than float16's resolution near 1
    labels      uint16  [N, h, w]        arg-max label per patch
    foreground  uint8   [N, h, w]        foreground prior (binarised CLS attention) per patch

attrs: kind="LabelBank", num_labels (L), grid [h, w], input_size, resize, background_label (L - 1 or null),
concept_groups (per concept: 1 fg, 0 bg, -1 any), provenance. MaskDistill's banks hold pixel-level
labels (grid = the working size) and `foreground` = covered by a kept object mask.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from useg.stores.base import ShardedStore, create_array, string_array, write_store

KIND = "LabelBank"


class LabelBankWriter:
    """Streams batches of response maps into a new LabelBank, atomically."""

    def __init__(
        self,
        path: str | Path,
        index: np.ndarray,
        ids: list[str],
        num_labels: int,
        grid: tuple[int, int],
        prov: dict[str, Any],
        with_maps: bool = True,
        **attrs: Any,
    ) -> None:
        self.path, self.index, self.ids, self.with_maps = Path(path), np.asarray(index, np.int64), ids, with_maps
        self.num_labels, self.grid, self.prov, self.attrs = num_labels, grid, prov, attrs
        self._stack = ExitStack()

    def __enter__(self) -> LabelBankWriter:
        n, (h, w) = len(self.index), self.grid
        group = self._stack.enter_context(
            write_store(self.path, KIND, self.prov, num_labels=self.num_labels, grid=[h, w], **self.attrs)
        )
        create_array(group, "index", (n,), "int64", max(n, 1))[:] = self.index
        string_array(group, "ids", self.ids)
        if self.with_maps:
            self.maps = create_array(group, "maps", (n, self.num_labels, h, w), "float32", 64)
        self.labels = create_array(group, "labels", (n, h, w), "uint16", 64)
        self.foreground = create_array(group, "foreground", (n, h, w), "uint8", 64)
        return self

    def write(self, start: int, maps: np.ndarray | None, labels: np.ndarray, foreground: np.ndarray) -> None:
        """Write rows [start, start + len(labels)) (`maps` None when the bank has none)."""
        stop = start + len(labels)
        if self.with_maps:
            self.maps[start:stop] = maps.astype(np.float32)
        self.labels[start:stop] = labels.astype(np.uint16)
        self.foreground[start:stop] = foreground.astype(np.uint8)

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)


class LabelBank(ShardedStore):
    """Read access to LabelBank shards of one split, in shard order; `read` takes
    `maps`, `labels` or `foreground`."""

    KIND = KIND

    def __init__(self, paths: list[str | Path]) -> None:
        super().__init__(paths)
        self.num_labels: int = self.attrs["num_labels"]
        self.grid: tuple[int, int] = tuple(self.attrs["grid"])  # type: ignore[assignment]
