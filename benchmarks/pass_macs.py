"""PASS segmentation network MACs: useg's stride 8 (strides removed, no dilation) vs the release's stride 32
with 4x bilinear upsampling, for the fcn head and the DeepLabV3+ head ("Ours-D"), counted by
torch.utils.flop_counter on one image (MACs = FLOPs / 2; interpolation is not counted).

    python benchmarks/pass_macs.py --out benchmarks/results/pass_macs.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from useg.methods.pass_.model import HEADS, NetConfig, SegmentationNet  # noqa: E402

LAYOUTS = {"stride8": {"output_stride": 8, "upsample": 1}, "stride32-up4": {"output_stride": 32, "upsample": 4}}


def gmacs(arch: str, layout: dict[str, int], head: str, size: int, classes: int) -> float:
    """Multiply-accumulates (x 1e9) of one CAM forward of a `size` px image."""
    net = SegmentationNet(NetConfig(arch=arch, **layout), classes, head).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.cam(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 2e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/pass_macs.json")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=50)
    args = parser.parse_args()
    rows = []
    for arch in ("resnet18", "resnet50"):
        for head in HEADS:
            macs = {name: gmacs(arch, layout, head, args.size, args.classes) for name, layout in LAYOUTS.items()}
            rows.append({"arch": arch, "head": head, "gmacs": macs, "ratio": macs["stride8"] / macs["stride32-up4"]})
            print(f"{arch:9s} {head:14s} stride 8 {macs['stride8']:6.2f} GMACs, stride 32 + 4x {macs['stride32-up4']:6.2f}, ratio {rows[-1]['ratio']:.2f}")
    save({"benchmark": "pass-macs", "size": args.size, "classes": args.classes, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
