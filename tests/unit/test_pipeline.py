"""The input pipeline: resizing modes, and the same batches for any worker count and after a resume."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from useg.data.augment import ViewAugment, two_views
from useg.data.images import load_rgb_all
from useg.data.frame import fit_image
from useg.data.pipeline import EpochBatches, ImageDataset, epoch_cycle, loader_workers, make_loader, ordered_loader, unit_image
from useg.errors import ConfigError
from useg.methods.croc.train import collate_pairs


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> list[str]:
    root, rng = tmp_path_factory.mktemp("pipeline"), np.random.default_rng(0)
    out = []
    for i in range(10):
        out.append(str(root / f"{i}.png"))
        Image.fromarray(rng.integers(0, 255, (24 + i, 40 - i, 3), dtype=np.uint8)).save(out[-1])
    return out


def test_squash_crop_and_pad():
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 10:30] = 255  # a centred white square-ish band, half the width
    assert fit_image(image, (10, 10), "squash").shape == (10, 10, 3)
    crop = fit_image(image, (10, 10), "crop")  # short side to 10 -> 10 x 20, centre 10 x 10: all white
    assert crop.shape == (10, 10, 3) and crop.min() == 255
    pad = fit_image(image, (10, 10), "pad")  # long side to 10 -> 5 x 10, padded above and below
    assert pad.shape == (10, 10, 3) and pad[:2].max() == 0 and pad[-3:].max() == 0 and pad[5, 5].min() == 255
    with pytest.raises(ConfigError, match="resize"):
        fit_image(image, (10, 10), "stretch")


def test_epoch_batches_drop_the_tail_split_by_rank_and_resume():
    full = list(EpochBatches(10, 4, seed=3, epoch=1))
    assert len(full) == 2 and all(len(b) == 4 for b in full)
    assert {e for b in full for e, _ in b} == {1} and len({i for b in full for _, i in b}) == 8
    assert list(EpochBatches(10, 4, seed=3, epoch=1, start=1)) == full[1:]
    halves = [list(EpochBatches(10, 4, seed=3, epoch=1, rank=r, world=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == full  # the global batch is the configured one
    assert list(EpochBatches(10, 4, seed=3, epoch=2)) != full
    assert [i for b in EpochBatches(5, 2, 0, shuffle=False, drop_last=False) for _, i in b] == [0, 1, 2, 3, 4]


def croc_batches(paths: list[str], threads: int, epoch: int, start: int = 0) -> list[torch.Tensor]:
    augs = (ViewAugment(size=(16, 16)), ViewAugment(size=(16, 16), blur_p=0.0))
    batches = EpochBatches(len(paths), 3, seed=5, epoch=epoch, start=start)
    loader = make_loader(ImageDataset(paths, partial(two_views, augs=augs, patch=8), 5), batches, collate_pairs, threads)
    return [torch.cat([b.views[0].flatten(), b.views[1].flatten(), b.coords.flatten()]) for b in loader]


def test_batches_are_the_same_for_zero_and_two_workers_and_after_a_resume(paths):
    assert loader_workers(1) == 0 and loader_workers(3) == 2
    serial = croc_batches(paths, threads=1, epoch=0)
    parallel = croc_batches(paths, threads=3, epoch=0)
    assert len(serial) == 3 and all(torch.equal(a, b) for a, b in zip(serial, parallel))
    resumed = croc_batches(paths, threads=3, epoch=0, start=2)  # the run stopped after batch 2 of the epoch
    assert len(resumed) == 1 and torch.equal(resumed[0], serial[2])
    assert not torch.equal(croc_batches(paths, threads=1, epoch=1)[0], serial[0])  # a new epoch, new draws


def test_persistent_workers_follow_the_epoch_set_on_the_sampler(paths):
    augs = (ViewAugment(size=(16, 16)),) * 2
    batches = EpochBatches(len(paths), 3, seed=5)
    loader = make_loader(ImageDataset(paths, partial(two_views, augs=augs, patch=8), 5), batches, collate_pairs, 3)
    first = [b.views[0] for b in loader]
    batches.epoch = 1
    second = [b.views[0] for b in loader]
    batches.epoch = 0
    assert not torch.equal(first[0], second[0]) and torch.equal(next(iter(loader)).views[0], first[0])


def test_ordered_loader_gives_every_image_once_at_the_working_size(paths):
    seen = [(index, images.shape) for index, images in ordered_loader(paths, (16, 24), 4, threads=2, resize="crop")]
    assert [i for index, _ in seen for i in index] == list(range(10))
    assert seen[-1][1] == (2, 3, 16, 24)
    _, unit = next(iter(ordered_loader(paths, (16, 24), 4, sample=unit_image)))  # the detectors' input: [0, 1], not normalised
    expected = np.stack(load_rgb_all(paths[:4], size=(16, 24))).transpose(0, 3, 1, 2) / 255
    assert np.allclose(unit.numpy(), expected, atol=1e-6)


def test_epoch_cycle_serves_a_fixed_number_of_batches_epoch_after_epoch(paths):
    batches = EpochBatches(10, 4, 0)  # two whole batches an epoch
    loader = make_loader(ImageDataset(paths, unit_image, 0), batches, lambda items: [i for i, _ in items])
    expected = [[i for _, i in b] for epoch in range(3) for b in EpochBatches(10, 4, 0, epoch=epoch)]
    assert list(epoch_cycle(loader, batches, 5)) == expected[:5] and batches.epoch == 2
    assert expected[0] != expected[2]  # each epoch in its own order
    with pytest.raises(ValueError, match="no whole batch of 12 in 10 samples"):
        next(epoch_cycle(loader, EpochBatches(10, 12, 0), 1))


def test_loader_workers_start_after_a_parallel_opencv_call_in_the_parent(tmp_path):
    import subprocess
    import sys

    script = f"""
import numpy as np, torch
from PIL import Image
from useg.data.pipeline import EpochBatches, ImageDataset, make_loader, normalised
from useg.data.transforms import scale_rotate
scale_rotate(np.zeros((40, 40, 3), np.uint8), np.zeros((40, 40), np.uint8), 5.0, 0.75, 0)  # cv2's parallel warpAffine
paths = []
for i in range(4):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(f"{tmp_path}/{{i}}.png")
    paths.append(f"{tmp_path}/{{i}}.png")
loader = make_loader(ImageDataset(paths, normalised, 0, (24, 24)), EpochBatches(4, 2, 0), lambda items: len(items), threads=2)
print(sum(loader))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "4", done.stderr[-2000:]
