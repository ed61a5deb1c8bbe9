"""Paths, config slices and helpers shared by every rule file."""

import functools
import json
import os
import re
import shlex
from pathlib import Path

from useg.backbones.sources import is_weight_file, missing_weights_message
from useg.methods.transfgu import final_model

RESULTS = config["results_dir"]
DATASET = config["dataset"]
DS = DATASET["name"]
BACKBONE = config["backbone"]["name"]
OUT = f"{RESULTS}/{DS}"
CROC_CHECKPOINT = f"{OUT}/croc/checkpoint.pth"
CPU_ENV = "../../envs/cpu.yaml"
GPU_ENV = "../../envs/gpu.yaml"

# Rules run `python -m useg` with the workflow's own src/ first on the path, so a conda
# environment built from envs/ (which holds the dependencies only) runs this code too.
SRC = Path(workflow.basedir) / "src"
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(str(SRC))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")


WEIGHTS = config["backbone"]["weights"]
if is_weight_file(WEIGHTS) and not os.path.isfile(WEIGHTS):
    raise ValueError(missing_weights_message(WEIGHTS))
BACKBONE_EVAL = config["backbone_eval"]
VARIANTS = BACKBONE_EVAL["variants"]  # backbone variants the backbone evaluation compares


def check_backbone_eval():
    """Fail when `backbone_eval.external` names no pretrained backbone: it evaluates backbone.weights as is."""
    if BACKBONE_EVAL["enabled"] and BACKBONE_EVAL["external"] and WEIGHTS in ("pretrain", "random"):
        raise ValueError(
            f"backbone_eval.external: true evaluates a backbone pretrained elsewhere, but backbone.weights is "
            f"{WEIGHTS!r}: set backbone.weights to its checkpoint file (or a timm tag), or backbone_eval.external: false"
        )


check_backbone_eval()

# Threads of every rule whose stage has no thread count of its own (config key `threads`).
THREADS = config["threads"]
# MaskDistill's chain (masks -> clusters -> Mask R-CNN -> candidates -> labels -> DeepLab-v3 -> CRF) is
# the DAG's longest after pretraining: its jobs go first, and the other jobs fill the cores beside them.
CHAIN_PRIORITY = 10


wildcard_constraints:
    shard=r"\d+",
    split=r"[A-Za-z0-9_-]+",
    method=r"[a-z0-9_-]+|backbone-eval/(pretrain|random)/(kmeans|linear-probe)",
    features=re.escape(BACKBONE) + r"(-pretrain|-random)?",
    variant=r"pretrain|random",
    round=r"\d+",


def as_json(obj):
    """Canonical JSON of a config slice: the `params` that define a stage."""
    return json.dumps(obj, sort_keys=True)


def dataset_root():
    """Folder the manifest reads: the rendered synthetic dataset or the user's folder."""
    if DATASET["kind"] == "synthetic":
        return f"{OUT}/data"
    return DATASET["root"]


@functools.cache
def folder_fingerprint(root):
    """useg.data.fingerprint of `root`, once per process: Snakemake expands the manifest's params at
    the DAG build and again before running it (the recorded value is then the earlier one, so an
    edit made meanwhile reruns the manifest next time)."""
    from useg.data.fingerprint import dataset_fingerprint

    return dataset_fingerprint(root)


def dataset_fingerprint_param(wildcards):
    """The manifest's `fingerprint` param: the user's folder's content (path, size, mtime of every
    file), so any edit in it reruns the manifest; none for the synthetic set, an output of the DAG.
    A params function: Snakemake calls it only for the manifest job (its rerun check and its run)
    in the main process, never while parsing; "" in a job's own Snakemake process (a cluster job,
    exec mode remote), which is forced and records no params."""
    if DATASET["kind"] == "synthetic" or workflow.remote_exec or workflow.subprocess_exec:
        return ""
    return folder_fingerprint(DATASET["root"])


