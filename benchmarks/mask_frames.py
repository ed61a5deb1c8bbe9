"""MaskDistill's object masks mined in the working frame against `mask_short_side` (each image at its own size,
carried into the frame): seconds per image of each, and how many bank patches agree. Frames: `squash` at the
images' own aspect (where both paths must agree exactly) and a square `pad` frame (where the frame path's ViT
also sees the padding). Random-weight tiny ViT of the embedded default; images from `--images` (e.g. CamVid's
480 x 360 frames) or rendered 72 x 96 scenes.

    python benchmarks/mask_frames.py --images ../shared/data/camvid/images --count 40 --out benchmarks/results/mask_frames.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TINY_VIT, image_rows, save  # noqa: E402

from useg.backbones import BackboneConfig, build_backbone  # noqa: E402
from useg.data.frame import Frame  # noqa: E402
from useg.data.manifest import ManifestRow  # noqa: E402
from useg.methods.maskdistill.masks import build_mask_bank, short_side_shape  # noqa: E402
from useg.runtime import set_threads  # noqa: E402
from useg.stores.base import provenance  # noqa: E402
from useg.stores.maskbank import MaskBank  # noqa: E402

# the schema's release mask rule
RULE = {"topk": 0.4, "cls_heads": -1, "cls_mass": 0.5, "connected": True, "cluster_input": "box_crop", "background": "zero", "batch_size": 8}


def folder_rows(folder: Path, count: int) -> list[ManifestRow]:
    """The first `count` images of a folder (sorted), as manifest rows."""
    rows = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]:
        width, height = Image.open(path).size
        rows.append(ManifestRow(id=path.stem, path=str(path), width=width, height=height, split="val"))
    return rows


def mined(backbone, rows: list[ManifestRow], frame: Frame, side: int | None, out: Path) -> tuple[MaskBank, float]:
    """A mask bank of `rows` in `frame` (mined there, or at short side `side`) and its seconds per image."""
    start = time.perf_counter()
    build_mask_bank(backbone, list(enumerate(rows)), {**RULE, "mask_short_side": side}, frame, out, provenance("bench", {}, seed=0), torch.device("cpu"))
    return MaskBank([out]), (time.perf_counter() - start) / len(rows)


def compare(backbone, rows: list[ManifestRow], frame: Frame, side: int, tmp: Path) -> dict[str, float]:
    """Both paths in one frame: seconds per image, share of equal patches, identical images, mask coverage."""
    name = f"{frame.mode}-{frame.size[0]}x{frame.size[1]}"
    (in_frame, frame_s), (own_size, side_s) = (mined(backbone, rows, frame, s, tmp / f"{name}-{s}.zarr") for s in (None, side))
    a, b = in_frame.read("masks"), own_size.read("masks")
    (top, left, bottom, right), patch = frame.placement((rows[0].height, rows[0].width))[1], frame.size[0] // a.shape[1]
    inside = (a == b)[:, top // patch : -(-bottom // patch), left // patch : -(-right // patch)]
    return {
        "frame": name, "seconds_per_image_in_frame": frame_s, "seconds_per_image_short_side": side_s,
        "patches_equal": float((a == b).mean()), "patches_equal_on_the_image": float(inside.mean()),
        "images_identical": int((a == b).all(axis=(1, 2)).sum()),
        "sources_equal": int((in_frame.read("source") == own_size.read("source")).sum()),
        "coverage_in_frame": float(a.mean()), "coverage_short_side": float(b.mean()),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="a folder of images of one aspect (default: rendered 72 x 96 scenes)")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--short-side", type=int, default=96, help="mask_short_side (4:3 images: 96 x 128, whole patches)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/mask_frames.json")
    args = parser.parse_args()
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        rows = folder_rows(args.images, args.count) if args.images else image_rows(Path(tmp), args.count, image_size=96)
        if not args.images:  # rendered scenes are square: crop them to 72 x 96
            for row in rows:
                Image.open(row.path).crop((0, 12, 96, 84)).save(row.path)
            rows = [ManifestRow(id=r.id, path=r.path, width=96, height=72, split=r.split) for r in rows]
        height, width = rows[0].height, rows[0].width
        short = args.short_side
        size = tuple(-(-n // 8) * 8 for n in short_side_shape((height, width), short))  # the frame of the images' aspect
        backbone = build_backbone(BackboneConfig.from_dict({**TINY_VIT, "input_size": list(size)}), seed=0).eval()
        square = max(size)
        results = [compare(backbone, rows, Frame(size), short, Path(tmp)), compare(backbone, rows, Frame((square, square), "pad"), short, Path(tmp))]
    for r in results:
        print(f"{r['frame']}: {r['patches_equal']:.4f} of patches equal ({r['patches_equal_on_the_image']:.4f} on the image), "
              f"{r['images_identical']}/{len(rows)} images identical, "
              f"coverage {r['coverage_in_frame']:.3f} / {r['coverage_short_side']:.3f}, "
              f"{r['seconds_per_image_in_frame'] * 1e3:.1f} / {r['seconds_per_image_short_side'] * 1e3:.1f} ms per image")  # fmt: skip
    save({"images": len(rows), "image_size": [height, width], "short_side": short, "results": results}, args.out)


if __name__ == "__main__":
    main()
