"""Feature-stage throughput against a bare backbone forward loop over the same decoded batches.

ratio = stage images/s / bare images/s. The stage decodes (thread pool, one batch ahead), runs
the backbone and writes the FeatureStore; the bare loop only runs the backbone on batches decoded
beforehand. Goal: ratio >= 0.9. Both are timed `--repeats` times, interleaved; the best time counts.

    python benchmarks/extraction.py --images 512 --out benchmarks/results/extraction.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BACKBONES, image_rows, save  # noqa: E402

from useg.backbones import BackboneConfig, build_backbone  # noqa: E402
from useg.backbones.extract import extract_features, input_batches  # noqa: E402
from useg.runtime import resolve_device, set_threads  # noqa: E402
from useg.stores.base import provenance  # noqa: E402


def best_times(fns: list, repeats: int) -> list[float]:
    """Best wall time of each function over `repeats` rounds, run interleaved so that load
    from other processes hits every function alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="tiny")
    parser.add_argument("--out", default="benchmarks/results/extraction.json")
    args = parser.parse_args()

    set_threads(args.threads)
    device = resolve_device(args.device)
    cfg = BackboneConfig.from_dict(BACKBONES[args.backbone])
    backbone = build_backbone(cfg, seed=0).to(device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        rows = image_rows(Path(tmp), args.images, image_size=cfg.input_size[0])
        numbered = list(enumerate(rows))
        batches = list(input_batches(rows, cfg.input_size, args.batch_size, args.threads))

        @torch.inference_mode()
        def bare() -> None:
            for images in batches:
                out = backbone(images.to(device))
                out.patches.cpu()
            if device.type == "cuda":
                torch.cuda.synchronize()

        def stage() -> None:
            extract_features(
                backbone, numbered, Path(tmp) / "shard.zarr", cfg.input_size, provenance("features", {}, 0), device,
                batch_size=args.batch_size, workers=args.threads,
            )  # fmt: skip

        bare()  # warm-up
        bare_s, stage_s = best_times([bare, stage], args.repeats)
        store_bytes = sum(f.stat().st_size for f in (Path(tmp) / "shard.zarr").rglob("*") if f.is_file())
    save(
        {
            "benchmark": "extraction",
            "backbone": BACKBONES[args.backbone],
            "images": args.images,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "device": str(device),
            "bare_images_per_s": args.images / bare_s,
            "stage_images_per_s": args.images / stage_s,
            "ratio": bare_s / stage_s,
            "seconds_per_image": stage_s / args.images,
            "store_bytes_per_image": store_bytes / args.images,
            "goal": 0.9,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