# Methods whose K defaults to the class count: (its config section, classes left out of K, the
# smallest K the stage accepts), as their stages take it (useg.methods.*.commands); checked when the
# DAG is built against a folder dataset's classes.txt, not minutes later in the stage.
DEFAULT_K = {
    "kmeans": ("kmeans", 0, 1),
    "transfgu": ("transfgu", 0, 2),
    "alignseg": ("alignseg", 0, 2),
    "maskdistill": ("maskdistill", 1, 1),
    "pass": ("pass", 1, 2),
}


def folder_classes():
    """The class names of the folder dataset's classes.txt, or None when it has none."""
    path = Path(DATASET["root"]) / "classes.txt"
    return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else None


def check_default_k():
    """Fail when a configured method's K is unset and the folder dataset's classes.txt gives too few."""
    if DATASET["kind"] != "folder" or not DATASET["root"]:
        return
    path = Path(DATASET["root"]) / "classes.txt"
    classes = folder_classes() or []
    for method in config["methods"]:
        section, left_out, smallest = DEFAULT_K.get(method, (None, 0, 0))
        if section and not config[section]["k"] and len(classes) - left_out < smallest:
            raise ValueError(
                f"{section}.k is not set and {path} lists {len(classes)} class(es), giving K = "
                f"{len(classes) - left_out}, fewer than the {smallest} it needs: set {section}.k or list the classes"
            )


check_default_k()


def dataset_classes():
    """Class names the manifest will list (background first), or None when only the stage can tell."""
    if DATASET["kind"] == "synthetic":
        from useg.data.synthetic import ShapesConfig

        return list(ShapesConfig(**DATASET["synthetic"]).class_names())
    return folder_classes() if DATASET["kind"] == "folder" else None


def split_size(split):
    """Images of `split` before the manifest checks them; None for the benchmark kinds (not counted)."""
    if DATASET["kind"] == "synthetic":
        key = {"train": "num_train", "val": "num_val", "heldout": "num_heldout"}.get(split)
        return DATASET["synthetic"][key] if key else 0
    if DATASET["kind"] == "folder":
        from useg.data.folder import split_size as folder_split_size

        return folder_split_size(DATASET["root"], split)
    return None


def check_pass_k():
    """Fail when PASS's K (pass.k, else the foreground classes) exceeds the train images it clusters."""
    if "pass" not in config["methods"]:
        return
    classes, split = dataset_classes(), DATASET["train_split"]
    k = config["pass"]["k"] or (len(classes) - 1 if classes is not None else None)
    images = split_size(split)
    if k is None or images is None or k <= images:
        return
    source = f"pass.k = {k}" if config["pass"]["k"] else f"pass.k is not set, so K = {k} foreground classes, and"
    raise ValueError(
        f"{source} pseudo categories need at least {k} images to cluster, but the train split {split!r} "
        f"lists {images}: set pass.k to at most {images} or add train images"
    )


check_pass_k()


# --- benchmark dataset kinds (manifest config slice) ---
FOLDER_KINDS = ("synthetic", "folder")
BENCHMARK_KEYS = ("setting", "image_lists", "class_list", "train_split", "eval_split", "extra_splits", "split_lists")


def manifest_config():
    """Config slice of the manifest stage; benchmark kinds also list images by split and label setting."""
    keys = ["kind", "name", "on_corrupt"]
    if DATASET["kind"] not in FOLDER_KINDS:
        keys += BENCHMARK_KEYS
    return {k: DATASET[k] for k in keys}


# --- end benchmark dataset kinds ---


def shard_paths(pattern, split, shards=None):
    """Every shard of a per-shard artifact (`pattern` holds {split} and {shard}): the gather side
    of a scatter/gather stage. Shard count: `shards`, default `features.shards`."""
    return expand(pattern, split=split, shard=range(shards or config["features"]["shards"]))


def feature_shards(split, features=BACKBONE):
    """Every FeatureStore shard of a split (of the configured backbone unless `features` names a variant)."""
    return shard_paths(f"{OUT}/features/{features}/{{split}}/shard-{{shard}}.zarr", split)


