"""CrOC: Sinkhorn, cross-view clustering (merge, a-posteriori K, pruning, positions), training."""

import json
import math

import numpy as np
import pytest
import torch

from useg.backbones import BackboneConfig, build_backbone
from useg.cluster.sinkhorn import sinkhorn
from useg.data.images import load_rgb_all
from useg.data.synthetic import ShapesConfig, write_shapes_dataset
from useg.errors import ConfigError
from useg.methods.croc import clustering as C
from useg.methods.croc.clustering import ClusterConfig, TokenPrior, cross_view_clustering, multi_head_clustering
from useg.methods.croc.losses import cluster_centroids, mean_norm
from useg.methods.croc.train import Batch, CrOCConfig, CrOCTrainer, cls_attention, cls_cosine, make_batch, pretrain
from useg.train.clip import clip_gradients

TINY_CROC = dict(
    epochs=2, batch_size=4, lr=5e-4, warmup_epochs=0, k_start=4, lambda_pos=1.0, sinkhorn_iters=20,
    head_hidden_dim=32, head_bottleneck_dim=16, head_global_dim=64, head_dense_dim=32, view_size=[32, 32],
)  # fmt: skip
TINY_ARCH = BackboneConfig(model="vit_tiny_patch16_224", patch_size=8, embed_dim=64, depth=2, num_heads=2, input_size=(32, 32))


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
    for scaling in ("paper", "release"):
        cost = C.positional_cost(coords, coords, scaling)
        assert (cost >= 0).all() and (cost <= 1).all()
        torch.testing.assert_close(torch.diagonal(cost, dim1=1, dim2=2), torch.zeros(3, 20), atol=1e-6, rtol=0)
    corners = torch.tensor([[[0.0, 0.0]]]), torch.tensor([[[1.0, 1.0]]])
    assert float(C.positional_cost(*corners)) == pytest.approx(1.0)


def test_positional_cost_over_sqrt2_or_over_the_largest_distance():
    coords = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    centres = torch.tensor([[[0.0, 0.0], [0.0, 0.5]]])  # distances [[0, 0.5], [1, 0.5]]
    s = math.sqrt(2)
    torch.testing.assert_close(C.positional_cost(coords, centres, "paper"), torch.tensor([[[0, 0.5 / s], [1 / s, 0.5 / s]]]))
    torch.testing.assert_close(C.positional_cost(coords, centres, "release"), torch.tensor([[[0, 0.5], [1, 0.5]]]))


def test_release_cost_is_min_max_normalised_over_the_whole_batch():
    semantic = torch.tensor([[[-1.0, 0.0], [0.0, -0.5]], [[0.5, -1.0], [1.0, 0.0]]])
    positional = torch.tensor([[[0.0, 1.0], [0.5, 0.0]], [[1.0, 0.0], [0.0, 0.25]]])
    raw = torch.tensor([[[-1.0, 2.0], [1.0, -0.5]], [[2.5, -1.0], [1.0, 0.5]]])  # semantic + 2 * positional
    paper = C.total_cost(semantic, positional, ClusterConfig(lambda_pos=2.0, cost_scaling="paper"))
    release = C.total_cost(semantic, positional, ClusterConfig(lambda_pos=2.0, cost_scaling="release"))
    torch.testing.assert_close(paper, raw)
    # batch minimum -1 and maximum 2.5, from different problems
    torch.testing.assert_close(release, torch.tensor([[[0, 3 / 3.5], [2 / 3.5, 0.5 / 3.5]], [[1, 0], [2 / 3.5, 1.5 / 3.5]]]))


def test_token_marginal_release_softmax_of_cls_cosine_paper_cls_attention():
    prior = TokenPrior(
        cls_cosine=torch.tensor([[1.0, -1.0, 1.0, -1.0]]), cls_attention=torch.tensor([[0.2, 0.8, 0.4, 0.6]])
    )
    e = math.e  # softmax(cos / 2): e^0.5 / (2 (e^0.5 + e^-0.5)) = e / (2 (e + 1))
    expected = torch.tensor([[e, 1, e, 1]]) / (2 * (e + 1))
    torch.testing.assert_close(C.token_marginal(prior, ClusterConfig(token_marginal="release")), expected)
    torch.testing.assert_close(C.token_marginal(prior, ClusterConfig(token_marginal="paper")), torch.tensor([[0.1, 0.4, 0.2, 0.3]]))


