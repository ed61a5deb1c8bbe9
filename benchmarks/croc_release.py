"""CrOC's clustering beside its authors' release on identical tokens: chosen K, partitions, plans, centroids.

Reads the release's `Clustering` class from a checkout (`--release`, github.com/stegmuel/CrOC, its
`main_croc.py`; nothing of it is vendored here, it needs `einops`) and runs it on CPU next to
`multi_head_clustering` on the same teacher tokens: the last block's values of a tiny ViT (the
demo's CrOC checkpoint with `--checkpoint`, else random weights) for two views of `--images`
synthetic scenes, with the same patch positions and the same seed draws (the release samples with
torch's global generator, useg with its own, both seeded alike). The release runs as its parser
sets it (K cap `n_centroids_max` 4, marginal temperatures 2, `pos_alpha` = `--lambda-pos`), with
its 5 Sinkhorn iterations and with `--converged` iterations.

useg starts from the paper reading of every switch (the clustering before the switches existed),
turns them to `release` one at a time (cumulative), then leaves each out once from the all-release
setting. Per setting, mean over `--seeds`: share of problems (image x head) with the release's K;
adjusted Rand index of the hard partitions (mean, min); kept clusters; max abs difference of the
first step's plans (same K_start seeds) and of the chosen plans (columns normalised per view as the
release stores them, matched one-to-one, where K agrees); for all-release, the max abs difference
of the view-1 centroids fed to the dense head.

    python benchmarks/croc_release.py --release /path/to/CrOC --checkpoint results/shapes/croc/checkpoint.pth \\
        --out benchmarks/results/croc_release.json
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TINY_VIT, save  # noqa: E402

from useg.backbones import BackboneConfig, build_backbone  # noqa: E402
from useg.data.augment import ViewAugment, two_views  # noqa: E402
from useg.data.images import load_rgb_all  # noqa: E402
from useg.data.synthetic import ShapesConfig, write_shapes_dataset  # noqa: E402
from useg.methods.croc import clustering as C  # noqa: E402
from useg.methods.croc.clustering import ClusterConfig, TokenPrior  # noqa: E402
from useg.methods.croc.losses import cluster_centroids, mean_norm  # noqa: E402
from useg.methods.croc.train import cls_attention, cls_cosine  # noqa: E402

SWITCHES = {
    "token_marginal": "release", "centroid_marginal": "release", "cost_scaling": "release",
    "transport_cost": "release", "k_max": 4, "merge": "release", "prune": "release",
}  # fmt: skip
PAPER = {key: (None if key == "k_max" else "paper") for key in SWITCHES}


def release_clustering(path: Path) -> type:
    """The `Clustering` class of the release's main_croc.py, its sinkhorn recording plans and costs."""
    source = (path / "main_croc.py").read_text()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "Clustering")
    from einops import rearrange, reduce, repeat
    from torch.nn.utils.rnn import pad_sequence

    namespace = {"torch": torch, "F": F, "rearrange": rearrange, "reduce": reduce, "repeat": repeat, "pad_sequence": pad_sequence}
    exec(ast.get_source_segment(source, node), namespace)  # noqa: S102 - the release's own code, unmodified

    class Recording(namespace["Clustering"]):
        def sinkhorn(self, M, r, c):  # noqa: N803 - the release's names
            plan, cost = super().sinkhorn(M, r, c)
            self.steps.append((plan.clone(), cost.clone()))
            return plan, cost

    return Recording