def features_name(variant):
    """Feature folder of a backbone variant: the configured one when its weights are the variant's (the
    `pretrain` variant of an external backbone, `backbone_eval.external`, is the configured one)."""
    if WEIGHTS == variant or (variant == "pretrain" and BACKBONE_EVAL["external"]):
        return BACKBONE
    return f"{BACKBONE}-{variant}"


def features_weights(features):
    """backbone.weights of a feature folder: the configured weights, or the variant its suffix names."""
    return WEIGHTS if features == BACKBONE else features[len(BACKBONE) + 1 :]


def features_backbone(wildcards):
    """The backbone config slice of a feature folder (weights replaced for a variant)."""
    return {**config["backbone"], "weights": features_weights(wildcards.features)}


def backbone_weights(wildcards):
    """The checkpoint file a backbone loads: the pretrain stage's, or the file `backbone.weights`
    names (none for random or timm tags); the weights are those of the `features` wildcard's
    variant, else the configured ones. An input, so that a rewritten file reruns its stages."""
    weights = features_weights(getattr(wildcards, "features", BACKBONE))
    if weights == "pretrain":
        return [CROC_CHECKPOINT]
    return [weights] if is_weight_file(weights) else []


def pretrain_params():
    """Config slice of the pretraining stage: croc section, architecture, seed, train split."""
    arch = {k: v for k, v in config["backbone"].items() if k not in ("weights", "name")}
    return {"croc": without_gpus(config["croc"]), "backbone": arch, "seed": config["seed"], "split": DATASET["train_split"]}


def backbone_eval_targets():
    """metrics.json of every backbone variant under every backbone-evaluation protocol: of the backbone this
    run pretrains, or of the one `backbone.weights` names when `backbone_eval.external` is on."""
    if not BACKBONE_EVAL["enabled"] or not (WEIGHTS == "pretrain" or BACKBONE_EVAL["external"]):
        return []
    return expand(
        f"{OUT}/backbone-eval/{{variant}}/{{protocol}}/metrics.json",
        variant=VARIANTS,
        protocol=BACKBONE_EVAL["protocols"],
    )


def maskdistill_linear_columns():
    """MaskDistill's Table 2a columns (maskdistill.linear): the linear classifier, and with crf.enabled its +CRF row."""
    if not config["maskdistill"]["linear"]["enabled"]:
        return []
    return ["maskdistill-linear"] + (["maskdistill-linear-crf"] if config["maskdistill"]["crf"]["enabled"] else [])


# Methods whose run is evaluated in several columns (TransFGU Table 3: initial, trained, bootstrapped).
# MaskDistill Table 1: initial object masks, Mask R-CNN confident bank, final DeepLab-v3.
METHOD_COLUMNS = {
    "transfgu": ["transfgu-initial", "transfgu-trained", "transfgu"],
    "maskdistill": ["maskdistill-initial", "maskdistill-maskrcnn", "maskdistill"]
    + (["maskdistill-crf"] if config["maskdistill"]["crf"]["enabled"] else [])
    + maskdistill_linear_columns(),
    "alignseg": ["alignseg"],
}


def check_scored_at():
    """Fail when the imagenet-s protocol is asked to score in the working frame: its official evaluator scores at the image size."""
    if config["evaluate"]["scored_at"] != "image" and "imagenet-s" in config["evaluate"]["protocols"]:
        raise ValueError(
            "evaluate.scored_at: frame cannot score the imagenet-s protocol, which the official evaluator "
            "scores at the image size: set evaluate.scored_at: image"
        )


check_scored_at()


