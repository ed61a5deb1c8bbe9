"""The one input pipeline of every stage that reads images: a `torch.utils.data` Dataset over image
paths that decodes, resizes and samples views inside the loader's workers, and a DataLoader factory.

Deterministic for any number of workers and across resumes: an epoch's order is a permutation drawn
from (seed, epoch), batch b is positions [b * B, (b + 1) * B) of it (the last partial batch is
dropped), and every sample's augmentation draws from its own generator seeded by (seed, epoch,
index). Only a batch (times the prefetch depth) is ever in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from useg.data.frame import RESIZES, Frame, Resize, fit_image
from useg.data.images import load_rgb
from useg.data.transforms import normalise
from useg.errors import check_choice

# OpenCV's pthreads pool does not survive fork: a process that ran a parallel cv2 call (warpAffine,
# for one) and then forks its loader workers deadlocks them. The workers are the parallelism of every
# stage that decodes and augments, so OpenCV stays on one thread in every process that loads images.
cv2.setNumThreads(1)

SampleFn = Callable[..., Any]  # sample(image, rng=generator)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample's augmentation in one epoch."""
    return np.random.default_rng([seed, epoch, index])


class ImageDataset(Dataset):
    """Items (epoch, index) -> (index, sample(image, generator)): image `index` decoded (and fitted to
    `size` when given) with the sample function run on it, all inside the worker."""

    def __init__(
        self, paths: Sequence[str], sample: SampleFn, seed: int, size: tuple[int, int] | None = None, resize: Resize = "squash"
    ) -> None:
        check_choice("resize", resize, RESIZES)
        self.paths, self.sample, self.seed, self.size, self.resize = list(paths), sample, seed, size, resize

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> np.ndarray:
        """Image `index` as HxWx3 uint8, at the working size when one is set."""
        image = load_rgb(self.paths[index])
        return image if self.size is None else fit_image(image, self.size, self.resize)

    def __getitem__(self, item: tuple[int, int]) -> tuple[int, Any]:
        epoch, index = item
        return index, self.sample(self.image(index), rng=sample_rng(self.seed, epoch, index))


class LabelledDataset(ImageDataset):
    """Items (epoch, index) -> (index, sample(image, labels(index), generator)): an image with its label map
    (or a detection target), both read inside the worker (the trainers on pseudo-label banks)."""

    def __init__(
        self, paths: Sequence[str], labels: Callable[[int], Any], sample: SampleFn, seed: int,
        size: tuple[int, int] | None = None, resize: Resize = "squash",
    ) -> None:  # fmt: skip
        super().__init__(paths, sample, seed, size, resize)
        self.labels = labels

    def __getitem__(self, item: tuple[int, int]) -> tuple[int, Any]:
        epoch, index = item
        return index, self.sample(self.image(index), self.labels(index), rng=sample_rng(self.seed, epoch, index))


@dataclass
class EpochBatches(Sampler[list[tuple[int, int]]]):
    """Batches of (epoch, index) of one epoch, from batch `start` on; with `world` > 1 processes each
    takes its `rank`-th share of every global batch (the configured batch is the global batch)."""

    size: int
    batch_size: int
    seed: int
    epoch: int = 0
    start: int = 0
    shuffle: bool = True
    drop_last: bool = True
    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if self.batch_size % self.world:
            raise ValueError(f"the batch size {self.batch_size} must be a multiple of the {self.world} processes")

    def __len__(self) -> int:
        whole = self.size // self.batch_size if self.drop_last else -(-self.size // self.batch_size)
        return max(0, whole - self.start)

    def order(self) -> np.ndarray:
        """The epoch's order of the images: a permutation drawn from (seed, epoch), or 0..N-1."""
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.order()
        share = self.batch_size // self.world
        for b in range(self.start, self.start + len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(self.epoch, int(i)) for i in batch[self.rank * share : (self.rank + 1) * share]]


def loader_workers(threads: int) -> int:
    """Worker processes for a job with `threads` threads: one thread stays with the training process."""
    return max(0, int(threads) - 1)


