"""Subcommand `useg install-profile`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from useg.cli import add_command

log = logging.getLogger("useg")


def run_install_profile(args: argparse.Namespace) -> None:
    """Install a repository profile so that `snakemake --profile <name>` finds it."""
    from useg.profiles.install import install_profile, remaining_placeholders

    target = install_profile(
        args.name,
        args.dest,
        args.source,
        args.force,
        partition=args.partition,
        gpu_partition=args.gpu_partition,
        account=args.account,
    )
    print(f"installed {target}: run `snakemake --cores all --profile {args.name}` from the repository")
    left = remaining_placeholders(target)
    if left:
        print(f"edit {', '.join(left)} in {target} (or delete slurm_account to let the plugin guess it)")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "install-profile", run_install_profile,
        "install a Snakemake profile (slurm, default) where `snakemake --profile NAME` finds it",
        description="Copy profiles/NAME/ (config.yaml and its partition config) to ~/.config/snakemake/NAME/ ($XDG_CONFIG_HOME honoured).",
    )
    p.add_argument("name", nargs="?", default="slurm", help="profile to install")
    p.add_argument("--partition", help="Slurm partition of the CPU jobs, written into the profile")
    p.add_argument("--gpu-partition", help="Slurm partition of the GPU jobs (gpu > 0), written into the profile")
    p.add_argument("--account", help="Slurm account written into the profile")
    p.add_argument("--dest", type=Path, help="profiles folder (default: ~/.config/snakemake)")
    p.add_argument("--source", type=Path, help="folder holding the profiles (default: the repository's profiles/)")
    p.add_argument("--force", action="store_true", help="replace an installed profile that differs")
