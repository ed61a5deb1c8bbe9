"""One fixed colour palette for every label map the project draws: id k is always the same colour."""

from __future__ import annotations

import colorsys

import numpy as np

# 20 well-separated colours first (ids 0-19), then golden-ratio hues for larger label sets.
_BASE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
]  # fmt: skip
IGNORE_COLOUR = (0, 0, 0)  # ignore / unmatched pixels


def _extended(count: int) -> list[tuple[int, int, int]]:
    colours = list(_BASE)
    for i in range(count - len(colours)):
        hue = (i * 0.618033988749895) % 1.0
        sat, val = (0.55, 0.95) if i % 2 else (0.85, 0.75)
        colours.append(tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, sat, val)))  # type: ignore[misc]
    return colours


PALETTE = np.array(_extended(1024), np.uint8)  # [1024, 3] RGB


def colour_of(label: int) -> tuple[int, int, int]:
    """RGB colour of one label id."""
    return tuple(int(c) for c in PALETTE[label % len(PALETTE)])  # type: ignore[return-value]


def colourize(labels: np.ndarray, ignore: int | None = 255) -> np.ndarray:
    """Label ids [H, W] -> RGB [H, W, 3]; `ignore` (and negative ids) drawn black."""
    ids = labels.astype(np.int64)
    out = PALETTE[np.mod(ids, len(PALETTE))]
    hidden = ids < 0 if ignore is None else (ids < 0) | (ids == ignore)
    out[hidden] = IGNORE_COLOUR
    return out