def test_cls_cosine_of_each_patch_token_with_the_cls_token_of_its_head():
    tokens = torch.tensor([[[[2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]]]])  # [B, H, 1 + N, d]
    torch.testing.assert_close(cls_cosine(tokens, 1), torch.tensor([[[1.0, 0.0, -1.0, 2**-0.5]]]))


def test_centroid_marginal_paper_release_at_k_start_and_release_after_a_merge():
    r = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    seeds = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])  # tokens 0 and 2
    prior = TokenPrior(cls_cosine=torch.tensor([[1.0, 0.0, -1.0, 0.5]]), cls_attention=r)
    paper = C.centroid_marginal(seeds, None, r, prior, ClusterConfig(centroid_marginal="paper"))
    torch.testing.assert_close(paper, torch.tensor([[1.0, math.exp(0.2)]]) / (1 + math.exp(0.2)))  # softmax([0.1, 0.3])
    release = ClusterConfig(centroid_marginal="release")
    first = C.centroid_marginal(seeds, None, r, prior, release)
    torch.testing.assert_close(first, torch.tensor([[math.e, 1.0]]) / (1 + math.e))  # softmax([0.5, -0.5])
    plan = torch.tensor([[[0.1, 0.0], [0.1, 0.1], [0.0, 0.3], [0.2, 0.2]]])
    # columns normalised: [1/4, 1/4, 0, 1/2] and [0, 1/6, 1/2, 1/3]; mean r 33/120 and 19/60
    merged = C.centroid_marginal(seeds, plan, r, prior, release)
    torch.testing.assert_close(merged, torch.tensor([[33 / 71, 38 / 71]]))


def test_merge_reduces_k_by_one_and_averages():
    seeds = torch.eye(4)[None].repeat(2, 1, 1)  # [B, 2N=4, K=4]
    cents = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    i, j = torch.tensor([0, 1]), torch.tensor([2, 3])
    new_seeds, new_cents = C.merge([seeds, cents], i, j, [2, 1])
    assert new_seeds.shape == (2, 4, 3) and new_cents.shape == (2, 3, 3)
    torch.testing.assert_close(new_cents[0, 0], 0.5 * (cents[0, 0] + cents[0, 2]))
    torch.testing.assert_close(new_cents[1], torch.stack([cents[1, 0], 0.5 * (cents[1, 1] + cents[1, 3]), cents[1, 2]]))
    torch.testing.assert_close(new_seeds[0, :, 0], torch.tensor([0.5, 0.0, 0.5, 0.0]))
    (summed,) = C.merge([seeds], i, j, [2], weight=1.0)
    torch.testing.assert_close(summed[0, :, 0], torch.tensor([1.0, 0.0, 1.0, 0.0]))


def test_most_similar_pair_by_cosine_or_by_dot_product():
    cents = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [-1.0, 0.0]]])
    assert tuple(map(int, C.most_similar_pair(cents))) == (0, 2)
    means = torch.tensor([[[1.0, 0.0], [0.5, 0.5], [0.3, 0.0]]])  # cosine: (0, 2) = 1; dot: (0, 1) = 0.5 > 0.3
    assert tuple(map(int, C.most_similar_pair(means, "paper"))) == (0, 2)
    assert tuple(map(int, C.most_similar_pair(means, "release"))) == (0, 1)


MERGE_Z = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
MERGE_COORDS = torch.tensor([[[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]])
MERGE_PLAN = torch.tensor([[[0.15, 0.10, 0.00], [0.05, 0.15, 0.05], [0.00, 0.05, 0.20], [0.00, 0.00, 0.25]]])
# columns normalised: [3/4, 1/4, 0, 0], [1/3, 1/2, 1/6, 0], [0, 1/10, 4/10, 5/10] -> means (1, 0), (5/6, 1/6),
# (0.1, 0.9); the pair (0, 1) is the most similar by dot product and by cosine
MERGE_SEEDS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])


def test_release_merge_is_the_mass_weighted_union_with_positions_from_the_plan():
    state = C.MergeState(MERGE_SEEDS, None, MERGE_SEEDS.transpose(1, 2) @ MERGE_Z, MERGE_SEEDS.transpose(1, 2) @ MERGE_COORDS)
    out = C.merge_step(state, MERGE_PLAN, MERGE_Z, MERGE_COORDS, "release")
    torch.testing.assert_close(out.plan, torch.tensor([[[0.25, 0.0], [0.20, 0.05], [0.05, 0.20], [0.0, 0.25]]]))
    # merged column normalised [0.5, 0.4, 0.1, 0]: mean (0.9, 0.1) = (0.2 (1, 0) + 0.3 (5/6, 1/6)) / 0.5
    torch.testing.assert_close(out.centroids, torch.tensor([[[0.9, 0.1], [0.1, 0.9]]]))
    torch.testing.assert_close(out.centres, torch.tensor([[[0.1, 0.4], [0.9, 0.6]]]))
    torch.testing.assert_close(out.seeds[0, :, 0], torch.tensor([1.0, 1.0, 0.0, 0.0]))


