"""Raster drawing with OpenCV/Numpy: overlays, legends, captioned grids, bar and line charts, PNG and JPEG output."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from useg.atomic import atomic_output
from useg.report.palette import colour_of, colourize

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (200, 200, 200)


def text_size(text: str, scale: float = 0.4) -> tuple[int, int]:
    """(width, height) in pixels of `text` at `scale`, descenders included."""
    (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
    return w, h + base


def put_text(canvas: np.ndarray, text: str, x: int, y: int, scale: float = 0.4, colour=BLACK) -> None:
    """Draw `text` with its top-left corner at (x, y)."""
    _, h = text_size(text, scale)
    cv2.putText(canvas, text, (x, y + h - 3), FONT, scale, colour, 1, cv2.LINE_AA)


def blend(image: np.ndarray, labels: np.ndarray, alpha: float = 0.55, ignore: int | None = 255) -> np.ndarray:
    """Label colours laid over an RGB image (labels resized, nearest, to the image); ignore pixels keep the image."""
    if labels.shape != image.shape[:2]:
        labels = cv2.resize(labels.astype(np.int32), image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    colours = colourize(labels, ignore).astype(np.float32)
    out = (1 - alpha) * image.astype(np.float32) + alpha * colours
    hidden = labels == ignore if ignore is not None else np.zeros(labels.shape, bool)
    out[hidden] = image[hidden]
    return out.round().astype(np.uint8)


def legend(entries: Sequence[tuple[str, tuple[int, int, int]]], width: int, title: str = "") -> np.ndarray:
    """A white strip `width` wide listing (name, RGB colour) swatches in as many columns as fit."""
    sw, pad = 12, 6
    cell = max([text_size(name)[0] for name, _ in entries] + [40]) + sw + 2 * pad
    per_row = max(1, (width - pad) // cell)
    rows = -(-len(entries) // per_row) + bool(title)
    canvas = np.full((pad + rows * 18 + pad, width, 3), 255, np.uint8)
    y = pad
    if title:
        put_text(canvas, title, pad, y)
        y += 18
    for i, (name, colour) in enumerate(entries):
        x, yy = pad + (i % per_row) * cell, y + (i // per_row) * 18
        cv2.rectangle(canvas, (x, yy + 2), (x + sw, yy + 2 + sw), tuple(int(c) for c in colour), -1)
        cv2.rectangle(canvas, (x, yy + 2), (x + sw, yy + 2 + sw), BLACK, 1)
        put_text(canvas, name, x + sw + 4, yy)
    return canvas


def wrap(text: str, width: int, scale: float = 0.4) -> list[str]:
    """`text` in lines no wider than `width` px where it can be: broken after '/', a part still too wide
    after '-' or '_'."""
    pieces = []
    for part in re.findall(r"[^/]+/?|/", text) or [""]:
        pieces += [part] if text_size(part, scale)[0] <= width else re.findall(r"[^_-]+[_-]?|[_-]", part)
    lines = [""]
    for piece in pieces:
        if lines[-1] and text_size(lines[-1] + piece, scale)[0] > width:
            lines.append(piece)
        else:
            lines[-1] += piece
    return lines


def grid(cells: list[list[np.ndarray]], column_titles: Sequence[str], row_titles: Sequence[str], pad: int = 4) -> np.ndarray:
    """Lay out equally sized RGB cells in rows, with a title above each column (wrapped to the column's
    width) and before each row."""
    h, w = cells[0][0].shape[:2]
    left = max([text_size(t)[0] for t in row_titles] + [0]) + 2 * pad
    titles = [wrap(t, w) for t in column_titles]
    top = 6 + 14 * max([len(t) for t in titles] + [1])
    height, width = top + len(cells) * (h + pad) + pad, left + len(column_titles) * (w + pad) + pad
    canvas = np.full((height, max(width, 1), 3), 255, np.uint8)
    for c, lines in enumerate(titles):
        for i, line in enumerate(lines):
            put_text(canvas, line, left + c * (w + pad), 4 + 14 * i)
    for r, row in enumerate(cells):
        y = top + r * (h + pad)
        put_text(canvas, row_titles[r], pad, y + h // 2 - 6)
        for c, cell in enumerate(row):
            canvas[y : y + h, left + c * (w + pad) : left + c * (w + pad) + w] = cell
    return canvas


def stack(parts: list[np.ndarray]) -> np.ndarray:
    """Stack RGB images vertically, padding narrower ones with white on the right."""
    width = max(p.shape[1] for p in parts)
    padded = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in parts]
    return np.concatenate(padded, axis=0)


def _frame(width: int, height: int, title: str) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A white canvas with a title; returns it and the plot box (x0, y0, x1, y1)."""
    canvas = np.full((height, width, 3), 255, np.uint8)
    put_text(canvas, title, 8, 6, 0.5)
    return canvas, (60, 32, width - 16, height - 40)


