"""Linear probe (supervised backbone evaluation, CrOC Sec. 4.2): a 1x1 conv on frozen patch tokens.

Trained with ground-truth masks of the train split (logits upsampled bilinearly to the loss size,
cross-entropy, ignore pixels skipped), then applied to the evaluation split. Its predictions are
class ids, scored under the protocol `linear-probe` — a supervised protocol, unlike the clustering
ones. Two recipes share the code (`backbone_eval.probe`): the demo's (per-channel standardisation,
Adam, loss at the working size) and Leopart's, which CrOC follows (raw tokens, SGD with momentum and
a step decay, loss on 100 x 100 maps, a tenth of COCO's train split).

The features stream: the train split is read one FeatureStore chunk at a time through the shared
input pipeline (useg.data.pipeline), each epoch visiting the chunks in a seeded random order, and
regrouped into batches drawn at random from a pool of four batches' worth of images; the
evaluation split is predicted shard by shard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from useg.data.frame import Frame
from useg.data.labels import load_mask
from useg.data.manifest import ManifestRow
from useg.data.pipeline import EpochBatches, make_loader
from useg.errors import DataError
from useg.methods.common import scores_to_labels
from useg.stores.features import FeatureStore, feature_frame
from useg.stores.predictions import PredictionsWriter
from useg.train import LossGuard

log = logging.getLogger(__name__)

PROTOCOL = "linear-probe"
POOL_BATCHES = 4  # the shuffle buffer: batches' worth of images pooled and drawn from in random order
# epoch -> that epoch's batches of (tokens [B, D, h, w], targets [B, H, W])
Batches = Callable[[int], Iterable[tuple[Tensor, Tensor]]]


@dataclass(frozen=True)
class Chunk:
    """Rows [start, stop) of shard `shard`: one chunk of its patch-token array, read in one piece."""

    shard: int
    start: int
    stop: int


def store_chunks(stores: list[FeatureStore]) -> list[Chunk]:
    """Every chunk of every shard, in order."""
    chunks = []
    for shard, store in enumerate(stores):
        rows = store.group["patches"].chunks[0]
        chunks += [Chunk(shard, start, min(start + rows, len(store))) for start in range(0, len(store), rows)]
    return chunks


def sample_chunks(chunks: list[Chunk], fraction: float, seed: int) -> list[Chunk]:
    """A seeded random `fraction` of the chunks (at least one), in order: the probe's share of the train split."""
    if fraction >= 1.0:
        return chunks
    count = max(1, round(fraction * len(chunks)))
    keep = np.sort(np.random.default_rng([seed, len(chunks)]).choice(len(chunks), count, replace=False))
    return [chunks[i] for i in keep]


def load_targets(rows: list[ManifestRow], index: np.ndarray, frame: Frame, ignore: int) -> torch.Tensor:
    """Ground-truth masks of the images brought (nearest) into `frame` [N, H, W], ignore pixels -100."""
    missing = [rows[i].id for i in index if not rows[i].mask_path]
    if missing:
        raise DataError(f"the linear probe needs ground-truth masks; none for {missing[:5]}")
    masks = np.stack([frame.fit_labels(load_mask(rows[i]), ignore) for i in index]).astype(np.int64)
    masks[masks == ignore] = -100
    return torch.from_numpy(masks)


def chunk_tokens(store: FeatureStore, chunk: Chunk) -> Tensor:
    """Patch tokens of a chunk as float32 [n, D, h, w]."""
    patches = store.group["patches"][chunk.start : chunk.stop].astype(np.float32)
    return torch.from_numpy(patches).permute(0, 3, 1, 2).contiguous()


