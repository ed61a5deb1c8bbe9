"""Dense CRF: kernel bookkeeping, pydensecrf's symmetric normalisation against a brute-force mean field,
and mean-field behaviour on hand-made images."""

import torch

from useg.postprocess.crf import CRFConfig, dense_crf, neighbours, pairwise_kernel, window_message


def test_kernel_is_zero_for_the_pixel_itself_and_off_the_image():
    image = torch.zeros(3, 4, 5)
    cfg = CRFConfig(window=1, w_app=1.0, theta_alpha=1.0, theta_beta=1.0, w_smooth=0.0, normalise="none")
    kernel = pairwise_kernel(image, cfg).view(3, 3, 4, 5)
    assert (kernel[1, 1] == 0).all(), "no message from a pixel to itself"
    assert (kernel[:, 0, 0, 0] == 0).all() and (kernel[0, :, 0, 0] == 0).all(), "the top-left pixel has no upper/left neighbours"
    # same colour, one pixel apart: w_app * exp(-1 / 2)
    assert torch.isclose(kernel[1, 2, 1, 1], torch.tensor(float(torch.exp(torch.tensor(-0.5)))))
    # a colour difference of 1 (theta_beta 1) in one channel costs another exp(-1/2)
    image[0, 1, 2] = 1.0
    kernel = pairwise_kernel(image, cfg).view(3, 3, 4, 5)
    assert torch.isclose(kernel[1, 2, 1, 1], torch.exp(torch.tensor(-1.0)))


def test_without_pairwise_terms_the_probabilities_are_unchanged():
    probs = torch.rand(4, 6, 7).softmax(dim=0)
    out = dense_crf(torch.rand(3, 6, 7) * 255, probs, CRFConfig(w_app=0.0, w_smooth=0.0))
    assert torch.allclose(out, probs, atol=1e-6)


def test_an_isolated_noisy_pixel_takes_its_neighbours_label():
    probs = torch.zeros(2, 9, 9)
    probs[0], probs[1] = 0.9, 0.1
    probs[:, 4, 4] = torch.tensor([0.4, 0.6])
    out = dense_crf(torch.full((3, 9, 9), 128.0), probs, CRFConfig(window=2))
    assert (probs.argmax(0)[4, 4] == 1) and (out.argmax(0) == 0).all()


def test_ambiguous_pixels_follow_the_colour_edge():
    image = torch.zeros(3, 12, 12)
    image[:, :, 6:] = 255.0  # dark left half, bright right half
    probs = torch.zeros(2, 12, 12)
    probs[0, :, :6], probs[1, :, :6] = 0.9, 0.1
    probs[0, :, 6:], probs[1, :, 6:] = 0.1, 0.9
    probs[:, :, 4:8] = 0.5  # undecided band across the edge
    out = dense_crf(image, probs, CRFConfig(window=4, theta_alpha=4.0, theta_beta=20.0))
    labels = out.argmax(0)
    assert (labels[:, :6] == 0).all() and (labels[:, 6:] == 1).all()


def brute_force_normalised_crf(image: torch.Tensor, probs: torch.Tensor, cfg: CRFConfig) -> torch.Tensor:
    """Mean field with dense N x N kernels, each normalised D^-1/2 K D^-1/2 (self term included), as pydensecrf."""
    classes, height, width = probs.shape
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    position = torch.stack([ys.flatten(), xs.flatten()], 1)
    colour = image.double().reshape(3, -1).T
    dist2, colour2 = torch.cdist(position, position) ** 2, torch.cdist(colour, colour) ** 2

    def normalised(k: torch.Tensor) -> torch.Tensor:
        d = k.sum(1).rsqrt()
        return d[:, None] * k * d[None]

    kernel = cfg.w_app * normalised(torch.exp(-dist2 / (2 * cfg.theta_alpha**2) - colour2 / (2 * cfg.theta_beta**2)))
    kernel = kernel + cfg.w_smooth * normalised(torch.exp(-dist2 / (2 * cfg.theta_gamma**2)))
    unary = probs.double().clamp_min(1e-8).log().reshape(classes, -1)
    q = probs.double().reshape(classes, -1)
    for _ in range(cfg.iterations):
        q = torch.softmax(unary + q @ kernel.T, dim=0)
    return q.reshape(classes, height, width)


def test_symmetric_normalisation_equals_a_brute_force_normalised_mean_field():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 16, 16, generator=generator) * 255
    image[:, :, 8:] += 60  # an edge, so the bilateral kernel matters
    probs = torch.rand(4, 16, 16, generator=generator).mul(3).softmax(dim=0)
    cfg = CRFConfig(iterations=10, window=15, w_app=4.0, theta_alpha=67.0, theta_beta=3.0, w_smooth=3.0, theta_gamma=1.0)
    out = dense_crf(image, probs, cfg)  # the window covers the whole 16 x 16 image: exact
    assert torch.allclose(out.double(), brute_force_normalised_crf(image, probs, cfg), atol=1e-4)
    unnormalised = dense_crf(image, probs, CRFConfig(**{**cfg.__dict__, "normalise": "none"}))
    assert (unnormalised.argmax(0) != out.argmax(0)).any(), "normalisation changes the labels at these weights"


def test_symmetric_kernel_mass_is_that_of_pydensecrf_not_of_the_raw_sum():
    image = torch.full((3, 16, 16), 100.0)
    cfg = CRFConfig(window=15, w_app=0.0, w_smooth=1.0, theta_gamma=67.0)
    raw = pairwise_kernel(image, CRFConfig(**{**cfg.__dict__, "normalise": "none"})).sum(0)
    normalised = pairwise_kernel(image, cfg).sum(0)
    assert raw.max() > 100  # a wide Gaussian sums to about the window's pixel count
    assert torch.allclose(normalised, torch.ones_like(normalised), atol=0.1)  # D^-1/2 K D^-1/2 of a near-uniform K: rows ~1


def test_window_message_equals_the_sum_over_the_materialised_windows():
    torch.manual_seed(0)
    values, kernel = torch.rand(4, 7, 9, dtype=torch.float64), torch.rand(25, 63, dtype=torch.float64)
    expected = (neighbours(values, 2) * kernel[None]).sum(dim=1).view(4, 7, 9)
    assert torch.allclose(window_message(values, kernel, 2), expected, rtol=0, atol=1e-12)
