"""AlignSeg's release and paper variants on small tensors against hand-computed values."""

from __future__ import annotations

import functools
import math
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from useg.backbones.saliency import attention_mass_mask, blur_attention, drop_small_components
from useg.data.augment import Crop, global_local_views, intersection_share, normalise_images, overlaps_enough
from useg.errors import ConfigError
from useg.methods.alignseg.crops import NO_PHOTOMETRIC, crop_augment
from useg.methods.alignseg.decoder import DecoderConfig, build_decoder
from useg.methods.alignseg.losses import LossConfig, corr_loss, dense_corr, nt_xent_proto_loss, proto_corr, total_loss
from useg.methods.alignseg.optim import build_optimiser, build_schedule
from useg.methods.alignseg.train import AlignSegConfig, check_sizes
from useg.train import step_schedule
from useg.train.distributed import without_gpus

REPO = Path(__file__).resolve().parents[2]
R = 1 / math.sqrt(2)


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# --- L_proto ------------------------------------------------------------------------------------


def test_nt_xent_over_both_views_with_same_view_negatives():
    e = torch.eye(2)
    # identical views, K = 2: every anchor has its positive at cos 1 and two negatives at cos 0
    assert float(nt_xent_proto_loss(e[None], [e[None]], 1.0)) == pytest.approx(math.log(math.e + 2) - 1)
    assert float(nt_xent_proto_loss(e[None], [e[None]], 0.5)) == pytest.approx(math.log(math.e**2 + 2) - 2)
    # the two global prototypes coincide: z = (e1, e1 | e1, e2); the same-view negative of anchor 0 is at cos 1
    g, local = t([[[1, 0], [1, 0]]]), t([[[1, 0], [0, 1]]])
    per_anchor = [
        math.log(2 * math.e + 1) - 1,  # e1 (global 0): positive e1, negatives e1 (global 1), e2
        math.log(1 + 2 * math.e),  # e1 (global 1): positive e2 at cos 0, negatives e1, e1
        math.log(2 * math.e + 1) - 1,  # e1 (local 0)
        math.log(3),  # e2 (local 1): positive and both negatives at cos 0
    ]
    assert float(nt_xent_proto_loss(g, [local], 1.0)) == pytest.approx(sum(per_anchor) / 4)
    # averaged over images and over the local crops
    both = float(nt_xent_proto_loss(torch.cat([g, e[None]]), [torch.cat([local, e[None]])] * 2, 1.0))
    assert both == pytest.approx((sum(per_anchor) / 4 + math.log(math.e + 2) - 1) / 2)


# --- L_corr -------------------------------------------------------------------------------------


def test_proto_corr_softmax_over_the_prototypes_after_the_clamp():
    s_g, s_l = t([[[0.5, -0.5]]]), t([[[1, 0], [-1, 1]]])
    g = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]  # clamp (0.5, 0), then softmax
    first, second = [math.e / (math.e + 1), 1 / (math.e + 1)], [1 / (1 + math.e), math.e / (1 + math.e)]
    expected = [[g[0] * first[0] + g[1] * first[1], g[0] * second[0] + g[1] * second[1]]]
    assert torch.allclose(proto_corr(s_g, s_l, clamp=True, softmax=True)[0], t(expected))
    # without the clamp the negative similarities enter the softmax: (0.5, -0.5) -> (e/(e+1), 1/(e+1))
    raw = [math.e / (math.e + 1), 1 / (math.e + 1)]
    assert float(proto_corr(s_g, s_l, clamp=False, softmax=True)[0, 0, 0]) == pytest.approx(raw[0] * first[0] + raw[1] * first[1])


def test_dense_corr_rows_centred_and_the_batch_mean_added_back():
    x_g = t([[[1, 0], [0, 1]], [[1, 0], [1, 0]]])
    x_l = t([[[1, 0], [1, 1]], [[0, 1], [0, 1]]])
    # image 0: cos rows (1, r) and (0, r); image 1: all cos 0; the batch mean is (1 + 2r) / 8
    batch_mean = (1 + 2 * R) / 8
    rows = [(1 + R) / 2, R / 2]
    expected = [
        [[1 - rows[0] + batch_mean, R - rows[0] + batch_mean], [0 - rows[1] + batch_mean, R - rows[1] + batch_mean]],
        [[batch_mean, batch_mean], [batch_mean, batch_mean]],
    ]
    assert torch.allclose(dense_corr(x_g, x_l, centred=True), t(expected), atol=1e-6)
    assert torch.allclose(dense_corr(x_g, x_l)[0], t([[1, R], [0, R]]), atol=1e-6)