class ChunkDataset(Dataset):
    """Items (epoch, i) -> (tokens [n, D, h, w], targets [n, H, W]) of chunk i; the shards are opened
    in the worker that reads them."""

    def __init__(
        self, paths: list[Path], chunks: list[Chunk], rows: list[ManifestRow], frame: Frame, ignore: int
    ) -> None:
        self.paths, self.chunks, self.rows, self.frame, self.ignore = paths, chunks, rows, frame, ignore
        self._stores: dict[int, FeatureStore] = {}

    def __len__(self) -> int:
        return len(self.chunks)

    def store(self, shard: int) -> FeatureStore:
        """Shard `shard`, opened once per process."""
        if shard not in self._stores:
            self._stores[shard] = FeatureStore(self.paths[shard])
        return self._stores[shard]

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, Tensor]:
        chunk = self.chunks[item[1]]
        store = self.store(chunk.shard)
        index = store.index[chunk.start : chunk.stop]
        return chunk_tokens(store, chunk), load_targets(self.rows, index, self.frame, self.ignore)


def only_item(items: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Collate of a batch of one chunk: the chunk itself."""
    return items[0]


def rebatch(
    chunks: Iterable[tuple[Tensor, Tensor]], batch_size: int, generator: torch.Generator, pool: int = POOL_BATCHES
) -> Iterator[tuple[Tensor, Tensor]]:
    """Regroup a stream of chunks into batches of `batch_size` images drawn at random from a pool of
    `pool` batches' worth of images (a shuffle buffer; the last batch may be smaller)."""
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    held = 0
    for x, y in chunks:
        xs.append(x)
        ys.append(y)
        held += len(x)
        if held >= pool * batch_size:
            x_all, y_all = shuffled(xs, ys, generator)
            whole = held - held % batch_size
            yield from zip(x_all[:whole].split(batch_size), y_all[:whole].split(batch_size), strict=True)
            xs, ys, held = [x_all[whole:]], [y_all[whole:]], held - whole
    if held:
        x_all, y_all = shuffled(xs, ys, generator)
        yield from zip(x_all.split(batch_size), y_all.split(batch_size), strict=True)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's draws from the shuffle pool, seeded by (seed, epoch)."""
    return torch.Generator().manual_seed(int(np.random.default_rng([seed, epoch]).integers(2**62)))


def shuffled(xs: list[Tensor], ys: list[Tensor], generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The pooled images and their targets, in one random order."""
    x_all, y_all = torch.cat(xs), torch.cat(ys)
    order = torch.randperm(len(x_all), generator=generator)
    return x_all[order], y_all[order]


def channel_stats(stores: list[FeatureStore], chunks: list[Chunk]) -> tuple[Tensor, Tensor]:
    """Per-channel mean and (unbiased) standard deviation of the chunks' tokens, in one streaming pass."""
    total, square, count = 0.0, 0.0, 0
    for chunk in chunks:
        x = chunk_tokens(stores[chunk.shard], chunk).double()
        total, square = total + x.sum(dim=(0, 2, 3)), square + (x * x).sum(dim=(0, 2, 3))
        count += x.numel() // x.shape[1]
    mean = total / count
    var = (square - count * mean * mean) / max(count - 1, 1)
    return mean.float(), var.clamp_min(0).sqrt().float().clamp_min(1e-6)


def probe_optimizer(params: Iterable[Tensor], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam (the demo's) or SGD with momentum (Leopart's linear probe), with the probe's weight decay."""
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def probe_step(
    probe: torch.nn.Conv2d, opt: torch.optim.Optimizer, guard: LossGuard, batch: tuple[Tensor, Tensor],
    stats: tuple[Tensor, Tensor], size: tuple[int, int], where: tuple[int, int],
) -> Tensor:  # fmt: skip
    """One step on a batch of (tokens, targets): tokens standardised by (mean, std), logits upsampled bilinearly
    to `size`, cross-entropy over the non-ignored pixels; the guard checks the loss at (epoch, step) first."""
    (x, y), (mean, std) = batch, stats
    x = (x - mean[None, :, None, None]) / std[None, :, None, None]
    logits = F.interpolate(probe(x), size=size, mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, y, ignore_index=-100)
    guard.check(loss, *where)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def train_probe(
    batches: Batches,
    stats: tuple[Tensor, Tensor] | None,
    embed_dim: int,
    num_classes: int,
    cfg: dict[str, Any],
    seed: int,
    size: tuple[int, int],
) -> torch.nn.Conv2d:
    """Fit a 1x1 convolution on the batches of every epoch (inputs standardised by `stats` when given,
    folded into the conv afterwards); the loss on logits upsampled bilinearly to the targets' `size`."""
    torch.manual_seed(seed)
    mean, std = stats if stats is not None else (torch.zeros(embed_dim), torch.ones(embed_dim))
    probe = torch.nn.Conv2d(embed_dim, num_classes, 1)
    opt = probe_optimizer(probe.parameters(), cfg)
    schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=cfg["lr_steps"], gamma=cfg["lr_gamma"])
    guard = LossGuard("lower backbone_eval.probe.lr")
    loss = torch.tensor(float("nan"))
    for epoch in tqdm(range(cfg["epochs"]), desc="linear probe", unit="epoch"):
        for step, batch in enumerate(batches(epoch)):
            loss = probe_step(probe, opt, guard, batch, (mean, std), size, (epoch, step))
        schedule.step()
    with torch.no_grad():  # fold the standardisation into the conv
        probe.bias -= (probe.weight[:, :, 0, 0] * (mean / std)).sum(dim=1)
        probe.weight /= std[None, :, None, None]
    log.info("linear probe: %d classes, final loss %.4f", num_classes, float(loss.detach()))
    return probe


def loss_size(cfg: dict[str, Any], working: tuple[int, int]) -> tuple[int, int]:
    """The size of the maps the probe's loss compares: `loss_size` square, or the working size."""
    return (cfg["loss_size"], cfg["loss_size"]) if cfg["loss_size"] else working


def linear_probe(
    train: list[FeatureStore],
    evaluate: list[FeatureStore],
    rows: list[ManifestRow],
    num_classes: int,
    cfg: dict[str, Any],
    seed: int,
    out_path: str | Path,
    prov: dict[str, Any],
    ignore: int = 255,
    threads: int = 1,
) -> None:
    """Train the probe on (a `train_fraction` of) the `train` shards, write class predictions of `evaluate`."""
    working = feature_frame(train)
    size = loss_size(cfg, working.size)
    chunks = sample_chunks(store_chunks(train), cfg["train_fraction"], seed)
    stats = channel_stats(train, chunks) if cfg["standardise"] else None
    dataset = ChunkDataset([s.path for s in train], chunks, rows, Frame(size, working.mode), ignore)
    order = EpochBatches(len(chunks), 1, seed, drop_last=False)
    loader = make_loader(dataset, order, only_item, threads)

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        order.epoch = epoch
        return rebatch(loader, cfg["batch_size"], epoch_generator(seed, epoch))

    probe = train_probe(batches, stats, train[0].embed_dim, num_classes, cfg, seed, size)
    predict(probe, evaluate, num_classes, working, out_path, prov)


def predict(
    probe: torch.nn.Conv2d,
    stores: list[FeatureStore],
    num_classes: int,
    frame: Frame,
    out_path: str | Path,
    prov: dict[str, Any],
) -> None:
    """Class predictions of every image of the shards in the working `frame`, shard by shard."""
    index = np.concatenate([s.index for s in stores])
    ids = [i for s in stores for i in s.ids]
    start = 0
    with PredictionsWriter(out_path, index, ids, frame, num_classes, PROTOCOL, prov, supervised=True) as writer:
        with torch.no_grad():
            for batch in (b for s in stores for b in s.batches(64)):
                x = torch.from_numpy(batch.patches.astype(np.float32)).permute(0, 3, 1, 2)
                writer.write(start, scores_to_labels(probe(x), frame.size))
                start += len(x)
    log.info("linear probe: predicted %d images -> %s", len(index), out_path)
