"""Augmented views: crop/flip bookkeeping of patch positions in the original image frame."""

import numpy as np
import torch

from useg.data.augment import Crop, ViewAugment, make_view, patch_coords, two_views


def test_known_crop_maps_patches_to_original_positions():
    # a 40x80 crop at (top 20, left 40) of a 100x200 image, resized to 16x32 with 8-px patches
    coords = patch_coords(Crop(20, 40, 40, 80, flip=False), (16, 32), 8, (100, 200))
    assert coords.shape == (2 * 4, 2)
    # first patch centre: (4, 4) in the view -> (20 + 4 * 40/16, 40 + 4 * 80/32) = (30, 50)
    torch.testing.assert_close(coords[0], torch.tensor([30 / 100, 50 / 200]))
    # last patch (row 1, col 3): (12, 28) -> (20 + 30, 40 + 70) = (50, 110)
    torch.testing.assert_close(coords[-1], torch.tensor([50 / 100, 110 / 200]))


def test_flip_mirrors_columns_within_the_crop():
    crop = Crop(20, 40, 40, 80, flip=False)
    plain = patch_coords(crop, (16, 32), 8, (100, 200)).reshape(2, 4, 2)
    flipped = patch_coords(Crop(20, 40, 40, 80, flip=True), (16, 32), 8, (100, 200)).reshape(2, 4, 2)
    torch.testing.assert_close(flipped, plain.flip(1))
    torch.testing.assert_close(flipped[0, 0], torch.tensor([30 / 100, 110 / 200]))


def test_view_pixels_come_from_the_recorded_position():
    # an image whose pixel value encodes its column: the view's patch colours must match coords
    width = 64
    image = np.repeat(np.repeat(np.arange(width, dtype=np.uint8)[None, :, None] * 4, 48, 0), 3, 2)
    aug = ViewAugment(size=(16, 16), scale=(0.3, 0.6), jitter_p=0, grayscale_p=0, blur_p=0, solarize_p=0, flip_p=0.5)
    for seed in range(6):
        view = make_view(image, aug, 8, np.random.default_rng(seed))
        std, mean = torch.tensor([0.229, 0.224, 0.225]), torch.tensor([0.485, 0.456, 0.406])
        pixels = (view.image * std[:, None, None] + mean[:, None, None])[0] * 255 / 4  # column index
        centre = pixels[3:5, 3:5].mean()  # around the centre of patch (0, 0)
        expected = view.coords[0, 1] * width - 0.5
        assert abs(float(centre) - float(expected)) < 1.5, (seed, view.crop)


def test_two_views_are_deterministic_per_generator():
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    aug = ViewAugment(size=(16, 24))
    a = two_views(image, (aug, aug), 8, np.random.default_rng(3))
    b = two_views(image, (aug, aug), 8, np.random.default_rng(3))
    assert a[0].image.shape == (3, 16, 24) and a[0].coords.shape == (6, 2)
    assert torch.equal(a[0].image, b[0].image) and torch.equal(a[1].coords, b[1].coords)
    assert (a[0].coords >= 0).all() and (a[0].coords <= 1).all()


def test_two_views_draw_each_view_with_its_own_augmentation():
    image = np.full((16, 16, 3), 204, dtype=np.uint8)  # 0.8 everywhere: solarised to 0.2
    plain = ViewAugment(size=(8, 8), scale=(1.0, 1.0), flip_p=0, jitter_p=0, grayscale_p=0, blur_p=0, solarize_p=0)
    solarised = ViewAugment(**{**plain.__dict__, "solarize_p": 1.0})
    first, second = two_views(image, (plain, solarised), 8, np.random.default_rng(0))
    std, mean = torch.tensor([0.229, 0.224, 0.225]), torch.tensor([0.485, 0.456, 0.406])
    pixels = [view.image * std[:, None, None] + mean[:, None, None] for view in (first, second)]
    torch.testing.assert_close(pixels[0], torch.full((3, 8, 8), 0.8), atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[1], torch.full((3, 8, 8), 0.2), atol=1e-5, rtol=0)
