"""Subcommands of MaskDistill: masks, clusters, initial, maskrcnn, candidates, labels, bank-predict,
deeplab, linear, predict, ap (docs/methods/maskdistill.md)."""

from __future__ import annotations

import argparse
from typing import Any

from useg.cli import add_shard_args, add_stage, stage_params, stage_provenance


def _shard(args: argparse.Namespace):
    from useg.data.manifest import read_manifest, shard_rows, split_rows

    return shard_rows(split_rows(read_manifest(args.manifest), args.split), args.shard, args.shards)


def _device(params: dict[str, Any]):
    from useg.runtime import resolve_device

    return resolve_device(params["maskdistill"]["device"])


def run_masks(args: argparse.Namespace) -> None:
    """Object masks of one shard from the last block's q/k affinities -> MaskBank."""
    from useg.backbones import BackboneConfig, build_backbone
    from useg.methods.maskdistill.masks import build_mask_bank
    from useg.runtime import set_threads

    params = stage_params(args)
    set_threads(args.threads)
    cfg = BackboneConfig.from_dict(params["backbone"])
    backbone = build_backbone(cfg, args.weights, seed=params["seed"])
    where = {"split": args.split, "shard": args.shard, "shards": args.shards}
    build_mask_bank(
        backbone, _shard(args), params["maskdistill"], cfg.frame, args.out,
        stage_provenance("maskdistill-masks", params, **where), _device(params), args.threads,
    )  # fmt: skip


def num_clusters(k: int | None, classes_path: str) -> int:
    """C: `maskdistill.k`, or the number of classes − 1 (one label is left for the background)."""
    from useg.data.manifest import read_classes
    from useg.errors import ConfigError

    k = k or len(read_classes(classes_path)["classes"]) - 1
    if k < 1:
        raise ConfigError("maskdistill.k is not set and the dataset has fewer than 2 classes (background and an object) to take C from")
    return k


def run_clusters(args: argparse.Namespace) -> None:
    """k-means of the masked-image CLS tokens of the train split; clusters of every image."""
    from useg.methods.maskdistill.clusters import fit_mask_clusters
    from useg.runtime import set_threads
    from useg.stores.maskbank import MaskBank

    params = stage_params(args)
    set_threads(args.threads)
    cfg = params["maskdistill"]
    k = num_clusters(cfg["k"], args.classes)
    prov = stage_provenance("maskdistill-clusters", params)
    fit_mask_clusters(MaskBank(args.fit), MaskBank(args.label), k, cfg, params["seed"], args.out, prov)


def run_initial(args: argparse.Namespace) -> None:
    """`maskdistill-initial` predictions: object mask of each image labelled by its cluster."""
    from useg.methods.maskdistill.clusters import predict_initial
    from useg.stores.maskbank import MaskBank

    params = stage_params(args)
    predict_initial(MaskBank(args.masks), args.clusters, args.out, stage_provenance("maskdistill-initial", params))


def model_config(params: dict, section: str) -> dict:
    """The `maskdistill.<section>` model config, with the `backbone` section when it is built on the pipeline ViT."""
    from useg.methods.maskdistill.models import VIT

    cfg = params["maskdistill"][section]
    return {**cfg, "vit": params["backbone"]} if cfg["backbone"] == VIT and "backbone" in params else cfg


def run_maskrcnn(args: argparse.Namespace) -> None:
    """Train Mask R-CNN on (cluster, box, mask) pseudo ground truth."""
    from useg.data.manifest import read_manifest
    from useg.methods.maskdistill.clusters import read_clusters
    from useg.methods.maskdistill.maskrcnn import train_maskrcnn
    from useg.runtime import set_threads
    from useg.stores.maskbank import MaskBank

    params = stage_params(args)
    set_threads(args.threads)
    bank = MaskBank(args.masks)
    manifest = read_manifest(args.manifest)
    k, clusters = read_clusters(args.clusters)
    rows = [manifest[i] for i in bank.index]
    cfg = model_config(params, "maskrcnn")
    train_maskrcnn(rows, bank, clusters, k, cfg, params["seed"], args.out, _device(params), args.weights, args.threads)


def run_candidates(args: argparse.Namespace) -> None:
    """Every Mask R-CNN candidate of one shard -> CandidateBank."""
    from useg.methods.maskdistill.maskrcnn import load_maskrcnn, predict_candidates
    from useg.runtime import set_threads

    params = stage_params(args)
    set_threads(args.threads)
    device = _device(params)
    model, k, frame, own_size = load_maskrcnn(args.model, device)
    where = {"split": args.split, "shard": args.shard, "shards": args.shards}
    predict_candidates(
        model, _shard(args), k, frame, params["maskdistill"]["batch_size"],
        args.out, stage_provenance("maskdistill-candidates", params, **where), device, args.threads, own_size,
    )  # fmt: skip


