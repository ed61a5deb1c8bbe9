"""PASS parts: the overlap of two views is sampled at the same original-image positions."""

import json

import numpy as np

import torch

from useg.cli import main
from useg.data.augment import Crop
from useg.methods.pass_.losses import EmbeddingQueue, overlap_features, swapped_loss, swapped_multi, swapped_pair, swav_codes
from useg.methods.pass_.model import NetConfig, ResNetTrunk, SegmentationNet
from useg.methods.pass_.train import PASSTrainer, PretrainConfig, multi_crop, view_prior
from useg.train.optim import LARCSGD


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
        views = list([make_view(img, aug, 8, np.random.default_rng([it, i, v])) for i, img in enumerate(images)] for v in (0, 1))
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


def test_multi_crop_swapped_prediction_averages_every_other_view_for_each_coded_view():
    torch.manual_seed(0)
    scores = [torch.randn(4, 6) for _ in range(4)]
    codes = [swav_codes(s, 0.05, 3) for s in scores[:2]]
    by_hand = (
        sum(swapped_loss(codes[0], scores[v], 0.1) for v in (1, 2, 3)) / 3
        + sum(swapped_loss(codes[1], scores[v], 0.1) for v in (0, 2, 3)) / 3
    ) / 2
    assert torch.allclose(swapped_multi(codes, scores, 0.1), by_hand)
    pair = (swapped_loss(codes[0], scores[1], 0.1) + swapped_loss(codes[1], scores[0], 0.1)) / 2
    assert torch.allclose(swapped_pair((codes[0], codes[1]), (scores[0], scores[1]), 0.1), pair)


def test_multi_crop_gives_two_global_then_the_local_views():
    cfg = PretrainConfig(view_size=[32, 32], local_size=[16, 16], local_scale=[0.05, 0.14], local_crops=3)
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    views = multi_crop(image, cfg.view_augment(), cfg.local_augment(), 3, 8, np.random.default_rng(1))
    assert [tuple(v.image.shape[1:]) for v in views] == [(32, 32)] * 2 + [(16, 16)] * 3
    areas = [v.crop.height * v.crop.width / (60 * 80) for v in views[2:]]
    assert all(0.03 < a < 0.2 for a in areas)  # local scale, up to rounding and the aspect clamp


def test_larc_scales_each_gradient_by_the_trust_ratio():
    w0, g = torch.tensor([3.0, 4.0]), torch.tensor([0.6, -0.8])  # ||w|| 5, ||g|| 1
    for clip, lr in ((False, 2.0), (True, 2.0), (True, 1e-4)):
        w = torch.nn.Parameter(w0.clone())
        opt = LARCSGD([w], lr=lr, momentum=0.9, weight_decay=0.1, trust=0.01, clip=clip)
        w.grad = g.clone()
        opt.step()
        rate = 0.01 * 5 / (1 + 0.1 * 5 + 1e-8)
        if clip:
            rate = min(rate / lr, 1.0)
        assert torch.allclose(w.detach(), w0 - lr * rate * (g + 0.1 * w0), atol=1e-6)
        assert opt.param_groups[0]["weight_decay"] == 0.1  # restored after the step


def test_a_step_with_local_crops_trains_and_the_local_views_enter_the_swav_loss():
    from useg.data.augment import make_view

    net_cfg = NetConfig(arch="tiny", width=8, output_stride=8, projector_hidden=16, projector_dim=8, prototypes=6)
    cfg = PretrainConfig(epochs=1, batch_size=4, lr=0.6, view_size=[32, 32], local_size=[16, 16], overlap_size=2,
                         local_crops=2, optimiser="larc", freeze_prototypes_epochs=0)  # fmt: skip
    trainer = PASSTrainer(net_cfg, cfg, iters_per_epoch=1, seed=0, device="cpu")
    images = [np.random.default_rng(i).integers(0, 255, (48, 48, 3), dtype=np.uint8) for i in range(4)]
    crops = [multi_crop(img, cfg.view_augment(), cfg.local_augment(), 2, 8, np.random.default_rng(i)) for i, img in enumerate(images)]
    views = [list(c) for c in zip(*crops)]
    trainer.net.eval()  # batch statistics of the same views either way
    with torch.no_grad():
        both = trainer.losses(views, None, (48, 48)).parts["swav"]
        globals_only = trainer.losses(views[:2], None, (48, 48)).parts["swav"]
    assert both != globals_only
    before = trainer.net.prototypes.weight.detach().clone()
    trainer.net.train()
    out = trainer.step(views, None, (48, 48), 0)
    assert np.isfinite(float(out.total.detach())) and not torch.equal(trainer.net.prototypes.weight, before)
    assert isinstance(trainer.optimizer, LARCSGD)


