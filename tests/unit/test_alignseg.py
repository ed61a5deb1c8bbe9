"""AlignSeg on small tensors: decoder, eq. 2-3, saliency mask, crops, every loss against hand values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from useg.backbones.saliency import attention_mass_mask
from useg.data.augment import Crop, ViewAugment, coords_in_crop, global_local_views, overlap_share, patch_coords
from useg.errors import ConfigError, StoreError
from useg.methods.alignseg.decoder import DecoderConfig, assign, build_decoder, segment, similarity
from useg.methods.alignseg.losses import LossConfig, corr_loss, dense_corr, proto_corr, proto_loss, total_loss
from useg.methods.alignseg.train import AlignSegConfig


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


PAPER = {"proto_loss": "paper", "proto_corr": "paper", "dense_corr": "paper", "corr_reduction": "mean"}  # eq. 4-10 literally


# --- segmentation module (§IV-A) ---------------------------------------------------------------


def test_decoder_shapes_and_permutation_behaviour():
    decoder = build_decoder(DecoderConfig(dim=16, prototypes=3, layers=2, heads=2), seed=0).eval()
    tokens = torch.randn(2, 10, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = decoder(tokens)
        assert out.shape == (2, 3, 16)
        # keys/values carry no positions: shuffling the patches leaves P^x unchanged
        assert torch.allclose(decoder(tokens[:, torch.randperm(10)]), out, atol=1e-5)
        # the prototypes are a set: permuting P permutes P^x the same way
        perm = torch.tensor([2, 0, 1])
        decoder.prototypes.copy_(decoder.prototypes[perm])
        assert torch.allclose(decoder(tokens), out[:, perm], atol=1e-5)
        assert segment(decoder, tokens.reshape(2, 2, 5, 16)).shape == (2, 3, 2, 5)
    again = build_decoder(DecoderConfig(dim=16, prototypes=3, layers=2, heads=2), seed=0)
    assert not torch.equal(again.prototypes, decoder.prototypes)  # the test above really permuted


def test_cosine_similarity_and_argmax_assignment():
    tokens = t([[[1, 0], [0, 2], [-1, 0.1]]])
    protos = t([[[0, 1], [3, 0]]])
    s = similarity(tokens, protos)
    expected = [[0, 1], [1, 0], [0.1 / math.hypot(1, 0.1), -1 / math.hypot(1, 0.1)]]
    assert torch.allclose(s[0], t(expected), atol=1e-6)
    assert assign(s).tolist() == [[1, 0, 0]]


def test_attention_mask_keeps_sixty_percent_of_the_mass():
    attn = t([0.1, 0.5, 0.1, 0.3]).reshape(1, 1, 2, 2)
    # from the top: 0.5 (share 0.5 < 0.6, kept), 0.3 crosses 0.6 and is kept, the rest dropped
    assert attention_mass_mask(attn, 0.6).reshape(-1).tolist() == [False, True, False, True]
    assert attention_mass_mask(attn, 0.4).reshape(-1).tolist() == [False, True, False, False]
    assert attention_mass_mask(attn, 1.0).all()
    # heads are averaged first: (0.5, 0.3, 0.1, 0.1) and (0.1, 0.1, 0.1, 0.7) -> 0.3, 0.2, 0.1, 0.4
    two = t([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]]).reshape(1, 2, 2, 2)
    assert attention_mass_mask(two, 0.6).reshape(-1).tolist() == [True, False, False, True]


# --- crops (§IV-B) ------------------------------------------------------------------------------


def test_coords_in_crop_maps_original_points_into_a_crop_frame():
    pts = t([[0.35, 0.45]])  # (35, 90) px in a 100 x 200 image
    crop = Crop(top=10, left=20, height=50, width=100, flip=False)
    assert coords_in_crop(pts, crop, (100, 200)).tolist()[0] == pytest.approx([0.5, 0.7])
    flipped = Crop(10, 20, 50, 100, True)
    assert coords_in_crop(pts, flipped, (100, 200)).tolist()[0] == pytest.approx([0.5, 0.3])


def test_local_patches_map_into_global_coordinates():
    original = (64, 64)
    global_crop = Crop(0, 0, 64, 64, flip=True)  # whole image, mirrored
    local = Crop(16, 32, 32, 32, flip=False)  # the right half of the middle band
    coords = coords_in_crop(patch_coords(local, (16, 16), 8, original), global_crop, original)
    # local patch centres at 8 and 24 px of a 32 px crop -> y 24, 40 px; x 40, 56 px, mirrored by the global flip
    expected = [[24 / 64, 1 - 40 / 64], [24 / 64, 1 - 56 / 64], [40 / 64, 1 - 40 / 64], [40 / 64, 1 - 56 / 64]]
    assert torch.allclose(coords, t(expected))
    assert overlap_share(local, global_crop, (16, 16), 8, original) == 1.0
    assert overlap_share(Crop(0, 48, 16, 16, False), Crop(0, 0, 64, 56, False), (16, 16), 8, original) == 0.5


def test_local_crops_respect_the_minimum_overlap():
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    global_aug = ViewAugment(size=(32, 32), scale=(0.2, 0.4))
    local_aug = ViewAugment(size=(16, 16), scale=(0.05, 0.3))
    for seed in range(20):
        g, locals_ = global_local_views(image, global_aug, local_aug, 3, 0.75, 8, np.random.default_rng(seed))
        assert g.image.shape == (3, 32, 32) and len(locals_) == 3
        for view in locals_:
            assert view.image.shape == (3, 16, 16)
            assert overlap_share(view.crop, g.crop, (16, 16), 8, (64, 64)) >= 0.75


# --- losses (§IV-B) -----------------------------------------------------------------------------


def test_proto_loss_against_hand_values():
    g = t([[[1, 0], [0, 1]]])
    same, swapped = t([[[2, 0], [0, 3]]]), t([[[0, 1], [1, 0]]])
    # tau 1: matched pairs cos 1 vs 0 -> log(1 + e^-1) per prototype; swapped -> log(1 + e) per prototype
    assert float(proto_loss(g, [same], 1.0)) == pytest.approx(2 * math.log(1 + math.exp(-1)))
    both = (2 * math.log(1 + math.exp(-1)) + 2 * math.log(1 + math.e)) / 2
    assert float(proto_loss(g, [same, swapped], 1.0)) == pytest.approx(both)


def test_proto_corr_clamp_dense_corr_and_corr_loss_against_hand_values():
    s_g, s_l = t([[[0.5, -0.5]]]), t([[[1, 0], [-1, 1]]])
    assert proto_corr(s_g, s_l, clamp=True).tolist() == [[[0.5, 0.0]]]
    assert proto_corr(s_g, s_l, clamp=False).tolist() == [[[0.5, -1.0]]]
    x_g, x_l = t([[[1, 0]]]), t([[[2, 0], [0, 3]]])
    assert dense_corr(x_g, x_l).tolist() == [[[1.0, 0.0]]]
    # shift 0.25: ProtoCorr (0.5, 0) * (DenseCorr - h) (0.75, -0.25) = (0.375, 0) -> mean 0.1875
    assert float(corr_loss(s_g, [s_l], x_g, [x_l], 0.25)) == pytest.approx(-0.1875)
    # unclamped: (0.5, -1) * (0.75, -0.25) = (0.375, 0.25) -> mean 0.3125
    assert float(corr_loss(s_g, [s_l], x_g, [x_l], 0.25, clamp=False)) == pytest.approx(-0.3125)


def test_corr_loss_is_zero_outside_the_saliency_intersection():
    gen = torch.Generator().manual_seed(0)
    s_g, x_g = torch.randn(1, 3, 4, generator=gen), torch.randn(1, 3, 8, generator=gen)
    s_l = torch.randn(1, 2, 4, generator=gen, requires_grad=True)
    x_l = torch.randn(1, 2, 8, generator=gen)
    m_g, m_l = torch.tensor([[True, False, True]]), torch.tensor([[False, True]])
    loss = corr_loss(s_g, [s_l], x_g, [x_l], 0.1, False, m_g, [m_l])
    full = (proto_corr(s_g, s_l, False) * (dense_corr(x_g, x_l) - 0.1))[0]
    assert float(loss.detach()) == pytest.approx(-float(full[[0, 2], 1].sum().detach()) / 6, abs=1e-6)  # mean over all 6 pairs
    loss.backward()
    assert torch.all(s_l.grad[0, 0] == 0) and torch.any(s_l.grad[0, 1] != 0)  # the non-salient local patch
    nothing = corr_loss(s_g, [s_l], x_g, [x_l], 0.1, False, m_g, [torch.tensor([[False, False]])])
    assert float(nothing.detach()) == 0.0


def test_total_loss_weights_and_switches():
    g, loc = t([[[1, 0], [0, 1]]]), [t([[[1, 0], [0, 1]]])]
    s_g, s_l = t([[[0.5, -0.5]]]), [t([[[1, 0], [-1, 1]]])]
    x_g, x_l = t([[[1, 0]]]), [t([[[2, 0], [0, 3]]])]
    masks = (torch.tensor([[True]]), [torch.tensor([[True, True]])])
    args = ((g, loc), (s_g, s_l), (x_g, x_l), masks)
    proto = 2 * math.log(1 + math.exp(-1))
    loss, terms = total_loss(LossConfig(alpha=2.0, beta=3.0, tau=1.0, shift=0.25, **PAPER), *args)
    assert float(loss) == pytest.approx(2 * proto + 3 * -0.1875) and set(terms) == {"loss_proto", "loss_corr"}
    loss, terms = total_loss(LossConfig(beta=1.0, tau=1.0, shift=0.25, proto=False, **PAPER), *args)
    assert float(loss) == pytest.approx(-0.1875) and set(terms) == {"loss_corr"}
    masked = (torch.tensor([[False]]), [torch.tensor([[True, True]])])
    loss, _ = total_loss(LossConfig(beta=1.0, tau=1.0, shift=0.25, proto=False, **PAPER), *args[:3], masked)
    assert float(loss) == 0.0
    loss, _ = total_loss(LossConfig(beta=1.0, tau=1.0, shift=0.25, proto=False, saliency=False, **PAPER), *args[:3], masked)
    assert float(loss) == pytest.approx(-0.1875)
    with pytest.raises(ConfigError, match="proto and corr"):
        AlignSegConfig(losses={"proto": False, "corr": False}).loss()


# --- training: determinism and resume -----------------------------------------------------------


def test_training_is_deterministic_and_resumes_where_it_stopped(tmp_path, tiny_backbone_cfg, monkeypatch):
    from PIL import Image

    from useg.backbones import build_backbone
    from useg.methods.alignseg import train as T

    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(paths[-1])
    cfg = AlignSegConfig(k=3, heads=2, global_size=[32, 32], local_size=[16, 16], epochs=2, batch_size=2, lr=1e-3, attention_blur=0.0)
    backbone = build_backbone(tiny_backbone_cfg, seed=0)

    def run(name: str) -> dict:
        out = tmp_path / f"{name}.pt"
        T.train_alignseg(cfg, backbone, paths, 3, out, out.with_suffix(".json"), tmp_path / f"{name}.resume", "h", 0, torch.device("cpu"))
        return torch.load(tmp_path / f"{name}.pt", weights_only=True)

    first, second = run("a"), run("b")
    assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])
    assert not torch.equal(first["state_dict"]["prototypes"], T.build_decoder(cfg.decoder(64, 3), 0).prototypes)

    save = T.save_checkpoint

    def save_then_die(path, state):
        save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run("c")
    assert not (tmp_path / "c.pt").exists() and (tmp_path / "c.resume").exists()
    monkeypatch.setattr(T, "save_checkpoint", save)
    resumed = run("c")
    assert resumed["resumed_from_epoch"] == 1 and len(resumed["history"]) == 2
    assert not (tmp_path / "c.resume").exists()  # a finished run leaves no state to resume from
    log = json.loads((tmp_path / "c.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [1, 2] and {"loss", "loss_proto", "loss_corr"} <= set(log["epochs"][0])
    assert all(torch.equal(first["state_dict"][k], resumed["state_dict"][k]) for k in first["state_dict"])


def test_end_to_end_predictor_segments_images(tmp_path, tiny_backbone_cfg):
    from useg.backbones import build_backbone
    from useg.methods.alignseg.decoder import save_decoder
    from useg.methods.alignseg.infer import load_predictor

    backbone = build_backbone(tiny_backbone_cfg, seed=0).eval()
    decoder = build_decoder(DecoderConfig(dim=64, prototypes=3, heads=2), seed=0)
    save_decoder(decoder, tmp_path / "d.pt", {})
    model = load_predictor(tmp_path / "d.pt", backbone, torch.device("cpu"))
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scores = model(images)
        expected = segment(decoder.eval(), backbone(images).patches)
    assert scores.shape == (2, 3, 4, 4) and torch.allclose(scores, expected, atol=1e-6)
    assert float(scores.abs().max()) <= 1 + 1e-6  # cosine similarities
    save_decoder(build_decoder(DecoderConfig(dim=16, prototypes=3, heads=2), 0), tmp_path / "e.pt", {})
    with pytest.raises(StoreError, match="16-d"):
        load_predictor(tmp_path / "e.pt", backbone, torch.device("cpu"))


# --- objective probe (benchmarks/alignseg_objective.py) -------------------------------------


def test_objective_probe_mask_at_grid_and_class_centroids():
    from benchmarks.alignseg_objective import class_centroids, mask_at_grid

    mask = np.zeros((6, 9), np.uint8)
    mask[:, 3:] = 1
    mask[:2, 6:] = 255
    assert mask_at_grid(mask, (2, 3)).tolist() == [[0, 1, 255], [0, 1, 1]]
    tokens = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [0.0, 1.0], [5.0, 5.0]]])
    labels = torch.tensor([[0, 1, 1, 255]])
    centroids = class_centroids(tokens, labels, 3)
    assert torch.allclose(centroids, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))  # unit tokens averaged


def test_objective_probe_prefers_the_true_partition_of_separable_tokens():
    from benchmarks.alignseg_objective import fixed, patch_miou, probe, whole_image_corr_loss

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (4, 16), generator=g)
    tokens = torch.eye(2)[labels] + 0.05 * torch.randn(4, 16, 2, generator=g)  # two orthogonal classes
    scores = fixed(torch.eye(2), tokens)
    collapsed = fixed(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]), tokens)
    expected = float(corr_loss(scores, [scores], tokens, [tokens], 0.3))
    assert whole_image_corr_loss(tokens, scores, 0.3, chunk=3) == pytest.approx(expected, rel=1e-5)
    assert whole_image_corr_loss(tokens, scores, 0.3) < whole_image_corr_loss(tokens, collapsed, 0.3)
    assert patch_miou(scores, labels, 2) == pytest.approx(1.0)
    result = probe(tokens, labels, collapsed, 2, 0.3)
    assert result["ground_truth_centroids"]["patch_miou"] == pytest.approx(1.0)
    assert result["trained"]["loss_corr"] > result["ground_truth_centroids"]["loss_corr"]
