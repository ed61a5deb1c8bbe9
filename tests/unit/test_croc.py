"""CrOC: Sinkhorn, cross-view clustering (merge, a-posteriori K, pruning, positions), training."""

import json

import numpy as np
import pytest
import torch

from useg.backbones import BackboneConfig, build_backbone
from useg.cluster.sinkhorn import sinkhorn
from useg.data.images import load_rgb_all
from useg.data.synthetic import ShapesConfig, write_shapes_dataset
from useg.methods.croc import clustering as C
from useg.methods.croc.clustering import ClusterConfig, cross_view_clustering, multi_head_clustering
from useg.methods.croc.train import Batch, CrOCConfig, CrOCTrainer, cls_attention, make_batch, pretrain

TINY_CROC = dict(
    epochs=2, batch_size=4, lr=5e-4, warmup_epochs=0, k_start=4, lambda_pos=1.0, sinkhorn_iters=20,
    head_hidden_dim=32, head_bottleneck_dim=16, head_global_dim=64, head_dense_dim=32, view_size=[32, 32],
)  # fmt: skip


def test_sinkhorn_meets_both_marginals():
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(5, 30, 7, generator=g)
    r = torch.rand(5, 30, generator=g) + 0.1
    r = r / r.sum(dim=1, keepdim=True)
    c = torch.softmax(torch.randn(5, 7, generator=g), dim=1)
    q = sinkhorn(cost, r, c, lam=20.0, iters=2000, tol=1e-6)
    assert (q >= 0).all()
    torch.testing.assert_close(q.sum(dim=2), r, atol=1e-4, rtol=0)
    torch.testing.assert_close(q.sum(dim=1), c, atol=1e-4, rtol=0)


def test_sinkhorn_prefers_cheap_assignments():
    cost = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    q = sinkhorn(cost, torch.full((1, 2), 0.5), torch.full((1, 2), 0.5), lam=20.0)
    assert q[0, 0, 0] > 0.49 and q[0, 0, 1] < 0.01


def test_positional_cost_in_unit_range_and_zero_on_identical_positions():
    coords = torch.rand(3, 20, 2)
    cost = C.positional_cost(coords, coords)
    assert (cost >= 0).all() and (cost <= 1).all()
    torch.testing.assert_close(torch.diagonal(cost, dim1=1, dim2=2), torch.zeros(3, 20), atol=1e-3, rtol=0)
    corners = torch.tensor([[[0.0, 0.0]]]), torch.tensor([[[1.0, 1.0]]])
    assert float(C.positional_cost(*corners)) == pytest.approx(1.0)


def test_merge_reduces_k_by_one_and_averages():
    seeds = torch.eye(4)[None].repeat(2, 1, 1)  # [B, 2N=4, K=4]
    cents = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    i, j = torch.tensor([0, 1]), torch.tensor([2, 3])
    new_seeds, new_cents = C.merge([seeds, cents], i, j, [2, 1])
    assert new_seeds.shape == (2, 4, 3) and new_cents.shape == (2, 3, 3)
    torch.testing.assert_close(new_cents[0, 0], 0.5 * (cents[0, 0] + cents[0, 2]))
    torch.testing.assert_close(new_cents[1], torch.stack([cents[1, 0], 0.5 * (cents[1, 1] + cents[1, 3]), cents[1, 2]]))
    torch.testing.assert_close(new_seeds[0, :, 0], torch.tensor([0.5, 0.0, 0.5, 0.0]))


def test_most_similar_pair():
    cents = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [-1.0, 0.0]]])
    i, j = C.most_similar_pair(cents)
    assert (int(i), int(j)) == (0, 2)


def test_each_merge_step_drops_one_cluster_and_keeps_the_assignment_mass(monkeypatch):
    seen = []
    real = C.sinkhorn

    def spy(cost, r, c, *args):
        q = real(cost, r, c, *args)
        seen.append((q.shape[-1], q.sum(dim=(1, 2))))
        return q

    monkeypatch.setattr(C, "sinkhorn", spy)
    g = torch.Generator().manual_seed(0)
    tokens, coords = torch.randn(3, 16, 8, generator=g), torch.rand(3, 16, 2, generator=g)
    r = torch.softmax(torch.randn(3, 16, generator=g), dim=1)
    out = cross_view_clustering(tokens, r, coords, ClusterConfig(k_start=6, sinkhorn_iters=50), g)
    assert [k for k, _ in seen] == [6, 5, 4, 3, 2]
    for _, mass in seen:
        torch.testing.assert_close(mass, torch.ones(3), atol=1e-4, rtol=0)
    assert out.costs.shape == (3, 5) and out.assign.shape == (3, 16, 6)


def test_a_posteriori_k_is_the_minimum_transport_cost():
    g = torch.Generator().manual_seed(1)
    tokens, coords = torch.randn(4, 20, 8, generator=g), torch.rand(4, 20, 2, generator=g)
    r = torch.softmax(torch.randn(4, 20, generator=g), dim=1)
    out = cross_view_clustering(tokens, r, coords, ClusterConfig(k_start=5, lambda_pos=0.5), g)
    expected = 5 - out.costs.argmin(dim=1)
    assert torch.equal(out.k, expected)
    for b in range(4):  # columns beyond the chosen K carry no assignment; rows are normalised
        assert torch.all(out.assign[b, :, int(out.k[b]) :] == 0)
    torch.testing.assert_close(out.assign.sum(dim=-1), torch.ones(4, 20))