def test_paper_merge_averages_centroids_seeds_and_seed_positions():
    state = C.MergeState(MERGE_SEEDS, None, MERGE_SEEDS.transpose(1, 2) @ MERGE_Z, MERGE_SEEDS.transpose(1, 2) @ MERGE_COORDS)
    out = C.merge_step(state, MERGE_PLAN, MERGE_Z, MERGE_COORDS, "paper")
    torch.testing.assert_close(out.centroids, torch.tensor([[[11 / 12, 1 / 12], [0.1, 0.9]]]))
    torch.testing.assert_close(out.centres, torch.tensor([[[0.0, 0.5], [1.0, 1.0]]]))
    torch.testing.assert_close(out.seeds[0, :, 0], torch.tensor([0.5, 0.5, 0.0, 0.0]))


def test_k_cap_restricts_the_a_posteriori_choice():
    costs = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.4, 0.3, 0.35, 0.2]])  # K = 6 .. 2
    assert C.choose_step(costs, 6, None).tolist() == [0, 4]  # K 6 and 2
    assert C.choose_step(costs, 6, 4).tolist() == [2, 4]  # K 4 and 2
    assert C.choose_step(costs, 6, 3).tolist() == [3, 4]  # K 3 and 2
    assert C.choose_step(costs, 6, 8).tolist() == [0, 4]  # a cap above K_start caps nothing


def _spy_sinkhorn(monkeypatch) -> list:
    seen = []
    real = C.sinkhorn

    def spy(cost, r, c, *args):
        q = real(cost, r, c, *args)
        seen.append((cost, q))
        return q

    monkeypatch.setattr(C, "sinkhorn", spy)
    return seen


def test_each_merge_step_drops_one_cluster_and_keeps_the_assignment_mass(monkeypatch):
    seen = _spy_sinkhorn(monkeypatch)
    g = torch.Generator().manual_seed(0)
    tokens, coords = torch.randn(3, 16, 8, generator=g), torch.rand(3, 16, 2, generator=g)
    prior = TokenPrior(torch.rand(3, 16, generator=g) * 2 - 1, torch.softmax(torch.randn(3, 16, generator=g), dim=1))
    for reading in ("release", "paper"):
        seen.clear()
        cfg = ClusterConfig(k_start=6, sinkhorn_iters=50, merge=reading, cost_scaling=reading)
        out = cross_view_clustering(tokens, prior, coords, cfg, g)
        assert [q.shape[-1] for _, q in seen] == [6, 5, 4, 3, 2]
        for _, q in seen:
            torch.testing.assert_close(q.sum(dim=(1, 2)), torch.ones(3), atol=1e-4, rtol=0)
        assert out.costs.shape == (3, 5) and out.assign.shape == (3, 16, 6)


def test_release_transport_cost_is_the_normalised_total_cost(monkeypatch):
    seen = _spy_sinkhorn(monkeypatch)
    g = torch.Generator().manual_seed(3)
    tokens, coords = torch.randn(2, 12, 4, generator=g), torch.rand(2, 12, 2, generator=g)
    prior = TokenPrior(torch.rand(2, 12, generator=g), torch.full((2, 12), 1 / 6))
    out = cross_view_clustering(tokens, prior, coords, ClusterConfig(k_start=4, transport_cost="release"), g)
    expected = torch.stack([(q * cost).sum(dim=(1, 2)) for cost, q in seen], dim=1)
    torch.testing.assert_close(out.costs, expected)
    assert (seen[0][0].amin() == 0) and (seen[0][0].amax() == 1)  # min-max normalised over the batch


def test_a_posteriori_k_is_the_minimum_transport_cost():
    g = torch.Generator().manual_seed(1)
    tokens, coords = torch.randn(4, 20, 8, generator=g), torch.rand(4, 20, 2, generator=g)
    prior = TokenPrior(torch.rand(4, 20, generator=g), torch.softmax(torch.randn(4, 20, generator=g), dim=1))
    for k_max in (None, 3):
        out = cross_view_clustering(tokens, prior, coords, ClusterConfig(k_start=5, lambda_pos=0.5, k_max=k_max, prune="paper"), g)
        costs = out.costs if k_max is None else out.costs.masked_fill(torch.arange(4) < 2, math.inf)  # K 5, 4 excluded
        assert torch.equal(out.k, 5 - costs.argmin(dim=1))
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
    kept = C.prune(C.hard_assignments(assign, valid), valid, num_first=3)
    assert kept.tolist() == [[True, False, False, True], [True, False, True, False]]


