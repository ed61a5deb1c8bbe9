"""Subcommands of TransFGU: crops, concepts, bank, train (one round), bootstrap (the release's schedule), initial, predict."""

from __future__ import annotations

import argparse
from typing import Any

from useg.cli import add_shard_args, add_stage, stage_params, stage_provenance


def _backbone(params: dict[str, Any], weights: str | None):
    from useg.backbones import BackboneConfig, build_backbone

    cfg = BackboneConfig.from_dict(params["backbone"])
    return build_backbone(cfg, weights, seed=params["seed"]), cfg


def _shard(args: argparse.Namespace):
    from useg.data.manifest import read_manifest, shard_rows, split_rows

    return shard_rows(split_rows(read_manifest(args.manifest), args.split), args.shard, args.shards)


def run_crops(args: argparse.Namespace) -> None:
    """Sliding-window crops of one train shard -> CropBank (CLS per crop, foreground prior)."""
    from useg.methods.transfgu.crops import build_crop_bank
    from useg.runtime import resolve_device, set_threads
    from useg.stores.features import FeatureStore

    params = stage_params(args)
    set_threads(args.threads)
    backbone, _ = _backbone(params, args.weights)
    where = {"split": args.split, "shard": args.shard, "shards": args.shards}
    build_crop_bank(
        backbone, _shard(args), FeatureStore(args.features), params["transfgu"], args.out,
        stage_provenance("transfgu-crops", params, **where), resolve_device(params["transfgu"]["device"]),
    )  # fmt: skip


def run_concepts(args: argparse.Namespace) -> None:
    """k-means of the crop CLS tokens into K concepts (fg / bg separately) -> Concepts store."""
    from useg.data.manifest import read_classes
    from useg.errors import ConfigError
    from useg.methods.transfgu.concepts import fit_concepts
    from useg.runtime import set_threads

    params = stage_params(args)
    set_threads(args.threads)
    cfg = params["transfgu"]
    classes = read_classes(args.classes)
    k = cfg["k"] or len(classes["classes"])
    if k < 2:
        raise ConfigError("transfgu.k is not set and the dataset has no classes.txt to take K from")
    prov = stage_provenance("transfgu-concepts", params)
    fit_concepts(args.crops, k, len(classes.get("things", [])), cfg, params["seed"], args.out, prov)


def run_bank(args: argparse.Namespace) -> None:
    """Grad-CAM pseudo-label maps of one shard -> LabelBank."""
    from useg.methods.transfgu.concepts import read_concepts
    from useg.methods.transfgu.stages import build_label_bank
    from useg.runtime import resolve_device, set_threads

    params = stage_params(args)
    set_threads(args.threads)
    backbone, cfg = _backbone(params, args.weights)
    concepts, groups = read_concepts(args.concepts)
    where = {"split": args.split, "shard": args.shard, "shards": args.shards}
    build_label_bank(
        backbone, _shard(args), concepts, groups, params["transfgu"], cfg.frame, args.out,
        stage_provenance("transfgu-bank", params, **where), resolve_device(params["transfgu"]["device"]), args.threads,
    )  # fmt: skip


def _bank_rows(args: argparse.Namespace) -> tuple[Any, list]:
    """The training bank at `--bank` and the manifest rows of its images, in the bank's order."""
    from useg.data.manifest import read_manifest
    from useg.stores.labelbank import LabelBank

    bank = LabelBank(args.bank)
    manifest = read_manifest(args.manifest)
    return bank, [manifest[i] for i in bank.index]


def run_train(args: argparse.Namespace) -> None:
    """One training round: round 0 on the bank's labels, round r > 0 with the previous round as teacher."""
    from useg.methods.transfgu.segmenter import load_segmenter
    from useg.methods.transfgu.stages import run_training_round
    from useg.runtime import resolve_device, set_threads

    params = stage_params(args)
    set_threads(args.threads)
    backbone, _ = _backbone(params, args.weights)
    bank, rows = _bank_rows(args)
    teacher = load_segmenter(args.teacher)[0] if args.teacher else None
    run_training_round(
        backbone, rows, bank, teacher, params["transfgu"], params["seed"], args.round, args.out,
        resolve_device(params["transfgu"]["device"]), args.out_log, args.threads,
    )  # fmt: skip


