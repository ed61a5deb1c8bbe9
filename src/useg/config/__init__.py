"""Workflow configuration: config files composed from `_base_` files over the schema's defaults."""

from useg.config.layers import BASES_KEY, COMMAND_LINE, SCHEMA_DEFAULT, Resolved, resolve_config

__all__ = ["BASES_KEY", "COMMAND_LINE", "SCHEMA_DEFAULT", "Resolved", "resolve_config"]
