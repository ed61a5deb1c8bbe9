"""useg: unsupervised semantic segmentation as a staged, cached Snakemake pipeline.

Two kinds of subcommands: user commands (USER_COMMANDS: inspect, predict, export, ...) and one
stage command per pipeline stage, the only entry point the Snakemake rules call. Every stage takes
`--params` (the JSON config slice that defines it, recorded as provenance), its input/output paths,
`--threads` and `--log`. Each package registers its own subcommands in a `commands` module listed
in COMMAND_MODULES; heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from useg import __version__
from useg.errors import UsegError
from useg.logs import setup_logging

# Idle OpenMP workers sleep instead of spinning: on a shared or oversubscribed CPU, spinning
# threads starve each other and small-tensor training slows down by an order of magnitude.
# Set before any stage imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

log = logging.getLogger("useg")

Handler = Callable[[argparse.Namespace], None]

COMMAND_MODULES = (
    "useg.data.commands",
    "useg.backbones.commands",
    "useg.methods.kmeans.commands",
    "useg.methods.croc.commands",
    "useg.methods.transfgu.commands",
    "useg.methods.alignseg.commands",
    "useg.methods.pass_.commands",
    "useg.methods.maskdistill.commands",
    "useg.eval.commands",
    "useg.stores.commands",
    "useg.report.commands",
    "useg.profiles.commands",
    "useg.config.commands",
)


# The commands a user types, in the order `useg --help` lists them; every other command is a stage.
USER_COMMANDS = ("inspect", "predict", "export", "config", "benchmarks", "install-profile")


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless it has none (None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if action.required or default in (None, False, [], argparse.SUPPRESS) or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser; `summary` is its line in `useg --help`."""

    def __init__(self, *args: Any, summary: str = "", **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=DefaultsFormatter, **kwargs)
        self.summary = summary


def add_command(
    sub: argparse._SubParsersAction, name: str, handler: Handler, summary: str, description: str | None = None
) -> argparse.ArgumentParser:
    """A subcommand (listed by `useg --help` under its group) that runs `handler`."""
    parser = sub.add_parser(name, summary=summary, description=description or summary)
    parser.set_defaults(handler=handler)
    return parser


def stage_params(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON config slice passed with --params."""
    return json.loads(args.params) if args.params else {}


def stage_provenance(stage: str, params: dict[str, Any], **where: Any) -> dict[str, Any]:
    """Provenance of a stage's store: its config slice plus where it ran (split, shard), and the seed."""
    from useg.stores.base import provenance

    return provenance(stage, {**params, **where}, params.get("seed"))


def add_stage(sub: argparse._SubParsersAction, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    """A stage subcommand with the common --params, --threads and --log options."""
    parser = add_command(sub, name, handler, help_text)
    parser.add_argument("--params", default="{}", help="JSON config slice of this stage")
    add_run_args(parser)
    return parser


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """--threads and --log, of stages and of the user commands that compute."""
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--log", help="also write the log to this file")


def add_shard_args(parser: argparse.ArgumentParser) -> None:
    """Options of a stage that processes one manifest shard with the backbone."""
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--shard", type=int, required=True)
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("--weights", help="checkpoint file when backbone.weights is 'pretrain'")
    parser.add_argument("--out", required=True)


def command_listing(parsers: dict[str, CommandParser]) -> str:
    """The user commands, then the stage commands, one `name  summary` line each."""
    width = max(map(len, parsers)) + 2
    stages = [name for name in parsers if name not in USER_COMMANDS]
    groups = {
        "user commands": [name for name in USER_COMMANDS if name in parsers],
        "stage commands (one per Snakemake rule; the workflow runs them)": stages,
    }
    return "\n\n".join(
        f"{title}:\n" + "\n".join(f"  {name:<{width}}{parsers[name].summary}" for name in names)
        for title, names in groups.items()
    )


def build_parser() -> argparse.ArgumentParser:
    """The `useg` argument parser with every registered subcommand, listed by group."""
    parser = argparse.ArgumentParser(
        prog="useg", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"useg {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=CommandParser,
        help="one of the commands below; `useg COMMAND --help` for its options",
    )  # fmt: skip
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    parser.epilog = command_listing(sub.choices) + "\n\nDocumentation: docs/cli.md"
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `useg` console script."""
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "log", None))
    try:
        args.handler(args)
    except UsegError as exc:
        log.error("%s", exc)
        return 2
    except Exception:  # a bug or an unforeseen input: the traceback goes to the rule's log too
        log.exception("useg %s failed unexpectedly; the traceback follows", args.command)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
