"""`useg inspect PATH`: layout, shapes, dtypes and provenance of any store."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import zarr

from useg.stores.base import open_store


def _arrays(group: zarr.Group, prefix: str = "") -> list[str]:
    lines = []
    with warnings.catch_warnings():  # Snakemake leaves a `.snakemake_timestamp` file in directory outputs
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        members = sorted(group.members(), key=lambda kv: kv[0])
    for name, item in members:
        if isinstance(item, zarr.Group):
            lines.append(f"  {prefix}{name}/")
            lines += _arrays(item, prefix=f"{prefix}{name}/")
        else:
            chunks = getattr(item, "chunks", None)
            lines.append(f"  {prefix}{name:<10} {str(item.dtype):<14} shape={tuple(item.shape)} chunks={chunks}")
    return lines


def describe_store(path: str | Path) -> str:
    """Human-readable description of a useg store."""
    group = open_store(path)
    attrs = dict(group.attrs)
    prov = attrs.pop("provenance", {})
    lines = [f"{path}", f"kind: {attrs.pop('kind', '?')} (schema {attrs.pop('schema_version', '?')})", "arrays:"]
    lines += _arrays(group)
    if attrs:
        lines.append("attrs:")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in sorted(attrs.items())]
    if prov:
        lines.append("provenance:")
        lines += [f"  {k}: {json.dumps(v) if k == 'config' else v}" for k, v in prov.items()]
    return "\n".join(lines)
