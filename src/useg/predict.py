"""`useg predict`: a trained model applied to a folder of images -> PNG label maps and overlays.

Every method with a model registers it in PREDICTORS: a loader "module:function" taking (model path,
backbone or None, device) and returning a module that maps normalised images [B, 3, H, W] to scores
[B, K, h, w], where the run writes that model under <results>/<dataset>, the working frame its images
are brought into, and whether it runs on the configured ViT backbone. Each model records the method
that made it (a checkpoint's `method`, a store's `method` attr): another method's model is refused.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from useg.errors import ConfigError, DataError, StoreError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from useg.data.frame import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Predictor:
    """A method's model: its loader ("module:function"), its path in a run, formatted with the config (or, as
    "module:function", the function that returns it from the config), the function ("module:function") giving
    its working frame from the config, and whether it runs on the configured backbone."""

    loader: str
    model: str
    frame: str = "useg.predict:backbone_frame"
    backbone: bool = True

    def path(self, config: dict[str, Any]) -> str:
        """The model's run-relative path under `config`."""
        if ":" not in self.model:
            return self.model.format_map(config)
        return function_of(self.model)(config)

    def working_frame(self, config: dict[str, Any]) -> Frame:
        """The frame the model's images are brought into under `config`."""
        return function_of(self.frame)(config)


def function_of(spec: str) -> Callable[..., Any]:
    """The function a "module:function" string names."""
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


def backbone_frame(config: dict[str, Any]) -> Frame:
    """The configured backbone's frame: `backbone.input_size` and `backbone.resize`."""
    from useg.backbones import BackboneConfig

    return BackboneConfig.from_dict(config["backbone"]).frame


# method -> its model. One line per method.
PREDICTORS = {
    "kmeans": Predictor("useg.methods.kmeans.stages:load_predictor", "kmeans/centroids.zarr"),
    "transfgu": Predictor("useg.methods.transfgu.segmenter:load_predictor", "useg.methods.transfgu:final_model"),
    "alignseg": Predictor("useg.methods.alignseg.infer:load_predictor", "alignseg/decoder.pt"),
    "maskdistill": Predictor("useg.methods.maskdistill.deeplab:load_predictor", "maskdistill/deeplab/model.pt"),
    "pass": Predictor("useg.methods.pass_.stages:load_predictor", "pass/model.pth", "useg.methods.pass_.stages:frame_of", backbone=False),
}

Loader = Callable[[Path, "torch.nn.Module | None", "torch.device"], "torch.nn.Module"]


def predictor(method: str) -> Predictor:
    """The registered model of `method`."""
    if method not in PREDICTORS:
        raise ConfigError(f"no model for method {method!r}: `useg predict` knows {', '.join(PREDICTORS)}")
    return PREDICTORS[method]


def predictor_loader(method: str) -> Loader:
    """The function that loads `method`'s model."""
    return function_of(predictor(method).loader)


def config_files(paths: list[Path]) -> list[Path]:
    """The run's config files: the given ones, else the embedded demo config.yaml."""
    from useg.config.layers import DEMO_CONFIG

    for path in paths:
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist: pass the config file(s) the model was trained with")
    return paths or [DEMO_CONFIG]


def merged_config(paths: list[Path]) -> dict[str, Any]:
    """The run's config, composed as the workflow composes it (`_base_` files over the schema's defaults,
    later files over earlier ones; docs/configuration.md)."""
    from useg.config.layers import resolve_config

    return resolve_config(config_files(paths)).config


def workflow_folder(config_file: Path) -> Path:
    """Where a config's relative paths start: the nearest folder at or above it holding a Snakefile (the
    workflow `snakemake --configfile` runs), else the config's own folder (a run's `-d` folder)."""
    folder = config_file.resolve().parent
    return next((f for f in (folder, *folder.parents) if (f / "Snakefile").is_file()), folder)


def run_folder(config: dict[str, Any], files: list[Path], results: Path | None) -> Path:
    """<results>/<dataset> of the run: --results, else the config's results_dir from its workflow folder."""
    root = results if results is not None else workflow_folder(config_files(files)[-1]) / config["results_dir"]
    return root / config["dataset"]["name"]


def model_path(method: str, config: dict[str, Any], run: Path, model: Path | None) -> Path:
    """--model, else the run's model of `method`; it must exist."""
    path = model or run / predictor(method).path(config)
    if not path.exists():
        hint = "pass --model, or --results for a run whose results lie elsewhere" if model is None else "check --model"
        raise ConfigError(f"the {method} model {path} does not exist: run the pipeline with method {method} first, or {hint}")
    return path


def recorded_method(path: Path) -> str | None:
    """The method a model records: a store's `method` attr (kmeans centroids), a checkpoint's `method` key."""
    if path.is_dir():
        import zarr

        try:
            return zarr.open_group(str(path), mode="r").attrs.get("method")
        except Exception as exc:  # not a Zarr store
            raise StoreError(f"{path} is not a model: neither a Zarr store nor a checkpoint file ({exc})") from exc
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # not a torch checkpoint
        raise StoreError(f"cannot read the model file {path}: {exc}") from exc
    return state.get("method") if isinstance(state, dict) else None


