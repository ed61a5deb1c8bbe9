"""Feature-stage throughput against a bare backbone forward loop over the same decoded batches.

ratio = stage images/s / bare images/s, both with `--threads` torch threads. The stage decodes in its
loader workers (`stream_workers`: none on CPU, where the forward takes every thread; `threads - 1` on
CUDA), runs the backbone and writes the FeatureStore in a writer process. On CPU the forward itself
keeps every core busy, so decoding and writing can only take cores from it; a GPU takes the forward off
the CPU. The stand-in for that, `one_thread_ratio`: the forward held to one torch thread (bare and stage
alike) while the stage decodes in `threads - 1` workers and writes in its writer process on the other
cores. Beside them the stage with a writer thread, sequentially (no workers, writes in the forward's
thread), the previous configuration (`threads - 1` workers beside a `threads`-thread forward, writer
thread), and the parts on their own in seconds per image: decoding (in one process), the forward (the
bare loop) and writing the store (outputs computed beforehand, written synchronously), and the store
bytes per image. Goal: ratio >= 0.9 (tiny ViT, the stand-in) and >= 0.95 (ViT-S/8). Everything is
timed `--repeats` times, interleaved; the best time counts.

    python benchmarks/extraction.py --images 1024 --out benchmarks/results/extraction.json
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
from useg.data.pipeline import loader_workers, ordered_batches, stream_workers  # noqa: E402
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
    parser.add_argument("--images", type=int, default=1024)
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

        def stage(background: str, workers: int | None = None, forward_threads: int = args.threads) -> None:
            set_threads(forward_threads)
            extract_features(
                backbone, numbered, Path(tmp) / "shard.zarr", cfg.frame, provenance("features", {}, 0), device,
                batch_size=args.batch_size, threads=args.threads, background=background, workers=workers,
            )  # fmt: skip
            set_threads(args.threads)

        def bare_one_thread() -> None:
            set_threads(1)
            bare()
            set_threads(args.threads)

        workers = loader_workers(args.threads)
        timed = {
            "bare": bare,
            "stage": lambda: stage("process"),
            "thread_writer": lambda: stage("thread"),
            "sequential": lambda: stage("none", workers=0),
            "previous": lambda: stage("thread", workers=workers),
            "bare_one_thread": bare_one_thread,
            "stage_one_thread": lambda: stage("process", workers=workers, forward_threads=1),
            "thread_writer_one_thread": lambda: stage("thread", workers=workers, forward_threads=1),
            "decode": decode,
            "write": write,
        }
        bare()  # warm-up
        seconds = dict(zip(timed, best_times(list(timed.values()), args.repeats)))
        store_bytes = sum(f.stat().st_size for f in (Path(tmp) / "shard.zarr").rglob("*") if f.is_file())
    rates = {name: n / t for name, t in seconds.items() if name not in ("decode", "write")}
    save(
        {
            "benchmark": "extraction",
            "backbone": BACKBONES[args.backbone],
            "images": n,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "stage_loader_workers": stream_workers(args.threads, device),
            "one_thread_loader_workers": workers,
            "device": str(device),
            "images_per_s": rates,
            "ratio": seconds["bare"] / seconds["stage"],
            "thread_writer_ratio": seconds["bare"] / seconds["thread_writer"],
            "sequential_ratio": seconds["bare"] / seconds["sequential"],
            "previous_ratio": seconds["bare"] / seconds["previous"],
            "one_thread_ratio": seconds["bare_one_thread"] / seconds["stage_one_thread"],
            "one_thread_thread_writer_ratio": seconds["bare_one_thread"] / seconds["thread_writer_one_thread"],
            "seconds_per_image": {name: t / n for name, t in seconds.items()},
            "store_bytes_per_image": store_bytes / n,
            "goal": 0.9 if args.backbone == "tiny" else 0.95,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