def bar_chart(names: Sequence[str], values: Sequence[float | None], title: str, width: int = 640) -> np.ndarray:
    """Horizontal bars in [0, 1] (None: a class absent from ground truth and prediction, drawn as n/a)."""
    row = 18
    label_w = max([text_size(n)[0] for n in names] + [40]) + 12
    height = 40 + row * len(names) + 24
    canvas = np.full((height, width, 3), 255, np.uint8)
    put_text(canvas, title, 8, 6, 0.5)
    x0, x1 = label_w, width - 60
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = int(x0 + tick * (x1 - x0))
        cv2.line(canvas, (x, 34), (x, height - 22), GREY, 1)
        put_text(canvas, f"{100 * tick:.0f} %", x - 12, height - 18, 0.35)
    for i, (name, value) in enumerate(zip(names, values)):
        y = 36 + i * row
        put_text(canvas, name, 6, y)
        if value is None:
            put_text(canvas, "n/a", x0 + 4, y, 0.35)
            continue
        x = int(x0 + max(0.0, min(1.0, value)) * (x1 - x0))
        cv2.rectangle(canvas, (x0, y + 2), (max(x, x0 + 1), y + row - 4), colour_of(i), -1)
        put_text(canvas, f"{100 * value:.1f}", x + 4, y, 0.35)
    return canvas


def line_chart(
    series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, width: int = 640, height: int = 360
) -> np.ndarray:
    """Line plot of named (x, y) series with axes, min/max ticks and a legend."""
    canvas, (x0, y0, x1, y1) = _frame(width, height, title)
    xs = np.concatenate([np.asarray(x, float) for x, _ in series.values()])
    ys = np.concatenate([np.asarray(y, float) for _, y in series.values()])
    finite = ys[np.isfinite(ys)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    xlo, xhi = float(xs.min()), float(xs.max()) if xs.max() > xs.min() else float(xs.min()) + 1.0
    cv2.rectangle(canvas, (x0, y0), (x1, y1), BLACK, 1)
    for frac in (0.0, 0.5, 1.0):
        y = int(y1 - frac * (y1 - y0))
        cv2.line(canvas, (x0, y), (x1, y), GREY, 1)
        put_text(canvas, f"{lo + frac * (hi - lo):.3g}", 4, y - 6, 0.35)
    put_text(canvas, f"{xlo:g}", x0, y1 + 4, 0.35)
    put_text(canvas, f"{xhi:g}", x1 - 20, y1 + 4, 0.35)
    put_text(canvas, xlabel, (x0 + x1) // 2 - 20, y1 + 18, 0.4)

    def point(x: float, y: float) -> tuple[int, int]:
        return int(x0 + (x - xlo) / (xhi - xlo) * (x1 - x0)), int(y1 - (y - lo) / (hi - lo) * (y1 - y0))

    entries = []
    for i, (name, (x, y)) in enumerate(series.items()):
        colour = colour_of(i)
        pts = np.array([point(a, b) for a, b in zip(x, y) if np.isfinite(b)], np.int32)
        if len(pts):
            cv2.polylines(canvas, [pts[:, None]], False, colour, 2, cv2.LINE_AA)
        entries.append((name, colour))
    return stack([canvas, legend(entries, width)])


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB array as a PNG (drawings: charts, label maps), atomically."""
    return _save(path, image, format="PNG")


def save_jpeg(path: str | Path, image: np.ndarray, quality: int = 85) -> Path:
    """Write an RGB array as a JPEG (photographs: overlays on images), atomically."""
    return _save(path, image, format="JPEG", quality=quality, optimize=True)


def _save(path: str | Path, image: np.ndarray, **options) -> Path:
    path = Path(path)
    with atomic_output(path) as tmp:
        Image.fromarray(image).save(tmp, **options)
    return path