def check_method(path: Path, method: str) -> None:
    """Refuse a model another method made (or one that records no method), naming both."""
    found = recorded_method(path)
    if found is None:
        raise ConfigError(f"{path} records no method (not a useg model, or written by an older useg): rerun its stage")
    if found != method:
        raise ConfigError(f"{path} is a model of {found}, not of {method}: pass --method {found}, or a {method} model")


def backbone_weights(config: dict[str, Any], run: Path, weights: Path | None) -> Path | None:
    """The checkpoint a `pretrain` backbone loads: --weights, else the run's croc/checkpoint.pth."""
    if config["backbone"].get("weights") != "pretrain":
        return weights
    path = weights or run / "croc" / "checkpoint.pth"
    if not path.exists():
        raise ConfigError(f"backbone.weights is 'pretrain' but {path} does not exist: run the pipeline first or pass --weights")
    return path


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    from useg.data.images import IMAGE_EXTENSIONS

    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def readable(files: list[Path], on_corrupt: str) -> list[Path]:
    """The files that decode; unreadable ones are an error listing all of them, or skipped with a warning."""
    from useg.data.images import UnreadableImage, load_rgb

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


def predict_folder(
    model: torch.nn.Module,
    files: list[Path],
    out: Path,
    frame: Frame,
    device: torch.device,
    batch_size: int = 8,
    threads: int = 1,
) -> int:
    """Label maps (at each image's own size, mapped back from the working `frame`) to out/labels/<stem>.png, overlays
    to out/overlays/<stem>.png; the images stream through the input pipeline a batch at a time, decoded in
    `threads - 1` workers."""
    import torch
    from tqdm import tqdm

    from useg.data.images import IGNORE_INDEX
    from useg.methods.common import scores_to_labels

    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    model = model.to(device).eval()
    num_labels = 0
    for indices, batch, images in tqdm(folder_batches(files, frame, batch_size, threads, device), desc="predict", unit="batch"):
        with torch.inference_mode():
            scores = model(batch.to(device, non_blocking=True))
        num_labels = scores.shape[1]
        for index, image, labels in zip(indices, images, scores_to_labels(scores, frame.size)):
            write_outputs(out, files[index].stem, image, frame.unfit_labels(labels, image.shape[:2], IGNORE_INDEX))
    log.info("predict: %d images, %d labels -> %s/labels, %s/overlays", len(files), num_labels, out, out)
    return len(files)


def folder_batches(files: list[Path], frame: Frame, batch_size: int, threads: int, device: torch.device):
    """(indices, normalised images in `frame` [B, 3, H, W], the original images) of `files` in order, batch
    by batch from the input pipeline (useg.data.pipeline): only a batch, times the prefetch depth, is in memory."""
    from useg.data.pipeline import EpochBatches, ImageDataset, make_loader

    dataset = ImageDataset([str(f) for f in files], partial(working_and_original, frame=frame), 0)
    batches = EpochBatches(len(files), batch_size, 0, shuffle=False, drop_last=False)
    return make_loader(dataset, batches, stack_with_originals, threads, device)


def working_and_original(image: np.ndarray, rng: np.random.Generator | None, frame: Frame) -> tuple[torch.Tensor, np.ndarray]:
    """The sample of `useg predict`: the image in the working frame, normalised, and the image itself."""
    from useg.data.transforms import normalise

    return normalise(frame.fit_image(image)), image


def stack_with_originals(items: list[tuple[int, tuple[torch.Tensor, np.ndarray]]]) -> tuple[list[int], torch.Tensor, list[np.ndarray]]:
    """Collate (index, (working image, original)) items into indices, a stacked batch and the originals."""
    import torch

    return [i for i, _ in items], torch.stack([x for _, (x, _) in items]), [image for _, (_, image) in items]


def write_outputs(out: Path, stem: str, image: np.ndarray, labels: np.ndarray) -> None:
    """The label map at the image's own size (pixels a `crop` frame does not show: IGNORE_INDEX), and the image
    beside its overlay with a legend."""
    import numpy as np

    from useg.data.images import IGNORE_INDEX, save_label_map
    from useg.report.draw import blend, legend, save_png, stack
    from useg.report.palette import colour_of

    save_label_map(out / "labels" / f"{stem}.png", labels)
    shown = np.concatenate([image, np.full((image.shape[0], 4, 3), 255, np.uint8), blend(image, labels, ignore=IGNORE_INDEX)], 1)
    present = [(str(k), colour_of(k)) for k in np.unique(labels) if k != IGNORE_INDEX]
    save_png(out / "overlays" / f"{stem}.png", stack([shown, legend(present, shown.shape[1], "labels")]))