def run_labels(args: argparse.Namespace) -> None:
    """Confident aggregation of a split's candidates -> LabelBank."""
    from useg.methods.maskdistill.aggregate import aggregate_bank
    from useg.stores.candidates import CandidateBank

    params = stage_params(args)
    prov = stage_provenance("maskdistill-labels", params)
    aggregate_bank(CandidateBank(args.candidates), params["maskdistill"]["tau"], args.out, prov)


def run_bank_predict(args: argparse.Namespace) -> None:
    """`maskdistill-maskrcnn` predictions: the evaluation split's confident bank."""
    from useg.methods.maskdistill.aggregate import bank_predictions
    from useg.stores.labelbank import LabelBank

    params = stage_params(args)
    prov = stage_provenance("maskdistill-bank-predict", params)
    bank_predictions(LabelBank([args.bank]), "maskdistill-maskrcnn", args.out, prov)


def run_deeplab(args: argparse.Namespace) -> None:
    """Train DeepLab-v3 on the train split's confident bank."""
    from useg.data.manifest import read_manifest
    from useg.methods.maskdistill.deeplab import train_deeplab
    from useg.runtime import set_threads
    from useg.stores.labelbank import LabelBank

    params = stage_params(args)
    set_threads(args.threads)
    bank = LabelBank([args.bank])
    manifest = read_manifest(args.manifest)
    rows, cfg = [manifest[i] for i in bank.index], model_config(params, "deeplab")
    resume = (args.resume, resume_key(params, args.weights, bank.attrs.get("provenance"))) if args.resume else None
    train_deeplab(rows, bank, cfg, params["seed"], args.out, _device(params), args.weights, args.threads, resume)


def resume_key(params: dict[str, Any], weights: str | None, bank: Any) -> str:
    """The config hash a resume state belongs to: these parameters, ViT weights and label bank (its provenance,
    creation time included, so a rewritten bank restarts training)."""
    import hashlib
    from pathlib import Path

    from useg.stores.base import config_hash

    sha = hashlib.sha256(Path(weights).read_bytes()).hexdigest() if weights else None
    return config_hash({**params, "weights_sha256": sha, "bank": bank})


def run_linear(args: argparse.Namespace) -> None:
    """Train the linear classifier (Table 2a) on a trained DeepLab-v3's frozen features with the train split's ground truth."""
    from useg.data.manifest import read_classes, read_manifest, split_rows
    from useg.methods.maskdistill.linear import train_linear
    from useg.runtime import set_threads

    params = stage_params(args)
    set_threads(args.threads)
    classes = read_classes(args.classes)
    rows = [row for _, row in split_rows(read_manifest(args.manifest), args.split)]
    train_linear(
        rows, args.model, len(classes["classes"]), params["maskdistill"]["linear"], params["seed"], args.out,
        _device(params), classes.get("ignore_index", 255), args.threads,
    )  # fmt: skip


def run_predict(args: argparse.Namespace) -> None:
    """Final model's predictions on a split (CRF-refined with --crf), or with --bank the CRF round's LabelBank."""
    from useg.data.manifest import read_manifest, split_rows
    from useg.errors import ConfigError
    from useg.methods.maskdistill.deeplab import crf_label_bank, predict_deeplab
    from useg.postprocess.crf import CRFConfig
    from useg.runtime import set_threads

    params = stage_params(args)
    set_threads(args.threads)
    rows = split_rows(read_manifest(args.manifest), args.split)
    crf = CRFConfig(**params["maskdistill"]["crf"]["params"]) if args.crf else None
    if args.bank:
        if crf is None:
            raise ConfigError("maskdistill-predict --bank writes the CRF round's labels: add --crf")
        crf_label_bank(args.model, rows, args.out, stage_provenance("maskdistill-crf-labels", params), _device(params), crf)
        return
    stage = "maskdistill-crf" if args.crf else "maskdistill-predict"
    predict_deeplab(args.model, rows, args.out, stage_provenance(stage, params), _device(params), crf=crf)


