"""Subcommand `useg inspect`."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_inspect(args: argparse.Namespace) -> None:
    """Print a store's layout, shapes, dtypes and provenance."""
    from useg.stores.inspect import describe_store

    print(describe_store(args.path))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="print a store's layout, shapes, dtypes and provenance")
    p.add_argument("path", type=Path)
    p.set_defaults(handler=run_inspect)
