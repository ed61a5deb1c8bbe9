"""Paths, config slices and helpers shared by every rule file."""

import json
import os
import shlex
from pathlib import Path

RESULTS = config["results_dir"]
DATASET = config["dataset"]
DS = DATASET["name"]
BACKBONE = config["backbone"]["name"]
OUT = f"{RESULTS}/{DS}"
CPU_ENV = "../../envs/cpu.yaml"
GPU_ENV = "../../envs/gpu.yaml"

# Rules run `python -m useg` with the workflow's own src/ first on the path, so a conda
# environment built from envs/ (which holds the dependencies only) runs this code too.
SRC = Path(workflow.basedir) / "src"
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(str(SRC))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")


wildcard_constraints:
    shard=r"\d+",
    split=r"[A-Za-z0-9_-]+",
    method=r"[a-z0-9_-]+",


def as_json(obj):
    """Canonical JSON of a config slice: the `params` that define a stage."""
    return json.dumps(obj, sort_keys=True)


def dataset_root():
    """Folder the manifest reads: the rendered synthetic dataset or the user's folder."""
    if DATASET["kind"] == "synthetic":
        return f"{OUT}/data"
    return DATASET["root"]


# --- benchmark dataset kinds (manifest config slice) ---
FOLDER_KINDS = ("synthetic", "folder")
BENCHMARK_KEYS = ("setting", "image_lists", "class_list", "train_split", "eval_split")


def manifest_config():
    """Config slice of the manifest stage; benchmark kinds also list images by split and label setting."""
    keys = ["kind", "name", "on_corrupt"]
    if DATASET["kind"] not in FOLDER_KINDS:
        keys += BENCHMARK_KEYS
    return {k: DATASET[k] for k in keys}


# --- end benchmark dataset kinds ---


def feature_shards(split):
    """Every FeatureStore shard of a split."""
    return expand(
        f"{OUT}/features/{BACKBONE}/{split}/shard-{{shard}}.zarr",
        shard=range(config["features"]["shards"]),
    )


def backbone_weights(wildcards):
    """The checkpoint a `pretrain` backbone loads (none for random, files or timm tags)."""
    return []


def metrics_targets():
    """metrics.json of every configured method."""
    return [f"{OUT}/{method}/metrics.json" for method in config["methods"]]


def print_summary():
    """Print the headline metrics of every method and where the results are."""
    print(f"\nuseg: results in {os.path.abspath(OUT)}")
    for path in metrics_targets():
        if not os.path.exists(path):
            continue
        with open(path) as fh:
            metrics = json.load(fh)
        for name, result in metrics["protocols"].items():
            print(
                f"  {metrics['method']:<12} {name:<12} mIoU {100 * result['miou']:6.2f} %"
                f"   pixel acc {100 * result['pixel_accuracy']:6.2f} %"
            )
        print(f"  metrics: {os.path.abspath(path)}")
