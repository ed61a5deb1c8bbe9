"""Feature-stage throughput against a bare backbone forward loop over the same decoded batches.

ratio = stage images/s / bare images/s. The stage decodes in `--threads - 1` loader worker processes,
runs the backbone and writes the FeatureStore on a background thread; the bare loop only runs the
backbone on batches decoded beforehand. Beside it the parts on their own, in seconds per image:
decoding (in one process), the forward (the bare loop) and writing the store (the outputs computed
beforehand, written synchronously), the stage with no loader workers (decoding in the forward's
process, the background writer kept), the stage run sequentially (neither) and the store bytes per
image. Goal: ratio >= 0.9. Everything is timed `--repeats` times,
interleaved; the best time counts.

    python benchmarks/extraction.py --images 512 --out benchmarks/results/extraction.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BACKBONES, image_rows, save  # noqa: E402

from useg.backbones import BackboneConfig, build_backbone  # noqa: E402
from useg.backbones.extract import extract_features  # noqa: E402
from useg.data.pipeline import loader_workers, ordered_batches  # noqa: E402
from useg.runtime import resolve_device, set_threads  # noqa: E402
from useg.stores.base import provenance  # noqa: E402
from useg.stores.features import FeatureWriter  # noqa: E402


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
    n, cpu = args.images, torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        rows = image_rows(Path(tmp), n, image_size=cfg.input_size[0])
        numbered, paths = list(enumerate(rows)), [row.path for row in rows]
        batches = [images for _, images in ordered_batches(paths, cfg.frame, args.batch_size, 1, cpu)]
        with torch.inference_mode():
            outputs = [backbone(images.to(device)) for images in batches]
        outputs = [(o.cls.cpu().numpy(), o.patches.cpu().numpy(), o.attn.cpu().numpy()) for o in outputs]
        grid = backbone.grid_for(*cfg.input_size)

        @torch.inference_mode()
        def bare() -> None:
            for images in batches:
                out = backbone(images.to(device))
                out.patches.cpu()
            if device.type == "cuda":
                torch.cuda.synchronize()

        def decode() -> None:
            for _ in ordered_batches(paths, cfg.frame, args.batch_size, 1, cpu):
                pass

        def write() -> None:
            index, ids = np.arange(n), [row.id for row in rows]
            with FeatureWriter(Path(tmp) / "w.zarr", index, ids, grid, cfg.embed_dim, cfg.num_heads, {}, args.batch_size) as writer:
                for b, (cls, patches, attn) in enumerate(outputs):
                    writer.write(b * args.batch_size, cls, patches, attn)

        def stage(threads: int, background: bool) -> None:
            extract_features(
                backbone, numbered, Path(tmp) / "shard.zarr", cfg.frame, provenance("features", {}, 0), device,
                batch_size=args.batch_size, threads=threads, background=background,
            )  # fmt: skip

        bare()  # warm-up
        bare_s, stage_s, no_workers_s, sequential_s, decode_s, write_s = best_times(
            [bare, lambda: stage(args.threads, True), lambda: stage(1, True), lambda: stage(1, False), decode, write],
            args.repeats,
        )
        store_bytes = sum(f.stat().st_size for f in (Path(tmp) / "shard.zarr").rglob("*") if f.is_file())
    save(
        {
            "benchmark": "extraction",
            "backbone": BACKBONES[args.backbone],
            "images": n,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "loader_workers": loader_workers(args.threads),
            "device": str(device),
            "bare_images_per_s": n / bare_s,
            "stage_images_per_s": n / stage_s,
            "no_workers_images_per_s": n / no_workers_s,
            "sequential_images_per_s": n / sequential_s,
            "ratio": bare_s / stage_s,
            "no_workers_ratio": bare_s / no_workers_s,
            "sequential_ratio": bare_s / sequential_s,
            "seconds_per_image": {
                "stage": stage_s / n, "no_workers": no_workers_s / n, "sequential": sequential_s / n, "decode": decode_s / n, "forward": bare_s / n, "write": write_s / n,
            },  # fmt: skip
            "store_bytes_per_image": store_bytes / n,
            "goal": 0.9,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
