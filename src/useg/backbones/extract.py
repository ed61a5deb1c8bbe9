"""The features stage: stream one manifest shard through the backbone into a FeatureStore."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from useg.backbones.vit import ViTBackbone, ViTOutput
from useg.data.manifest import ManifestRow
from useg.data.frame import Frame
from useg.data.pipeline import ordered_batches
from useg.errors import ConfigError, WeightsError
from useg.stores.background import Background, stream_to_store
from useg.stores.features import FeatureWriter

log = logging.getLogger(__name__)


def check_input_size(size: tuple[int, int], patch_size: int) -> None:
    """The working size must be a whole number of patches."""
    if size[0] % patch_size or size[1] % patch_size:
        raise ConfigError(f"backbone.input_size {list(size)} must be a multiple of the patch size {patch_size}")


def check_finite_features(arrays: list[np.ndarray], rows: list[tuple[int, ManifestRow]], name: str) -> None:
    """Refuse NaN or infinite backbone outputs, naming the backbone and the batch's images."""
    if not all(np.isfinite(a).all() for a in arrays):
        paths = ", ".join(row.path for _, row in rows[:3])
        raise WeightsError(
            f"backbone {name} produced NaN or infinite features for {paths}{' ...' if len(rows) > 3 else ''}: "
            "its weights hold extreme values. Check the file backbone.weights names."
        )


def device_outputs(out: ViTOutput) -> dict[str, torch.Tensor]:
    """The arrays of a FeatureStore batch, the float16 ones halved where they were computed (half the bytes to
    copy to the host and to hand to the writer; the same rounding as the store's own conversion)."""
    return {"cls": out.cls, "patches": out.patches.half(), "attn": out.attn.half()}


@torch.inference_mode()
def extract_features(
    backbone: ViTBackbone,
    rows: list[tuple[int, ManifestRow]],
    out_path: str | Path,
    frame: Frame,
    prov: dict[str, Any],
    device: torch.device,
    batch_size: int = 16,
    threads: int = 1,
    codec: str = "auto",
    background: Background | None = None,
    workers: int | None = None,
) -> None:
    """Write CLS, patch tokens and last-block attention of `rows` to a FeatureStore shard: images decoded in
    `workers` loader workers (default `stream_workers(threads, device)`), the forward here, the store written by a writer process
    or thread (`background`, useg.stores.background) or here (`none`)."""
    check_input_size(frame.size, backbone.patch_size)
    backbone = backbone.to(device).eval()
    grid = backbone.grid_for(*frame.size)
    index = np.array([i for i, _ in rows], np.int64)
    ids = [row.id for _, row in rows]
    attrs = {"patch_size": backbone.patch_size, "backbone": backbone.name, **frame.attrs()}

    def forward(start: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        bar.update(len(images))
        return device_outputs(backbone(images))

    def checked_write(start: int, cls: np.ndarray, patches: np.ndarray, attn: np.ndarray) -> None:
        """Check on the writer's thread (no device sync in the forward loop), then write."""
        check_finite_features([cls, patches, attn], rows[start : start + len(cls)], backbone.name)
        writer.write(start, cls, patches, attn)

    batches = ordered_batches([row.path for _, row in rows], frame, batch_size, threads, device, workers)
    with FeatureWriter(
        out_path, index, ids, grid, backbone.embed_dim, backbone.num_heads, prov, rows_per_chunk=batch_size, codec=codec, **attrs
    ) as writer, tqdm(total=len(rows), desc=f"features {Path(out_path).name}", unit="img") as bar:
        stream_to_store(batches, forward, checked_write, background)
    log.info("features: %d images, grid %dx%d, dim %d -> %s", len(rows), *grid, backbone.embed_dim, out_path)
