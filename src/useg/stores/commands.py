"""Subcommand `useg inspect`."""

from __future__ import annotations

import argparse
from pathlib import Path

from useg.cli import add_command
from useg.errors import ConfigError


def show_path(store: Path) -> Path:
    """Where `--show` writes by default: beside the store, <store name>-show.png."""
    store = store.resolve()
    return store.parent / f"{store.name.removesuffix('.zarr')}-show.png"


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
    out = args.out or show_path(args.path)
    save_png(out, render_overlays(maps, args.show, args.manifest, title=str(args.path)))
    print(f"overlays of {min(args.show, len(maps))} images: {out}")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "inspect", run_inspect,
        "print a store's layout and provenance; --show N renders overlays, --compare A B compares label maps",
    )  # fmt: skip
    p.add_argument("path", type=Path, nargs="?", help="a store (.zarr folder) written by a stage")
    p.add_argument("--show", type=int, metavar="N", help="render N images as image | labels | ground truth to a PNG")
    p.add_argument("--out", type=Path, help="PNG written by --show (default: <store name>-show.png beside the store)")
    p.add_argument("--manifest", type=Path, help="manifest.csv of the run (default: found in the store's parent folders)")
    p.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"), help="agreement between two label-map stores")
