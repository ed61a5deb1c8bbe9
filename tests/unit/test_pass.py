"""PASS parts: the overlap of two views is sampled at the same original-image positions."""

import json

import torch

from useg.cli import main
from useg.data.augment import Crop
from useg.methods.pass_.losses import overlap_features, swav_codes
from useg.methods.pass_.train import view_prior


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
