"""PASS parts: the overlap of two views is sampled at the same original-image positions."""

import json

import numpy as np

import torch

from useg.cli import main
from useg.data.augment import Crop
from useg.methods.pass_.losses import EmbeddingQueue, overlap_features, swav_codes
from useg.methods.pass_.model import NetConfig
from useg.methods.pass_.train import PASSTrainer, PretrainConfig, view_prior


def coordinate_features(crop: Crop, grid: int) -> torch.Tensor:
    """Features [1, 2, grid, grid] holding the original (y, x) of every cell centre of a view."""
    centres = (torch.arange(grid) + 0.5) / grid
    ys = crop.top + centres * crop.height
    xs = crop.left + centres * crop.width
    if crop.flip:
        xs = xs.flip(0)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"))[None]


def test_overlap_rows_of_both_views_sit_at_the_same_original_positions():
    a, b = Crop(0, 0, 60, 60, False), Crop(20, 30, 60, 50, True)
    z1, z2 = coordinate_features(a, 12), coordinate_features(b, 12)
    rows1, rows2, image = overlap_features(z1, z2, [a], [b], 4)
    assert rows1.shape == (16, 2) and image.tolist() == [0] * 16
    assert torch.allclose(rows1, rows2, atol=1.0)  # within one feature cell (5 px) of each other
    assert rows1[:, 0].min() >= 20 and rows1[:, 1].min() >= 30 and rows1.max() <= 60  # inside the overlap


def test_views_without_overlap_give_no_rows():
    rows1, _, image = overlap_features(
        torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), [Crop(0, 0, 10, 10, False)], [Crop(20, 20, 10, 10, False)], 2
    )
    assert rows1.shape == (0, 2) and len(image) == 0


def test_swav_codes_are_equipartitioned_distributions():
    scores = (
        torch.nn.functional.normalize(torch.randn(32, 16), dim=1)
        @ torch.nn.functional.normalize(torch.randn(8, 16), dim=1).T
    )
    codes = swav_codes(scores, eps=0.05, iters=300)  # cosine scores, as the prototypes give
    assert torch.allclose(codes.sum(1), torch.ones(32), atol=1e-4)
    assert torch.allclose(codes.sum(0), torch.full((8,), 4.0), atol=0.05)


def test_queue_joins_the_sinkhorn_problem_only_once_full():
    prototypes = torch.nn.Linear(16, 8, bias=False)
    queue = EmbeddingQueue(length=24, views=2, dim=16)
    batch = torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
    scores = prototypes(batch)
    assert torch.equal(queue.codes(0, scores, prototypes, 0.05, 50), swav_codes(scores, 0.05, 50))
    pushed = [torch.nn.functional.normalize(torch.randn(12, 16), dim=1) for _ in range(2)]
    queue.push(pushed)
    assert not queue.full and torch.equal(queue.embeddings[1, :12], pushed[1])  # newest first
    queue.push(pushed[::-1])
    assert queue.full and torch.equal(queue.embeddings[0, 12:], pushed[0])  # older rows move back
    codes = queue.codes(0, scores, prototypes, 0.05, 300)
    joint = swav_codes(torch.cat([prototypes(queue.embeddings[0]), scores]), 0.05, 300)
    assert codes.shape == (4, 8) and torch.allclose(codes, joint[24:])
    assert torch.allclose(codes.sum(1), torch.ones(4), atol=1e-4)
    assert not torch.allclose(codes, swav_codes(scores, 0.05, 300), atol=1e-3)  # the queue changes the codes
    queue.push([torch.zeros(30, 16)] * 2)  # a push longer than the queue keeps only its newest rows
    assert queue.filled == 24 and queue.embeddings.abs().sum() == 0


def test_prototypes_stay_frozen_during_the_first_epoch():
    from useg.data.augment import make_view

    net_cfg = NetConfig(arch="tiny", width=8, output_stride=8, projector_hidden=16, projector_dim=8, prototypes=6)
    cfg = PretrainConfig(
        epochs=3, batch_size=4, lr=0.05, view_size=[32, 32], overlap_size=2, freeze_prototypes_epochs=1, queue_length=8
    )
    trainer = PASSTrainer(net_cfg, cfg, iters_per_epoch=1, seed=0, device="cpu")
    rng = torch.Generator().manual_seed(0)
    images = [(torch.rand(48, 48, 3, generator=rng) * 255).byte().numpy() for _ in range(4)]
    aug = cfg.view_augment()

    def step(it: int) -> torch.Tensor:
        views = tuple([make_view(img, aug, 8, np.random.default_rng([it, i, v])) for i, img in enumerate(images)] for v in (0, 1))
        trainer.step(views, None, (48, 48), it)
        return torch.nn.functional.normalize(trainer.net.prototypes.weight.detach(), dim=1).clone()

    start = torch.nn.functional.normalize(trainer.net.prototypes.weight.detach(), dim=1).clone()
    trunk = trainer.net.attention.weight.detach().clone()
    assert torch.allclose(step(0), start, atol=1e-6)  # epoch 1: prototypes fixed, the rest learns
    assert not torch.equal(trainer.net.attention.weight, trunk)
    assert not torch.allclose(step(1), start, atol=1e-4)  # epoch 2: prototypes move
    assert trainer.queue.filled == 8


def test_view_prior_follows_the_crop_and_the_flip():
    prior = torch.zeros(1, 1, 4, 4)
    prior[0, 0, :2, :2] = 1  # salient top-left quarter of a 64 x 64 image
    crop = Crop(0, 0, 32, 32, False)  # exactly that quarter
    assert view_prior(prior, [crop], (64, 64), (2, 2)).min() > 0.99
    away = view_prior(prior, [Crop(32, 32, 32, 32, True)], (64, 64), (2, 2))
    assert away.max() < 0.01
    half = view_prior(prior, [Crop(0, 0, 32, 64, True)], (64, 64), (2, 4))[0, 0]
    assert half[:, 2:].min() > 0.99 and half[:, :2].max() < 0.01  # flipped: salient part on the right


def test_tau_is_never_chosen_on_the_evaluation_split(capsys):
    params = json.dumps({"pass": {"tau_split": "val", "input_size": [32, 32]}, "eval_split": "val", "seed": 0})
    args = ["pass-threshold", "--params", params, "--manifest", "m.csv", "--classes", "c.json", "--model", "x", "--out", "t"]
    assert main(args) == 2
    assert "is the evaluation split" in capsys.readouterr().err