def evaluate_params(method):
    """Config slice of one column's evaluation: dataset, column, split, protocols (and the alignseg
    protocol's map size when it is asked for, where the pixels are scored when not at the image)."""
    protocols, scored_at = config["evaluate"]["protocols"], config["evaluate"]["scored_at"]
    params = {"dataset": DS, "method": method, "split": DATASET["eval_split"], "protocols": protocols}
    if "alignseg" in protocols:
        params["alignseg_size"] = config["evaluate"]["alignseg_size"]
    if scored_at != "image":
        params["scored_at"] = scored_at
    return params


def evaluated_columns():
    """Every evaluated column under results/<dataset>/: each configured method's, then the backbone evaluation's."""
    columns = [column for method in config["methods"] for column in METHOD_COLUMNS.get(method, [method])]
    return columns + [os.path.dirname(p)[len(OUT) + 1 :] for p in backbone_eval_targets()]


def metrics_targets():
    """metrics.json of every configured method (each of its evaluated columns), then of the backbone evaluation."""
    return [f"{OUT}/{column}/metrics.json" for column in evaluated_columns()]


# ---- Report ----------------------------------------------------------------------------------
# Every evaluated column gets its per-class IoU chart, a column in the side-by-side overlays and rows in
# the comparison tables by itself (METHOD_COLUMNS). What a method shows besides, it declares here:
# REPORT_CURVES: name -> per-epoch train logs (JSON `epochs`: [{epoch, loss...}]) drawn as loss
# curves in one chart (several logs: the total loss of each, e.g. one per TransFGU round).
# REPORT_BENCHMARKS: stage -> the benchmark: files of its jobs, summarised on the front page as time and
# peak memory per stage (useg.report.tables.stage_rows); empty until the rules declare benchmark: files.
REPORT = config["report"]
REPORT_DIR = f"{OUT}/report"
REPORT_FRONT = f"{REPORT_DIR}/overview.rst"
REPORT_OVERLAYS = f"{REPORT_DIR}/overlays.jpg"
REPORT_HTML = f"{OUT}/report.html"
REPORT_CURVES = {
    "croc": [f"{OUT}/croc/train-log.json"],
    "transfgu": [f"{OUT}/transfgu/round-0/train-log.json"]
    + (
        [f"{OUT}/transfgu/bootstrap/train-log.json"]
        if config["transfgu"]["schedule"] == "release"
        else [f"{OUT}/transfgu/round-{r}/train-log.json" for r in range(1, config["transfgu"]["rounds"] + 1)]
    ),
    "alignseg": [f"{OUT}/alignseg/train-log.json"],
}
REPORT_BENCHMARKS = {}


def report_curves():
    """The REPORT_CURVES of what this run trains (CrOC when it pretrains the backbone)."""
    ran = set(config["methods"]) | ({"croc"} if WEIGHTS == "pretrain" else set())
    return {name: log for name, log in REPORT_CURVES.items() if name in ran}


def report_figures():
    """Every figure of the report: per evaluated column its IoU chart, the overlays of all columns, the loss curves."""
    figures = [f"{OUT}/{column}/report/iou.png" for column in evaluated_columns()] + [REPORT_OVERLAYS]
    return figures + [f"{REPORT_DIR}/curves/{name}.png" for name in report_curves()]


def report_categories():
    """The report's result categories, in the order the front page links them."""
    return ["Comparison", "Overlays", "Methods"] + (["Training"] if report_curves() else [])


def report_table_params():
    """Config slice of the tables and front page: what ran, the categories, a preset's paper row, the benchmarks."""
    run = {"dataset": DS, "kind": DATASET["kind"], "split": DATASET["eval_split"], "methods": config["methods"]}
    params = {"run": {**run, "backbone": BACKBONE, "weights": WEIGHTS}, "categories": report_categories()}
    params.update({"paper": config["paper"]} if "paper" in config else {})
    return {**params, **({"benchmarks": REPORT_BENCHMARKS} if REPORT_BENCHMARKS else {})}


def report_targets():
    """Every report() output and the front page, when the report is on (report.html itself is Snakemake's
    `--report`)."""
    if not REPORT["enabled"]:
        return []
    tables = [f"{REPORT_DIR}/comparison.csv", f"{REPORT_DIR}/per-class-iou.html", f"{REPORT_DIR}/comparison.md"]
    return tables + [REPORT_FRONT] + report_figures()


