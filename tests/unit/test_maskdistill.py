"""MaskDistill parts on hand-built tensors: affinities and the mask rule, top-k, boxes, ragged candidates,
confident aggregation, hard-pixel CE, one training step of each model, mask AP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from useg.data.frame import Frame
from useg.methods.maskdistill.aggregate import confident_labels
from useg.methods.maskdistill.ap import Instances, mask_ap, rle_area, single_object
from useg.methods.maskdistill.deeplab import hard_pixel_ce
from useg.methods.maskdistill.masks import (
    MaskRule,
    cls_affinity,
    mask_box,
    mass_set,
    object_masks,
    patch_affinity,
    proposals,
    rule_masks,
    source_component,
    top_k_count,
    upsample_masks,
)
from useg.errors import ConfigError
from useg.methods.maskdistill.models import anchor_sizes, build_deeplab, build_maskrcnn, for_rebuild, step_lr
from useg.stores.base import provenance
from useg.stores.candidates import CandidateBank, write_candidates

# One head; token 0 is CLS. q_CLS = (1, 0); patch keys chosen so the answer is known by hand.
KEYS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.1], [-1.0, 0.0], [0.0, 1.0]])
Q = torch.zeros(5, 2)
Q[0] = torch.tensor([1.0, 0.0])


def qk(heads: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    return Q.expand(1, heads, 5, 2).clone(), KEYS.expand(1, heads, 5, 2).clone()


def test_affinities_are_head_means_of_dot_products():
    q, k = qk()
    assert torch.allclose(cls_affinity(q, k), torch.tensor([[1.0, 1.0, -1.0, 0.0]]))
    a = patch_affinity(k)[0]
    assert torch.allclose(a, KEYS[1:] @ KEYS[1:].T)
    q2, k2 = torch.cat([q, 3 * q], 1), torch.cat([k, k], 1)  # second head: q scaled by 3 -> mean scales by 2
    assert torch.allclose(cls_affinity(q2, k2), 2 * cls_affinity(q, k))
    assert torch.allclose(patch_affinity(k2), patch_affinity(k))


def test_mask_rule_known_answer():
    q, k = qk()
    masks, source = object_masks(cls_affinity(q, k), patch_affinity(k), 0.5)
    # P = {0, 1} (tie at 1.0 -> both; s = 0, the lower index); P' = P (A[0,1] = 1 > 0);
    # column sums over P': [2, 2.01, -2, 0.1] -> patch 3 joins although it is not in P, patch 2 does not.
    assert source.tolist() == [0]
    assert masks.tolist() == [[True, True, False, True]]


def test_proposals_exclude_patches_dissimilar_to_the_source():
    a_cls = torch.tensor([[3.0, 2.0, 0.0, 0.0]])
    keys = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.5, 0.0], [0.0, 1.0]])
    masks, _ = object_masks(a_cls, (keys @ keys.T)[None], 0.5)
    # P = {0, 1}; A[0, 1] = -1 -> P' = {0}; mask = A[0, :] > 0 = [1, 0, 1, 0]
    assert masks.tolist() == [[True, False, True, False]]


@pytest.mark.parametrize(("n", "fraction", "count"), [(10, 0.4, 4), (10, 0.25, 3), (10, 0.01, 1), (10, 1.0, 10), (144, 0.4, 58)])
def test_top_k_count_rounds_up(n, fraction, count):
    assert top_k_count(n, fraction) == count


def test_top_k_ties_go_to_lower_index():
    assert proposals(torch.tensor([[1.0, 1.0, 1.0, 0.0]]), 0.5).tolist() == [[True, True, False, False]]
    assert proposals(torch.tensor([[0.0, 2.0, 2.0, 2.0]]), 0.25).tolist() == [[False, True, False, False]]


def test_upsample_and_box():
    grid = torch.tensor([[False, True, False, False, False, False]])  # 2 x 3 grid
    pixels = upsample_masks(grid, (2, 3), (8, 12))[0].numpy()
    assert pixels.sum() == 16 and pixels[:4, 4:8].all()
    assert mask_box(pixels).tolist() == [4, 0, 8, 4]
    mask = np.zeros((10, 10), bool)
    mask[2:5, 1:6] = True
    assert mask_box(mask).tolist() == [1, 2, 6, 5]
    assert mask_box(np.zeros((4, 4), bool)).tolist() == [0, 0, 0, 0]


def candidates(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "scores": rng.random(n).astype(np.float32),
        "labels": rng.integers(0, 3, n).astype(np.int32),
        "boxes": rng.random((n, 4)).astype(np.float32),
        "masks": rng.integers(0, 2, (n, 6, 5)).astype(np.uint8),
    }


def test_ragged_candidates_round_trip(tmp_path: Path):
    rng = np.random.default_rng(0)
    per_image = [candidates(n, rng) for n in (2, 0, 3)]
    path = tmp_path / "c.zarr"
    write_candidates(path, np.array([7, 3, 9]), ["a", "b", "c"], per_image, Frame((6, 5)), provenance("t", {}, 0), num_classes=3)
    bank = CandidateBank([path])
    assert bank.ids == ["a", "b", "c"] and bank.attrs["num_classes"] == 3
    read = list(bank.images())
    assert [row for row, _ in read] == [7, 3, 9]
    for (_, got), want in zip(read, per_image):
        for name, values in want.items():
            assert np.array_equal(got[name], values), name


def square(lo: int, hi: int, size: int = 8) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = 1
    return mask


def test_confident_aggregation_threshold_fallback_and_overlap():
    masks = np.stack([square(0, 4), square(2, 6), square(6, 8)])
    labels = np.array([0, 1, 2])
    out, kept = confident_labels(np.array([0.95, 0.99, 0.5]), labels, masks, 0.9, background=3)
    assert kept == 2
    assert (out[2:6, 2:6] == 1).all()  # overlap: the more confident mask (0.99) wins
    assert out[0, 0] == 0 and out[7, 7] == 3  # below tau: the 0.5 mask is dropped
    out, kept = confident_labels(np.array([0.2, 0.6, 0.5]), labels, masks, 0.9, background=3)
    assert kept == 1 and (out == np.where(masks[1] > 0, 1, 3)).all()  # none passes: only the most confident
    out, kept = confident_labels(np.zeros(0), np.zeros(0), np.zeros((0, 8, 8)), 0.9, background=3)
    assert kept == 0 and (out == 3).all()


def test_hard_pixel_ce():
    gen = torch.Generator().manual_seed(0)
    logits, target = torch.randn(2, 4, 5, 5, generator=gen), torch.randint(0, 4, (2, 5, 5), generator=gen)
    assert torch.allclose(hard_pixel_ce(logits, target, 1.0), F.cross_entropy(logits, target))
    per_pixel = F.cross_entropy(logits, target, reduction="none").flatten()
    top = per_pixel.sort(descending=True).values[: round(0.2 * 50)]
    assert torch.allclose(hard_pixel_ce(logits, target, 0.2), top.mean())
    target[0] = 255  # ignored pixels never count
    valid = F.cross_entropy(logits[1:], target[1:], reduction="none").flatten()
    assert torch.allclose(hard_pixel_ce(logits, target, 0.2), valid.sort(descending=True).values[:5].mean())


def test_step_lr_warmup_and_steps():
    assert step_lr(1.0, 0, 100, 10, [0.5, 0.9]) == pytest.approx(0.001)
    assert step_lr(1.0, 10, 100, 10, [0.5, 0.9]) == 1.0
    assert step_lr(1.0, 50, 100, 10, [0.5, 0.9]) == pytest.approx(0.1)
    assert step_lr(1.0, 95, 100, 10, [0.5, 0.9]) == pytest.approx(0.01)
    assert anchor_sizes(800, 0.64) == ((32,), (64,), (128,), (256,), (512,))  # Detectron's
    assert anchor_sizes(96, 0.64)[-1] == (61,) and anchor_sizes(96, 1.0) == ((6,), (12,), (24,), (48,), (96,))
    assert anchor_sizes(20, 0.64)[0] == (2,)  # never below 2 px


TINY_RCNN = {
    "backbone": "resnet18", "weights": "random", "head": "fpn", "trainable_layers": 5, "fpn_channels": 16, "head_dim": 32,
    "proposals": 50, "roi_batch_size": 16, "train_scales": [0.75, 1.0], "min_score": 0.0, "max_candidates": 5,
    "anchor_top": 0.64, "norm": "batch", "amp": "auto",
}  # fmt: skip
TINY_DEEPLAB = {
    "backbone": "resnet18", "weights": "random", "norm": "batch", "frozen_stages": 0, "epochs": 1, "batch_size": 2,
    "lr": 0.01, "lr_step": 0.5, "momentum": 0.9, "weight_decay": 1e-4, "hard_fraction": 0.2, "input_size": None, "resize": None,
    "rotate": 5.0, "scale": [0.75, 1.25], "amp": "auto",
}  # fmt: skip


def changed(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad)


def test_maskrcnn_one_iteration_and_inference():
    model = build_maskrcnn(TINY_RCNN, 3, (32, 32), seed=0).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    target = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([2]), "masks": torch.from_numpy(square(4, 20, 32))[None]}
    losses = model([torch.rand(3, 32, 32)], [target])
    assert set(losses) >= {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness"}
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    sum(losses.values()).backward()
    optimiser.step()
    assert changed(model, before)
    out = model.eval()([torch.rand(3, 32, 32)])[0]
    assert out["masks"].shape[1:] == (1, 32, 32) and len(out["scores"]) <= 5


C4_RCNN = {**TINY_RCNN, "head": "c4"}


def test_c4_heads_are_drawn_from_the_seed_whatever_the_backbone_drew():
    deeper = build_maskrcnn({**C4_RCNN, "backbone": "resnet34"}, 3, (64, 64), seed=0)
    model = build_maskrcnn(C4_RCNN, 3, (64, 64), seed=0)
    for head in ("roi_heads.box_predictor.cls_score.weight", "roi_heads.mask_predictor.conv5_mask.weight"):
        assert torch.equal(model.state_dict()[head], deeper.state_dict()[head]), head


def test_the_c4_head_is_detectrons_r50_c4_layout():
    """One stride-16 map from res4, all anchor sizes on it, res5 shared by the box and the mask branch."""
    model = build_maskrcnn(C4_RCNN, 3, (64, 64), seed=0)
    features = model.backbone(torch.rand(1, 3, 64, 64))
    assert list(features) == ["0"] and features["0"].shape == (1, 256, 4, 4)  # resnet18's layer3: 256 channels, stride 16
    assert model.backbone.out_channels == 256
    assert model.rpn.anchor_generator.sizes == ((3, 5, 10, 20, 41),)  # the five FPN levels' sizes at one level
    assert model.roi_heads.box_roi_pool.output_size == (14, 14) and model.roi_heads.mask_roi_pool.output_size == (14, 14)
    assert model.roi_heads.mask_head is model.roi_heads.box_head.res5
    box_params = {id(p) for p in model.roi_heads.box_head.parameters()}
    assert box_params and box_params == {id(p) for p in model.roi_heads.mask_head.parameters()}
    assert model.roi_heads.box_predictor.cls_score.in_features == 512  # resnet18's res5
    assert model.roi_heads.mask_predictor.conv5_mask.out_channels == TINY_RCNN["head_dim"] // 4


def test_the_c4_mask_rcnn_trains_one_step_and_predicts_masks_at_the_image_size():
    model = build_maskrcnn(C4_RCNN, 3, (64, 64), seed=0).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    target = {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([2]), "masks": torch.from_numpy(square(8, 40, 64))[None]}
    losses = model([torch.rand(3, 64, 64)], [target])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    assert changed(model, before)
    out = model.eval()([torch.rand(3, 64, 64)])[0]
    assert out["masks"].shape[1:] == (1, 64, 64) and len(out["scores"]) <= 5


def test_a_c4_checkpoint_rebuilds_the_c4_model(tmp_path):
    from useg.methods.maskdistill.maskrcnn import load_maskrcnn
    from useg.methods.maskdistill.models import save_model

    model = build_maskrcnn(C4_RCNN, 3, (64, 64), seed=1)
    save_model(tmp_path / "rcnn.pt", model, "MaskRCNN", C4_RCNN, num_clusters=3, input_size=[64, 64])
    rebuilt, k, _, _ = load_maskrcnn(tmp_path / "rcnn.pt", torch.device("cpu"))
    assert k == 3 and rebuilt.roi_heads.mask_head is rebuilt.roi_heads.box_head.res5
    for name, value in model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[name], value, rtol=0, atol=0)


def test_the_c4_head_on_the_vit_names_the_key(tiny_backbone_cfg):
    cfg = vit_config(tiny_backbone_cfg, **{k: v for k, v in C4_RCNN.items() if k not in ("backbone", "weights")})
    with pytest.raises(ConfigError, match="maskdistill.maskrcnn.head: c4 needs a ResNet backbone"):
        build_maskrcnn(cfg, 3, (32, 32), seed=0)


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large"])
def test_deeplab_one_iteration(backbone):
    model = build_deeplab({**TINY_DEEPLAB, "backbone": backbone}, 4, seed=0).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model(torch.randn(2, 3, 32, 32))["out"]
    assert out.shape == (2, 4, 32, 32)
    hard_pixel_ce(out, torch.randint(0, 4, (2, 32, 32)), 0.2).backward()
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    assert changed(model, before)


def vit_config(tiny_backbone_cfg, **kw) -> dict:
    """A MaskDistill model config on the tiny pipeline ViT, as the stage commands assemble it."""
    arch = {k: v for k, v in tiny_backbone_cfg.__dict__.items() if k != "extra"}
    return {**kw, "backbone": "vit", "weights": "random", "vit": {**arch, "input_size": list(arch["input_size"])}}


def frozen_vit_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    vit = {n: p for n, p in model.named_parameters() if ".vit." in n}
    return bool(vit) and all(torch.equal(before[n], p) and not p.requires_grad for n, p in vit.items())


def test_anchor_top_sets_the_coarsest_anchor():
    model = build_maskrcnn({**TINY_RCNN, "anchor_top": 1.0}, 3, (32, 48), seed=0)
    assert model.rpn.anchor_generator.sizes == ((2,), (4,), (8,), (16,), (32,))  # 1.0 x the 32 px short side


def test_maskrcnn_on_the_frozen_vit(tiny_backbone_cfg):
    cfg = vit_config(tiny_backbone_cfg, **{k: v for k, v in TINY_RCNN.items() if k not in ("backbone", "weights")})
    model = build_maskrcnn(cfg, 3, (32, 32), seed=0).train()
    assert not model.backbone.body.vit.training, "the ViT stays in eval mode"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    target = {"boxes": torch.tensor([[4.0, 4.0, 28.0, 28.0]]), "labels": torch.tensor([1]), "masks": torch.from_numpy(square(4, 28, 32))[None]}
    losses = model([torch.rand(3, 32, 32), torch.rand(3, 24, 40)], [target, target])
    sum(losses.values()).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01).step()
    assert changed(model, before) and frozen_vit_unchanged(model, before)
    levels = model.backbone(torch.rand(1, 3, 32, 32))
    assert [tuple(f.shape[-2:]) for f in levels.values()] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    rebuilt = build_maskrcnn(for_rebuild(cfg), 3, (32, 32), seed=1)
    rebuilt.load_state_dict(model.state_dict())
    image = [torch.rand(3, 32, 32)]
    a, b = model.eval()(image)[0], rebuilt.eval()(image)[0]
    assert torch.equal(a["scores"], b["scores"]) and torch.equal(a["masks"], b["masks"])


def test_deeplab_on_the_frozen_vit(tiny_backbone_cfg):
    model = build_deeplab(vit_config(tiny_backbone_cfg, frozen_stages=0), 4, seed=0).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model(torch.randn(2, 3, 32, 32))["out"]
    assert out.shape == (2, 4, 32, 32)
    hard_pixel_ce(out, torch.randint(0, 4, (2, 32, 32)), 0.2).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01).step()
    assert changed(model, before) and frozen_vit_unchanged(model, before)


def test_vit_backbone_rejects_a_resnet_weights_file(tiny_backbone_cfg):
    cfg = {**vit_config(tiny_backbone_cfg, frozen_stages=0), "weights": "resnet50.pth"}
    with pytest.raises(ConfigError, match="maskdistill.deeplab.weights applies to ResNet"):
        build_deeplab(cfg, 4, seed=0)
    with pytest.raises(ConfigError, match="needs the `backbone` section"):
        build_deeplab({k: v for k, v in vit_config(tiny_backbone_cfg).items() if k != "vit"}, 4, seed=0)


SIZE = [(20, 20)]  # one 20 x 20 image


def test_mask_ap_known_answers():
    gt = Instances.of(square(0, 10, 20)[None].astype(bool), np.array([1]))
    perfect = Instances.of(square(0, 10, 20)[None], np.array([1]), np.array([0.9]))
    assert mask_ap([gt], [perfect], SIZE)["ap"] == pytest.approx(1.0)
    shifted = np.zeros((1, 20, 20), np.uint8)
    shifted[0, 0:10, 2:10] = 1  # IoU 0.8
    result = mask_ap([gt], [Instances.of(shifted, np.array([1]), np.array([0.9]))], SIZE)
    assert result["ap50"] == pytest.approx(1.0) and result["ap75"] == pytest.approx(1.0)
    shifted = np.zeros((1, 20, 20), np.uint8)
    shifted[0, 0:10, 2:8] = 1  # IoU 0.6
    result = mask_ap([gt], [Instances.of(shifted, np.array([1]), np.array([0.9]))], SIZE)
    assert result["ap50"] == pytest.approx(1.0) and result["ap75"] == 0.0
    wrong_class = Instances.of(square(0, 10, 20)[None], np.array([2]), np.array([0.9]))
    assert mask_ap([gt], [wrong_class], SIZE)["ap"] == 0.0


def test_single_setting_keeps_top_detection_and_best_box_match():
    gts = Instances.of(np.stack([square(0, 5, 20), square(10, 20, 20)]).astype(bool), np.array([1, 2]))
    dets = Instances.of(np.stack([square(0, 5, 20), square(11, 20, 20)]), np.array([1, 2]), np.array([0.3, 0.8]))
    gt, det = single_object(gts, dets)
    assert det.scores.tolist() == [0.8] and gt.classes.tolist() == [2]


def test_mask_rcnn_is_tested_at_its_largest_training_scale():
    from types import SimpleNamespace

    from useg.methods.maskdistill.models import inference_size

    model = SimpleNamespace(transform=SimpleNamespace(min_size=(480, 488)))
    inference_size(model, (640, 704), [0.75, 1.25])  # §A.1: trained at 480-800, tested at 800
    assert model.transform.min_size == (800,)
    inference_size(model, (96, 128), [0.6, 1.0])
    assert model.transform.min_size == (96,)


def test_one_object_class_gives_a_single_cluster_that_mask_rcnn_trains_on(tmp_path: Path):
    from useg.cluster.kmeans import fit_kmeans
    from useg.methods.maskdistill.commands import num_clusters

    (tmp_path / "classes.json").write_text('{"classes": ["animal", "background"], "things": ["animal"], "ignore_index": 255}')
    assert num_clusters(None, str(tmp_path / "classes.json")) == 1
    result = fit_kmeans(np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32), 1, niter=3, key="maskdistill.k")
    assert result.centroids.shape == (1, 4)
    model = build_maskrcnn(TINY_RCNN, 1, (32, 32), seed=0).train()
    target = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([1]), "masks": torch.from_numpy(square(4, 20, 32))[None]}
    assert torch.isfinite(sum(model([torch.rand(3, 32, 32)], [target]).values()))
    (tmp_path / "classes.json").write_text('{"classes": ["animal"], "things": [], "ignore_index": 255}')
    with pytest.raises(ConfigError, match="maskdistill.k is not set and the dataset has fewer than 2 classes"):
        num_clusters(None, str(tmp_path / "classes.json"))


def test_single_setting_keeps_only_the_top_detection_of_an_image_without_ground_truth():
    empty = Instances.of(np.zeros((0, 20, 20), bool), np.zeros(0, np.int64))
    dets = Instances.of(np.stack([square(0, 5, 20), square(10, 20, 20), square(5, 9, 20)]), np.array([1, 1, 1]), np.array([0.2, 0.9, 0.5]))
    gt, det = single_object(empty, dets)
    assert len(gt.classes) == 0 and det.scores.tolist() == [0.9] and rle_area(det.rles[0]) == square(10, 20, 20).sum()
    # Hand-made set: one image with its instance found (score 0.6), one without ground truth whose three
    # detections all outscore it. Kept whole, they rank first as false positives and AP drops to 1/4
    # (precision 1/4 at the only recall step); one false positive above it leaves precision 1/2.
    hit = Instances.of(square(0, 10, 20)[None].astype(bool), np.array([1]))
    found = Instances.of(square(0, 10, 20)[None], np.array([1]), np.array([0.6]))
    dets = Instances(dets.rles, dets.classes, np.array([0.7, 0.9, 0.8]))
    pairs = [single_object(hit, found), single_object(empty, dets)]
    assert mask_ap([p[0] for p in pairs], [p[1] for p in pairs], [SIZE[0]] * 2)["ap50"] == pytest.approx(0.5, abs=0.01)
    assert mask_ap([hit, empty], [found, dets], [SIZE[0]] * 2)["ap50"] == pytest.approx(0.25, abs=0.01)


def test_connected_component_keeps_the_island_of_the_source_patch():
    masks = torch.zeros(2, 4, 5, dtype=torch.bool)
    masks[:, 0:2, 0:2] = True  # island one (top left)
    masks[:, 2:4, 3:5] = True  # island two (bottom right), touching island one only diagonally at no point
    masks[:, 1, 2] = True  # joins island one 4-connectedly
    source = torch.tensor([0, 3 * 5 + 4])  # image 0: in island one, image 1: in island two
    kept = source_component(masks.reshape(2, -1), source, (4, 5)).reshape(2, 4, 5)
    one, two = torch.zeros(4, 5, dtype=torch.bool), torch.zeros(4, 5, dtype=torch.bool)
    one[0:2, 0:2], one[1, 2], two[2:4, 3:5] = True, True, True
    assert torch.equal(kept[0], one) and torch.equal(kept[1], two)
    diagonal = torch.zeros(1, 3, 3, dtype=torch.bool)
    diagonal[0, 0, 0] = diagonal[0, 1, 1] = True  # diagonal neighbours are not connected (4-connectivity)
    assert source_component(diagonal.reshape(1, -1), torch.tensor([0]), (3, 3)).sum() == 1


def test_release_a_cls_first_five_of_six_heads_and_half_mass():
    # Six heads; q_CLS . k_j = head value h_j; head 5 (the last) is huge and must be left out.
    values = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, 0.0]]).expand(5, 6)
    values = torch.cat([values, torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 100.0]])])  # [6 heads, 6 patches]
    q = torch.zeros(1, 6, 7, 1)
    q[0, :, 0, 0] = 1.0
    k = torch.zeros(1, 6, 7, 1)
    k[0, :, 1:, 0] = values
    a_cls = cls_affinity(q, k, cls_heads=-1)
    assert torch.allclose(a_cls, torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, 0.0]]))
    assert torch.allclose(cls_affinity(q, k, cls_heads=5), a_cls)
    assert torch.allclose(cls_affinity(q, k)[0, 5], torch.tensor(100 / 6))
    # sum 10; ascending cumulative shares 0, 0, .1, .3, .6, 1 -> above 1 - 0.5 keeps the patches of 4 and 3
    assert mass_set(a_cls, 0.5).tolist() == [[True, True, False, False, False, False]]
    with pytest.raises(ConfigError, match="maskdistill.cls_heads 7"):
        cls_affinity(q, k, cls_heads=7)
    with pytest.raises(ConfigError, match="maskdistill.cls_heads -6"):
        cls_affinity(q, k, cls_heads=-6)


def test_half_mass_zeroes_a_cls_before_the_top_k_proposals():
    # Two patches hold the top half of a_CLS; with top 40 % of 5 patches = 2 proposals, the mass set and P
    # agree, and a patch with a_CLS 2.9 but outside the mass set cannot enter P through the zeroing.
    q = torch.zeros(1, 1, 6, 2)
    q[0, 0, 0] = torch.tensor([1.0, 0.0])
    k = torch.zeros(1, 1, 6, 2)
    k[0, 0, 1:, 0] = torch.tensor([5.0, 4.0, 2.9, 0.1, 0.0])
    k[0, 0, 1:, 1] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])
    plain, _ = rule_masks(q, k, 1, (1, 5), MaskRule(topk=0.4))
    release, _ = rule_masks(q, k, 1, (1, 5), MaskRule(topk=0.4, cls_mass=0.5))
    assert plain.tolist() == release.tolist() == [[True, True, True, True, False]]
    # Below the mass set every patch ties at zero, so the rest of P goes to the lowest indices, not to the
    # next-largest a_CLS: a_CLS [3, -.5, -.4, -.3, -.2] keeps only patch 0 (ascending shares end at -.875, 1).
    a_cls = torch.tensor([[3.0, -0.5, -0.4, -0.3, -0.2]])
    assert mass_set(a_cls, 0.5).tolist() == [[True, False, False, False, False]]
    assert proposals(a_cls, 0.6).tolist() == [[True, False, False, True, True]]
    assert proposals(a_cls * mass_set(a_cls, 0.5), 0.6).tolist() == [[True, True, True, False, False]]


def test_mask_box_scales_to_the_original_image_and_an_empty_box_is_the_whole_image():
    from useg.methods.maskdistill.masks import original_box

    assert original_box(np.array([8, 4, 24, 16]), Frame((32, 32)), (64, 96)) == (24, 8, 72, 32)  # x by 3, y by 2
    assert original_box(np.array([31, 31, 32, 32]), Frame((32, 32)), (16, 16)) == (15, 15, 16, 16)  # at least one pixel
    assert original_box(np.zeros(4, np.int32), Frame((32, 32)), (20, 30)) == (0, 0, 30, 20)


def test_box_crop_is_cut_at_native_resolution_normalised_and_zero_padded_to_whole_patches():
    from useg.data.augment import normalise_images
    from useg.methods.maskdistill.masks import padded_crop

    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    crop = padded_crop(image, (5, 3, 22, 14), patch=8)  # 17 x 11 pixels -> 24 x 16
    assert crop.shape == (1, 3, 16, 24)
    expected = normalise_images(torch.from_numpy(image[3:14, 5:22]).permute(2, 0, 1).float() / 255)
    assert torch.allclose(crop[0, :, :11, :17], expected) and not crop[0, :, 11:].any() and not crop[0, :, :, 17:].any()


def test_box_crop_cls_is_the_backbone_cls_of_each_padded_crop(tmp_path: Path, tiny_backbone_cfg):
    from PIL import Image

    from useg.backbones import build_backbone
    from useg.data.manifest import ManifestRow
    from useg.methods.maskdistill.masks import box_crop_cls, padded_crop

    backbone = build_backbone(tiny_backbone_cfg, seed=0).eval()
    rng, rows = np.random.default_rng(1), []
    for i, (h, w) in enumerate([(48, 64), (40, 40)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(ManifestRow(id=f"im{i}", path=str(tmp_path / f"{i}.png"), width=w, height=h, split="train"))
    boxes = np.array([[0, 0, 16, 16], [8, 8, 32, 24]], np.int32)  # at the 32 x 32 working size
    cls = box_crop_cls(backbone, rows, boxes, Frame((32, 32)), torch.device("cpu"))
    first = np.array(Image.open(rows[0].path))
    with torch.no_grad():
        expected = backbone(padded_crop(first, (0, 0, 32, 24), 8)).cls  # x by 2, y by 1.5
    assert cls.shape == (2, backbone.embed_dim) and np.allclose(cls[0], expected[0].numpy(), atol=1e-5)
    assert not np.allclose(cls[0], cls[1])


def mask_bank_of(tmp_path: Path, name: str, cls: np.ndarray):
    """A MaskBank of given CLS tokens (one full-grid mask per image on a 4 x 4 grid of 32 x 32)."""
    from useg.stores.maskbank import MaskBank, MaskBankWriter

    n = len(cls)
    attrs = {"input_size": [32, 32], "patch_size": 8, "topk": 0.4, "background": "zero", "cluster_input": "box_crop"}
    with MaskBankWriter(tmp_path / name, np.arange(n), [f"im{i}" for i in range(n)], (4, 4), cls.shape[1], provenance("t", {}, seed=0), **attrs) as w:
        w.write(0, masks=np.ones((n, 4, 4), np.uint8), boxes=np.tile([0, 0, 32, 32], (n, 1)), source=np.zeros(n), cls=cls)
    return MaskBank([tmp_path / name])


def test_whitening_makes_the_clusters_blind_to_a_rescaled_dimension(tmp_path: Path):
    from useg.methods.maskdistill.clusters import fit_mask_clusters, whitening_scale

    rng = np.random.default_rng(0)
    # two groups apart along dimension 0 (std 1 within a group); dimension 1 is noise of std 0.01
    x = np.concatenate([rng.normal([-6, 0], [1, 0.01], (50, 2)), rng.normal([6, 0], [1, 0.01], (50, 2))]).astype(np.float32)
    assert np.allclose(whitening_scale(x), x.std(axis=0)) and whitening_scale(np.ones((3, 2)))[0] == 1.0
    loud = x * np.array([1, 1000], np.float32)  # the noise dimension now dominates the raw tokens' directions
    cfg = {"normalize": False, "niter": 20, "nredo": 3}
    truth = np.repeat([0, 1], 50)

    def agreement(tokens: np.ndarray, whiten: bool) -> float:
        bank = mask_bank_of(tmp_path, f"b{whiten}{tokens.max():.0f}.zarr", tokens)
        out = tmp_path / f"c{whiten}{tokens.max():.0f}.zarr"
        clusters = fit_mask_clusters(bank, bank, 2, {**cfg, "whiten": whiten}, 0, out, provenance("t", {}, seed=0))[:100]
        return max(np.mean(clusters == truth), np.mean(clusters != truth))

    assert agreement(x, False) == 1.0 and agreement(loud, True) == 1.0
    assert agreement(loud, False) < 0.9


def test_crf_round_labels_are_the_final_models_crf_predictions_and_train_deeplab_again(tmp_path: Path):
    from tests.unit.test_device_placement import write_rgb
    from useg.methods.maskdistill.deeplab import crf_label_bank, predict_deeplab, train_deeplab
    from useg.postprocess.crf import CRFConfig
    from useg.stores.labelbank import LabelBank, LabelBankWriter
    from useg.stores.predictions import Predictions

    rows = write_rgb(tmp_path, 4, size=32)
    labels = np.random.default_rng(0).integers(0, 3, (4, 32, 32))
    prov = provenance("t", {}, seed=0)
    with LabelBankWriter(tmp_path / "b.zarr", np.arange(4), [r.id for r in rows], 3, (32, 32), prov, with_maps=False, input_size=[32, 32]) as w:
        w.write(0, None, labels, labels < 2)
    cfg = TINY_DEEPLAB
    train_deeplab(rows, LabelBank([tmp_path / "b.zarr"]), cfg, 0, tmp_path / "deeplab.pt", torch.device("cpu"))
    crf, indexed = CRFConfig(iterations=2, window=3), list(enumerate(rows))
    crf_label_bank(tmp_path / "deeplab.pt", indexed, tmp_path / "crf.zarr", prov, torch.device("cpu"), crf)
    predict_deeplab(tmp_path / "deeplab.pt", indexed, tmp_path / "p.zarr", prov, torch.device("cpu"), crf=crf)
    bank, predicted = LabelBank([tmp_path / "crf.zarr"]), Predictions(tmp_path / "p.zarr").group["labels"][:]
    assert bank.num_labels == 3 and bank.attrs["background_label"] == 2 and bank.attrs["crf_round"]
    assert np.array_equal(bank.read("labels"), predicted) and np.array_equal(bank.read("foreground"), predicted != 2)
    train_deeplab(rows, bank, cfg, 0, tmp_path / "deeplab-crf.pt", torch.device("cpu"))
    assert (tmp_path / "deeplab-crf.pt").exists()


def test_frozen_stages_keep_their_batchnorm_statistics_and_the_rest_trains(tmp_path: Path):
    import torchvision
    from torchvision.ops import FrozenBatchNorm2d

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")  # a weights file made here
    model = build_deeplab({**TINY_DEEPLAB, "weights": str(tmp_path / "r18.pth"), "frozen_stages": 3}, 3, seed=0).train()
    body = model.backbone
    frozen = [body.bn1, *[m for stage in (body.layer1, body.layer2) for m in stage.modules()]]
    assert isinstance(body.bn1, FrozenBatchNorm2d) and not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen)
    assert not any(p.requires_grad for name in ("conv1", "layer1", "layer2") for p in getattr(body, name).parameters())
    trained_bn = next(m for m in body.layer3.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = {k: v.clone() for k, v in body.state_dict().items()}
    loss = hard_pixel_ce(model(torch.randn(2, 3, 32, 32))["out"], torch.randint(0, 3, (2, 32, 32)), 0.2)
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    after = body.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("bn1.", "layer1.", "layer2.")))
    assert trained_bn.weight.requires_grad and not torch.equal(before["layer3.0.bn1.running_mean"], after["layer3.0.bn1.running_mean"])
    rebuilt = build_deeplab({**TINY_DEEPLAB, "weights": str(tmp_path / "r18.pth"), "frozen_stages": 3}, 3, seed=1)
    rebuilt.load_state_dict(model.state_dict())  # a saved model rebuilds with the same layout


def test_scale_rotate_keeps_image_and_labels_aligned_and_fills_background():
    from useg.data.transforms import scale_rotate

    labels = np.full((40, 40), 3, np.uint8)
    labels[10:30, 12:28] = 1
    image = np.where(labels[..., None] == 1, 200, 50).astype(np.uint8).repeat(3, axis=2)
    warped, moved = scale_rotate(image, labels, degrees=5.0, scale=0.75, fill_label=3)
    inside = moved == 1
    assert 0.5 < inside.mean() / (labels == 1).mean() < 0.65  # the square's area shrinks by 0.75^2
    bright = warped[..., 0] > 125
    assert (bright == inside).mean() > 0.98  # image and labels moved together
    assert moved[0, 0] == 3 and warped[0, 0].tolist() == [0, 0, 0]  # outside the zoomed-out image: background, black


def test_deeplab_samples_flip_image_and_labels_together_and_repeat_for_the_same_generator():
    from useg.methods.maskdistill.deeplab import SegmentationAugment, augmented_pair

    labels = np.zeros((16, 16), np.uint8)
    labels[:, :4] = 1
    image = np.where(labels[..., None] == 1, 255, 0).astype(np.uint8).repeat(3, axis=2)
    no_warp = SegmentationAugment(degrees=0.0, scale=(1.0, 1.0))
    outs = [augmented_pair(image, labels, np.random.default_rng(s), no_warp, 2) for s in range(8)]
    for x, y in outs:
        assert torch.equal(x[0] > 0, y == 1)  # bright pixels are the label-1 pixels, flipped or not
    assert {bool(y[0, 0] == 1) for _, y in outs} == {True, False}  # some samples flipped, some not
    a, b = (augmented_pair(image, labels, np.random.default_rng(5), SegmentationAugment(), 2) for _ in range(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[1].shape == (16, 16)


def test_deeplab_trains_at_its_own_input_size(tmp_path: Path):
    from tests.unit.test_device_placement import write_rgb
    from useg.methods.maskdistill.deeplab import load_deeplab, train_deeplab
    from useg.stores.labelbank import LabelBank, LabelBankWriter

    rows = write_rgb(tmp_path, 4, size=32)
    labels = np.random.default_rng(0).integers(0, 3, (4, 32, 32))
    with LabelBankWriter(tmp_path / "b.zarr", np.arange(4), [r.id for r in rows], 3, (32, 32), provenance("t", {}, seed=0),
                         with_maps=False, input_size=[32, 32], background_label=2) as w:  # fmt: skip
        w.write(0, None, labels, labels < 2)
    train_deeplab(rows, LabelBank([tmp_path / "b.zarr"]), {**TINY_DEEPLAB, "input_size": [24, 24]}, 0, tmp_path / "d.pt", torch.device("cpu"), threads=2)
    assert load_deeplab(tmp_path / "d.pt")[1]["input_size"] == [24, 24]


def test_deeplab_carries_the_banks_labels_into_its_own_frame_through_the_image(tmp_path: Path):
    from PIL import Image

    from useg.data.manifest import ManifestRow
    from useg.methods.maskdistill.deeplab import training_batches
    from useg.stores.labelbank import LabelBank, LabelBankWriter
    from useg.world import World

    rows = []
    for i in range(2):  # 32 x 48 images; the bank squashed them to 32 x 32
        Image.fromarray(np.full((32, 48, 3), 200, np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(ManifestRow(id=f"im{i}", path=str(tmp_path / f"{i}.png"), width=48, height=32, split="train"))
    with LabelBankWriter(tmp_path / "b.zarr", np.arange(2), [r.id for r in rows], 3, (32, 32), provenance("t", {}, seed=0),
                         with_maps=False, input_size=[32, 32], background_label=2) as w:  # fmt: skip
        w.write(0, None, np.ones((2, 32, 32), np.int64), np.ones((2, 32, 32), bool))
    cfg = {**TINY_DEEPLAB, "input_size": [32, 32], "resize": "pad", "rotate": 0.0, "scale": [1.0, 1.0]}
    frame, _, loader = training_batches(rows, LabelBank([tmp_path / "b.zarr"]), cfg, 0, World(), 1, torch.device("cpu"))
    images, labels = next(iter(loader))
    assert frame.mode == "pad" and labels.shape == (2, 32, 32)
    assert (labels[:, :5] == 2).all() and (labels[:, -5:] == 2).all() and (labels[:, 5:27] == 1).all()  # 48 -> 32: 22 rows
    assert (images[:, :, :5] == images[:, :, :1, :1]).all() and (images[:, :, :1, :1] < images[:, :, 16:17, 16:17]).all()  # black border


def test_linear_classifier_lr_drops_tenfold_from_epoch_25():
    from useg.methods.maskdistill.linear import linear_lr

    assert [linear_lr(0.1, e, [25]) for e in (0, 24)] == [0.1, 0.1]
    assert linear_lr(0.1, 25, [25]) == pytest.approx(0.01) and linear_lr(0.1, 44, [25]) == pytest.approx(0.01)


def rows_with_masks(tmp_path: Path, classes: int) -> list:
    """Four 32 px RGB images with ground-truth masks (class ids < `classes`, some pixels ignore 255)."""
    from dataclasses import replace

    from PIL import Image

    from tests.unit.test_device_placement import write_rgb

    rows, rng = write_rgb(tmp_path, 4, size=32), np.random.default_rng(1)
    for i, row in enumerate(rows):
        mask = rng.integers(0, classes, (32, 32)).astype(np.uint8)
        mask[:2] = 255
        Image.fromarray(mask).save(tmp_path / f"m{i}.png")
        rows[i] = replace(row, mask_path=str(tmp_path / f"m{i}.png"))
    return rows


def test_linear_classifier_trains_a_new_1x1_conv_on_the_frozen_deeplab_and_predicts_class_ids(tmp_path: Path):
    from useg.methods.maskdistill.deeplab import load_deeplab, predict_deeplab, train_deeplab
    from useg.methods.maskdistill.linear import train_linear
    from useg.stores.labelbank import LabelBank, LabelBankWriter
    from useg.stores.predictions import Predictions

    rows = rows_with_masks(tmp_path, classes=5)
    labels = np.random.default_rng(0).integers(0, 3, (4, 32, 32))
    prov = provenance("t", {}, seed=0)
    with LabelBankWriter(tmp_path / "b.zarr", np.arange(4), [r.id for r in rows], 3, (32, 32), prov, with_maps=False, input_size=[32, 32]) as w:
        w.write(0, None, labels, labels < 2)
    train_deeplab(rows, LabelBank([tmp_path / "b.zarr"]), TINY_DEEPLAB, 0, tmp_path / "deeplab.pt", torch.device("cpu"))
    cfg = {"epochs": 3, "batch_size": 2, "lr": 0.1, "lr_epochs": [2], "weight_decay": 1e-4}
    train_linear(rows, tmp_path / "deeplab.pt", 5, cfg, 0, tmp_path / "linear.pt", torch.device("cpu"))
    (deeplab, _), (linear, ckpt) = load_deeplab(tmp_path / "deeplab.pt"), load_deeplab(tmp_path / "linear.pt")
    head = linear.classifier[4]
    assert head.kernel_size == (1, 1) and head.weight.shape == (5, deeplab.classifier[4].in_channels, 1, 1)
    assert ckpt["supervised"] and ckpt["num_labels"] == 5
    before, after = deeplab.state_dict(), linear.state_dict()
    frozen = [k for k in after if not k.startswith("classifier.4.")]
    assert all(torch.equal(before[k], after[k]) for k in frozen)  # weights and BatchNorm statistics unchanged
    assert head.weight.std() > 0 and not torch.allclose(head.bias, torch.zeros(5))  # trained from N(0, 0.01), bias 0
    predict_deeplab(tmp_path / "linear.pt", list(enumerate(rows)), tmp_path / "p.zarr", prov, torch.device("cpu"))
    predictions = Predictions(tmp_path / "p.zarr")
    assert predictions.supervised and predictions.method == "maskdistill-linear" and predictions.num_labels == 5


def test_each_deeplab_checkpoint_fills_its_own_column():
    from useg.methods.maskdistill.deeplab import column_name

    names = [column_name(supervised, crf) for supervised in (False, True) for crf in (False, True)]
    assert names == ["maskdistill", "maskdistill-crf", "maskdistill-linear", "maskdistill-linear-crf"]


def test_linear_classifier_needs_ground_truth_masks(tmp_path: Path):
    from tests.unit.test_device_placement import write_rgb
    from useg.errors import DataError
    from useg.methods.maskdistill.linear import check_ground_truth

    with pytest.raises(DataError, match="maskdistill.linear"):
        check_ground_truth(write_rgb(tmp_path, 2, size=16))


def mask_bank(tmp_path: Path, count: int) -> "MaskBank":  # noqa: F821
    """A MaskBank of `count` images on a 4 x 4 grid of a 32 x 32 working size: image i's object the patches
    [i % 3, i % 3 + 2) x [0, 2) (box in pixels), image 1's mask empty; the rows split over 2 shards."""
    from useg.stores.maskbank import MaskBank, MaskBankWriter

    masks, boxes = np.zeros((count, 4, 4), np.uint8), np.zeros((count, 4), np.int32)
    for i in range(count):
        if i != 1:
            masks[i, i % 3 : i % 3 + 2, 0:2] = 1
            boxes[i] = [0, 8 * (i % 3), 16, 8 * (i % 3 + 2)]
    attrs = {"input_size": [32, 32], "patch_size": 8, "topk": 0.4, "background": "none"}
    paths, half = [tmp_path / "m-0.zarr", tmp_path / "m-1.zarr"], count // 2
    for path, part in zip(paths, (slice(0, half), slice(half, count))):
        n = len(masks[part])
        with MaskBankWriter(path, np.arange(count)[part], [f"im{i}" for i in range(count)][part], (4, 4), 8, provenance("t", {}, 0), **attrs) as w:
            w.write(0, masks=masks[part], boxes=boxes[part], source=np.zeros(n), cls=np.zeros((n, 8)))
    return MaskBank(paths)


