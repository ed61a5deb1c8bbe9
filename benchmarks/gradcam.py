"""TransFGU Grad-CAM: all K concept gradients in one backward pass (CLS path on K copies of A) vs K passes.

For K in {5, 27, 171} concepts, times `concept_gradients` (the CLS path on K copies of the
attention, one backward pass) and `concept_gradients_loop` (one backward pass per concept) on
the same forward pass of a small random ViT, asserts the
gradients agree (max abs difference), and writes the speed ratios to JSON.

    python benchmarks/gradcam.py --out benchmarks/results/gradcam.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from useg.backbones import BackboneConfig, build_backbone
from useg.methods.transfgu.gradcam import ClsPath, concept_gradients, concept_gradients_loop

BACKBONE = dict(
    name="bench", model="vit_tiny_patch16_224", patch_size=8, embed_dim=192, depth=4, num_heads=3, input_size=[96, 96]
)


def best_of(fn, repeats: int) -> float:
    """Fastest wall time of `repeats` calls, seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/gradcam.json")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 27, 171])
    args = parser.parse_args()
    backbone = build_backbone(BackboneConfig.from_dict(BACKBONE), seed=0).requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, *BACKBONE["input_size"], generator=generator)
    path = ClsPath(backbone, images)
    results = []
    for k in args.ks:
        concepts = torch.randn(k, backbone.embed_dim, generator=generator)
        batched, loop = concept_gradients(path, concepts), concept_gradients_loop(path, concepts)
        diff = float((batched - loop).abs().max())
        assert diff < 1e-4 * max(1.0, float(loop.abs().max())), f"batched and looped gradients differ by {diff}"
        t_batched = best_of(lambda: concept_gradients(path, concepts), args.repeats)
        t_loop = best_of(lambda: concept_gradients_loop(path, concepts), args.repeats)
        results.append(
            {"k": k, "batched_s": t_batched, "loop_s": t_loop, "speedup": t_loop / t_batched, "max_abs_diff": diff}
        )
        print(f"K={k:4d}: batched {t_batched * 1e3:8.1f} ms, loop {t_loop * 1e3:8.1f} ms, "
              f"speed-up x{t_loop / t_batched:5.1f}, max |diff| {diff:.2e}")  # fmt: skip
    report = {
        "benchmark": "transfgu-gradcam",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "backbone": BACKBONE,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
