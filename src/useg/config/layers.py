"""Config layering, the way detectron2 / mmsegmentation model zoos compose their configs.

A config file may name the files it builds on under `_base_` (paths relative to the file). The
resolved config is, lowest first: the schema's defaults < each base in order (itself resolved the
same way) < the file < the next file given < command-line overrides. Mappings merge key by key;
any other value (lists included) replaces the one below it. `config.yaml`, the embedded demo, is
read only when no file is given: its toy values never reach a config that does not name it.
Every leaf remembers where its value came from (`useg config` prints it).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from useg.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
DEMO_CONFIG = REPO / "config.yaml"
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
BASES_KEY = "_base_"
SCHEMA_DEFAULT = "schema default"
COMMAND_LINE = "command line"

KeyPath = tuple[str, ...]


@dataclass
class Resolved:
    """A resolved config, the source of each of its leaves and the files it was composed from (lowest first)."""

    config: dict[str, Any]
    sources: dict[KeyPath, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def source(self, *path: str) -> str:
        """Where the value at `path` came from (a file, `schema default` or `command line`)."""
        return self.sources[tuple(path)]


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file's mapping, read as JSON, else YAML (as Snakemake reads --configfile); a clear error
    for a missing, unparsable or non-mapping file."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid JSON or YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not a {type(data).__name__}")
    return data


def base_paths(path: Path, data: dict[str, Any]) -> list[Path]:
    """The `_base_` files a config names, resolved against its folder."""
    bases = data.pop(BASES_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: `{BASES_KEY}` must be a file path or a list of file paths, got {bases!r}")
    return [(path.parent / base).resolve() for base in bases]


def config_layers(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """(file, keys) of a config file and of everything it builds on, lowest first."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"`{BASES_KEY}` files form a cycle: {cycle}")
    if chain and not path.is_file():
        raise ConfigError(f"{chain[-1]} names the base {path} in `{BASES_KEY}`, which does not exist")
    data = read_yaml(path)
    layers = [layer for base in base_paths(path, data) for layer in config_layers(base, (*chain, path))]
    return [*layers, (str(path), data)]


def record_leaves(sources: dict[KeyPath, str], path: KeyPath, value: Any, label: str) -> None:
    """Mark every leaf of `value` (placed at `path`) as coming from `label`, forgetting what was below."""
    for key in [k for k in sources if k[: len(path)] == path]:
        del sources[key]
    if isinstance(value, dict) and value:
        for key, item in value.items():
            record_leaves(sources, (*path, key), item, label)
    else:
        sources[path] = label


def merge_layer(
    config: dict[str, Any], sources: dict[KeyPath, str], layer: Mapping[str, Any], label: str, prefix: KeyPath = ()
) -> None:
    """Merge one layer into `config` in place: mappings key by key (an empty one changes nothing), anything
    else replaced."""
    for key, value in layer.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            merge_layer(config[key], sources, value, label, path)
        else:
            config[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
            record_leaves(sources, path, config[key], label)


def fill_defaults(
    schema: dict[str, Any], config: dict[str, Any], sources: dict[KeyPath, str], prefix: KeyPath = ()
) -> dict[str, Any]:
    """`config` with every missing key set to its schema default (recursively), keys in schema order."""
    properties = schema.get("properties", {})
    for key, sub in properties.items():
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
            record_leaves(sources, (*prefix, key), config[key], SCHEMA_DEFAULT)
        if isinstance(config.get(key), dict) and "properties" in sub:
            config[key] = fill_defaults(sub, config[key], sources, (*prefix, key))
    ordered = [k for k in properties if k in config] + [k for k in config if k not in properties]
    return {key: config[key] for key in ordered}


@functools.cache
def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """The workflow's config schema (read once; callers must not modify it)."""
    return read_yaml(path)


@functools.cache
def schema_validator(path: Path = SCHEMA_PATH) -> Any:
    """A JSON-schema validator of the workflow's config schema (built once)."""
    import jsonschema

    return jsonschema.Draft202012Validator(load_schema(path))


def resolve_config(files: Iterable[str | Path], overrides: Mapping[str, Any] | None = None) -> Resolved:
    """Compose `files` (each with its `_base_` files) and command-line `overrides` over the schema's
    defaults; no files: the embedded demo, config.yaml."""
    paths = [Path(f) for f in files] or [DEMO_CONFIG]
    resolved = Resolved({})
    for path in paths:
        for label, layer in config_layers(path):
            merge_layer(resolved.config, resolved.sources, layer, label)
            resolved.files.append(label)
    if overrides:
        merge_layer(resolved.config, resolved.sources, overrides, COMMAND_LINE)
    resolved.config = fill_defaults(load_schema(), resolved.config, resolved.sources)
    return resolved


def check_config(resolved: Resolved) -> None:
    """Validate a resolved config against the schema; the error names the key, the rule and the file that set it."""
    errors = sorted(schema_validator().iter_errors(resolved.config), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    lines = []
    for error in errors:
        path = tuple(str(p) for p in error.absolute_path)
        prefixes = (path[:n] for n in range(len(path), 0, -1))
        where = next((resolved.sources[p] for p in prefixes if p in resolved.sources), None)
        set_in = f" (set in {display(where)})" if where else ""
        lines.append(f"  {'.'.join(path) or '<top level>'}: {error.message}{set_in}")
    raise ConfigError("the config does not fit workflow/schemas/config.schema.yaml:\n" + "\n".join(lines))


def display(label: str) -> str:
    """A source label for people: files relative to the working folder when below it."""
    path = Path(label)
    if not path.is_absolute():
        return label
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return label


def flow_yaml(value: Any) -> str:
    """One value as single-line YAML that reads back to the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    return text.removesuffix("...").strip()


def annotated_yaml(resolved: Resolved) -> str:
    """The resolved config as YAML, every leaf followed by `# <where it came from>`."""
    lines: list[str] = []

    def walk(node: dict[str, Any], path: KeyPath, indent: str) -> None:
        for key, value in node.items():
            here = (*path, key)
            if isinstance(value, dict) and value:
                lines.append(f"{indent}{key}:")
                walk(value, here, indent + "  ")
            else:
                lines.append(f"{indent}{key}: {flow_yaml(value)}  # {display(resolved.sources.get(here, '?'))}")

    walk(resolved.config, (), "")
    return "\n".join(lines) + "\n"