def test_pixel_masks_are_upsampled_a_chunk_at_a_time_in_bank_order(tmp_path: Path):
    bank = mask_bank(tmp_path, 7)
    chunks = list(bank.pixel_mask_chunks(rows=3))
    assert [c.shape for c in chunks] == [(3, 32, 32), (3, 32, 32), (1, 32, 32)]
    whole = np.concatenate(chunks)
    assert whole[1].sum() == 0 and whole[0, :16, :16].all() and whole[0].sum() == 256  # 2 x 2 patches of 8 px
    assert whole[4, 8:24, :16].all() and whole[4].sum() == 256  # image 4: patch rows [1, 3)
    assert all(np.array_equal(a, b) for a, b in zip(bank.pixel_masks(), whole)) and len(list(bank.pixel_masks())) == 7


def test_mask_rcnn_pairs_stream_from_the_bank_flipped_per_sample_and_the_same_for_zero_and_two_workers(tmp_path: Path):
    from tests.unit.test_device_placement import write_rgb
    from useg.data.images import load_rgb
    from useg.data.pipeline import epoch_cycle, sample_rng, unit_image
    from useg.data.transforms import resize_rgb
    from useg.methods.maskdistill.maskrcnn import training_loader

    rows, cpu = write_rgb(tmp_path, 7, size=40), torch.device("cpu")
    bank, clusters = mask_bank(tmp_path, 7), {i: i % 2 for i in range(7)}
    assert bank.nonempty(rows=2).tolist() == [True, False, True, True, True, True, True]
    cfg = {"batch_size": 4}

    def pairs(threads: int) -> list:
        batches, loader = training_loader(rows, bank, clusters, cfg, 3, threads, cpu)
        return [pair for batch in epoch_cycle(loader, batches, 5) for pair in batch]  # 6 samples: 1 batch an epoch

    serial, parallel = pairs(1), pairs(3)
    assert len(serial) == 20 and len(parallel) == 20
    for (x, t), (y, u) in zip(serial, parallel):
        assert torch.equal(x, y) and all(torch.equal(t[k], u[k]) for k in ("boxes", "labels", "masks"))
    pixels = np.stack(list(bank.pixel_masks()))
    batches, loader = training_loader(rows, bank, clusters, cfg, 3, 1, cpu)
    assert batches.size == 6 and loader.dataset.labels.positions.tolist() == [0, 2, 3, 4, 5, 6]
    flipped = []
    for epoch in (0, 1):
        for index, position in enumerate([0, 2, 3, 4, 5, 6]):
            image, target = loader.dataset[(epoch, index)][1]
            flips = bool(sample_rng(3, epoch, index).random() < 0.5)
            original = unit_image(resize_rgb(load_rgb(rows[position].path), (32, 32)))
            x0, y0, x1, y1 = (0, 8 * (position % 3), 16, 8 * (position % 3 + 2))
            assert torch.equal(image, original.flip(-1) if flips else original)
            assert np.array_equal(target["masks"][0].numpy(), pixels[position][:, ::-1] if flips else pixels[position])
            assert target["boxes"].tolist() == [[32 - x1, y0, 32 - x0, y1] if flips else [x0, y0, x1, y1]]
            assert target["labels"].tolist() == [clusters[position] + 1]
            flipped.append(flips)
    assert any(flipped) and not all(flipped)