def run_ap(args: argparse.Namespace) -> None:
    """Mask AP / AP50 / AP75 (class-agnostic and semantic, multi and single) of the initial masks and Mask R-CNN candidates."""
    from useg.methods.maskdistill.ap import evaluate_ap, matching
    from useg.stores.candidates import CandidateBank
    from useg.stores.maskbank import MaskBank

    params = stage_params(args)
    matchings = {"initial": matching(args.metrics_initial), "maskrcnn": matching(args.metrics_maskrcnn)}
    evaluate_ap(
        args.manifest, args.classes, MaskBank(args.masks), args.clusters, CandidateBank(args.candidates), matchings,
        args.out, {"split": params.get("split"), "provenance": stage_provenance("maskdistill-ap", params)},
    )  # fmt: skip


VIT_WEIGHTS_HELP = "checkpoint of a `backbone.weights: pretrain` ViT when the model's backbone is vit"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_stage(sub, "maskdistill-masks", run_masks, "MaskDistill: attention-affinity object masks of one shard")
    add_shard_args(p)

    p = add_stage(sub, "maskdistill-clusters", run_clusters, "MaskDistill: k-means of masked-image CLS tokens")
    p.add_argument("--classes", required=True)
    p.add_argument("--fit", nargs="+", required=True, help="MaskBank shards k-means is fitted on (train split)")
    p.add_argument("--label", nargs="+", required=True, help="further MaskBank shards to assign (evaluation split)")
    p.add_argument("--out", required=True)

    p = add_stage(sub, "maskdistill-initial", run_initial, "MaskDistill: predictions of the initial object masks")
    p.add_argument("--masks", nargs="+", required=True)
    p.add_argument("--clusters", required=True)
    p.add_argument("--out", required=True)

    p = add_stage(sub, "maskdistill-maskrcnn", run_maskrcnn, "MaskDistill: train Mask R-CNN on the clustered masks")
    p.add_argument("--manifest", required=True)
    p.add_argument("--masks", nargs="+", required=True)
    p.add_argument("--clusters", required=True)
    p.add_argument("--weights", help=VIT_WEIGHTS_HELP)
    p.add_argument("--out", required=True)

    p = add_stage(sub, "maskdistill-candidates", run_candidates, "MaskDistill: Mask R-CNN candidates of one shard")
    add_shard_args(p)
    p.add_argument("--model", required=True)

    p = add_stage(sub, "maskdistill-labels", run_labels, "MaskDistill: confident aggregation into a LabelBank")
    p.add_argument("--candidates", nargs="+", required=True)
    p.add_argument("--out", required=True)

    p = add_stage(sub, "maskdistill-bank-predict", run_bank_predict, "MaskDistill: a confident bank as predictions")
    p.add_argument("--bank", required=True)
    p.add_argument("--out", required=True)

    p = add_stage(sub, "maskdistill-deeplab", run_deeplab, "MaskDistill: train DeepLab-v3 on the confident bank")
    p.add_argument("--manifest", required=True)
    p.add_argument("--bank", required=True)
    p.add_argument("--weights", help=VIT_WEIGHTS_HELP)
    p.add_argument("--out", required=True)
    p.add_argument("--resume", help="resume state, rewritten after every epoch")

    p = add_stage(sub, "maskdistill-linear", run_linear, "MaskDistill: linear classifier on a DeepLab-v3's frozen features")
    p.add_argument("--manifest", required=True)
    p.add_argument("--classes", required=True)
    p.add_argument("--split", required=True, help="the split with ground-truth masks it trains on (the train split)")
    p.add_argument("--model", required=True, help="the trained DeepLab-v3 (model.pt) whose features stay frozen")
    p.add_argument("--out", required=True)

    p = add_stage(sub, "maskdistill-predict", run_predict, "MaskDistill: DeepLab-v3 predictions")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--crf", action="store_true", help="refine with the dense CRF of maskdistill.crf.params")
    p.add_argument("--bank", action="store_true", help="with --crf: write a LabelBank to train on (the CRF round)")

    p = add_stage(sub, "maskdistill-ap", run_ap, "MaskDistill: mask AP against ground-truth instances")
    p.add_argument("--manifest", required=True)
    p.add_argument("--classes", required=True)
    p.add_argument("--masks", nargs="+", required=True, help="MaskBank shards of the evaluation split")
    p.add_argument("--clusters", required=True)
    p.add_argument("--candidates", nargs="+", required=True, help="CandidateBank shards of the evaluation split")
    p.add_argument("--metrics-initial", required=True, help="metrics.json of maskdistill-initial (cluster matching)")
    p.add_argument("--metrics-maskrcnn", required=True, help="metrics.json of maskdistill-maskrcnn (cluster matching)")
    p.add_argument("--out", required=True)
