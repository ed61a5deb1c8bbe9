"""ImageNet-S-919 plan from measured per-image costs: shards, GPU-hours and storage per stage.

Reads benchmarks/results/extraction-vit-s8.json (ViT-S/8 at 224 px: seconds and store bytes per
image) and kmeans.json; the GPU speed of the feature stage is `--gpu-images-per-s` (measure it
with `benchmarks/extraction.py --backbone vit-s8 --device cuda` on the target GPU).

    python benchmarks/plan.py --nodes 4 --gpus-per-node 4 --gpu-images-per-s 250
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

IMAGES = {"train": 1_183_322, "val": 12_466, "test": 27_717}  # ImageNet-S-919 (LUSS paper, Tab. 1)
GRID, DIM, HEADS, TOKENS, DEPTH = 28 * 28, 384, 6, 28 * 28 + 1, 12  # ViT-S/8 at 224 x 224


def vit_s8_gflops() -> float:
    """Forward FLOPs of ViT-S/8 at 224 px: 12 T D^2 (qkv, proj, MLP) + 2 T^2 D (attention) per block."""
    macs = DEPTH * (12 * TOKENS * DIM**2 + 2 * TOKENS**2 * DIM)
    return 2 * macs / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument("--gpu-images-per-s", type=float, default=250.0)
    parser.add_argument("--shard-gb", type=float, default=12.0, help="target size of one feature shard")
    parser.add_argument("--kmeans-points", type=int, default=1_000_000, help="kmeans.max_train_points")
    parser.add_argument("--k", type=int, default=919)
    args = parser.parse_args()

    ext = json.loads((args.results / "extraction-vit-s8.json").read_text())
    km = json.loads((args.results / "kmeans.json").read_text())
    raw_bytes = GRID * DIM * 2 + HEADS * GRID * 2 + DIM * 4  # patches f16, attn f16, cls f32
    per_image = ext["store_bytes_per_image"]
    gpus = args.nodes * args.gpus_per_node
    # one shard count for every split (`features.shards`): a multiple of the GPU count
    shards = max(gpus, math.ceil(IMAGES["train"] * per_image / (args.shard_gb * 1e9) / gpus) * gpus)
    feat_gpu_h = {s: n / args.gpu_images_per_s / 3600 for s, n in IMAGES.items()}
    # faiss Lloyd cost ~ N K d iterations: scale the measured CPU run, 3 restarts
    km_cpu_h = km["faiss_s"] * (args.kmeans_points / km["n"]) * (args.k / km["k"]) * (DIM / km["d"]) * 3 / 3600
    pred_bytes = 224 * 224 * 2
    eval_images = IMAGES["val"] + IMAGES["test"]

    lines = [
        f"ViT-S/8 forward: {vit_s8_gflops():.1f} GFLOP/image; measured CPU cost {ext['seconds_per_image']:.2f} s/image "
        f"({ext['threads']} threads); GPU assumed {args.gpu_images_per_s:.0f} images/s; {gpus} GPUs ({args.nodes} nodes x {args.gpus_per_node})",
        "",
        "| stage | images | shards (jobs) | GPU-hours | wall on all GPUs | storage |",
        "|---|---|---|---|---|---|",
    ]
    for split, n in IMAGES.items():
        lines.append(
            f"| features {split} | {n:,} | {shards} x {n / shards:,.0f} images | {feat_gpu_h[split]:.2f} | "
            f"{feat_gpu_h[split] / gpus * 60:.1f} min | {n * per_image / 1e9:,.1f} GB ({per_image / 1e3:.0f} kB/image stored, {raw_bytes / 1e3:.0f} kB raw) |"
        )
    lines.append(
        f"| kmeans_fit (K={args.k}, {args.kmeans_points:,} tokens, 3 restarts) | sample | 1 | CPU: {km_cpu_h:.1f} core-pair-hours "
        f"(faiss on 2 CPU threads, measured rate) | - | {args.k * DIM * 4 / 1e6:.1f} MB |"
    )
    lines.append(
        f"| kmeans_predict | {eval_images:,} | 1 | CPU | - | {eval_images * pred_bytes / 1e9:.1f} GB raw (uint16 224 x 224) |"
    )
    lines.append(f"| evaluate | {eval_images:,} | 1 | CPU | - | metrics.json (kB) |")
    total_gpu = sum(feat_gpu_h.values())
    total_gb = sum(IMAGES.values()) * per_image / 1e9 + eval_images * pred_bytes / 1e9
    lines += ["", f"Totals (stages that exist): {total_gpu:.1f} GPU-hours, {total_gb:,.0f} GB."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
