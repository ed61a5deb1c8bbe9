"""CandidateBank: every object mask candidate an instance model predicts per image (ragged).

Layout of `shard-<i>.zarr`::

    index    int64   [N]             manifest row of each image
    ids      str     [N]
    offsets  int64   [N + 1]         candidates of image i are rows offsets[i] : offsets[i + 1]
    scores   float32 [K]             confidence of each candidate
    labels   int32   [K]             class (cluster id) of each candidate
    boxes    float32 [K, 4]          x0, y0, x1, y1 in working-size pixels
    masks    uint8   [K, H, W]       binary mask at the working size

attrs: kind="CandidateBank", input_size [H, W], resize (the frame), num_classes (clusters), provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from useg.data.frame import Frame
from useg.stores.base import ShardedStore, create_array, string_array, write_store

KIND = "CandidateBank"
FIELDS = ("scores", "labels", "boxes", "masks")


def write_candidates(
    path: str | Path,
    index: np.ndarray,
    ids: list[str],
    per_image: list[dict[str, np.ndarray]],
    frame: Frame,
    prov: dict[str, Any],
    **attrs: Any,
) -> None:
    """Write the candidates of every image (a dict of FIELDS per image) as one ragged store."""
    counts = [len(c["scores"]) for c in per_image]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    dtypes = {"scores": "float32", "labels": "int32", "boxes": "float32", "masks": "uint8"}
    shapes = {"scores": (), "labels": (), "boxes": (4,), "masks": frame.size}
    with write_store(path, KIND, prov, **frame.attrs(), **attrs) as group:
        create_array(group, "index", (len(index),), "int64", max(len(index), 1))[:] = np.asarray(index, np.int64)
        string_array(group, "ids", ids)
        create_array(group, "offsets", (len(offsets),), "int64", len(offsets))[:] = offsets
        for name in FIELDS:
            arr = create_array(group, name, (int(offsets[-1]), *shapes[name]), dtypes[name], 256)
            if offsets[-1]:
                arr[:] = np.concatenate([c[name].reshape(-1, *shapes[name]) for c in per_image]).astype(dtypes[name])


class CandidateBank(ShardedStore):
    """Read access to CandidateBank shards of one split, in shard order."""

    KIND = KIND

    def __init__(self, paths: list[str | Path]) -> None:
        super().__init__(paths)
        self.input_size: tuple[int, int] = tuple(self.attrs["input_size"])  # type: ignore[assignment]

    def images(self):
        """Yield (manifest row, candidates dict of FIELDS) for every image, in order; the masks are read per image."""
        for group in self.groups:
            offsets = group["offsets"][:]
            small = {name: group[name][:] for name in FIELDS if name != "masks"}
            for i, row in enumerate(group["index"][:]):
                lo, hi = offsets[i], offsets[i + 1]
                yield int(row), {**{name: values[lo:hi] for name, values in small.items()}, "masks": group["masks"][lo:hi]}