def test_mask_rcnn_in_the_image_frame_trains_on_each_image_at_its_own_size_with_the_mask_carried_into_it(tmp_path: Path):
    from tests.unit.test_device_placement import write_rgb
    from useg.data.images import load_rgb
    from useg.data.pipeline import sample_rng, unit_image
    from useg.methods.maskdistill.maskrcnn import training_loader

    rows = write_rgb(tmp_path, 7, size=40)
    bank, clusters = mask_bank(tmp_path, 7), {i: i % 2 for i in range(7)}
    _, loader = training_loader(rows, bank, clusters, {"batch_size": 4, "frame": "image"}, 3, 1, torch.device("cpu"))
    pixels = np.stack(list(bank.pixel_masks()))
    for index, position in enumerate([0, 2, 3, 4, 5, 6]):
        image, target = loader.dataset[(0, index)][1]
        flips = bool(sample_rng(3, 0, index).random() < 0.5)
        original = unit_image(load_rgb(rows[position].path))  # 40 x 40: not brought into the 32 x 32 frame
        mask = bank.frame.unfit_labels(pixels[position], (40, 40), 0)
        assert torch.equal(image, original.flip(-1) if flips else original)
        assert np.array_equal(target["masks"][0].numpy(), mask[:, ::-1] if flips else mask)
        x0, y0, x1, y1 = (0, 10 * (position % 3), 20, 10 * (position % 3 + 2))  # the 8 px patches at 40 / 32
        assert target["boxes"].tolist() == [[40 - x1, y0, 40 - x0, y1] if flips else [x0, y0, x1, y1]]