def test_corr_loss_sums_over_the_masked_pairs_and_the_images():
    s_g, s_l = t([[[0.5, -0.5]]]), t([[[1, 0], [-1, 1]]])
    x_g, x_l = t([[[1, 0]]]), t([[[2, 0], [0, 3]]])
    # unclamped ProtoCorr (0.5, -1) * (DenseCorr - 0.25) (0.75, -0.25) = (0.375, 0.25)
    assert float(corr_loss(s_g, [s_l], x_g, [x_l], 0.25, clamp=False, reduction="sum")) == pytest.approx(-0.625)
    assert float(corr_loss(s_g, [s_l], x_g, [x_l], 0.25, clamp=False, reduction="mean")) == pytest.approx(-0.3125)
    m_g, m_l = torch.tensor([[True]]), [torch.tensor([[True, False]])]
    masked = corr_loss(s_g, [s_l], x_g, [x_l], 0.25, False, m_g, m_l, reduction="sum")
    assert float(masked) == pytest.approx(-0.375)  # only the salient pair; "mean" would divide by 2 pairs
    two = [torch.cat([a, a]) for a in (s_g, s_l, x_g, x_l)]
    assert float(corr_loss(two[0], [two[1]], two[2], [two[3]], 0.25, clamp=False, reduction="sum")) == pytest.approx(-1.25)
    # the release's total: 1 x NT-Xent + 0.15 x the summed L_corr (softmax ProtoCorr, centred DenseCorr)
    e = torch.eye(2)[None]
    loss, terms = total_loss(LossConfig(shift=0.25), (e, [e]), (s_g, [s_l]), (x_g, [x_l]), (m_g, m_l))
    g = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    protos = g[0] * math.e / (math.e + 1) + g[1] / (math.e + 1)  # the salient pair (local patch 0)
    centred = 1 - 0.5 + 0.5  # DenseCorr row (1, 0): minus its mean 0.5, plus the batch mean 0.5
    assert terms["loss_corr"] == pytest.approx(-protos * (centred - 0.25), rel=1e-5)
    assert float(loss) == pytest.approx(math.log(math.e + 2) - 1 + 0.15 * terms["loss_corr"], rel=1e-5)


# --- crops --------------------------------------------------------------------------------------


def test_overlap_rule_by_image_area():
    original = (20, 20)
    a = Crop(0, 0, 10, 10, False)
    assert intersection_share(a, Crop(5, 5, 10, 10, False), original) == pytest.approx(25 / 400)
    assert intersection_share(a, Crop(10, 0, 10, 10, False), original) == 0.0  # edges touch
    assert overlaps_enough(a, Crop(5, 5, 10, 10, False), "area", 0.05, (16, 16), 8, original)
    assert not overlaps_enough(a, Crop(8, 8, 10, 10, False), "area", 0.05, (16, 16), 8, original)  # 4 px^2 = 1 %
    assert not overlaps_enough(a, Crop(0, 8, 10, 10, False), "area", 0.05, (16, 16), 8, original)  # 20 px^2: not more than 5 %
    # the patch rule on the same pair: of the patch centres of `a` (2.5 or 7.5 px each way) only (7.5, 7.5) is inside
    assert overlaps_enough(a, Crop(5, 5, 10, 10, False), "patches", 0.25, (16, 16), 8, original)
    assert not overlaps_enough(a, Crop(5, 5, 10, 10, False), "patches", 0.3, (16, 16), 8, original)


def test_release_crops_overlap_by_area_without_flip_or_colour():
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    aug = crop_augment([32, 32], [0.05, 0.25], {})
    for seed in range(10):
        g, locals_ = global_local_views(image, crop_augment([32, 32], [0.5, 1.0], {}), aug, 2, 0.05, 8, np.random.default_rng(seed), "area")
        for view in locals_:
            assert intersection_share(view.crop, g.crop, (48, 64)) > 0.05 and not view.crop.flip
            c = view.crop
            region = torch.from_numpy(image[c.top : c.top + c.height, c.left : c.left + c.width]).permute(2, 0, 1)[None].float()
            resized = torch.nn.functional.interpolate(region, size=(32, 32), mode="bilinear", align_corners=False)[0] / 255
            assert torch.allclose(view.image, normalise_images(resized), atol=0.05)  # only resampling differs: no colour change


