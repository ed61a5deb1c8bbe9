"""Decoding images and label maps: every image becomes 8-bit RGB, every mask a 2-D id map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
IGNORE_INDEX = 255


class UnreadableImage(Exception):
    """The file cannot be decoded as an image."""


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode (grayscale, 16-bit, palette, RGBA, CMYK) to HxWx3 uint8."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8))
    return np.asarray(img.convert("RGB"))


def _upright(img: Image.Image) -> Image.Image:
    """The image as it is displayed: its EXIF orientation (a camera's rotation tag) applied."""
    return ImageOps.exif_transpose(img) or img


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 RGB array, upright by its EXIF orientation; alpha is
    dropped, gray is replicated."""
    try:
        with Image.open(path) as img:
            img.load()
            return _to_rgb(_upright(img))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage(f"{path}: {exc}") from exc


def load_rgb_all(paths: list[str], threads: int = 1, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Decode many images (RGB uint8) on `threads` threads, in order; resized to `size` (h, w) when given."""
    from concurrent.futures import ThreadPoolExecutor

    from useg.data.transforms import resize_rgb

    def load(path: str) -> np.ndarray:
        image = load_rgb(path)
        return image if size is None else resize_rgb(image, size)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return list(pool.map(load, paths))


def load_label_map(path: str | Path) -> np.ndarray:
    """Decode a single-channel PNG of ids (palette PNGs give their indices) to a 2-D array, upright
    by its EXIF orientation as the image is."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "P", "I", "I;16", "1"):
                raise UnreadableImage(f"{path}: label maps must be single-channel, got mode {img.mode}")
            return np.asarray(_upright(img)).astype(np.int64)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage(f"{path}: {exc}") from exc


def save_label_map(path: str | Path, labels: np.ndarray) -> None:
    """Write a 2-D id map as an 8-bit (or 16-bit when ids exceed 255) PNG."""
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    Image.fromarray(labels.astype(dtype)).save(path)
