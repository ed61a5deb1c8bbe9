"""Baseline `kmeans`: per-dataset k-means of patch tokens (the CrOC / STEGO clustering protocol).

Fit: k-means of (L2-normalised) patch tokens of the fit split, trained on a capped uniform
sample. Predict: every patch's score for every centroid, upsampled bilinearly to the working
size, arg-max -> label map. `useg predict --method kmeans` runs the same scoring on the backbone's
tokens of new images.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from useg.cluster.kmeans import fit_kmeans, l2_normalise, reservoir_sample
from useg.errors import StoreError
from useg.methods.common import write_feature_predictions
from useg.stores.base import open_store, write_store
from useg.stores.features import FeatureStore, feature_frame
from useg.stores.predictions import PredictionsWriter

log = logging.getLogger(__name__)

CENTROIDS_KIND = "Centroids"


def patch_rows(stores: list[FeatureStore], normalise: bool, batch_size: int = 64) -> Iterator[np.ndarray]:
    """Stream every patch token of the shards as float32 rows."""
    for store in stores:
        for batch in store.batches(batch_size):
            rows = batch.patches.reshape(-1, store.embed_dim).astype(np.float32)
            yield l2_normalise(rows) if normalise else rows


def fit_patch_kmeans(
    stores: list[FeatureStore], k: int, cfg: dict[str, Any], seed: int, out_path: str | Path, prov: dict[str, Any]
) -> np.ndarray:
    """Fit the centroids on a capped sample of patch tokens and save them as a Centroids store."""
    total = sum(len(s) * s.grid[0] * s.grid[1] for s in stores)
    sample = reservoir_sample(patch_rows(stores, cfg["normalize"]), total, cfg["max_train_points"], seed)
    log.info("k-means: K=%d on %d of %d patch tokens", k, len(sample), total)
    result = fit_kmeans(sample, k, niter=cfg["niter"], seed=seed, spherical=cfg["normalize"], nredo=cfg["nredo"], key="kmeans.k")
    attrs = {"method": "kmeans", "k": k, "normalize": cfg["normalize"], "inertia": result.inertia}
    with write_store(out_path, CENTROIDS_KIND, prov, **attrs) as g:
        g.create_array("centroids", data=result.centroids)
    return result.centroids


def read_centroids(path: str | Path) -> tuple[np.ndarray, bool]:
    """Centroids [K, D] and whether features are L2-normalised before scoring."""
    group = open_store(path, CENTROIDS_KIND)
    return group["centroids"][:], bool(group.attrs["normalize"])


def centroid_scores(patches: torch.Tensor, centroids: torch.Tensor, normalise: bool) -> torch.Tensor:
    """Score [B, K, h, w] of patch tokens [B, h, w, D] = 2 x.c - |c|^2, i.e. minus the squared distance up to a
    per-pixel constant."""
    feats = patches.float()
    if normalise:
        feats = torch.nn.functional.normalize(feats, dim=-1)
    scores = 2 * feats @ centroids.T - (centroids * centroids).sum(dim=1)
    return scores.permute(0, 3, 1, 2)


class CentroidPredictor(torch.nn.Module):
    """Backbone + centroids: normalised images [B, 3, H, W] -> centroid scores [B, K, h, w], as kmeans_predict."""

    def __init__(self, backbone: torch.nn.Module, centroids: np.ndarray, normalise: bool) -> None:
        super().__init__()
        self.backbone, self.normalise = backbone, normalise
        self.register_buffer("centroids", torch.from_numpy(centroids))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return centroid_scores(self.backbone(images).patches, self.centroids, self.normalise)


def load_predictor(path: Path, backbone: torch.nn.Module, device: torch.device) -> CentroidPredictor:
    """`useg predict` loader: the run's centroids on top of the run's backbone."""
    centroids, normalise = read_centroids(path)
    if centroids.shape[1] != backbone.embed_dim:
        raise StoreError(
            f"{path} holds {centroids.shape[1]}-d centroids but the configured backbone gives {backbone.embed_dim}-d "
            "patch tokens: pass the config file(s) the centroids were fitted with"
        )
    return CentroidPredictor(backbone, centroids, normalise).to(device).eval()


def predict_patch_kmeans(
    stores: list[FeatureStore],
    centroids_path: str | Path,
    out_path: str | Path,
    prov: dict[str, Any],
    batch_size: int = 32,
) -> None:
    """Label every image of the shards with its nearest centroid per pixel, in the shards' frame."""
    centroids, normalise = read_centroids(centroids_path)
    index = np.concatenate([s.index for s in stores])
    ids = [i for s in stores for i in s.ids]
    centres = torch.from_numpy(centroids)
    with PredictionsWriter(out_path, index, ids, feature_frame(stores), len(centroids), "kmeans", prov) as writer:
        write_feature_predictions(writer, stores, lambda patches: centroid_scores(patches, centres, normalise), batch_size, "kmeans predict")
    log.info("kmeans: predicted %d images -> %s", len(index), out_path)