class Problem:
    """Teacher tokens of two views per image in useg's layout and in the release's."""

    def __init__(self, images: int, checkpoint: str | None, view: int) -> None:
        arch = BackboneConfig.from_dict({**TINY_VIT, "weights": "pretrain" if checkpoint else "random"})
        backbone = build_backbone(arch, checkpoint).eval()
        self.patch, self.heads, last = backbone.patch_size, backbone.num_heads, backbone.depth - 1
        root = write_shapes_dataset(ShapesConfig(num_train=images, num_val=1, image_size=96), Path("benchmarks/results/croc_release_scenes"))
        pictures = load_rgb_all(sorted(str(p) for p in (root / "images").glob("*.png"))[:images], 1)
        aug = ViewAugment(size=(view, view), scale=(0.3, 1.0))
        pairs = [two_views(im, (aug, aug), self.patch, np.random.default_rng([0, i])) for i, im in enumerate(pictures)]
        with torch.no_grad():
            outs = [backbone(torch.stack([p[v].image for p in pairs]), qkv_blocks=(last,)) for v in (0, 1)]
        coords = [torch.stack([p[v].coords for p in pairs]) for v in (0, 1)]
        values = [o.qkv[last][2] for o in outs]  # [B, H, 1 + N, d_h]
        self.batch, self.n = len(pictures), values[0].shape[2] - 1
        self.tokens = torch.cat([v[:, :, 1:] for v in values], dim=2)
        self.prior = TokenPrior(
            torch.cat([cls_cosine(v, 1) for v in values], 2), torch.cat([cls_attention(*o.qkv[last][:2], 1) for o in outs], 2)
        )
        self.coords = torch.cat(coords, 1)
        self.last_tokens = torch.cat([torch.cat([o.cls[:, None], o.patches.flatten(1, 2)], 1) for o in outs])  # [(m b), 1 + N, D]
        # the release: per-head tokens '(m b h) n d', positions as per-pixel maps [b, 2, h, w] (constant per patch)
        self.release_tokens = torch.cat(values).flatten(0, 1)
        grid = view // self.patch
        self.release_positions = [
            c.reshape(self.batch, grid, grid, 2).permute(0, 3, 1, 2).repeat_interleave(self.patch, 2).repeat_interleave(self.patch, 3)
            for c in coords
        ]


def run_release(cls: type, problem: Problem, k_start: int, lambda_pos: float, iters: int, seed: int) -> dict[str, Any]:
    """The release's clustering; its K restated from its costs as `compute_teacher_centroids` selects it."""
    args = argparse.Namespace(patch_size=problem.patch, n_centroids_max=4)
    release = cls(args, n_tokens=k_start, sinkhorn_lambda=20.0, sinkhorn_iterations=iters, uniform_marginals=False,
                  marginals_temp_r=2.0, marginals_temp_c=2.0, pos_alpha=lambda_pos, n_heads=problem.heads)  # fmt: skip
    release.steps = []
    torch.manual_seed(seed)
    centroids, valid, assign, _ = release.compute_teacher_centroids(problem.last_tokens, problem.release_tokens, problem.release_positions)
    costs = torch.stack([cost for _, cost in release.steps], dim=-1)[:, -3:]  # K = 4, 3, 2
    k = 4 - costs.argmin(dim=-1)
    hard = assign.permute(1, 0, 2, 3).flatten(1, 2)  # [problems, 2N, K_max]
    return {"k": k, "partition": hard.argmax(-1), "valid": valid, "plans": [p for p, _ in release.steps], "centroids": centroids[0],
            "width": assign.shape[-1]}  # fmt: skip


def run_useg(problem: Problem, cfg: ClusterConfig, seed: int) -> dict[str, Any]:
    """useg's clustering, with the plan of every merge step."""
    plans = []
    solver = C.sinkhorn
    C.sinkhorn = lambda *a: plans.append(solver(*a)) or plans[-1]
    try:
        out = C.multi_head_clustering(problem.tokens, problem.prior, problem.coords, cfg, torch.Generator().manual_seed(seed))
    finally:
        C.sinkhorn = solver
    problems = problem.batch * problem.heads
    hard = out.hard.reshape(problem.batch, -1, problem.heads, cfg.k_start).permute(0, 2, 1, 3).reshape(problems, -1, cfg.k_start)
    return {"out": out, "k": out.k.flatten(), "partition": hard.float().argmax(-1), "plans": plans}


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings of the same points."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(table, (ia, ib), 1)
    pairs = lambda x: (x * (x - 1) / 2).sum()  # noqa: E731
    index, rows, cols, total = pairs(table), pairs(table.sum(1)), pairs(table.sum(0)), pairs(np.array([len(a)]))
    expected = rows * cols / total
    top = (rows + cols) / 2 - expected
    return 1.0 if top == 0 else float((index - expected) / top)


def per_view_columns(plan: Tensor, n: int) -> Tensor:
    """A plan [2N, K] with its columns normalised within each view, as the release stores them."""
    return torch.cat([C.column_normalised(plan[None, :n])[0], C.column_normalised(plan[None, n:])[0]])


