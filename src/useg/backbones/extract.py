"""The features stage: stream one manifest shard through the backbone into a FeatureStore."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from useg.backbones.vit import ViTBackbone, ViTOutput
from useg.data.images import load_rgb
from useg.data.manifest import ManifestRow
from useg.data.transforms import normalise, resize_rgb
from useg.errors import ConfigError, WeightsError
from useg.stores.features import FeatureWriter

log = logging.getLogger(__name__)


def load_input(row: ManifestRow, size: tuple[int, int]) -> torch.Tensor:
    """Decode, resize to the working size and normalise one image."""
    return normalise(resize_rgb(load_rgb(row.path), size))


def input_batches(
    rows: list[ManifestRow], size: tuple[int, int], batch_size: int, workers: int
) -> Iterator[torch.Tensor]:
    """Decoded batches, prepared by a thread pool one batch ahead of the consumer."""
    chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = [pool.map(load_input, chunk, [size] * len(chunk)) for chunk in chunks[:2]]
        for next_chunk in chunks[2:]:
            current = pending.pop(0)
            pending.append(pool.map(load_input, next_chunk, [size] * len(next_chunk)))
            yield torch.stack(list(current))
        for current in pending:  # the last two batches (none for an empty shard)
            yield torch.stack(list(current))


def check_input_size(size: tuple[int, int], patch_size: int) -> None:
    """The working size must be a whole number of patches."""
    if size[0] % patch_size or size[1] % patch_size:
        raise ConfigError(f"backbone.input_size {list(size)} must be a multiple of the patch size {patch_size}")


def check_finite_features(out: ViTOutput, rows: list[tuple[int, ManifestRow]], name: str) -> None:
    """Refuse NaN or infinite backbone outputs, naming the backbone and the batch's images."""
    if not all(torch.isfinite(t).all() for t in (out.cls, out.patches, out.attn)):
        paths = ", ".join(row.path for _, row in rows[:3])
        raise WeightsError(
            f"backbone {name} produced NaN or infinite features for {paths}{' ...' if len(rows) > 3 else ''}: "
            "its weights hold extreme values. Check the file backbone.weights names."
        )


@torch.inference_mode()
def extract_features(
    backbone: ViTBackbone,
    rows: list[tuple[int, ManifestRow]],
    out_path: str | Path,
    input_size: tuple[int, int],
    prov: dict[str, Any],
    device: torch.device,
    batch_size: int = 16,
    workers: int = 1,
) -> None:
    """Write CLS, patch tokens and last-block attention of `rows` to a FeatureStore shard."""
    check_input_size(input_size, backbone.patch_size)
    backbone = backbone.to(device).eval()
    grid = backbone.grid_for(*input_size)
    index = np.array([i for i, _ in rows], np.int64)
    ids = [row.id for _, row in rows]
    attrs = {"patch_size": backbone.patch_size, "input_size": list(input_size), "backbone": backbone.name}
    with FeatureWriter(
        out_path, index, ids, grid, backbone.embed_dim, backbone.num_heads, prov, rows_per_chunk=batch_size, **attrs
    ) as writer, tqdm(total=len(rows), desc=f"features {Path(out_path).name}", unit="img") as bar:
        start = 0
        for images in input_batches([row for _, row in rows], input_size, batch_size, workers):
            out = backbone(images.to(device, non_blocking=True))
            check_finite_features(out, rows[start : start + len(images)], backbone.name)
            writer.write(start, out.cls.cpu().numpy(), out.patches.cpu().numpy(), out.attn.cpu().numpy())
            start += len(images)
            bar.update(len(images))
    log.info("features: %d images, grid %dx%d, dim %d -> %s", len(rows), *grid, backbone.embed_dim, out_path)