# --- saliency -----------------------------------------------------------------------------------


def reference_blur(scores: np.ndarray, sigma: float) -> np.ndarray:
    """A 7x7 Gaussian with reflected borders, written out."""
    x = np.arange(-3, 4)
    k = np.exp(-(x**2) / (2 * sigma**2))
    k /= k.sum()
    padded = np.pad(scores, 3, mode="reflect")
    h, w = scores.shape
    return np.array([[(padded[i : i + 7, j : j + 7] * np.outer(k, k)).sum() for j in range(w)] for i in range(h)])


def test_small_components_removed_with_eight_neighbours():
    mask = torch.tensor(
        [
            [1, 1, 0, 0, 0],
            [1, 0, 0, 0, 1],
            [0, 0, 0, 1, 0],
            [0, 0, 1, 0, 0],
            [1, 0, 0, 0, 0],
        ],
        dtype=torch.bool,
    )[None]
    expected = mask.clone()
    expected[0, 4, 0] = False  # the lone patch; the diagonal chain of 3 is one component
    assert torch.equal(drop_small_components(mask, 3), expected)
    assert not drop_small_components(mask, 4).any()
    assert torch.equal(drop_small_components(mask, 1), mask)


def test_blurred_island_free_saliency_mask_on_a_known_map():
    scores = np.zeros((6, 6), np.float32)
    scores[1, 1], scores[1, 2], scores[2, 1], scores[2, 2], scores[4, 4] = 0.30, 0.25, 0.20, 0.13, 0.12
    attn = torch.from_numpy(scores)[None, None]
    # no blur, 90 % of the mass: the four blob patches and the lone one at (4, 4)
    plain = attention_mass_mask(attn, 0.9)
    assert plain[0].nonzero().tolist() == [[1, 1], [1, 2], [2, 1], [2, 2], [4, 4]]
    assert attention_mass_mask(attn, 0.9, min_component=3)[0].nonzero().tolist() == [[1, 1], [1, 2], [2, 1], [2, 2]]
    blurred = reference_blur(scores, 0.6)
    assert torch.allclose(blur_attention(attn[:, 0], 0.6)[0], torch.from_numpy(blurred).float(), atol=1e-6)
    # the blur spreads the blob: 60 % of the blurred mass = the fewest top patches of the reference map
    order = np.argsort(-blurred.ravel())
    keep = np.zeros(36, bool)
    keep[order[: np.searchsorted(np.cumsum(blurred.ravel()[order]) / blurred.sum(), 0.6) + 1]] = True
    mask = attention_mass_mask(attn, 0.6, blur_sigma=0.6)
    assert torch.equal(mask[0].reshape(-1), torch.from_numpy(keep)) and int(mask.sum()) > 4


# --- optimiser and schedule ---------------------------------------------------------------------


def test_no_weight_decay_on_biases_norms_and_prototypes():
    decoder = build_decoder(DecoderConfig(dim=8, prototypes=3, heads=2, ffn_dim=16), seed=0)
    names = {id(p): n for n, p in decoder.named_parameters()}
    decay, no_decay = build_optimiser(decoder, AlignSegConfig()).param_groups
    assert decay["weight_decay"] == 0.04 and no_decay["weight_decay"] == 0.0 and decay["lr"] == 5e-4
    weights = ["cross.in_proj_weight", "cross.out_proj.weight", "self_attn.in_proj_weight", "self_attn.out_proj.weight", "ffn.0.weight", "ffn.2.weight"]
    assert sorted(names[id(p)] for p in decay["params"]) == sorted(f"layers.0.{w}" for w in weights)
    assert sum(p.numel() for p in decay["params"]) == 192 + 64 + 192 + 64 + 128 + 128
    # prototypes 3x8; biases: in_proj 24 x 2, out_proj 8 x 2, FFN 16 + 8; three LayerNorms 16 each
    assert "prototypes" in {names[id(p)] for p in no_decay["params"]}
    assert sum(p.numel() for p in no_decay["params"]) == 24 + 48 + 16 + 24 + 48
    (every,) = build_optimiser(decoder, AlignSegConfig(weight_decay_exempt=False)).param_groups
    assert len(every["params"]) == len(list(decoder.parameters())) and every["weight_decay"] == 0.04


