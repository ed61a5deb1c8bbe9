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
    round=r"\d+",


def as_json(obj):
    """Canonical JSON of a config slice: the `params` that define a stage."""
    return json.dumps(obj, sort_keys=True)


def dataset_root():
    """Folder the manifest reads: the rendered synthetic dataset or the user's folder."""
    if DATASET["kind"] == "synthetic":
        return f"{OUT}/data"
    return DATASET["root"]


def feature_shards(split):
    """Every FeatureStore shard of a split."""
    return expand(
        f"{OUT}/features/{BACKBONE}/{split}/shard-{{shard}}.zarr",
        shard=range(config["features"]["shards"]),
    )


def backbone_weights(wildcards):
    """The checkpoint a `pretrain` backbone loads (none for random, files or timm tags)."""
    return []


# Methods whose run is evaluated in several columns (TransFGU Table 3: initial, trained, bootstrapped).
METHOD_COLUMNS = {"transfgu": ["transfgu-initial", "transfgu-trained", "transfgu"]}


def metrics_targets():
    """metrics.json of every configured method (and of each of its evaluated columns)."""
    return [f"{OUT}/{column}/metrics.json" for method in config["methods"] for column in METHOD_COLUMNS.get(method, [method])]


def transfgu_slice(*keys):
    """The `transfgu` config keys a TransFGU stage depends on, with the seed."""
    return {"transfgu": {key: config["transfgu"][key] for key in keys}, "seed": config["seed"]}


def transfgu_shards(kind, split):
    """Every shard of a TransFGU per-shard store (`crops` or `bank`) of a split."""
    return expand(f"{OUT}/transfgu/{kind}/{split}/shard-{{shard}}.zarr", shard=range(config["features"]["shards"]))


def transfgu_teacher(wildcards):
    """The previous round's decoder: the teacher of round r > 0 (none for round 0)."""
    r = int(wildcards.round)
    return [f"{OUT}/transfgu/round-{r - 1}/model.pt"] if r > 0 else []


def transfgu_model(wildcards):
    """Decoder a TransFGU column predicts with: round 0 (`transfgu-trained`) or the last round (`transfgu`)."""
    r = 0 if wildcards.method == "transfgu-trained" else config["transfgu"]["rounds"]
    return f"{OUT}/transfgu/round-{r}/model.pt"


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
