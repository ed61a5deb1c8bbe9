"""docs/config-keys.md, generated from workflow/schemas/config.schema.yaml: every key with its type, default,
allowed values and description. `python -m useg.config.reference` rewrites the page;
tests/unit/test_docs.py checks that it is current."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from useg.config.layers import REPO, load_schema

PAGE = REPO / "docs" / "config-keys.md"

HEADER = """# Every configuration key

Generated from `workflow/schemas/config.schema.yaml` by `python -m useg.config.reference`; do not
edit by hand. How configs are composed and the keys people change most: [Configuration](configuration.md).
`a.b[]` is a key of each item of the list `a.b`.
"""


def children(node: dict[str, Any]) -> dict[str, Any] | None:
    """The keys below a schema node: an object's properties, or those of a list's object items."""
    if "properties" in node:
        return node["properties"]
    items = node.get("items")
    return items["properties"] if isinstance(items, dict) and "properties" in items else None


def schema_keys(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted key, schema node) of every key, depth first, in the schema's order."""
    below = children(node)
    if path:
        yield path, node
    if below is not None:
        suffix = "[]" if "items" in node and "properties" not in node else ""
        for name, child in below.items():
            yield from schema_keys(child, f"{path}{suffix}.{name}" if path else name)


def type_of(node: dict[str, Any]) -> str:
    """The node's JSON type(s), e.g. `integer`, `string | null`, `array of number`."""
    kinds = node.get("type", "any")
    text = " \\| ".join(kinds) if isinstance(kinds, list) else kinds
    items = node.get("items")
    if text == "array" and isinstance(items, dict) and "type" in items and "properties" not in items:
        text += f" of {type_of(items)}"
    return text


def allowed(node: dict[str, Any]) -> str:
    """Allowed values: the enum, or the bounds."""
    enum = node.get("enum") or (node.get("items") or {}).get("enum")
    if enum:
        return ", ".join(f"`{json.dumps(v)}`" for v in enum)
    bounds = [f"{sign} {node[key]}" for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"),
                                                      ("maximum", "≤"), ("exclusiveMaximum", "<")) if key in node]  # fmt: skip
    return ", ".join(bounds)


def cell(text: str) -> str:
    """Text fit for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def render(schema: dict[str, Any]) -> str:
    """The whole page: one table row per key."""
    lines = [HEADER, "| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for key, node in schema_keys(schema):
        default = f"`{json.dumps(node['default'])}`" if "default" in node and children(node) is None else ""
        lines.append(
            f"| `{key}` | {type_of(node)} | {cell(default)} | {cell(allowed(node))} | {cell(node.get('description', ''))} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Rewrite docs/config-keys.md from the schema."""
    PAGE.write_text(render(load_schema()))
    print(f"wrote {PAGE}", file=sys.stderr)


if __name__ == "__main__":
    main()