def test_step_schedule_halves_every_three_epochs():
    assert step_schedule(1.0, epochs=7, iters_per_epoch=2, step_epochs=3, gamma=0.5).tolist() == [1.0] * 6 + [0.5] * 6 + [0.25] * 2
    release = build_schedule(AlignSegConfig(epochs=10), iters_per_epoch=1)
    assert release.tolist() == pytest.approx([5e-4] * 3 + [2.5e-4] * 3 + [1.25e-4] * 3 + [6.25e-5])
    cosine = build_schedule(AlignSegConfig(schedule="cosine", lr=1.0, min_lr=0.0, epochs=3, warmup_epochs=1), iters_per_epoch=2)
    assert cosine.tolist() == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.25, 0.0])  # linear warm-up, then cosine over 4 steps


# --- decoder ------------------------------------------------------------------------------------


def test_decoder_relu_ffn_width_and_truncated_normal_init():
    release = build_decoder(DecoderConfig(dim=64, prototypes=3, heads=4, ffn_dim=256), seed=0).layers[0]
    assert isinstance(release.ffn[1], torch.nn.ReLU) and release.ffn[0].out_features == 256
    linears = [release.ffn[0].weight, release.ffn[2].weight, release.cross.out_proj.weight]
    assert all(abs(float(w.detach().std()) - 0.02) < 0.002 for w in linears)
    assert all(not b.detach().any() for b in (release.ffn[0].bias, release.ffn[2].bias, release.cross.out_proj.bias))
    paper = build_decoder(DecoderConfig(dim=64, prototypes=3, heads=4, ffn_dim=None, activation="gelu", init="default"), 0)
    layer = paper.layers[0]
    assert isinstance(layer.ffn[1], torch.nn.GELU) and layer.ffn[0].out_features == 4 * 64
    assert float(layer.ffn[0].weight.detach().std()) > 0.05  # PyTorch's uniform(±1/sqrt(64)): std 0.072


# --- configuration ------------------------------------------------------------------------------


@functools.cache
def alignseg_schema() -> dict:
    schema = yaml.load((REPO / "workflow/schemas/config.schema.yaml").read_text(), Loader=yaml.CSafeLoader)
    return schema["properties"]["alignseg"]["properties"]


def test_config_defaults_are_the_schema_defaults():
    defaults = {k: v["default"] for k, v in alignseg_schema().items() if "default" in v}
    cfg = AlignSegConfig()
    for f in fields(AlignSegConfig):
        if f.name not in ("augment", "losses"):
            assert getattr(cfg, f.name) == defaults[f.name], f.name
    assert set(defaults) == {f.name for f in fields(AlignSegConfig)} | {"gpus"}, "gpus: the rule's processes, not a training key"
    augment = alignseg_schema()["augment"]["properties"]
    assert {k: v["default"] for k, v in augment.items() if k.endswith("_p")} == NO_PHOTOMETRIC


def test_paper_overlay_sets_the_paper_forms():
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["alignseg"].update(yaml.safe_load((REPO / "configs/variants/alignseg-paper.yaml").read_text())["alignseg"])
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    cfg = AlignSegConfig(**without_gpus(config["alignseg"]))
    loss = cfg.loss()
    assert (loss.proto_loss, loss.proto_corr, loss.dense_corr, loss.corr_reduction) == ("paper", "paper", "paper", "mean")
    assert (loss.tau, loss.shift, loss.beta) == (0.1, 0.3, 1.0)
    assert cfg.crops().overlap_rule == "patches" and cfg.crops().global_aug.jitter_p == 0.8
    assert (cfg.attention_blur, cfg.attention_min_component, cfg.schedule, cfg.weight_decay) == (0.0, 1, "cosine", 0.0)


def test_bad_choices_and_too_small_blurred_crops_are_named():
    with pytest.raises(ConfigError, match="alignseg.dense_corr is 'centred'; use one of release, paper"):
        AlignSegConfig(dense_corr="centred")
    with pytest.raises(ConfigError, match="alignseg.local_size .* attention_blur: 0"):
        check_sizes(AlignSegConfig(global_size=[32, 32], local_size=[16, 16]), 8)
    check_sizes(AlignSegConfig(global_size=[32, 32], local_size=[16, 16], attention_blur=0.0), 8)
    check_sizes(AlignSegConfig(global_size=[32, 32], local_size=[16, 16], saliency_mask=False), 8)