def test_candidates_at_an_images_own_size_are_carried_into_the_working_frame():
    from useg.methods.maskdistill.maskrcnn import candidates_of

    masks = torch.zeros(2, 1, 20, 40)
    masks[0, 0, :10, :20] = 0.9  # the top-left quarter
    det = {"scores": torch.tensor([0.9, 0.2]), "labels": torch.tensor([1, 3]), "boxes": torch.zeros(2, 4), "masks": masks}
    out = candidates_of(det, Frame((8, 8)))
    assert out["masks"].shape == (2, 8, 8) and out["masks"][0, :4, :4].all() and out["masks"][0].sum() == 16
    assert out["boxes"].tolist() == [[0, 0, 4, 4], [0, 0, 0, 0]] and out["labels"].tolist() == [0, 2]
    assert candidates_of(det, None)["masks"].shape == (2, 20, 40)  # the working frame: as the model returns them
    none = candidates_of({k: v[:0] for k, v in det.items()}, Frame((8, 8)))
    assert none["masks"].shape == (0, 8, 8) and none["boxes"].shape == (0, 4)  # an image without candidates


@pytest.mark.parametrize("shape", [(375, 500), (500, 375), (333, 500), (480, 480), (17, 1000)])
def test_short_side_shape_is_torchvisions_resize_of_the_short_side(shape):
    from PIL import Image
    from torchvision.transforms import Resize

    from useg.methods.maskdistill.masks import short_side_shape

    height, width = shape
    resized = Resize(640)(Image.new("RGB", (width, height)))
    assert short_side_shape(shape, 640) == (resized.height, resized.width)