def print_report_command():
    """How to write report.html from this run: Snakemake's `--report` with the run's config files."""
    if not REPORT["enabled"]:
        return
    configs = "".join(f" --configfile {shlex.quote(str(f))}" for f in workflow.overwrite_configfiles or [])
    print(f"  report: snakemake --report {REPORT_HTML}{configs}")


def transfgu_slice(*keys):
    """The `transfgu` config keys a TransFGU stage depends on, with the seed."""
    return {"transfgu": {key: config["transfgu"][key] for key in keys}, "seed": config["seed"]}


def transfgu_shards(kind, split):
    """Every shard of a TransFGU per-shard store (`crops` or `bank`) of a split."""
    return shard_paths(f"{OUT}/transfgu/{kind}/{{split}}/shard-{{shard}}.zarr", split)


def transfgu_teacher(wildcards):
    """The previous round's decoder: the teacher of round r > 0 (none for round 0)."""
    r = int(wildcards.round)
    return [f"{OUT}/transfgu/round-{r - 1}/model.pt"] if r > 0 else []


def transfgu_model(wildcards):
    """Decoder a TransFGU column predicts with: round 0 (`transfgu-trained`), else the release schedule's final
    student (`schedule: release`) or the last round (`schedule: rounds`)."""
    return f"{OUT}/transfgu/round-0/model.pt" if wildcards.method == "transfgu-trained" else f"{OUT}/{final_model(config)}"


def alignseg_train_params():
    """Config slice of AlignSeg training: the alignseg section, the backbone, seed and train split."""
    return {
        "alignseg": without_gpus(config["alignseg"]),
        "backbone": config["backbone"],
        "seed": config["seed"],
        "split": DATASET["train_split"],
    }


def pass_slice(*keys, **extra):
    """The `pass` config keys a PASS stage depends on, with the seed and `extra` (split names)."""
    return {"pass": {key: config["pass"][key] for key in keys}, "seed": config["seed"], **extra}


def pass_training_params(section, *keys):
    """The config of the PASS training stage of `pass.<section>` (with the `pass` keys `keys`) on the train
    split: the section's `gpus` stays out of the stage's config and hash (without_gpus)."""
    params = pass_slice(section, *keys, split=DATASET["train_split"])
    params["pass"][section] = without_gpus(config["pass"][section])
    return params


def pass_prior_features():
    """Train FeatureStores whose CLS attention is the saliency prior of PASS pretraining (none when off)."""
    return feature_shards(DATASET["train_split"]) if config["pass"]["saliency_prior"] else []


def maskdistill_slice(*keys):
    """The `maskdistill` config keys a MaskDistill stage depends on, with the seed."""
    return {"maskdistill": {key: config["maskdistill"][key] for key in keys}, "seed": config["seed"]}


def weights_option(wildcards, input):
    """Params function: the `--weights <checkpoint>` option of a stage whose `weights` input is not empty."""
    return f"--weights {input.weights}" if input.weights else ""


def maskdistill_model_params(section):
    """Parameters of a MaskDistill model stage (`maskrcnn` or `deeplab`): its config, and the `backbone`
    section when the model is built on the pipeline's ViT."""
    params = maskdistill_slice("device")
    params["maskdistill"][section] = without_gpus(config["maskdistill"][section])
    if config["maskdistill"][section]["backbone"] == "vit":
        params["backbone"] = config["backbone"]
    return params


def maskdistill_model_weights(section):
    """Input function: the pretrained ViT checkpoint a MaskDistill model on `backbone: vit` starts from."""
    return lambda w: backbone_weights(w) if config["maskdistill"][section]["backbone"] == "vit" else []


