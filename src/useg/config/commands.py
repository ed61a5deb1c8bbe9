"""Subcommand `useg config`: the fully resolved config of a run and where each value came from."""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

from useg.cli import add_command
from useg.errors import ConfigError


def parse_override(text: str) -> dict[str, Any]:
    """`a.b.c=value` (value read as YAML) as the nested mapping {a: {b: {c: value}}}."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: write KEY=VALUE with a dotted key, e.g. --set transfgu.epochs=50")
    out: dict[str, Any] = {}
    node = out
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value)
    return out


def run_config(args: argparse.Namespace) -> None:
    """Print the resolved config (schema defaults < bases < files < --set), each leaf with its source."""
    from useg.config.layers import annotated_yaml, check_config, merge_layer, resolve_config

    overrides: dict[str, Any] = {}
    for text in args.set:
        merge_layer(overrides, {}, parse_override(text), "")
    resolved = resolve_config(args.files, overrides)
    if not args.no_check:
        check_config(resolved)
    if args.format == "json":
        print(json.dumps(resolved.config, indent=2))
    elif args.format == "yaml":
        print(yaml.safe_dump(resolved.config, sort_keys=False), end="")
    else:
        print(annotated_yaml(resolved), end="")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "config", run_config,
        "print the fully resolved config of CONFIG files and where each value came from",
        description="Compose CONFIG files as the workflow does (`_base_` files over the schema's defaults, later files "
        "over earlier ones, --set on top; no file: the embedded demo config.yaml), validate it and print it. "
        "Each leaf is annotated with its source: a file, `schema default` or `command line`.",
    )
    p.add_argument("files", nargs="*", metavar="CONFIG", help="config files, as given to snakemake --configfile")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, like snakemake --config")
    p.add_argument("--format", choices=["annotated", "yaml", "json"], default="annotated")
    p.add_argument("--no-check", action="store_true", help="print without validating against the schema")