def compare(problem: Problem, release: dict[str, Any], ours: dict[str, Any], cfg: ClusterConfig) -> dict[str, Any]:
    """Agreement of one useg run with one release run."""
    n, k_start = problem.n, cfg.k_start
    same_k = release["k"] == ours["k"]
    ari = [adjusted_rand(r.numpy(), o.numpy()) for r, o in zip(release["partition"], ours["partition"])]
    chosen, centroid = 0.0, 0.0
    rows = {int(i): row for row, i in enumerate(release["valid"])}
    out = ours["out"]
    view1 = cluster_centroids(problem.last_tokens[: problem.batch, 1:], out.assign[:, :n], out.hard[:, :n].float(),
                              mean_norm([problem.last_tokens[:, 0]]), "release")  # fmt: skip
    for p in torch.nonzero(same_k).flatten().tolist():
        step = k_start - int(ours["k"][p])
        mine = per_view_columns(ours["plans"][step][p], n)
        theirs = per_view_columns(release["plans"][step][p], n)
        a, b = linear_sum_assignment(torch.cdist(mine.T, theirs.T, p=1).numpy())
        chosen = max(chosen, float((mine[:, a] - theirs[:, b]).abs().max()))
        image, head = divmod(p, problem.heads)
        for col, rcol in zip(a, b):
            if p * release["width"] + rcol in rows:
                diff = view1[image, head * k_start + col] - release["centroids"][rows[p * release["width"] + rcol]]
                centroid = max(centroid, float(diff.abs().max()))
    return {
        "k_agreement": float(same_k.float().mean()),
        "ari_mean": float(np.mean(ari)),
        "ari_min": float(np.min(ari)),
        "kept_release": len(release["valid"]),
        "kept_useg": int(out.valid.sum()),
        "first_plan_max_diff": float((ours["plans"][0] - release["plans"][0]).abs().max()),
        "chosen_plan_max_diff": chosen if bool(same_k.any()) else None,
        "centroid_max_diff": centroid if cfg == replace(cfg, **SWITCHES) else None,
        "k_useg_first": ours["k"][:6].tolist(),
        "k_release_first": release["k"][:6].tolist(),
    }


def settings(k_start: int, lambda_pos: float) -> list[tuple[str, ClusterConfig]]:
    """Paper reading, the switches turned to release one by one, then each left out of all-release once."""
    cfg = ClusterConfig(k_start=k_start, lambda_pos=lambda_pos, sinkhorn_iters=1000, **PAPER)
    out = [("paper (before)", cfg)]
    for key, value in SWITCHES.items():
        cfg = replace(cfg, **{key: value})
        out.append((f"+ {key}", cfg))
    out += [(f"all release but {key}", replace(cfg, **{key: PAPER[key]})) for key in SWITCHES]
    return out


def mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-key mean over seeds (lists of the first seed kept)."""
    merged = {}
    for key, value in rows[0].items():
        values = [r[key] for r in rows if r[key] is not None]
        merged[key] = value if isinstance(value, list) else (float(np.mean(values)) if values else None)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", required=True, type=Path, help="a checkout of github.com/stegmuel/CrOC")
    parser.add_argument("--checkpoint", default=None, help="teacher backbone of the tiny ViT (the demo's croc/checkpoint.pth)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--view", type=int, default=64, help="view size in pixels")
    parser.add_argument("--k-start", type=int, default=12)
    parser.add_argument("--lambda-pos", type=float, default=4.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--converged", type=int, default=1000, help="release Sinkhorn iterations of the converged runs")
    parser.add_argument("--out", default="benchmarks/results/croc_release.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cls = release_clustering(args.release)
    problem = Problem(args.images, args.checkpoint, args.view)
    results = []
    for name, cfg in settings(args.k_start, args.lambda_pos):
        for iters in (5, args.converged):
            rows = []
            for seed in range(args.seeds):
                release = run_release(cls, problem, args.k_start, args.lambda_pos, iters, seed)
                rows.append(compare(problem, release, run_useg(problem, cfg, seed), cfg))
            results.append({"setting": name, "release_sinkhorn_iters": iters, **mean(rows)})
            print(name, iters, {k: v for k, v in results[-1].items() if k in ("k_agreement", "ari_mean", "kept_useg")}, flush=True)
    save({"problems": problem.batch * problem.heads, "tokens_per_view": problem.n, "k_start": args.k_start,
          "lambda_pos": args.lambda_pos, "checkpoint": args.checkpoint, "results": results}, args.out)  # fmt: skip


if __name__ == "__main__":
    main()