def test_release_stride_32_with_4x_upsampling_gives_the_stride_8_grid():
    images = torch.rand(2, 3, 64, 64)
    up = ResNetTrunk(NetConfig(arch="tiny", width=8, output_stride=32, upsample=4)).eval()
    assert up(images).shape == (2, 64, 8, 8)
    raw = up.stages(images)[1]
    assert raw.shape == (2, 64, 2, 2)
    head = torch.nn.Conv2d(64, 3, 1)  # a 1x1 conv commutes with bilinear upsampling: upsampled features = upsampled logits
    logits = torch.nn.functional.interpolate(head(raw), scale_factor=4, mode="bilinear", align_corners=False)
    assert torch.allclose(head(up(images)), logits, atol=1e-5)


def test_deeplabv3plus_head_gives_stride_4_logits_and_trains_a_step():
    net = SegmentationNet(NetConfig(arch="tiny", width=8, output_stride=16), 5, head="deeplabv3plus")
    images = torch.rand(2, 3, 64, 64)
    assert net.cam(images).shape == (2, 5, 16, 16) and net(images).shape == (2, 5)
    assert [net.head.aspp.convs[i][0].dilation for i in (1, 2, 3)] == [(6, 6), (12, 12), (18, 18)]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    decoder = net.head.fuse[0][0].weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(net(images), torch.tensor([1, 3]))
    loss.backward()
    opt.step()
    assert not torch.equal(net.head.fuse[0][0].weight, decoder) and net.trunk.net.layer1[0].conv1.weight.grad.abs().sum() > 0
    assert SegmentationNet(NetConfig(arch="tiny", width=8, output_stride=8), 5, head="deeplabv3plus").head.aspp.convs[1][0].dilation == (12, 12)


def test_a_process_without_overlap_rows_leaves_the_projector_statistics_alone():
    from useg.methods.pass_.model import PASSNet

    net = PASSNet(NetConfig(arch="tiny", width=8, projector_hidden=16, projector_dim=8, prototypes=6)).train()
    stats = net.projector[1].running_mean.clone()
    assert net.pixel_embedding(torch.zeros(0, 64)).shape == (0, 8)
    assert torch.equal(net.projector[1].running_mean, stats) and net.projector[1].num_batches_tracked == 0


def test_cam_labels_threshold_the_most_confident_cam_and_a_cam_equal_to_tau_is_confident():
    from useg.methods.pass_.stages import cam_labels, with_background

    rng = np.random.default_rng(0)
    cam = torch.from_numpy(rng.random((2, 3, 5, 6)).astype(np.float32))
    cam[0, 1, 0, 0], cam[0, :, 0, 1] = 0.5, torch.tensor([0.1, 0.5, 0.2])  # ties at tau: confident
    cam[1, :, 2, 2] = torch.tensor([0.4, 0.4999, 0.3])  # just below tau: background
    best, arg = cam.max(dim=1)
    expected = np.where(best.numpy() >= np.float32(0.5), arg.numpy() + 1, 0)
    labels = cam_labels(cam, 0.5)
    assert (labels == expected).all() and labels[0, 0, 1] == 2 and labels[1, 2, 2] == 0
    assert with_background(cam, 0.5).shape == (2, 4, 5, 6)  # `useg predict`'s scores: background first