def test_short_side_sample_is_the_resized_image_normalised_and_zero_padded_at_bottom_and_right():
    from useg.data.transforms import normalise, resize_rgb
    from useg.methods.maskdistill.masks import ShortSideSample

    image = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    tensor, resized, original = ShortSideSample(20, 8)(image)
    assert resized == (20, 33) and original == (30, 50) and tensor.shape == (3, 24, 40)  # 20 x 33 -> whole patches
    assert torch.equal(tensor[:, :20, :33], normalise(resize_rgb(image, (20, 33))))
    assert not tensor[:, 20:].any() and not tensor[:, :, 33:].any()


def test_a_mask_is_carried_into_the_frame_grid_by_majority_and_its_source_to_the_patch_holding_most_of_it():
    from useg.methods.maskdistill.masks import grid_mask_and_source

    mask = np.zeros((8, 16), np.uint8)  # the image; the frame 8 x 8 squashes x by 2, a 2 x 2 grid of 4 px patches
    mask[:, :10] = 1  # patch columns in the frame: x 0-3 fully in, x 4-7 holds frame pixels 4 (in) and 5-7 (out)
    grid_mask, source = grid_mask_and_source(mask, (4, 12, 8, 16), Frame((8, 8)), (2, 2))
    assert grid_mask.tolist() == [[1, 0], [1, 0]] and source == 3  # the source: bottom right