def maskdistill_detector_split():
    """The split whose object masks are clustered and train Mask R-CNN: maskdistill.detector_split, else the train split."""
    split = config["maskdistill"]["detector_split"] or DATASET["train_split"]
    listed = [DATASET["train_split"], DATASET["eval_split"], *DATASET.get("extra_splits", [])]
    if split not in listed:
        raise ValueError(
            f"maskdistill.detector_split {split!r} is not a split the manifest lists ({listed}): add it to dataset.extra_splits"
        )
    return split


def maskdistill_shards(kind, split):
    """Every shard of a MaskDistill per-shard store (`masks` or `candidates`) of a split."""
    return shard_paths(f"{OUT}/maskdistill/{kind}/{{split}}/shard-{{shard}}.zarr", split)


def export_targets():
    """ImageNet-S test-server PNGs of every method column, when `evaluate.export_pngs` asks for them."""
    if not config["evaluate"]["export_pngs"]:
        return []
    if "imagenet-s" not in config["evaluate"]["protocols"]:
        raise ValueError("evaluate.export_pngs needs the imagenet-s matching: add imagenet-s to evaluate.protocols")
    columns = [column for method in config["methods"] for column in METHOD_COLUMNS.get(method, [method])]
    return [f"{OUT}/{column}/imagenet-s-pngs" for column in columns]


def export_split_dir_option():
    """`--split-dir` of the export: the eval split's folder on ImageNet-S (PNGs keep <wnid>/<name>), else none (<id>.png)."""
    if DATASET["kind"] != "imagenet-s":
        return ""
    return f"--split-dir {shlex.quote(str(Path(DATASET['root']) / DATASET['eval_split']))}"


def extra_targets():
    """Outputs beyond metrics.json that the default target asks for: MaskDistill's mask AP, ImageNet-S PNGs."""
    return ([f"{OUT}/maskdistill/ap.json"] if "maskdistill" in config["methods"] else []) + export_targets()


def paper_files():
    """The files holding a preset's published figures' counterparts (besides the metrics.json targets: ap.json)."""
    results = config.get("paper", {}).get("results", [])
    return sorted({f"{OUT}/{r['column']}/{r['file']}" for r in results if r.get("file", "metrics.json") != "metrics.json"})


def print_paper_figures():
    """A preset's published figures beside this run's (%), and the difference."""
    from useg.report.tables import paper_rows

    paper = config["paper"]
    print(f"\n  {paper['paper']}\n  {paper['table']}, {paper['row']}: paper vs this run (%)")
    for row in paper_rows(paper, OUT):
        ours = "   -  " if row["ours"] is None else f"{row['ours']:6.2f}"
        diff = "" if row["difference"] is None else f"   ({row['difference']:+.2f})"
        print(f"  {row['column']:<24} {row['protocol']:<16} {row['metric']:<24} paper {row['paper']:6.2f}   ours {ours}{diff}")


def print_summary():
    """Print the headline metrics of every method and where the results are (and a preset's paper figures)."""
    print(f"\nuseg: results in {os.path.abspath(OUT)}")
    for path in metrics_targets():
        if not os.path.exists(path):
            continue
        with open(path) as fh:
            metrics = json.load(fh)
        for name, result in metrics["protocols"].items():
            caveat = "   (own matching per image: not comparable)" if result.get("comparable") is False else ""
            print(
                f"  {metrics['method']:<32} {name:<12} mIoU {100 * result['miou']:6.2f} %"
                f"   pixel acc {100 * result['pixel_accuracy']:6.2f} %{caveat}"
            )
            if name == "imagenet-s":
                print(
                    f"  {'':<32} {'':<12} F {100 * result['f_measure']:6.2f} %   img acc {100 * result['image_accuracy']:6.2f} %"
                    f"   NMI {100 * result['nmi']:6.2f} %   boundary mIoU {100 * result['boundary_miou']:6.2f} %"
                )
        print(f"  metrics: {os.path.abspath(path)}")
    if config.get("paper", {}).get("results"):
        print_paper_figures()


