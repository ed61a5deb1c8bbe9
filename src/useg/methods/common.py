"""Parts every method shares: working-size images, per-patch scores to label maps, predictions from feature
stores, RoI crops of maps."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from useg.data.frame import Frame
from useg.data.images import load_rgb
from useg.data.manifest import ManifestRow
from useg.stores.background import stream_to_store
from useg.stores.features import FeatureBatch, FeatureStore, feature_batches
from useg.stores.predictions import PredictionsWriter


def load_images(rows: list[ManifestRow], frame: Frame) -> torch.Tensor:
    """Images in the working frame, [N, 3, H, W] floats in [0, 1]."""
    arrays = [frame.fit_image(load_rgb(row.path)) for row in rows]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def scores_to_labels(scores: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly upsample per-patch scores [B, K, h, w] to `size` and take the arg-max label."""
    up = F.interpolate(scores.float(), size=size, mode="bilinear", align_corners=False)
    return up.argmax(dim=1).cpu().numpy().astype(np.uint16)


def write_feature_predictions(
    writer: PredictionsWriter,
    stores: list[FeatureStore],
    scores: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    desc: str,
    device: torch.device | str = "cpu",
) -> None:
    """Label maps in the writer's frame of every image of `stores` from the per-patch `scores` [B, K, h, w] of its float32 patch
    tokens [B, h, w, D] on `device`; each batch written in the background (useg.stores.background) while the next is scored."""

    def label(start: int, batch: FeatureBatch) -> dict[str, np.ndarray]:
        patches = torch.from_numpy(batch.patches.astype(np.float32)).to(device)
        return {"labels": scores_to_labels(scores(patches), writer.frame.size)}

    stream_to_store(tqdm(feature_batches(stores, batch_size), desc=desc, unit="batch"), label, writer.write)


def roi_crop(
    maps: torch.Tensor,
    boxes: torch.Tensor,
    size: tuple[int, int],
    spatial_scale: float = 1.0,
    image_of_box: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop-and-resize `maps` [B, C, H, W] to `size` inside boxes [n, 4] (x0, y0, x1, y1) -> [n, C, *size].

    Box i is taken from image `image_of_box[i]` (default: box i from image i).
    RoI-Align (torchvision.ops.roi_align, `aligned=True`, adaptive sampling): box coordinates are
    in pixels of the maps' reference frame and multiplied by `spatial_scale`, so the same box crops an
    image and its lower-resolution label / response maps consistently.
    """
    from torchvision.ops import roi_align

    if image_of_box is None:
        image_of_box = torch.arange(len(boxes))
    rois = torch.cat([image_of_box.to(maps)[:, None], boxes.to(maps)], 1)
    return roi_align(maps, rois, output_size=size, spatial_scale=spatial_scale, sampling_ratio=-1, aligned=True)
