"""Subcommand `useg inspect`."""

from __future__ import annotations

import argparse
from pathlib import Path

from useg.errors import ConfigError


def run_inspect(args: argparse.Namespace) -> None:
    """Print a store's layout, shapes, dtypes and provenance (and a label summary); render or compare label maps."""
    from useg.report.labelmaps import (
        compare, format_comparison, format_summary, has_label_maps, open_label_maps, summarize,
    )  # fmt: skip
    from useg.stores.inspect import describe_store

    if args.compare:
        a, b = (open_label_maps(p) for p in args.compare)
        print(format_comparison(a.path, b.path, compare(a, b)))
        return
    if args.path is None:
        raise ConfigError("useg inspect needs a store path (or --compare A B)")
    print(describe_store(args.path))
    if args.show is None:
        if has_label_maps(args.path):
            print(format_summary(summarize(open_label_maps(args.path))))
        return
    from useg.report.draw import save_png
    from useg.report.overlays import render_overlays

    maps = open_label_maps(args.path)
    print(format_summary(summarize(maps)))
    out = args.out or Path(f"{args.path.resolve().name.removesuffix('.zarr')}-show.png")
    save_png(out, render_overlays(maps, args.show, args.manifest, title=str(args.path)))
    print(f"overlays of {min(args.show, len(maps))} images: {out}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="print a store's layout and provenance; --show N renders overlays, --compare A B compares label maps",
    )
    p.add_argument("path", type=Path, nargs="?")
    p.add_argument("--show", type=int, metavar="N", help="render N images as image | labels | ground truth to a PNG")
    p.add_argument("--out", type=Path, help="PNG written by --show (default: <store name>-show.png)")
    p.add_argument("--manifest", type=Path, help="manifest.csv of the run (default: found in the store's parent folders)")
    p.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"), help="agreement between two label-map stores")
    p.set_defaults(handler=run_inspect)
