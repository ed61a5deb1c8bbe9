"""Working frames: how an image reaches a stage's working size, and how label maps move between the
working frame and the image.

A frame is a size (h, w) and a resize mode. `squash` scales both sides (the aspect ratio is lost);
`crop` keeps the aspect ratio, scales the short side to cover the size and cuts the centre (the frame
shows only the centre of the image); `pad` keeps the aspect ratio, scales the long side to fit and pads
(the frame shows the whole image inside a border). Every store written in a frame records it (attrs
`input_size` and `resize`), so later stages and the evaluation map its label maps back exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from useg.data.transforms import resize_labels, resize_rgb
from useg.errors import check_choice

Resize = Literal["squash", "crop", "pad"]
RESIZES = ("squash", "crop", "pad")
Box = tuple[int, int, int, int]  # top, left, bottom, right


@dataclass(frozen=True)
class Frame:
    """A working size (h, w) and the resize mode that brings images to it."""

    size: tuple[int, int]
    mode: Resize = "squash"

    def __post_init__(self) -> None:
        check_choice("resize", self.mode, RESIZES)
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))

    @classmethod
    def of(cls, attrs: Mapping[str, Any]) -> Frame:
        """The frame a store (or checkpoint) records: `input_size` and `resize` (stores before `resize`: squash)."""
        return cls(tuple(attrs["input_size"]), attrs.get("resize", "squash"))  # type: ignore[arg-type]

    def attrs(self) -> dict[str, Any]:
        """The attrs that record this frame in a store."""
        return {"input_size": list(self.size), "resize": self.mode}

    def scaled_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The image's (height, width) after the aspect-keeping scale of `crop` / `pad`."""
        height, width = shape
        pick = max if self.mode == "crop" else min
        scale = pick(self.size[0] / height, self.size[1] / width)
        return max(1, math.ceil(height * scale - 1e-6)), max(1, math.ceil(width * scale - 1e-6))

    def placement(self, shape: tuple[int, int]) -> tuple[Box, Box]:
        """(box of the image the frame shows, in image pixels; box of the frame the image fills, in frame pixels)."""
        height, width = shape
        h, w = self.size
        if self.mode == "squash":
            return (0, 0, height, width), (0, 0, h, w)
        sh, sw = self.scaled_shape(shape)
        if self.mode == "pad":
            top, left = (h - sh) // 2, (w - sw) // 2
            return (0, 0, height, width), (top, left, top + sh, left + sw)
        top, left = (sh - h) // 2, (sw - w) // 2
        sy, sx = height / sh, width / sw
        seen = (round(top * sy), round(left * sx), round((top + h) * sy), round((left + w) * sx))
        return seen, (0, 0, h, w)

    def to_image(self, y: float, x: float, shape: tuple[int, int]) -> tuple[float, float]:
        """A point (y, x) of the frame in the pixel coordinates of an image of `shape` (edges, not centres)."""
        height, width = shape
        if self.mode == "squash":
            return y * height / self.size[0], x * width / self.size[1]
        sh, sw = self.scaled_shape(shape)
        sign = 1 if self.mode == "crop" else -1  # crop: the frame starts inside the scaled image; pad: before it
        dy, dx = sign * (abs(sh - self.size[0]) // 2), sign * (abs(sw - self.size[1]) // 2)
        return (y + dy) * height / sh, (x + dx) * width / sw

    def fit(self, array: np.ndarray, resize: Callable[[np.ndarray, tuple[int, int]], np.ndarray], fill: int) -> np.ndarray:
        """An image-sized array brought into the frame with `resize`; padding holds `fill`."""
        if self.mode == "squash":
            return resize(array, self.size)
        scaled = resize(array, self.scaled_shape(array.shape[:2]))
        h, w = self.size
        if self.mode == "crop":
            top, left = (scaled.shape[0] - h) // 2, (scaled.shape[1] - w) // 2
            return np.ascontiguousarray(scaled[top : top + h, left : left + w])
        bottom, right = h - scaled.shape[0], w - scaled.shape[1]
        borders = [(bottom // 2, bottom - bottom // 2), (right // 2, right - right // 2)] + [(0, 0)] * (scaled.ndim - 2)
        return np.pad(scaled, borders, constant_values=fill)

    def fit_image(self, image: np.ndarray) -> np.ndarray:
        """An HxWx3 image in the frame (area filter when shrinking, bilinear when growing; zero padding)."""
        return self.fit(image, resize_rgb, 0)

    def fit_labels(self, labels: np.ndarray, fill: int) -> np.ndarray:
        """An image-sized label map in the frame (nearest); padding is `fill`."""
        return self.fit(labels, resize_labels, fill)

    def unfit_labels(self, labels: np.ndarray, shape: tuple[int, int], fill: int) -> np.ndarray:
        """A label map of the frame back at the image's `shape` (nearest); what the frame does not show is `fill`."""
        (t, l, b, r), (ft, fl, fb, fr) = self.placement(shape)
        seen = resize_labels(np.ascontiguousarray(labels[ft:fb, fl:fr]), (b - t, r - l))
        if (t, l, b, r) == (0, 0, *shape):
            return seen
        full = np.full(shape, fill, labels.dtype)
        full[t:b, l:r] = seen
        return full

    def refit(self, labels: np.ndarray, source: Frame, shape: tuple[int, int], fill: int) -> np.ndarray:
        """A label map of another frame `source` (of an image of `shape`) in this frame, through the image."""
        if source.mode == self.mode == "squash":
            return resize_labels(labels, self.size)
        return self.fit_labels(source.unfit_labels(labels, shape, fill), fill)

    def overlap(self, truth: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the part of an image-sized map the frame shows, the part of the frame's label map that shows it)."""
        (t, l, b, r), (ft, fl, fb, fr) = self.placement(truth.shape)
        return truth[t:b, l:r], labels[ft:fb, fl:fr]

    def aligned(self, truth: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the part of an image-sized ground truth the frame shows, the frame's label map on it at its size):
        what the evaluation compares."""
        seen, shown = self.overlap(truth, labels)
        return seen, resize_labels(np.ascontiguousarray(shown), seen.shape)


@dataclass(frozen=True)
class InFrame:
    """A picklable label source of the input pipeline: `labels(i)` (image-sized, or in the frame `source` of an
    image of `shapes[i]`) brought into `target`, outside the image `fill`."""

    labels: Callable[[int], np.ndarray]
    target: Frame
    fill: int
    source: Frame | None = None
    shapes: tuple[tuple[int, int], ...] = ()

    def __call__(self, index: int) -> np.ndarray:
        labels = self.labels(index)
        if self.source is None:
            return self.target.fit_labels(labels, self.fill)
        return self.target.refit(labels, self.source, self.shapes[index], self.fill)


def fit_image(image: np.ndarray, size: tuple[int, int], mode: Resize = "squash") -> np.ndarray:
    """An HxWx3 image at `size` (h, w) by `mode` (Frame)."""
    return Frame(size, mode).fit_image(image)
