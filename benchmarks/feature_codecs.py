"""FeatureStore codecs: bytes per image and write throughput of each array (cls, patches, attn) under
no compression, blosc-lz4 (byte shuffle, bit shuffle) and zstd at three levels, on the outputs of a
real backbone forward over the synthetic scenes. Chunks of `--rows-per-chunk` images (the stage's
batch). Each write is timed `--repeats` times; the best counts. `features.codec: auto` takes per
array the codec this measures as best (docs/measurements.md).

    python benchmarks/feature_codecs.py --images 64 --out benchmarks/results/feature_codecs.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BACKBONES, image_rows, save  # noqa: E402

from useg.backbones import BackboneConfig, build_backbone  # noqa: E402
from useg.data.pipeline import ordered_batches  # noqa: E402
from useg.runtime import set_threads  # noqa: E402

VARIANTS = {
    "none": None,
    "lz4 (blosc, shuffle)": (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),),
    "lz4 (blosc, bitshuffle)": (BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),),
    "zstd 1": (ZstdCodec(level=1),),
    "zstd 3": (ZstdCodec(level=3),),
    "zstd 9": (ZstdCodec(level=9),),
}


@torch.inference_mode()
def backbone_outputs(cfg: BackboneConfig, rows: list, batch_size: int) -> dict[str, np.ndarray]:
    """cls (float32), patches and attn (float16) of every image, as the FeatureStore holds them."""
    backbone = build_backbone(cfg, seed=0).eval()
    parts: dict[str, list[np.ndarray]] = {"cls": [], "patches": [], "attn": []}
    for _, images in ordered_batches([r.path for r in rows], cfg.frame, batch_size, 1, torch.device("cpu")):
        out = backbone(images)
        parts["cls"].append(out.cls.numpy().astype(np.float32))
        parts["patches"].append(out.patches.numpy().astype(np.float16))
        parts["attn"].append(out.attn.numpy().astype(np.float16))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def measure(values: np.ndarray, compressors: object, folder: Path, rows_per_chunk: int, repeats: int) -> dict[str, float]:
    """Stored bytes per image and write MB/s (of the raw array) of `values` under `compressors`."""
    best = float("inf")
    for attempt in range(repeats):
        path = folder / f"a{attempt}.zarr"
        chunks = (rows_per_chunk, *values.shape[1:])
        array = zarr.create_array(str(path), shape=values.shape, dtype=values.dtype, chunks=chunks, compressors=compressors)
        start = time.perf_counter()
        for row in range(0, len(values), rows_per_chunk):
            array[row : row + rows_per_chunk] = values[row : row + rows_per_chunk]
        best = min(best, time.perf_counter() - start)
    stored = sum(f.stat().st_size for f in path.rglob("c/**/*") if f.is_file())
    return {
        "bytes_per_image": stored / len(values),
        "ratio": values.nbytes / stored,
        "write_mb_per_s": values.nbytes / best / 1e6,
        "write_ms_per_image": best / len(values) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rows-per-chunk", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="tiny")
    parser.add_argument("--out", default="benchmarks/results/feature_codecs.json")
    args = parser.parse_args()

    set_threads(args.threads)
    cfg = BackboneConfig.from_dict(BACKBONES[args.backbone])
    with tempfile.TemporaryDirectory() as tmp:
        rows = image_rows(Path(tmp), args.images, image_size=cfg.input_size[0])
        outputs = backbone_outputs(cfg, rows, args.rows_per_chunk)
        table = {
            name: {variant: measure(values, codecs, Path(tmp) / f"{name}-{i}", args.rows_per_chunk, args.repeats)
                   for i, (variant, codecs) in enumerate(VARIANTS.items())}
            for name, values in outputs.items()
        }  # fmt: skip
    save(
        {
            "benchmark": "feature_codecs",
            "backbone": BACKBONES[args.backbone],
            "images": args.images,
            "rows_per_chunk": args.rows_per_chunk,
            "raw_bytes_per_image": {name: values[0].nbytes for name, values in outputs.items()},
            "arrays": table,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