def test_release_prunes_on_the_per_view_column_normalised_plan():
    plan = torch.tensor([[[0.20, 0.05], [0.15, 0.10], [0.24, 0.01], [0.20, 0.05]]])  # 2 tokens per view
    valid = torch.ones(1, 2, dtype=torch.bool)
    paper = C.final_assignments(plan, 2, "paper")
    torch.testing.assert_close(paper, plan * 4)  # rows of mass 1/4
    assert C.prune(C.hard_assignments(paper, valid), valid, 2).tolist() == [[True, False]]  # cluster 0 wins every row
    release = C.final_assignments(plan, 2, "release")
    torch.testing.assert_close(release, torch.tensor([[[4 / 7, 1 / 3], [3 / 7, 2 / 3], [6 / 11, 1 / 6], [5 / 11, 5 / 6]]]))
    assert C.hard_assignments(release, valid)[0].int().argmax(dim=1).tolist() == [0, 1, 0, 1]
    assert C.prune(C.hard_assignments(release, valid), valid, 2).tolist() == [[True, True]]


def test_multi_head_concatenates_heads_along_the_centroid_axis():
    g = torch.Generator().manual_seed(2)
    prior = TokenPrior(torch.rand(2, 3, 12, generator=g), torch.softmax(torch.randn(2, 3, 12, generator=g), dim=-1))
    out = multi_head_clustering(
        torch.randn(2, 3, 12, 4, generator=g), prior, torch.rand(2, 12, 2, generator=g), ClusterConfig(k_start=4, sinkhorn_iters=20), g
    )
    assert out.assign.shape == out.hard.shape == (2, 12, 12) and out.valid.shape == (2, 12) and out.k.shape == (2, 3)
    assert bool((out.k <= 4).all())
    torch.testing.assert_close(out.hard.sum(dim=-1), torch.full((2, 12), 3))  # one winner per token and head
    within_k = (torch.arange(4)[None, None] < out.k[..., None]).reshape(2, 12).float()
    torch.testing.assert_close(out.assign[:, :6].sum(dim=1), within_k)  # release: columns sum to one in each view


def test_centroids_soft_mean_paper_or_hard_masked_at_the_cls_norm_release():
    tokens = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
    assign = torch.tensor([[[0.5, 0.1], [0.3, 0.4], [0.2, 0.5]]])
    hard = torch.tensor([[[True, False], [False, True], [False, True]]])
    cls_norm = mean_norm([torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0]])])
    assert float(cls_norm) == pytest.approx(3.5)
    paper = cluster_centroids(tokens, assign, hard, cls_norm, "paper")
    torch.testing.assert_close(paper, torch.tensor([[[1.2, 0.8], [0.7, 1.3]]]))
    release = cluster_centroids(tokens, assign, hard, cls_norm, "release")
    # cluster 0: 0.5 (2, 0) -> (1, 0); cluster 1: 0.4 (0, 2) + 0.5 (1, 1) = (0.5, 1.3)
    torch.testing.assert_close(release, 3.5 * torch.tensor([[[1.0, 0.0], [0.5 / 1.94**0.5, 1.3 / 1.94**0.5]]]))