def run_bootstrap(args: argparse.Namespace) -> None:
    """The release's schedule in one resumable job: many teacher updates on the bank's labels."""
    from useg.methods.transfgu.bootstrap import run_bootstrap as bootstrap
    from useg.runtime import resolve_device, set_threads

    params = stage_params(args)
    set_threads(args.threads)
    backbone, _ = _backbone(params, args.weights)
    bank, rows = _bank_rows(args)
    bootstrap(
        backbone, rows, bank, params["transfgu"], params["seed"], args.out, args.out_log,
        args.resume, resolve_device(params["transfgu"]["device"]), args.threads,
    )  # fmt: skip


def run_initial(args: argparse.Namespace) -> None:
    """`transfgu-initial` predictions: the pseudo labels of the evaluation split alone."""
    from useg.methods.transfgu.stages import predict_initial
    from useg.stores.labelbank import LabelBank

    params = stage_params(args)
    bank = LabelBank(args.bank)
    predict_initial(bank, args.out, stage_provenance("transfgu-initial", params))


def run_predict(args: argparse.Namespace) -> None:
    """Predictions of a trained decoder on the frozen features of the evaluation split."""
    from useg.methods.transfgu.segmenter import load_segmenter
    from useg.methods.transfgu.stages import predict_segmenter
    from useg.runtime import resolve_device, set_threads
    from useg.stores.features import open_shards

    params = stage_params(args)
    set_threads(args.threads)
    stores = open_shards(args.features)
    model, _ = load_segmenter(args.model)
    prov = stage_provenance("transfgu-predict", params, method=args.method)
    predict_segmenter(model, stores, args.out, args.method, prov, resolve_device(params["transfgu"]["device"]))


def register(sub: argparse._SubParsersAction) -> None:
    p = add_stage(sub, "transfgu-crops", run_crops, "TransFGU: sliding-window crop CLS bank of one shard")
    add_shard_args(p)
    p.add_argument("--features", required=True, help="FeatureStore shard of the same images (attention)")

    p = add_stage(sub, "transfgu-concepts", run_concepts, "TransFGU: k-means of crop CLS tokens into K concepts")
    p.add_argument("--classes", required=True)
    p.add_argument("--crops", nargs="+", required=True)
    p.add_argument("--out", required=True)

    p = add_stage(sub, "transfgu-bank", run_bank, "TransFGU: Grad-CAM pseudo-label bank of one shard")
    add_shard_args(p)
    p.add_argument("--concepts", required=True)

    p = add_stage(sub, "transfgu-train", run_train, "TransFGU: train the Segmenter for one bootstrap round")
    p.add_argument("--manifest", required=True)
    p.add_argument("--bank", nargs="+", required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--teacher", help="previous round's decoder (rounds > 0)")
    p.add_argument("--weights", help="checkpoint file when backbone.weights is 'pretrain'")
    p.add_argument("--out", required=True)
    p.add_argument("--out-log", help="per-epoch losses of the round (JSON)")

    p = add_stage(sub, "transfgu-bootstrap", run_bootstrap, "TransFGU: the release's bootstrapping schedule in one job")
    p.add_argument("--manifest", required=True)
    p.add_argument("--bank", nargs="+", required=True)
    p.add_argument("--weights", help="checkpoint file when backbone.weights is 'pretrain'")
    p.add_argument("--out", required=True)
    p.add_argument("--out-log", required=True, help="per-epoch losses, alpha, teacher updates, label shares (JSON)")
    p.add_argument("--resume", required=True, help="resume state, written before every teacher update")

    p = add_stage(sub, "transfgu-initial", run_initial, "TransFGU: predictions from the pseudo labels alone")
    p.add_argument("--bank", nargs="+", required=True)
    p.add_argument("--out", required=True)

    p = add_stage(sub, "transfgu-predict", run_predict, "TransFGU: predictions of a trained decoder")
    p.add_argument("--model", required=True)
    p.add_argument("--features", nargs="+", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--out", required=True)
