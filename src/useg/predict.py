"""`useg predict`: a trained end-to-end model applied to a folder of images -> PNG label maps and overlays.

Methods with an end-to-end model (backbone + trained head) register a loader in PREDICTORS as
"module:function"; the function takes (model path, backbone, device) and returns a module that maps
normalised images [B, 3, H, W] to per-patch scores [B, K, h, w].
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from useg.data.images import IMAGE_EXTENSIONS, UnreadableImage, load_rgb, save_label_map
from useg.data.transforms import normalise, resize_rgb
from useg.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# method -> "module:function" loading its end-to-end model. One line per method.
PREDICTORS = {
    "transfgu": "useg.methods.transfgu.segmenter:load_predictor",
    "alignseg": "useg.methods.alignseg.infer:load_predictor",
}

Loader = Callable[[Path, torch.nn.Module, torch.device], torch.nn.Module]


def predictor_loader(method: str) -> Loader:
    """The registered loader of a method's end-to-end model."""
    if method not in PREDICTORS:
        raise ConfigError(f"no end-to-end model for method {method!r}: `useg predict` knows {sorted(PREDICTORS)}")
    module, function = PREDICTORS[method].split(":")
    return getattr(importlib.import_module(module), function)


def merged_config(paths: list[Path]) -> dict[str, Any]:
    """The run's config, composed as the workflow composes it (`_base_` files over the schema's defaults,
    later files over earlier ones; docs/configuration.md)."""
    from useg.config.layers import resolve_config

    for path in paths:
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist: pass the config file(s) the model was trained with")
    return resolve_config(paths).config


def backbone_weights(config: dict[str, Any], weights: Path | None) -> Path | None:
    """The checkpoint a `pretrain` backbone loads: --weights, else the run's croc/checkpoint.pth."""
    if config["backbone"].get("weights") != "pretrain":
        return weights
    path = weights or Path(config.get("results_dir", "results")) / config["dataset"]["name"] / "croc" / "checkpoint.pth"
    if not path.exists():
        raise ConfigError(f"backbone.weights is 'pretrain' but {path} does not exist: run the pipeline first or pass --weights")
    return path


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def readable(files: list[Path], on_corrupt: str) -> list[Path]:
    """The files that decode; unreadable ones are an error listing all of them, or skipped with a warning."""
    bad: dict[Path, str] = {}
    for path in files:
        try:
            load_rgb(path)
        except UnreadableImage as exc:
            bad[path] = str(exc)
    if bad and on_corrupt == "error":
        listed = "\n  ".join(bad.values())
        raise DataError(f"{len(bad)} of {len(files)} images cannot be read:\n  {listed}\nremove them or pass --on-corrupt skip")
    for problem in bad.values():
        log.warning("skipping unreadable image %s", problem)
    return [p for p in files if p not in bad]


@torch.inference_mode()
def predict_folder(
    model: torch.nn.Module,
    files: list[Path],
    out: Path,
    input_size: tuple[int, int],
    device: torch.device,
    batch_size: int = 8,
) -> int:
    """Label maps (at each image's own size) to out/labels/<stem>.png, overlays to out/overlays/<stem>.png."""
    from useg.methods.common import scores_to_labels
    from useg.report.draw import blend, legend, save_png, stack
    from useg.report.palette import colour_of

    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    model = model.to(device).eval()
    num_labels = 0
    for start in tqdm(range(0, len(files), batch_size), desc="predict", unit="batch"):
        chunk = files[start : start + batch_size]
        images = [load_rgb(p) for p in chunk]
        batch = torch.stack([normalise(resize_rgb(im, input_size)) for im in images]).to(device)
        scores = model(batch)
        num_labels = scores.shape[1]
        for path, image, labels in zip(chunk, images, scores_to_labels(scores, input_size)):
            full = cv2.resize(labels.astype(np.int32), image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
            save_label_map(out / "labels" / f"{path.stem}.png", full)
            shown = np.concatenate([image, np.full((image.shape[0], 4, 3), 255, np.uint8), blend(image, full, ignore=None)], 1)
            present = [(str(k), colour_of(k)) for k in np.unique(full)]
            save_png(out / "overlays" / f"{path.stem}.png", stack([shown, legend(present, shown.shape[1], "labels")]))
    log.info("predict: %d images, %d labels -> %s/labels, %s/overlays", len(files), num_labels, out, out)
    return len(files)
