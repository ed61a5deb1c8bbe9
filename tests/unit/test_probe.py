"""The linear probe (useg.eval.probe) on real FeatureStores: streaming by chunks, the demo's and Leopart's recipes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from useg.data.manifest import ManifestRow
from useg.eval.probe import Chunk, channel_stats, linear_probe, rebatch, sample_chunks, store_chunks
from useg.stores import FeatureStore, FeatureWriter, provenance
from useg.stores.predictions import Predictions

GRID, PATCH, DIM, CLASSES = 4, 4, 8, 3
SIZE = GRID * PATCH
DEMO = {"epochs": 30, "batch_size": 4, "lr": 0.05, "weight_decay": 0.0, "optimizer": "adam", "momentum": 0.9,
        "lr_steps": [], "lr_gamma": 0.1, "standardise": True, "loss_size": None, "train_fraction": 1.0}  # fmt: skip
LEOPART = {**DEMO, "optimizer": "sgd", "lr": 0.5, "weight_decay": 1e-4, "lr_steps": [20], "standardise": False,
           "loss_size": 8, "train_fraction": 0.5}  # fmt: skip


def patch_labels(seed: int) -> np.ndarray:
    """A random class per patch [GRID, GRID]."""
    return np.random.default_rng(seed).integers(0, CLASSES, (GRID, GRID))


def write_split(tmp_path, split: str, count: int, offset: int, shards: int = 2) -> tuple[list[FeatureStore], list[ManifestRow]]:
    """`count` images whose patch tokens are their class's direction (plus noise), masks of the same classes at
    SIZE x SIZE (one ignore pixel each), written as `shards` FeatureStores of chunks of 2 rows."""
    rows, tokens = [], []
    directions = np.random.default_rng(99).normal(size=(CLASSES, DIM)) * 3
    for i in range(count):
        labels = patch_labels(offset + i)
        mask = np.kron(labels, np.ones((PATCH, PATCH), np.int64)).astype(np.uint8)
        mask[0, 0] = 255
        Image.fromarray(mask).save(tmp_path / f"{split}{i}.png")
        rows.append(ManifestRow(id=f"{split}{i}", path="", width=SIZE, height=SIZE, split=split,
                                mask_path=str(tmp_path / f"{split}{i}.png")))  # fmt: skip
        noise = np.random.default_rng(1000 + offset + i).normal(size=(GRID, GRID, DIM)) * 0.3
        tokens.append(directions[labels] + noise + 5.0)  # an offset standardisation removes
    stores, per_shard = [], -(-count // shards)
    for shard in range(shards):
        rows_of = list(range(shard * per_shard, min(count, (shard + 1) * per_shard)))
        path = tmp_path / f"{split}-{shard}.zarr"
        prov = provenance("test", {}, seed=0)
        ids = [rows[i].id for i in rows_of]
        with FeatureWriter(path, np.array(rows_of) + offset, ids, (GRID, GRID), DIM, 1, prov, rows_per_chunk=2,
                           input_size=[SIZE, SIZE], patch_size=PATCH) as writer:  # fmt: skip
            n = len(rows_of)
            patches = np.stack([tokens[i] for i in rows_of])
            writer.write(0, np.zeros((n, DIM)), patches, np.zeros((n, 1, GRID, GRID)))
        stores.append(FeatureStore(path))
    return stores, rows


@pytest.fixture
def splits(tmp_path):
    train, train_rows = write_split(tmp_path, "train", 10, 0)
    val, val_rows = write_split(tmp_path, "val", 4, 10)
    return train, val, train_rows + val_rows


def test_chunks_follow_the_stores_chunking_and_a_fraction_is_a_seeded_subset(splits):
    train, _, _ = splits
    chunks = store_chunks(train)
    assert chunks == [Chunk(0, 0, 2), Chunk(0, 2, 4), Chunk(0, 4, 5), Chunk(1, 0, 2), Chunk(1, 2, 4), Chunk(1, 4, 5)]
    half = sample_chunks(chunks, 0.5, seed=3)
    assert len(half) == 3 and set(half) <= set(chunks) and half == sample_chunks(chunks, 0.5, seed=3)
    assert sample_chunks(chunks, 0.01, seed=3) and sample_chunks(chunks, 1.0, seed=3) == chunks


def test_rebatch_draws_whole_batches_from_a_shuffled_pool_of_chunks():
    chunks = [(torch.arange(a, b).float()[:, None], torch.arange(a, b)) for a, b in ((0, 2), (2, 4), (4, 5), (5, 8))]
    batches = list(rebatch(chunks, 3, torch.Generator().manual_seed(0), pool=1))
    assert [len(y) for _, y in batches] == [3, 3, 2] and all(torch.equal(x[:, 0].long(), y) for x, y in batches)
    assert set(batches[0][1].tolist()) <= {0, 1, 2, 3}, "the first batch is drawn from the first pool (4 images)"
    assert sorted(i for _, y in batches for i in y.tolist()) == list(range(8)), "every image once"
    pooled = list(rebatch(chunks, 3, torch.Generator().manual_seed(0), pool=4))  # one pool: the whole stream
    assert [len(y) for _, y in pooled] == [3, 3, 2] and [y.tolist() for _, y in pooled] != [[0, 1, 2], [3, 4, 5], [6, 7]]


def test_channel_statistics_stream_to_the_whole_split_s(splits):
    train, _, _ = splits
    mean, std = channel_stats(train, store_chunks(train))
    whole = torch.cat([torch.from_numpy(s.group["patches"][:].astype(np.float32)) for s in train]).reshape(-1, DIM)
    assert torch.allclose(mean, whole.mean(0), atol=1e-4) and torch.allclose(std, whole.std(0), atol=1e-4)


def predicted_accuracy(path, rows: list[ManifestRow]) -> float:
    """Pixel accuracy of a probe's predictions against the masks (ignore skipped)."""
    preds = Predictions(path)
    hits = total = 0
    for i, labels in zip(preds.index, preds.group["labels"][:], strict=True):
        mask = np.asarray(Image.open(rows[i].mask_path)).astype(np.int64)
        valid = mask != 255
        hits, total = hits + int((labels[valid] == mask[valid]).sum()), total + int(valid.sum())
    return hits / total


@pytest.mark.parametrize("recipe", [DEMO, LEOPART], ids=["demo", "leopart"])
def test_the_probe_learns_separable_tokens_under_both_recipes(splits, tmp_path, recipe):
    train, val, rows = splits
    out = tmp_path / f"probe-{recipe['optimizer']}.zarr"
    linear_probe(train, val, rows, CLASSES, recipe, 0, out, provenance("linear-probe", recipe, 0))
    preds = Predictions(out)
    assert preds.supervised and list(preds.ids) == ["val0", "val1", "val2", "val3"]
    assert predicted_accuracy(out, rows) > 0.9


def test_the_probe_is_deterministic_for_a_seed_with_or_without_loader_workers(splits, tmp_path):
    train, val, rows = splits
    for name, threads in (("a", 1), ("b", 2)):
        cfg = {**LEOPART, "epochs": 2}
        linear_probe(train, val, rows, CLASSES, cfg, 5, tmp_path / name, provenance("p", {}, 5), threads=threads)
    a, b = (Predictions(tmp_path / name).group["labels"][:] for name in ("a", "b"))
    assert np.array_equal(a, b)
