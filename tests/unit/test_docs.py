"""README and docs stay true: the key reference is current and covers the schema, the configuration page names
every section, every `useg` / `snakemake` command in README's code blocks parses, and what it names exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from useg.cli import build_parser
from useg.config.layers import load_schema
from useg.config.reference import PAGE, render, schema_keys

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RULE_OPTIONS = ("--forcerun", "--until", "--omit-from", "--allowed-rules")


def code_commands(markdown: str) -> list[list[str]]:
    """Every `useg ...` / `snakemake ...` command in the ```bash blocks, as argv (comments, `&&` chains and
    line continuations handled)."""
    commands = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", markdown, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;|\|", line):
                argv = shlex.split(part, comments=True)
                if argv and argv[0] in ("useg", "snakemake"):
                    commands.append(argv)
    return commands


def rule_names() -> set[str]:
    """Every rule the workflow defines."""
    names = set()
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        names |= set(re.findall(r"^(?:local)?rule (\w+):", path.read_text(), flags=re.M))
    return names | set(re.findall(r"^(?:local)?rule (\w+):", (ROOT / "Snakefile").read_text(), flags=re.M))


def test_key_reference_is_current():
    assert PAGE.read_text() == render(load_schema()), "docs/config-keys.md is stale: run `python -m useg.config.reference`"


def test_every_schema_key_is_in_the_key_reference():
    page = PAGE.read_text()
    for key, _ in schema_keys(load_schema()):
        assert f"| `{key}` |" in page, f"{key} is not in docs/config-keys.md"


def test_configuration_page_names_every_section():
    page = (ROOT / "docs" / "configuration.md").read_text()
    for key in load_schema()["properties"]:
        assert f"`{key}" in page, f"docs/configuration.md does not mention the config section {key}"


def test_readme_is_short_and_links_existing_pages():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links {target}, which does not exist"


README_COMMANDS = code_commands(README.read_text())


def test_readme_has_commands():
    assert any(c[0] == "useg" for c in README_COMMANDS) and any(c[0] == "snakemake" for c in README_COMMANDS)


@pytest.mark.parametrize("argv", [c for c in README_COMMANDS if c[0] == "useg"], ids=shlex.join)
def test_readme_useg_command_parses(argv: list[str]):
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"README: `{shlex.join(argv)}` is not a valid useg command (exit {exc.code})")


@pytest.mark.parametrize("argv", [c for c in README_COMMANDS if c[0] == "snakemake"], ids=shlex.join)
def test_readme_snakemake_command_parses_and_names_what_exists(argv: list[str]):
    from snakemake.cli import get_argument_parser

    try:
        args = get_argument_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"README: `{shlex.join(argv)}` is not a valid snakemake command (exit {exc.code})")
    shipped = [p for p in args.configfile or [] if str(p) == "config.yaml" or str(p).startswith("configs/")]
    for path in [*shipped, *([args.snakefile] if args.snakefile else [])]:  # others are the user's own files
        assert (ROOT / path).exists(), f"README: `{shlex.join(argv)}` names {path}, which does not exist"
    if args.profile and "/" in str(args.profile):
        assert (ROOT / args.profile / "config.yaml").is_file(), f"README: no profile {args.profile}"
    named = {rule for option in ("forcerun", "until", "omit_from") for rule in (getattr(args, option) or [])}
    named |= set(args.set_threads or {})
    assert named <= rule_names(), f"README: `{shlex.join(argv)}` names rules {sorted(named - rule_names())} the workflow lacks"
