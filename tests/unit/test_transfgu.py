"""TransFGU parts on small tensors: crop boxes, foreground prior, Grad-CAM (eq. 5–8; release and paper rules),
losses (eq. 12–16), RoI-Align label cropping, the Segmenter (eq. 2), the optimiser step and the concept / bank
stores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from useg.backbones import build_backbone
from useg.errors import ConfigError, StoreError
from useg.methods.common import roi_crop
from useg.methods.transfgu import gradcam as gc
from useg.methods.transfgu.augment import crop_views, draw_boxes, half_size, random_crop_boxes, view_augment
from useg.methods.transfgu.concepts import cluster_concepts, concept_counts
from useg.methods.transfgu.crops import BACKGROUND, FOREGROUND, UNUSED, crop_boxes, crop_groups, foreground_mask
from useg.methods.transfgu.losses import (
    LossConfig,
    bootstrapped_maps,
    diversity_loss,
    peer_alpha,
    peer_loss,
    shuffled_labels,
    total_loss,
    uncertainty_loss,
)
from useg.methods.transfgu import segmenter as segmenter_module
from useg.methods.transfgu.segmenter import (
    Segmenter,
    SegmenterConfig,
    build_segmenter,
    load_segmenter,
    mask_logits,
    save_segmenter,
)
from useg.train.descent import build_optimiser, descend


@pytest.fixture(scope="module")
def backbone():
    from useg.backbones import BackboneConfig
    from tests.conftest import TINY_BACKBONE

    model = build_backbone(BackboneConfig.from_dict(TINY_BACKBONE), seed=0)
    return model.requires_grad_(False)


# --- crops and the foreground prior (§4.2) ---------------------------------------------------


@pytest.mark.parametrize("height,width", [(33, 47), (97, 61), (10, 10)])
def test_crop_boxes_odd_sizes(height: int, width: int):
    boxes = crop_boxes(height, width, [0.5, 0.3])
    x0, y0, x1, y1 = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= width).all() and (y1 <= height).all()
    assert ((x1 - x0) == (y1 - y0)).all(), "crops are square"
    short = min(height, width)
    assert set((x1 - x0).tolist()) == {round(0.5 * short), round(0.3 * short)}
    for beta in (0.5, 0.3):
        side = round(beta * short)
        mine = boxes[(x1 - x0) == side]
        assert mine[:, 2].max() == width and mine[:, 3].max() == height, "the far edges are covered"
        xs = np.unique(mine[:, 0])
        assert xs[0] == 0 and np.all(np.diff(xs)[:-1] == round(0.5 * beta * short)), "stride is half a side"


def test_crop_boxes_count_by_hand():
    # 96 x 96, beta 0.5: side 48, stride 24 -> offsets 0, 24, 48 on each axis -> 9 crops
    assert len(crop_boxes(96, 96, [0.5])) == 9
    # 40 x 50, beta 0.5: side 20, stride 10 -> y 0,10,20 (3) and x 0,10,20,30 (4)
    assert len(crop_boxes(40, 50, [0.5])) == 12


def test_foreground_mask_and_crop_groups():
    attn = np.zeros((2, 4, 4), np.float32)
    attn[:, :2, :2] = 1.0  # top-left quarter attended by both heads
    fg = foreground_mask(attn)
    assert fg.sum() == 4 and fg[:2, :2].all()
    boxes = np.array([[0, 0, 2, 2], [2, 2, 4, 4], [1, 0, 3, 2], [0, 0, 4, 4]])
    groups = crop_groups(boxes, fg)
    # all fg -> fg; all bg -> bg; half fg (not > 50 %) -> unused; a quarter fg = 75 % bg (not > 80 %) -> unused
    assert groups.tolist() == [FOREGROUND, BACKGROUND, UNUSED, UNUSED]


def test_concept_counts_and_separate_clustering():
    assert concept_counts(7, None, 4) == (4, 3)
    assert concept_counts(7, None, 0) == (4, 3)
    assert concept_counts(7, 2, 4) == (2, 5)
    with pytest.raises(ConfigError, match="k_fg"):
        concept_counts(3, 3, 0)
    rng = np.random.default_rng(0)
    fg = rng.normal(size=(40, 4)) + 10
    bg = rng.normal(size=(40, 4)) - 10
    cls = np.concatenate([fg, bg]).astype(np.float32)
    groups = np.array([FOREGROUND] * 40 + [BACKGROUND] * 40, np.int8)
    cfg = {"foreground_prior": True, "niter": 10, "nredo": 1}
    centroids, group = cluster_concepts(cls, groups, 5, 3, cfg, 0)
    assert group.tolist() == [1, 1, 1, 0, 0]
    assert (centroids[:3] > 5).all() and (centroids[3:] < -5).all(), "fg concepts from fg crops only"
    _, group = cluster_concepts(cls, groups, 5, 0, {**cfg, "foreground_prior": False}, 0)
    assert (group == UNUSED).all()
    with pytest.raises(ConfigError, match="foreground crops"):
        cluster_concepts(cls[40:], groups[40:], 5, 3, cfg, 0)


# --- Grad-CAM (eq. 4–8) ----------------------------------------------------------------------


def test_cls_path_matches_the_backbone(backbone):
    images = torch.randn(2, 3, 32, 32)
    path = gc.ClsPath(backbone, images)
    out = backbone(images)
    assert torch.allclose(path.cls(path.row), out.cls, atol=1e-5)
    assert torch.allclose(gc.cls_patch_rows(path.row, (4, 4), 1), out.attn, atol=1e-6)
    copies = path.cls(path.row.expand(3, *path.row.shape))
    assert copies.shape == (3, 2, 64) and torch.allclose(copies[2], out.cls, atol=1e-5)


@pytest.mark.parametrize("rule", gc.GRADCAM_RULES)
def test_batched_gradcam_equals_loop_and_autograd_of_eq5(backbone, rule: str):
    path = gc.ClsPath(backbone, torch.randn(3, 3, 32, 32))
    concepts = torch.randn(5, backbone.embed_dim)
    batched = gc.concept_gradients(path, concepts, rule, chunk=2)
    loop = gc.concept_gradients_loop(path, concepts, rule)
    assert batched.shape == (5, 3, 2, 17)
    assert (batched - loop).abs().max() < 1e-5
    # the gradient of eq. 5's loss for concept 1, image 2 alone, negated
    row = path.row.clone().requires_grad_(True)
    cls, s = path.cls(row)[2], concepts[1]
    score = F.cosine_similarity(cls, s, dim=0) if rule == "release" else cls @ s / math.sqrt(backbone.embed_dim)
    (grad,) = torch.autograd.grad(1 - score, row)
    assert torch.allclose(batched[1, 2], -grad[2], atol=1e-6)
    assert batched[1, :2].abs().sum() > 0 and torch.allclose(grad[:2], torch.zeros_like(grad[:2]))


def test_cosine_scores_ignore_the_concept_scale_dot_scores_do_not(backbone):
    path = gc.ClsPath(backbone, torch.randn(2, 3, 32, 32))
    concepts = torch.randn(3, backbone.embed_dim)
    scale = torch.tensor([0.5, 1.0, 2.0])[:, None]
    for rule, factor in (("release", torch.ones(3)), ("paper", scale[:, 0])):
        base = gc.concept_gradients(path, concepts, rule)
        rescaled = gc.concept_gradients(path, concepts * scale, rule)
        assert torch.allclose(rescaled, base * factor[:, None, None, None], atol=1e-6), rule


def test_response_maps_eq7_by_hand():
    attn = torch.tensor([[[[0.1, 0.2]], [[0.3, 0.4]]]])  # [B=1, H=2, 1, 2]
    grads = torch.stack([torch.ones(1, 2, 1, 2), -torch.ones(1, 2, 1, 2)])  # K=2
    maps = gc.response_maps(attn, grads)
    assert maps.shape == (1, 2, 1, 2)
    assert torch.allclose(maps[0, 0, 0], torch.tensor([1.2, 1.3]))  # mean over heads of A + 1
    assert torch.allclose(maps[0, 1, 0], torch.tensor([-0.8, -0.7]))


def test_release_gradcam_rule_on_a_2x2_map_by_hand():
    attn = torch.tensor([[0.1, 0.2], [0.3, 0.4]]).expand(1, 2, 2, 2)  # [B=1, H=2, 2, 2], both heads alike
    # dL/dA per head for concept 0 (head mean [[-0.6, -0.3], [-0.1, 0.2]]); concept 1: dL/dA = 0 everywhere
    loss_grad = torch.stack([torch.tensor([[-1.1, -0.3], [0.4, 0.2]]), torch.tensor([[-0.1, -0.3], [-0.6, 0.2]])])
    grads = torch.stack([-loss_grad[None], torch.zeros(1, 2, 2, 2)])  # ∂sim/∂A = −∂L/∂A, [K=2, B, H, 2, 2]
    maps = gc.release_response_maps(attn, grads, loss_batch=1, mass=0.8)
    # A/max A = [[.25, .5], [.75, 1]]; ReLU(−dL/dA) = [[.6, .3], [.1, 0]] (mass 1.0): ascending shares 0, .1, .4, 1
    # keep those above 1 − 0.8 -> .3 and .6; the patch with dL/dA = 0.2 > 0 is zeroed
    assert torch.allclose(maps[0, 0], torch.tensor([[0.85, 0.8], [0.75, 0.0]]))
    assert torch.allclose(maps[0, 1], torch.tensor([[0.25, 0.5], [0.75, 1.0]])), "no gradient: A/max A alone"
    halved = gc.release_response_maps(attn, grads, loss_batch=2, mass=0.8)
    assert torch.allclose(halved[0, 0], torch.tensor([[0.55, 0.65], [0.75, 0.0]])), "loss mean over 2 images"


def test_argmax_labels_eq6_and_background_eq8():
    maps = torch.tensor([[[[0.9, 0.03]], [[0.2, 0.02]]]])  # [1, K=2, 1, 2]
    bg = gc.background_map(maps, 0.1)
    assert torch.allclose(bg[0, 0, 0], torch.tensor([0.0, 0.07]))  # ReLU(0.1 - max_k M^k)
    labels = torch.cat([maps, bg], 1).argmax(1)
    assert labels.tolist() == [[[0, 2]]], "weak responses become background"


def test_normalised_maps_lie_in_unit_interval():
    maps = gc.normalise_maps(torch.randn(3, 4, 5, 5) * 7 + 2)
    flat = maps.flatten(1)
    assert torch.allclose(flat.min(1).values, torch.zeros(3)) and torch.allclose(flat.max(1).values, torch.ones(3))


def test_fg_bg_concept_masking():
    maps = torch.ones(1, 3, 1, 2)
    fg = torch.tensor([[[True, False]]])
    groups = torch.tensor([FOREGROUND, BACKGROUND, UNUSED])
    masked = gc.mask_concepts(maps, fg, groups)
    assert masked[0, :, 0, 0].tolist() == [1, 0, 1], "a foreground patch loses the background concepts"
    assert masked[0, :, 0, 1].tolist() == [0, 1, 1], "a background patch loses the foreground concepts"


def test_pseudo_label_maps_shapes_and_masking(backbone):
    concepts = torch.randn(4, backbone.embed_dim)
    groups = torch.tensor([1, 1, 0, 0])
    cfg = gc.LabelConfig(zero_other_group=True, foreground_only=True, t_bg=0.1)
    maps, labels, fg = gc.pseudo_label_maps(backbone, torch.randn(2, 3, 32, 32), concepts, groups, cfg)
    assert maps.shape == (2, 5, 4, 4) and labels.shape == (2, 4, 4) and fg.shape == (2, 4, 4)
    fg_e = fg[:, None]
    assert (maps[:, 2:4].masked_select(fg_e.expand(-1, 2, -1, -1)) == 0).all()
    assert (maps[:, 0:2].masked_select(~fg_e.expand(-1, 2, -1, -1)) == 0).all()
    assert torch.equal(labels, maps.argmax(1))


@pytest.mark.parametrize("rule", gc.GRADCAM_RULES)
def test_labels_do_not_depend_on_the_batch(backbone, rule: str):
    images, concepts = torch.randn(3, 3, 32, 32), torch.randn(5, backbone.embed_dim)
    cfg, groups = gc.LabelConfig(gradcam=rule), torch.tensor([1, 1, 0, 0, 0])
    together, labels, _ = gc.pseudo_label_maps(backbone, images, concepts, groups, cfg)
    for i in range(3):
        alone, alone_labels, _ = gc.pseudo_label_maps(backbone, images[i : i + 1], concepts, groups, cfg)
        assert torch.allclose(alone[0], together[i], atol=1e-5) and torch.equal(alone_labels[0], labels[i])


# --- losses (eq. 12–16) ----------------------------------------------------------------------


def test_bootstrapped_maps_eq12():
    maps = torch.tensor([[[[0.9]], [[0.0]], [[0.5]]]])  # M: concept 0
    probs = torch.tensor([[[[0.0]], [[0.8]], [[0.5]]]])  # P̂: class 1
    mixed = bootstrapped_maps(maps, probs)
    assert torch.allclose(mixed.flatten(), torch.tensor([0.45, 0.4, 0.5]))
    assert mixed.argmax(dim=1).item() == 2, "eq. 11: the label is the arg-max of 0.5·(M + P̂)"


def test_shuffled_labels_never_keep_a_label():
    labels = torch.arange(6).repeat(4).view(4, 6)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        neg = shuffled_labels(labels, 6, g)
        assert (neg != labels).all() and sorted(neg[0].tolist()) == list(range(6))


def test_peer_loss_eq13():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 4))
    neg = (labels + 1) % 3
    expected = F.cross_entropy(logits, labels) - 0.05 * F.cross_entropy(logits, neg)
    assert torch.allclose(peer_loss(logits, labels, neg, 0.05), expected)


def test_uncertainty_loss_eq14_by_hand():
    # two locations with probabilities (0.7, 0.2, 0.1) and (0.4, 0.4, 0.2): gaps 0.5 and 0.0
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]]).T.reshape(1, 3, 1, 2)
    assert torch.allclose(uncertainty_loss(probs.log()), torch.tensor(1 - 0.25))


def test_diversity_loss_eq15_by_hand():
    classes = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # orthogonal, d = 2, K = 2
    assert torch.allclose(diversity_loss(classes, "paper"), torch.tensor(1 + 2 / (4 * math.sqrt(2))))
    same = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert diversity_loss(same, "paper") > diversity_loss(classes, "paper")


def test_diversity_loss_value_and_gradient_at_k3():
    classes = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]], requires_grad=True)  # cosines: 0, 1, 0
    release = diversity_loss(classes, "release")
    assert torch.allclose(release, torch.tensor(1 + 1 / 3))  # 1 + mean over the 3 pairs i < j
    (grad,) = torch.autograd.grad(release, classes)
    # ∂/∂C_i = (1/3)·Σ_{j≠i} C_j
    assert torch.allclose(grad[0], torch.tensor([[1.0, 1.0], [2.0, 0.0], [1.0, 1.0]]) / 3)
    paper = diversity_loss(classes, "paper")
    assert torch.allclose(paper, torch.tensor(1 + 5 / (9 * math.sqrt(2))))  # Σ C·Cᵀ = 3 (diagonal) + 2·1
    (grad,) = torch.autograd.grad(paper, classes)
    # ∂/∂C_i = 2/(K²√d)·Σ_j C_j = 2/(9√2)·(2, 1) for every i
    assert torch.allclose(grad[0], torch.tensor([2.0, 1.0]).expand(3, 2) * 2 / (9 * math.sqrt(2)))


def test_total_loss_eq16_switches():
    logits = torch.randn(2, 3, 2, 2)
    classes = F.normalize(torch.randn(2, 3, 8), dim=-1)
    labels = torch.randint(0, 3, (2, 2, 2))
    neg = (labels + 1) % 3
    full, terms = total_loss(logits, classes, labels, neg, 0.1, LossConfig())
    expected = peer_loss(logits, labels, neg, 0.1) + diversity_loss(classes, "release") + 0.3 * uncertainty_loss(logits)
    assert torch.allclose(full, expected) and set(terms) == {"main", "div", "unc"}
    ce, terms = total_loss(logits, classes, labels, neg, 0.1, LossConfig(peer=False, uncertainty=False, diversity=False))
    assert torch.allclose(ce, F.cross_entropy(logits, labels)) and set(terms) == {"main"}


def test_peer_alpha_rises_linearly():
    values = [peer_alpha(e, 8, 0.03, 0.1) for e in range(8)]
    assert values[0] == pytest.approx(0.03) and values[-1] == pytest.approx(0.1)
    assert np.allclose(np.diff(values), 0.01)


# --- RoI-Align label cropping, views ---------------------------------------------------------


def test_roi_crop_of_label_maps_follows_the_image_crop():
    maps = torch.zeros(1, 2, 4, 4)
    maps[0, 0, :, :2] = 1  # left half is label 0
    maps[0, 1, :, 2:] = 1  # right half is label 1
    # the right half of a 32 x 32 image, cropped to a 2 x 2 grid (patch 8 -> spatial scale 1/8)
    out = roi_crop(maps, torch.tensor([[16.0, 0.0, 32.0, 32.0]]), (2, 2), spatial_scale=4 / 32)
    assert out.shape == (1, 2, 2, 2) and (out.argmax(1) == 1).all()
    image = torch.arange(16.0).view(1, 1, 4, 4)
    whole = roi_crop(image, torch.tensor([[0.0, 0.0, 4.0, 4.0]]), (4, 4))
    assert torch.allclose(whole, image), "a full-size box is the identity"


def test_training_views_crop_images_and_maps_together():
    aug = view_augment({"crop_scale": [0.3, 1.0], "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0})
    boxes, flips = random_crop_boxes(50, 32, 48, aug, np.random.default_rng(0))
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 48).all() and (boxes[:, 3] <= 32).all()
    assert flips.any() and not flips.all()
    ramp = torch.linspace(0, 1, 32)  # images and maps both increase from left to right
    images = ramp.expand(8, 3, 32, 32).clone()
    maps = torch.linspace(0, 1, 4).expand(8, 5, 4, 4).clone()
    views, crops = crop_views(images, maps, *draw_boxes(8, 32, 32, aug, "image", np.random.default_rng(1)), (16, 16), (2, 2))
    again = crop_views(images, maps, *draw_boxes(8, 32, 32, aug, "image", np.random.default_rng(1)), (16, 16), (2, 2))
    assert views.shape == (8, 3, 16, 16) and crops.shape == (8, 5, 2, 2)
    assert torch.equal(views, again[0]) and torch.equal(crops, again[1]), "views depend only on the generator"
    raw = views[:, 0]
    view_rises = raw[:, :, -1].mean(1) > raw[:, :, 0].mean(1)
    map_rises = crops[:, 0, :, -1].mean(1) > crops[:, 0, :, 0].mean(1)
    assert torch.equal(view_rises, map_rises), "an image and its label crop are flipped together"
    assert half_size((96, 96), 8) == ((48, 48), (6, 6)) and half_size((32, 40), 8) == ((16, 16), (2, 2))


# --- Segmenter (eq. 2) -----------------------------------------------------------------------


def test_segmenter_masks_eq2_and_checkpoint(tmp_path):
    model = build_segmenter(SegmenterConfig(in_dim=16, num_labels=3, dim=8, layers=1, heads=2), seed=0)
    patches = torch.randn(2, 3, 4, 16)
    masks, classes = model(patches)
    assert masks.shape == (2, 3, 3, 4) and classes.shape == (2, 3, 8)
    assert torch.allclose(classes.norm(dim=-1), torch.ones(2, 3)), "C is unit-norm"
    x_patch, c = torch.randn(1, 4, 8), F.normalize(torch.randn(1, 3, 8), dim=-1)
    assert torch.allclose(mask_logits(x_patch, c, "paper"), torch.einsum("bpd,bkd->bpk", x_patch, c) / math.sqrt(8))
    assert torch.equal(build_segmenter(model.cfg, seed=0).class_embed, model.class_embed), "students reset identically"
    save_segmenter(model, tmp_path / "m.pt", {"round": 1})
    loaded, extra = load_segmenter(tmp_path / "m.pt")
    assert isinstance(loaded, Segmenter) and extra["round"] == 1 and loaded.cfg == model.cfg
    assert torch.allclose(loaded(patches)[0], model.eval()(patches)[0])
    old = torch.load(tmp_path / "m.pt", weights_only=True)
    old["state_dict"] = {k: v for k, v in old["state_dict"].items() if not k.startswith("mask_norm")}
    torch.save(old, tmp_path / "old.pt")  # a decoder saved before the logit LayerNorm existed
    with pytest.raises(StoreError, match="old.pt.*rerun"):
        load_segmenter(tmp_path / "old.pt")


def test_release_masks_are_cosines_with_a_layernorm_over_the_k_logits():
    x_patch = torch.tensor([[[3.0, 4.0]]])  # one patch, |x′| = 5
    c = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # unit-norm C, K = 3
    cosines = mask_logits(x_patch, c, "release")
    assert torch.allclose(cosines, torch.tensor([[[0.6, 0.8, -0.6]]])), "no /√d, x′ normalised"
    model = build_segmenter(SegmenterConfig(in_dim=4, num_labels=3, dim=8, layers=1, heads=2), seed=0).eval()
    # mean 0.8/3, deviations (1, 1.6, −2.6)/3, variance (1 + 2.56 + 6.76)/27: LayerNorm gives deviation / √(var + 1e-5)
    expected = torch.tensor([1.0, 1.6, -2.6]) / 3 / math.sqrt(10.32 / 27 + 1e-5)
    assert torch.allclose(model.mask_norm(cosines)[0, 0], expected, atol=1e-6)
    masks, _ = model(torch.randn(2, 2, 2, 4))
    assert torch.allclose(masks.mean(1), torch.zeros(2, 2, 2), atol=1e-6), "every patch's K logits are normalised"
    assert torch.allclose(masks.var(1, unbiased=False), torch.ones(2, 2, 2), atol=1e-2)  # var / (var + eps)
    paper = build_segmenter(SegmenterConfig(4, 3, dim=8, layers=1, heads=2, mask="paper", mask_norm=False), 0)
    assert isinstance(paper.mask_norm, torch.nn.Identity)


def test_class_embedding_inits():
    torch.manual_seed(3)
    release = segmenter_module.class_embeddings(27, 16, "release")
    torch.manual_seed(3)
    reference = torch.nn.init.orthogonal_(torch.empty(1, 27, 16))  # what the release calls on its [1, K, d] tensor
    assert torch.allclose(release, reference, atol=1e-5) and torch.allclose(release.norm(), torch.tensor(1.0))
    rows = release[0] / release[0].norm(dim=1, keepdim=True)
    assert (rows @ rows.T - torch.eye(27)).abs().max() > 0.3, "its K rows are not orthogonal"
    segmenter = segmenter_module.class_embeddings(27, 16, "segmenter")
    assert 0.015 < segmenter.std() < 0.025 and segmenter.mean().abs() < 0.005  # std 0.02 (cut at ±2: no cut in effect)


def test_decoder_dropout_only_in_training():
    model = build_segmenter(SegmenterConfig(in_dim=4, num_labels=3, dim=8, layers=1, heads=2, dropout=0.5), 0)
    patches = torch.randn(1, 2, 2, 4)
    assert not torch.allclose(model.train()(patches)[0], model(patches)[0])
    assert torch.equal(model.eval()(patches)[0], model(patches)[0])


# --- optimiser and descent step (release) ----------------------------------------------------


def test_adam_l2_decay_vs_adamw_and_undecayed_biases():
    layer = torch.nn.Linear(2, 2)
    groups = build_optimiser(layer, "adam", 1e-3, 5e-4).param_groups
    assert [p.ndim for p in groups[0]["params"]] == [2] and groups[0]["weight_decay"] == 5e-4
    assert [p.ndim for p in groups[1]["params"]] == [1] and groups[1]["weight_decay"] == 0.0
    after = {}
    for name in ("adam", "adamw"):
        weight = torch.nn.Parameter(torch.ones(1, 1))
        opt = build_optimiser(torch.nn.ParameterList([weight]), name, 0.1, 0.5)
        descend(opt, (0 * weight).sum() + 1)  # zero loss gradient: only the decay acts
        after[name] = weight.item()
    # Adam: g = 0 + 0.5·1, the first step is lr·sign(g) = 0.1; AdamW: p·(1 − lr·wd) = 0.95 and no Adam step
    assert after == pytest.approx({"adam": 0.9, "adamw": 0.95})


def test_descend_clamps_gradients_and_skips_nonpositive_losses():
    weight = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = torch.optim.SGD([weight], lr=0.1)
    assert descend(opt, (weight * torch.tensor([5.0, -0.5])).sum(), clamp=1.0)
    assert weight.grad.tolist() == [1.0, -0.5] and torch.allclose(weight, torch.tensor([0.9, 1.05]))
    assert not descend(opt, (0 * weight).sum() - 1.0, skip_nonpositive=True), "a loss ≤ 0 takes no step"
    assert torch.allclose(weight, torch.tensor([0.9, 1.05]))
    assert descend(opt, (0 * weight).sum() - 1.0), "without the switch it steps"


ROUND_CFG = {
    "decoder": {"dim": 16, "layers": 1, "heads": 2}, "lr": 1e-3, "weight_decay": 5e-4, "epochs": 2,
    "batch_size": 2, "alpha": [0.03, 0.1], "w_div": 1.0, "w_unc": 0.3, "optimiser": "adam", "grad_clamp": 1.0,
    "skip_nonpositive_loss": True, "losses": {"peer": True, "uncertainty": True, "diversity": True},
    "diversity_form": "release", "augment_rule": "image",
    "augment": {"crop_scale": [0.3, 1.0], "saturation": 0.4, "hue": 0.0, "solarize_p": 0.0},
}  # fmt: skip


def test_training_round_at_a_diverging_learning_rate_fails_with_advice(backbone, tmp_path):
    from tests.unit.test_transfgu_bootstrap import make_split
    from useg.errors import TrainingError
    from useg.methods.transfgu.stages import train_round

    rows, bank = make_split(tmp_path)
    with pytest.raises(TrainingError, match="training diverged. Try to lower transfgu.lr"):
        train_round(backbone, rows, bank, None, {**ROUND_CFG, "lr": 1e3, "epochs": 10}, 0, 0, torch.device("cpu"))


def test_training_round_streams_deterministically_and_uses_the_teacher(backbone, tmp_path):
    from tests.unit.test_transfgu_bootstrap import make_split
    from useg.data.augment import normalise_images
    from useg.methods.transfgu.stages import train_round
    from useg.methods.transfgu.training import teacher_probs_of_batch

    rows, bank = make_split(tmp_path)
    cpu = torch.device("cpu")
    first = train_round(backbone, rows, bank, None, ROUND_CFG, 0, 0, cpu)
    history: list = []
    again = train_round(backbone, rows, bank, None, ROUND_CFG, 0, 0, cpu, history, threads=2)
    assert [h["epoch"] for h in history] == [1, 2] and {"loss", "loss_main", "loss_div", "loss_unc"} <= set(history[0])
    assert all(0 <= h["skipped"] <= 1 for h in history)
    for (name, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs between identical runs (0 and 1 loader workers)"
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = {"image": images, "box": torch.tensor([[0.0, 0.0, 32.0, 32.0]] * 2), "flip": torch.tensor([False, True])}
    probs = teacher_probs_of_batch(first, backbone, batch, torch.empty(0), (4, 4), True, cpu)
    clean = first(backbone(normalise_images(images)).patches)[0].softmax(dim=1)
    assert torch.allclose(probs[0], clean[0], atol=1e-6), "P̂ is the teacher on the whole clean image"
    assert torch.allclose(probs[1], clean[1].flip(-1), atol=1e-6), "and flipped with the view"
    taught = train_round(backbone, rows, bank, first, ROUND_CFG, 0, 1, cpu)
    alone = train_round(backbone, rows, bank, None, ROUND_CFG, 0, 1, cpu)
    assert not torch.equal(taught.class_embed, alone.class_embed), "round 1 learns from M̂, not M"
    assert first.cfg.num_labels == 3


# --- concept probe (benchmarks/transfgu_concepts.py) ----------------------------------------


def test_concept_probe_crop_classes_and_ground_truth_concepts():
    from benchmarks.transfgu_concepts import crop_classes, ground_truth_concepts

    mask = np.zeros((4, 6), np.uint8)
    mask[:, 3:] = 2
    mask[0, :] = 255  # ignored pixels do not count
    boxes = np.array([[0, 0, 3, 4], [2, 0, 6, 4], [0, 0, 6, 1]])
    dominant, share = crop_classes(boxes, mask, 3)
    assert dominant.tolist() == [0, 2, -1] and share[:2] == pytest.approx([1.0, 9 / 12])
    cls = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [9.0, 9.0]])
    pure = np.array([1.0, 0.7, 0.9, 0.5]) >= 0.6
    centroids, classes = ground_truth_concepts(cls, np.array([0, 0, 2, 2]), pure, 3)
    assert classes.tolist() == [0, 2], "class 1 has no crop, class 2's impure crop is left out"
    assert np.allclose(centroids, [[2.0, 0.0], [0.0, 5.0]])


def test_concept_probe_purity_respects_groups_and_foreground_share():
    from benchmarks.transfgu_concepts import concept_purity, foreground_share

    cls = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [0.0, 0.2], [4.9, 5.0]])
    groups = np.array([FOREGROUND, FOREGROUND, FOREGROUND, BACKGROUND, UNUSED])
    dominant = np.array([0, 1, 1, 0, 1])
    pure = np.array([True, True, True, True, True])
    concepts, concept_groups = np.array([[0.0, 0.0], [5.0, 5.0], [5.0, 5.0]]), np.array([FOREGROUND, FOREGROUND, BACKGROUND])
    # the background crop near concept 0 goes to the only background concept; the unused crop to none
    assert concept_purity(cls, groups, pure, dominant, concepts, concept_groups, 2) == [[1, 1], [0, 1], [1, 0]]
    assert foreground_share(groups, dominant, 3) == [0.5, 1.0, None]


# --- label bank -------------------------------------------------------------------------------


def test_label_bank_keeps_release_map_differences_below_float16_resolution(tmp_path):
    from useg.stores.labelbank import LabelBank, LabelBankWriter

    maps = np.full((1, 3, 1, 2), 0.9990, np.float32)  # the release's maps share A/max A near 1
    maps[0, 1, 0, 0] += 1e-4  # concept 1 wins patch 0 by less than float16's step (4.9e-4) near 1
    maps[0, 2, 0, 1] += 2e-4
    labels = maps.argmax(1)
    assert (maps.astype(np.float16).argmax(1) != labels).any(), "float16 would lose the winners"
    with LabelBankWriter(tmp_path / "b.zarr", np.arange(1), ["a"], 3, (1, 2), {}) as writer:
        writer.write(0, maps, labels, np.ones((1, 1, 2), np.uint8))
    bank = LabelBank([tmp_path / "b.zarr"])
    assert np.array_equal(bank.read("maps").argmax(1), labels) and labels.tolist() == [[[1, 2]]]


# --- config: release defaults, paper overlay --------------------------------------------------


def test_schema_defaults_are_the_release_and_the_paper_overlay_validates():
    import jsonschema
    import yaml

    from tests.conftest import REPO

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    keys = schema["properties"]["transfgu"]["properties"]
    overlay = yaml.safe_load((REPO / "configs" / "variants" / "transfgu-paper.yaml").read_text())
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(overlay)]
    assert not errors, errors
    paper = overlay["transfgu"]
    for key in ("gradcam", "diversity_form"):
        assert keys[key]["default"] == "release" and paper[key] == "paper"
    decoder = keys["decoder"]["properties"]
    assert [decoder[k]["default"] for k in ("mask", "mask_norm", "class_init")] == ["release", True, "release"]
    assert paper["decoder"] == {"mask": "paper", "mask_norm": False, "class_init": "segmenter"}
    assert (keys["zero_other_group"]["default"], paper["zero_other_group"]) == (False, True)
    assert (keys["grad_clamp"]["default"], paper["grad_clamp"]) == (1.0, None)


def test_unknown_variant_names_are_config_errors_naming_the_key():
    with pytest.raises(ConfigError, match="transfgu.gradcam must be one of release, paper"):
        gc.LabelConfig(gradcam="cosine")
    with pytest.raises(ConfigError, match="transfgu.decoder.mask"):
        SegmenterConfig(4, 3, mask="dot")
    with pytest.raises(ConfigError, match="transfgu.diversity_form"):
        LossConfig(diversity_form="pairs")
    with pytest.raises(ConfigError, match="optimiser"):
        build_optimiser(torch.nn.Linear(2, 2), "sgd", 0.1, 0.0)