def test_gradient_clipping_per_parameter_or_global():
    def params() -> list[torch.nn.Parameter]:
        a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
        a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.6, 0.8])  # norms 5 and 1
        return [a, b]

    per = params()
    clip_gradients(per, 2.0, per_parameter=True)
    torch.testing.assert_close(per[0].grad, torch.tensor([1.2, 1.6]), atol=1e-6, rtol=0)  # 2 / 5
    torch.testing.assert_close(per[1].grad, torch.tensor([0.6, 0.8]))  # below the threshold: untouched
    total = params()
    clip_gradients(total, 2.0, per_parameter=False)
    factor = 2.0 / 26**0.5  # global norm sqrt(25 + 1)
    torch.testing.assert_close(total[0].grad, factor * torch.tensor([3.0, 4.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(total[1].grad, factor * torch.tensor([0.6, 0.8]), atol=1e-6, rtol=0)


def test_drop_path_reaches_the_student_only():
    trainer = CrOCTrainer(CrOCConfig(**{**TINY_CROC, "drop_path_rate": 0.5}), TINY_ARCH, iters_per_epoch=1, seed=0)
    rates = [[getattr(b.drop_path1, "drop_prob", 0.0) for b in net.backbone.model.blocks] for net in (trainer.student, trainer.teacher)]
    assert rates == [[0.0, 0.5], [0.0, 0.0]]  # linear from 0 at the first block to the rate at the last
    for s, t in zip(trainer.student.state_dict().values(), trainer.teacher.state_dict().values(), strict=True):
        assert torch.equal(s, t)
    x = torch.rand(2, 3, 32, 32)
    trainer.student.train()
    torch.manual_seed(0)
    assert not torch.equal(trainer.student.backbone(x).cls, trainer.student.backbone(x).cls)
    torch.testing.assert_close(trainer.teacher.backbone(x).cls, trainer.teacher.backbone(x).cls)


def test_view_specific_blur_and_solarisation():
    first, second = CrOCConfig().view_augments()
    assert (first.blur_p, first.solarize_p, second.blur_p, second.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    both = CrOCConfig(augment={"blur_p": 0.3}).view_augments()
    assert [a.blur_p for a in both] == [0.3, 0.3] and [a.solarize_p for a in both] == [0.0, 0.2]


def test_the_clustering_reads_the_last_block_by_default():
    trainer = CrOCTrainer(CrOCConfig(**TINY_CROC), TINY_ARCH, iters_per_epoch=1, seed=0)
    x = torch.rand(2, 3, 32, 32)
    view = trainer._forward(trainer.teacher, x)
    _, _, v = trainer.teacher.backbone(x, qkv_blocks=(1,)).qkv[1]
    torch.testing.assert_close(view.tokens, v[:, :, 1:])
    torch.testing.assert_close(view.cls_cosine, torch.nn.functional.cosine_similarity(v[:, :, 1:], v[:, :, :1], dim=-1))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("croc")
    data = write_shapes_dataset(ShapesConfig(num_train=8, num_val=1, image_size=48), root / "data")
    paths = sorted(str(p) for p in (data / "images").glob("*.png"))[:8]
    arch = TINY_ARCH
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
    augs = cfg.view_augments()

    def batch(seed: int, idx: list[int]) -> Batch:
        return make_batch([images[i] for i in idx], augs, 8, [np.random.default_rng([seed, i]) for i in idx])

    def fixed_loss() -> float:
        trainer.student.eval()  # no drop-path in the measurement
        with torch.no_grad():
            loss = float(trainer.losses(batch(99, list(range(8))), torch.Generator().manual_seed(0)).total)
        trainer.student.train()
        return loss

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
    backbone = build_backbone(TINY_ARCH)
    out = backbone(torch.rand(2, 3, 32, 32), qkv_blocks=(-1,))
    q, k, _ = out.qkv[1]
    expected = out.attn.flatten(2) / out.attn.flatten(2).sum(dim=-1, keepdim=True)
    r = cls_attention(q, k, backbone.num_prefix_tokens)
    assert r.shape == (2, 2, 16)
    assert torch.allclose(r, expected, atol=1e-5)


def test_a_misspelt_reading_names_its_key():
    with pytest.raises(ConfigError, match="croc.merge"):
        CrOCConfig(merge="relase")
    with pytest.raises(ConfigError, match="croc.k_max"):
        ClusterConfig(k_max=1)


def test_schema_defaults_are_the_release_the_dataclass_agrees_and_the_paper_overlay_validates():
    import jsonschema
    import yaml

    from tests.conftest import REPO

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    keys = schema["properties"]["croc"]["properties"]
    overlay = yaml.safe_load((REPO / "configs" / "variants" / "croc-paper.yaml").read_text())
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(overlay)]
    assert not errors, errors
    readings = ("token_marginal", "centroid_marginal", "cost_scaling", "transport_cost", "merge", "prune", "centroids")
    for key in readings:
        assert keys[key]["default"] == getattr(CrOCConfig(), key) == "release" and overlay["croc"][key] == "paper"
    assert (keys["k_max"]["default"], CrOCConfig().k_max, overlay["croc"]["k_max"]) == (4, 4, None)
    assert keys["block"]["default"] == CrOCConfig().block == overlay["croc"]["block"] == -1
    for key in ("drop_path_rate", "clip_grad_per_parameter", "augment_views", "marginal_temperature"):
        assert keys[key]["default"] == getattr(CrOCConfig(), key)