# ---- Resources that scale with the data -------------------------------------------------------
# Runtimes in minutes, memory in MB; both grow with the retry attempt, so a job Slurm killed for
# time or memory is resubmitted with more (profiles/slurm: `retries`).


def input_mb(paths):
    """Total size in MB of input files and directories (Zarr stores are directories)."""
    total = 0
    for path in map(Path, paths):
        files = path.rglob("*") if path.is_dir() else [path]
        total += sum(f.stat().st_size for f in files if f.is_file())
    return total / 2**20


def by_input_size(base, per_gb):
    """Resource callable: `base` plus `per_gb` per GB of the job's input, times the attempt."""

    def resource(wildcards, input, attempt):
        return int((base + per_gb * input_mb(input) / 1024) * attempt)

    return resource


def per_shard_runtime(minutes_per_1000_images):
    """Runtime callable of a per-shard job: 10 min plus a rate per 1000 images of its shard."""

    def resource(wildcards, input, attempt):
        with open(input.manifest) as fh:
            images = sum(1 for _ in fh) - 1
        per_shard = images / config["features"]["shards"]
        return int((10 + minutes_per_1000_images * per_shard / 1000) * attempt)

    return resource


def kmeans_fit_mem(wildcards, attempt):
    """Memory of k-means training: the capped float32 sample, three times over, plus 2 GB (a backbone
    whose width comes from its timm model, embed_dim null, is counted at ViT-L's 1024)."""
    width = config["backbone"]["embed_dim"] or 1024
    sample_mb = config["kmeans"]["max_train_points"] * width * 4 / 2**20
    return int((2000 + 3 * sample_mb) * attempt)


# ---- Execution: GPUs, Slurm placeholders --------------------------------------------------------


def gpus_request(count):
    """The `gpu` resource of a stage that trains on `count` GPUs (useg.profiles.gpus.gpu_resource)."""
    from useg.profiles.gpus import gpu_resource

    return gpu_resource(count, workflow.non_local_exec)


def gpu_request(wildcards):
    """The `gpu` resource of the stages that use one GPU (gpus_request)."""
    return gpus_request(1)


def without_gpus(section):
    """A training section as its stage reads it (useg.train.distributed.without_gpus)."""
    from useg.train.distributed import without_gpus as section_without_gpus

    return section_without_gpus(section)


def useg_launcher(gpus):
    """The command a stage runs `useg` with: `python -m useg`, or torchrun's `gpus` data-parallel
    processes of it inside the one job (useg.train.distributed) when `gpus` > 1; after `--` torchrun
    reads no option of the stage's (its own --log-dir would claim the stage's --log)."""
    return f"torchrun --standalone --nproc_per_node {gpus} -m useg --" if gpus > 1 else "python -m useg"


def resource_values(resources, where):
    """The raw values of a Snakemake resource mapping, keyed `<where>.<name>`."""
    return {f"{where}.{name}": resource.raw for name, resource in (resources or {}).items()}


def check_slurm_profile():
    """On the Slurm executor: stop before any submission while the profile still names a placeholder
    partition or account, and warn when profiles/default's one-GPU limit caps the cluster's GPU jobs."""
    if workflow.executor_plugin is None or workflow.executor_plugin.name != "slurm":
        return
    from useg.profiles.install import check_slurm_placeholders

    settings = workflow.resource_settings
    values = resource_values(settings.default_resources, "default-resources")
    for rule, resources in settings.overwrite_resources.items():
        values |= resource_values(resources, f"set-resources.{rule}")
    check_slurm_placeholders(values, getattr(workflow.executor_settings, "partition_config", None))
    gpu_limit = settings.resources.get("gpu")
    if str(getattr(gpu_limit, "raw", gpu_limit)) == "1":
        print(
            "useg: the `gpu=1` limit of profiles/default runs one GPU job at a time on the cluster: "
            "pass --workflow-profile profiles/slurm (or --workflow-profile none with --profile slurm)",
            file=sys.stderr,
        )