def _one_thread(_: int) -> None:
    """Workers decode and augment on one thread each (the job's threads are the workers)."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def make_loader(
    dataset: ImageDataset,
    batches: EpochBatches,
    collate: Callable[[list[tuple[int, Any]]], Any],
    threads: int = 1,
    device: torch.device | str = "cpu",
) -> DataLoader:
    """A DataLoader over `batches` of `dataset` with `threads - 1` persistent workers, pinned memory on CUDA.
    Its own generator draws the workers' base seed, so the global torch RNG (dropout) is the same for any
    worker count (an iterator is made each epoch without workers, once with persistent ones)."""
    workers = loader_workers(threads)
    return DataLoader(
        dataset,
        generator=torch.Generator().manual_seed(batches.seed),
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.device(device).type == "cuda",
        worker_init_fn=_one_thread if workers else None,
    )


def epoch_cycle(loader: DataLoader, batches: EpochBatches, total: int) -> Iterator[Any]:
    """`total` batches of `loader` for trainers that count iterations: epoch 0, 1, ... in turn, each in its
    own order of (seed, epoch), the last one cut short."""
    served, epoch = 0, 0
    if not len(batches):
        raise ValueError(f"no whole batch of {batches.batch_size} in {batches.size} samples")
    while served < total:
        batches.epoch = epoch
        for batch in loader:
            if served == total:
                break
            served += 1
            yield batch
        epoch += 1


def normalised(image: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
    """The sample of stages without augmentation: the image normalised with ImageNet statistics [3, H, W]."""
    return normalise(image)


def unit_image(image: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
    """The sample of models that normalise inside (torchvision's detectors): HxWx3 uint8 -> [3, H, W] floats in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255


def stack_images(items: list[tuple[int, Any]]) -> tuple[np.ndarray, torch.Tensor]:
    """Collate (index, image tensor) items: the indices [B] and the stacked images [B, 3, H, W]."""
    return np.array([i for i, _ in items], np.int64), torch.stack([x for _, x in items])


def ordered_loader(
    paths: Sequence[str],
    size: tuple[int, int],
    batch_size: int,
    threads: int = 1,
    resize: Resize = "squash",
    device: torch.device | str = "cpu",
    sample: SampleFn = normalised,
) -> DataLoader:
    """Batches (indices, images [B, 3, H, W]) of every image in order, at the working size: normalised, or
    as `sample` makes them (`unit_image`)."""
    batches = EpochBatches(len(paths), batch_size, 0, shuffle=False, drop_last=False)
    return make_loader(ImageDataset(paths, sample, 0, size, resize), batches, stack_images, threads, device)


def sample_list(items: list[tuple[int, Any]]) -> tuple[int, list[Any]]:
    """Collate (index, sample) items of images at their own sizes: the first index and the samples, unstacked."""
    return int(items[0][0]), [x for _, x in items]


def ordered_samples(
    paths: Sequence[str], sample: SampleFn, batch_size: int, threads: int, device: torch.device, workers: int | None = None
) -> Iterator[tuple[int, list[Any]]]:
    """(first row, samples) of every batch in order, each image decoded at its own size and made into a sample
    by `sample` in `workers` worker processes (default `stream_workers`): the stages that work at a per-image size."""
    workers = stream_workers(threads, device) if workers is None else workers
    batches = EpochBatches(len(paths), batch_size, 0, shuffle=False, drop_last=False)
    yield from make_loader(ImageDataset(paths, sample, 0), batches, sample_list, workers + 1, device)


def stream_workers(threads: int, device: torch.device | str) -> int:
    """Loader workers of a stage that streams images through a model in order: on CUDA every thread but the
    one driving the device; on CPU none, since the forward itself runs on all of the job's threads and a
    worker would only take cores from it (docs/measurements.md, 2026-12-03)."""
    return loader_workers(threads) if torch.device(device).type == "cuda" else 0


def ordered_batches(
    paths: Sequence[str], frame: Frame, batch_size: int, threads: int, device: torch.device, workers: int | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, images in `frame` on `device`) of every batch in order, decoded in `workers` worker
    processes (default `stream_workers`); on CUDA from pinned memory, copied without blocking."""
    workers = stream_workers(threads, device) if workers is None else workers
    for indices, images in ordered_loader(paths, frame.size, batch_size, workers + 1, frame.mode, device=device):
        yield int(indices[0]), images.to(device, non_blocking=True)
