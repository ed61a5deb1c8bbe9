"""Predictions: per-image label maps at the working resolution of the method.

Layout of `predictions.zarr`::

    index   int64  [N]        manifest row of each image
    ids     str    [N]
    labels  uint16 [N, H, W]  predicted cluster / class id per pixel

attrs: kind="Predictions", num_labels (K), method, supervised (labels are class ids from a
model trained with ground truth, e.g. the linear probe), resize (the frame's mode, useg.data.frame),
provenance. Evaluation maps each label map back to its ground truth through the frame (nearest).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from useg.data.frame import Frame
from useg.stores.base import create_array, open_store, string_array, write_store

KIND = "Predictions"


class PredictionsWriter:
    """Streams label maps into a new Predictions store, atomically."""

    def __init__(
        self,
        path: str | Path,
        index: np.ndarray,
        ids: list[str],
        frame: Frame,
        num_labels: int,
        method: str,
        prov: dict[str, Any],
        supervised: bool = False,
    ) -> None:
        self.path, self.index, self.ids, self.frame = Path(path), np.asarray(index, np.int64), ids, frame
        self.num_labels, self.method, self.prov, self.supervised = num_labels, method, prov, supervised
        self._stack = ExitStack()

    def __enter__(self) -> PredictionsWriter:
        n = len(self.index)
        group = self._stack.enter_context(
            write_store(
                self.path, KIND, self.prov, num_labels=self.num_labels, method=self.method, supervised=self.supervised,
                resize=self.frame.mode,
            )
        )
        create_array(group, "index", (n,), "int64", max(n, 1))[:] = self.index
        string_array(group, "ids", self.ids)
        self.labels = create_array(group, "labels", (n, *self.frame.size), "uint16", 32)
        return self

    def write(self, start: int, labels: np.ndarray) -> None:
        """Write label maps for rows [start, start + len(labels))."""
        self.labels[start : start + len(labels)] = labels.astype(np.uint16)

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)


class Predictions:
    """Read access to a Predictions store."""

    def __init__(self, path: str | Path) -> None:
        self.group = open_store(path, KIND)
        self.num_labels: int = self.group.attrs["num_labels"]
        self.method: str = self.group.attrs["method"]
        self.supervised: bool = bool(self.group.attrs.get("supervised", False))
        self.index: np.ndarray = self.group["index"][:]
        self.ids: list[str] = [str(s) for s in self.group["ids"][:]]
        self.frame = Frame(self.group["labels"].shape[1:], self.group.attrs.get("resize", "squash"))

    def __len__(self) -> int:
        return len(self.index)

    def batches(self, batch_size: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (manifest rows, label maps) in batches."""
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            yield self.index[start:stop], self.group["labels"][start:stop]
