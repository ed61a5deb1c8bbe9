"""The schema validation error of a config as one line: the offending key and what is wrong with it.

Snakemake's own message prints the whole schema and the whole config under it (thousands of lines
for an unknown top-level key); the summary keeps the key path and jsonschema's one-line reason.
"""

from __future__ import annotations


def validation_summary(error: Exception) -> str:
    """`config['a']['b']: <reason>` from a Snakemake validation WorkflowError wrapping a jsonschema error."""
    cause = error.__cause__ or error.__context__  # the jsonschema ValidationError it was raised from
    if not (hasattr(cause, "absolute_path") and hasattr(cause, "message")):
        return str(error)
    where = "config" + "".join(f"[{part!r}]" for part in cause.absolute_path)
    return f"invalid configuration: {where}: {cause.message} (see docs/configuration.md)"