def test_pruning_removes_exactly_the_clusters_missing_from_a_view():
    # 3 tokens per view, 4 clusters: cluster 0 wins in both views, 1 only in view 1,
    # 2 only in view 2, 3 in both.
    assign = torch.tensor(
        [[[0.9, 0.1, 0, 0], [0.1, 0.8, 0.1, 0], [0, 0, 0.2, 0.8], [0.7, 0.3, 0, 0], [0, 0.1, 0.9, 0], [0, 0, 0, 1.0]]]
    ).repeat(2, 1, 1)
    # element 1 chose K = 3: column 3 is empty and outside K, so token 2 now wins cluster 2 in view 1
    assign[1, :, 3] = 0
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    kept = C.prune(assign, valid, num_first=3)
    assert kept.tolist() == [[True, False, False, True], [True, False, True, False]]


def test_multi_head_concatenates_heads_along_the_centroid_axis():
    g = torch.Generator().manual_seed(2)
    out = multi_head_clustering(
        torch.randn(2, 3, 12, 4, generator=g),
        torch.softmax(torch.randn(2, 3, 12, generator=g), dim=-1),
        torch.rand(2, 12, 2, generator=g),
        ClusterConfig(k_start=4, sinkhorn_iters=20),
        g,
    )
    assert out.assign.shape == (2, 12, 12) and out.valid.shape == (2, 12) and out.k.shape == (2, 3)
    torch.testing.assert_close(out.assign.sum(dim=-1), torch.full((2, 12), 3.0))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("croc")
    data = write_shapes_dataset(ShapesConfig(num_train=8, num_val=1, image_size=48), root / "data")
    paths = sorted(str(p) for p in (data / "images").glob("*.png"))[:8]
    arch = BackboneConfig(model="vit_tiny_patch16_224", patch_size=8, embed_dim=64, depth=2, num_heads=2, input_size=(32, 32))
    cfg = CrOCConfig(**TINY_CROC)
    out = root / "croc"
    summary = pretrain(cfg, arch, paths, out / "checkpoint.pth", out / "log.json", out / "resume.pth", "h", seed=0)
    return out, arch, summary, cfg, paths


def test_training_log(pretrained):
    out, _, summary, _, _ = pretrained
    log = json.loads((out / "log.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [1, 2] and all(np.isfinite(e["loss"]) for e in log["epochs"])
    assert sum(log["k_histogram"].values()) == 2 * 2 * 4 * 2  # epochs x steps x images x heads
    assert set(map(int, log["k_histogram"])) <= {2, 3, 4}


def test_two_epochs_lower_the_loss(pretrained):
    _, arch, _, _, paths = pretrained
    cfg = CrOCConfig(**{**TINY_CROC, "lr": 1e-3, "freeze_last_layer_epochs": 0, "momentum": 0.9})
    trainer = CrOCTrainer(cfg, arch, iters_per_epoch=2, seed=0)
    images = load_rgb_all(paths, 1)
    aug = cfg.view_augment()

    def batch(seed: int, idx: list[int]) -> Batch:
        return make_batch([images[i] for i in idx], aug, 8, [np.random.default_rng([seed, i]) for i in idx])

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(trainer.losses(batch(99, list(range(8))), torch.Generator().manual_seed(0)).total)

    before = fixed_loss()
    for it in range(4):  # 2 epochs of 2 steps
        trainer.step(batch(it, [4 * (it % 2) + i for i in range(4)]), it, torch.Generator().manual_seed(it))
    assert fixed_loss() < before


def test_checkpoint_loads_into_the_backbone_loader(pretrained):
    out, arch, _, _, _ = pretrained
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    backbone = build_backbone(BackboneConfig(**{**arch.__dict__, "weights": "pretrain"}), out / "checkpoint.pth")
    for key, value in backbone.model.state_dict().items():
        torch.testing.assert_close(value, state[key])
    random = build_backbone(arch)
    assert not torch.equal(random.model.state_dict()["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])


def test_resume_continues_from_the_last_epoch(pretrained, tmp_path):
    out, arch, summary, cfg, paths = pretrained
    more = CrOCConfig(**{**cfg.__dict__, "epochs": 3})
    # same config hash, more epochs: resumes after epoch 2 and runs one more
    import shutil

    shutil.copy(out / "resume.pth", tmp_path / "resume.pth")
    resumed = pretrain(more, arch, paths, tmp_path / "ck.pth", tmp_path / "log.json", tmp_path / "resume.pth", "h", seed=0)
    assert resumed["resumed_from_epoch"] == 2 and len(resumed["epochs"]) == 3
    assert resumed["epochs"][:2] == summary["epochs"]


def test_cls_attention_of_the_last_block_is_the_backbones_attention_map():
    backbone = build_backbone(BackboneConfig(model="vit_tiny_patch16_224", patch_size=8, embed_dim=64, depth=2, num_heads=2, input_size=(32, 32)))
    out = backbone(torch.rand(2, 3, 32, 32), qkv_blocks=(-1,))
    q, k, _ = out.qkv[1]
    expected = out.attn.flatten(2) / out.attn.flatten(2).sum(dim=-1, keepdim=True)
    r = cls_attention(q, k, backbone.num_prefix_tokens)
    assert r.shape == (2, 2, 16)
    assert torch.allclose(r, expected, atol=1e-5)