@pytest.mark.parametrize("cluster_input", ["box_crop", "masked"])
def test_short_side_masks_are_the_rule_on_each_image_at_its_own_size_carried_into_the_frame(tmp_path: Path, tiny_backbone_cfg, cluster_input):
    from PIL import Image

    from useg.backbones import build_backbone
    from useg.data.manifest import ManifestRow
    from useg.methods.maskdistill.masks import (
        ShortSideSample, box_crop_cls, build_mask_bank, grid_mask_and_source, image_masks, mask_box, masked_images,
    )  # fmt: skip
    from useg.stores.maskbank import MaskBank

    backbone = build_backbone(tiny_backbone_cfg, seed=0).eval()
    rng, rows = np.random.default_rng(2), []
    for i, (h, w) in enumerate([(30, 50), (50, 30), (30, 50)]):  # two sizes in one batch
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append((i, ManifestRow(id=f"im{i}", path=str(tmp_path / f"{i}.png"), width=w, height=h, split="train")))
    cfg = {"topk": 0.4, "cls_heads": None, "cls_mass": 0.5, "connected": True, "cluster_input": cluster_input,
           "background": "zero", "batch_size": 3, "mask_short_side": 20}  # fmt: skip
    frame = Frame((32, 32))
    build_mask_bank(backbone, rows, cfg, frame, tmp_path / "bank.zarr", provenance("t", {}, seed=0), torch.device("cpu"))
    bank = MaskBank([tmp_path / "bank.zarr"])
    assert bank.attrs["mask_short_side"] == 20
    for i, row in rows:
        tensor, resized, original = ShortSideSample(20, backbone.patch_size)(np.array(Image.open(row.path)))
        assert tensor.shape[1:] == ((24, 40) if row.height == 30 else (40, 24))  # the aspect kept, not the frame's
        with torch.no_grad():
            out = backbone(tensor[None], qkv_blocks=(backbone.depth - 1,))
        q, k, _ = out.qkv[backbone.depth - 1]
        masks, source = rule_masks(q, k, backbone.num_prefix_tokens, out.grid, MaskRule(0.4, None, 0.5, True))
        [(image_mask, source_box)] = image_masks(masks, source, out.grid, backbone.patch_size, [resized], [original])
        expected, expected_source = grid_mask_and_source(image_mask, source_box, frame, (4, 4))
        assert image_mask.shape == original and np.array_equal(bank.read("masks")[i], expected)
        assert bank.read("source")[i] == expected_source and mask_box(image_mask).any()
        with torch.no_grad():  # the box crop cut by the mask's box in the original image, or the masked input
            if cluster_input == "box_crop":
                cls = box_crop_cls(backbone, [row], mask_box(image_mask)[None], None, torch.device("cpu"))[0]
            else:
                cls = backbone(masked_images(tensor[None], upsample_masks(masks, out.grid, tensor.shape[1:]), "zero")).cls[0].numpy()
        assert np.allclose(bank.read("cls")[i], cls, atol=1e-5)
