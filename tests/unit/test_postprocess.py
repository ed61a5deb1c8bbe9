"""Dense CRF: kernel bookkeeping and mean-field behaviour on hand-made images."""

import torch

from useg.postprocess.crf import CRFConfig, dense_crf, pairwise_kernel


def test_kernel_is_zero_for_the_pixel_itself_and_off_the_image():
    image = torch.zeros(3, 4, 5)
    cfg = CRFConfig(window=1, w_app=1.0, theta_alpha=1.0, theta_beta=1.0, w_smooth=0.0)
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
