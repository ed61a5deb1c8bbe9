"""Subcommands `useg report-method`, `report-overlays`, `report-curve`, `report-table` (the report's figures
and tables), `useg predict` (an end-to-end model on a folder of images), `useg export` (any store to HDF5)
and `useg export-imagenet-s` (predictions as ImageNet-S test-server PNGs)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from useg.cli import add_command, add_run_args, add_stage, stage_params

log = logging.getLogger(__name__)


def run_report_method(args: argparse.Namespace) -> None:
    """Per-class IoU bar chart of one evaluated method (one per protocol, stacked)."""
    from useg.report.draw import bar_chart, save_png, stack

    metrics = json.loads(Path(args.metrics).read_text())
    charts = [
        bar_chart(
            metrics["class_names"],
            [result["per_class_iou"][name] for name in metrics["class_names"]],
            f"{metrics['method']} [{protocol}]: per-class IoU, mIoU {100 * result['miou']:.2f} %",
        )
        for protocol, result in metrics["protocols"].items()
        if "per_class_iou" in result
    ]
    save_png(args.out_iou, stack(charts))
    log.info("%s: per-class IoU (%d protocols) -> %s", metrics["method"], len(charts), args.out_iou)


def run_report_overlays(args: argparse.Namespace) -> None:
    """The same evaluation images under every evaluated column side by side (JPEG)."""
    from useg.errors import ConfigError
    from useg.report.draw import save_jpeg
    from useg.report.labelmaps import open_label_maps
    from useg.report.overlays import method_overlays

    params = stage_params(args)
    if len(args.names) != len(args.predictions):
        raise ConfigError(f"--names gives {len(args.names)} columns for {len(args.predictions)} --predictions stores: one name per store")
    columns = {name: open_label_maps(path) for name, path in zip(args.names, args.predictions)}
    save_jpeg(args.out, method_overlays(columns, params.get("images", 6), Path(args.manifest)))
    log.info("overlays of %d columns -> %s", len(columns), args.out)


def run_report_curve(args: argparse.Namespace) -> None:
    """Loss curves of train logs (JSON with `epochs`: [{epoch, <loss key>: value, ...}]) in one PNG: every
    `loss*` key of a single log, or the total `loss` of each of several logs (named by their folder); with
    `label_shares` (TransFGU's probe) also the largest label's share, which climbs towards 1 as predictions collapse."""
    from useg.errors import StoreError
    from useg.report.draw import line_chart, save_png

    params = stage_params(args)
    logs = [Path(p) for p in args.train_log]
    series = {}
    for path in logs:
        epochs = json.loads(path.read_text()).get("epochs", [])
        keys = ["loss"] if len(logs) > 1 else sorted({k for e in epochs for k in e if k.startswith("loss")})
        shares = [(e["epoch"], max(e["label_shares"])) for e in epochs if e.get("label_shares")]
        for key, points in [*((k, [(e["epoch"], e[k]) for e in epochs if k in e]) for k in keys), ("largest label share", shares)]:
            if points:
                name = f"{path.parent.name}: {key}" if len(logs) > 1 else key
                series[name] = ([x for x, _ in points], [y for _, y in points])
    if not series:
        raise StoreError(f"{' '.join(map(str, logs))}: no per-epoch losses to draw")
    save_png(args.out, line_chart(series, f"{params.get('name', 'training')}: loss per epoch", "epoch"))
    log.info("loss curves: %d series from %d logs -> %s", len(series), len(logs), args.out)


def run_report_table(args: argparse.Namespace) -> None:
    """Comparison table of every metrics.json (Markdown, CSV), the per-class IoU across methods (HTML) and
    the report's front page (reStructuredText)."""
    from useg.atomic import write_text
    from useg.report.tables import comparison_rows, overview_rst, paper_markdown, paper_rows, per_class_html, stage_rows, to_csv
    from useg.report.tables import to_markdown

    params = stage_params(args)
    rows = comparison_rows(args.metrics)
    paper = params.get("paper")
    figures = paper_rows(paper, args.root) if paper else []
    write_text(args.out_md, to_markdown(rows) + (paper_markdown(paper, figures) if paper else ""))
    write_text(args.out_csv, to_csv(rows))
    write_text(args.out_html, per_class_html([json.loads(Path(p).read_text()) for p in args.metrics]))
    stages = stage_rows(params.get("benchmarks", {}))
    front = overview_rst(rows, params.get("run", {}), params.get("categories", []), paper, figures, stages)
    write_text(args.out_rst, front)
    print(Path(args.out_md).read_text())
    log.info("comparison: %d rows -> %s, %s, %s, %s", len(rows), args.out_md, args.out_csv, args.out_html, args.out_rst)


def run_predict(args: argparse.Namespace) -> None:
    """Apply a method's trained model to a folder of images."""
    from useg.backbones import BackboneConfig, build_backbone
    from useg.predict import (
        backbone_weights, check_method, list_images, merged_config, model_path, predict_folder, predictor,
        predictor_loader, readable, run_folder,
    )  # fmt: skip
    from useg.runtime import resolve_device, set_threads

    set_threads(args.threads)
    config = merged_config(args.config)
    method, loader = predictor(args.method), predictor_loader(args.method)
    run = run_folder(config, args.config, args.results)
    model = model_path(args.method, config, run, args.model)
    check_method(model, args.method)
    files = readable(list_images(args.images), args.on_corrupt)
    backbone = None
    if method.backbone:
        cfg = BackboneConfig.from_dict(config["backbone"])
        backbone = build_backbone(cfg, backbone_weights(config, run, args.weights), seed=config.get("seed", 0))
    device = resolve_device(args.device)
    frame = method.working_frame(config)
    predict_folder(loader(model, backbone, device), files, args.out, frame, device, args.batch_size, args.threads)
    print(f"label maps: {args.out / 'labels'}\noverlays:   {args.out / 'overlays'}")


def run_export(args: argparse.Namespace) -> None:
    """Export a store to HDF5."""
    from useg.report.export import export_hdf5

    out = export_hdf5(args.store, args.out, None if args.compression == "none" else args.compression)
    print(out)


def run_export_imagenet_s(args: argparse.Namespace) -> None:
    """Write a Predictions store as ImageNet-S test-server PNGs of the matched class ids."""
    from useg.data.manifest import read_manifest
    from useg.report.export import export_imagenet_s

    export_imagenet_s(args.predictions, read_manifest(args.manifest), args.out, args.matching, args.split_dir)


def run_benchmarks(args: argparse.Namespace) -> None:
    """Print the per-stage time and memory table of a run's benchmark files (and write it as CSV)."""
    from useg.errors import DataError
    from useg.report.benchmarks import benchmark_markdown, benchmark_rows, write_benchmark_csv

    paths = sorted(Path(args.benchmarks).rglob("*.tsv"))
    if not paths:
        raise DataError(f"{args.benchmarks}: no benchmark files (*.tsv); run the workflow first (results/<dataset>/benchmarks/)")
    rows = benchmark_rows(paths)
    print(benchmark_markdown(rows), end="")
    if args.out_csv:
        write_benchmark_csv(rows, args.out_csv)


def register(sub: argparse._SubParsersAction) -> None:
    from useg.predict import PREDICTORS

    p = add_stage(sub, "report-method", run_report_method, "report: per-class IoU chart of one method")
    p.add_argument("--metrics", required=True)
    p.add_argument("--out-iou", required=True)

    p = add_stage(sub, "report-overlays", run_report_overlays, "report: the same images under every method side by side")
    p.add_argument("--predictions", nargs="+", required=True, help="Predictions stores, one per column")
    p.add_argument("--names", nargs="+", required=True, help="the columns' names, in the same order")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="JPEG file")

    p = add_stage(sub, "report-curve", run_report_curve, "report: training loss curves of a train log")
    p.add_argument("--train-log", nargs="+", required=True)
    p.add_argument("--out", required=True)

    p = add_stage(sub, "report-table", run_report_table, "report: comparison tables of all methods and the front page")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--root", required=True, help="results/<dataset>: a preset's figures are read under it")
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-html", required=True, help="per-class IoU across methods")
    p.add_argument("--out-rst", required=True)

    p = add_command(sub, "benchmarks", run_benchmarks, "time (s), CPU time (s), max RSS (MB) and jobs per stage of a run")
    p.add_argument("benchmarks", type=Path, help="a run's benchmark folder, results/<dataset>/benchmarks")
    p.add_argument("--out-csv", type=Path, help="also write the table as CSV")

    p = add_command(sub, "predict", run_predict, "segment a folder of images with a method's trained model")
    p.add_argument("--method", required=True, choices=PREDICTORS, help="the method whose model segments the images")
    p.add_argument("--images", type=Path, required=True, help="folder of images")
    p.add_argument("--out", type=Path, required=True, help="output folder: labels/ and overlays/")
    p.add_argument("--config", type=Path, nargs="+", default=[], help="config file(s) of the run, merged in order "
                   "(default: the embedded demo config.yaml)")  # fmt: skip
    p.add_argument("--results", type=Path, help="the run's results folder (default: the config's results_dir, "
                   "from the folder with the Snakefile at or above the config file, else the config's folder)")  # fmt: skip
    p.add_argument("--model", type=Path, help="the model (default: the run's, e.g. <results>/<dataset>/kmeans/centroids.zarr)")
    p.add_argument("--weights", type=Path, help="backbone checkpoint (default for `pretrain`: <results>/<dataset>/croc/checkpoint.pth)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--on-corrupt", choices=["error", "skip"], default="error", help="what an unreadable image does")
    add_run_args(p)

    p = add_command(sub, "export", run_export, "export a store (Zarr) to HDF5 with the same layout and attrs")
    p.add_argument("store", type=Path, help="a store (.zarr folder)")
    p.add_argument("out", type=Path, help="the HDF5 file to write")
    p.add_argument("--compression", choices=["gzip", "lzf", "none"], default="gzip", help="HDF5 compression")

    p = add_stage(sub, "export-imagenet-s", run_export_imagenet_s, "predictions as ImageNet-S test-server PNGs (R + 256 G)")
    p.add_argument("--predictions", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--matching", help="metrics.json (imagenet-s block) or {label: class} JSON; none: labels are class ids")
    p.add_argument("--split-dir", help="folder of the split's images: PNGs keep their path under it (<wnid>/<name>.png)")
    p.add_argument("--out", required=True, help="output folder")
