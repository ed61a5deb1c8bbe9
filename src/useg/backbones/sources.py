"""What `backbone.weights` names (a local file or a timm tag), decided without torch or timm:
the Snakefile asks it when the DAG is built, to declare a weights file as an input."""

from __future__ import annotations

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


def is_weight_file(source: str) -> bool:
    """True when `backbone.weights` names a local file rather than a timm tag."""
    return source.endswith(WEIGHT_SUFFIXES) or "/" in source or "\\" in source


def missing_weights_message(path: str) -> str:
    """The error of a `backbone.weights` file that does not exist, with the values it may take."""
    return (
        f"backbone weights file {path} does not exist. Set backbone.weights to an existing "
        "file, a timm pretrained tag (needs internet), 'random' or 'pretrain'."
    )
