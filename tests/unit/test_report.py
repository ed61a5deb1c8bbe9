"""Report parts on hand-made stores: palette, overlays and legend, label summaries and comparisons,
the comparison table, charts, HDF5 export round-trip, `useg predict` on a folder with a corrupt file."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import TINY_BACKBONE, write_image
from useg.cli import main
from useg.data.frame import Frame
from useg.errors import ConfigError, DataError, StoreError
from useg.report.draw import bar_chart, blend, legend, line_chart, save_jpeg, text_size, wrap
from useg.report.export import read_hdf5_attrs
from useg.report.labelmaps import compare, open_label_maps, summarize
from useg.report.overlays import method_overlays, overlay_rows, render_overlays
from useg.report.palette import IGNORE_COLOUR, PALETTE, colour_of, colourize
from useg.report.tables import comparison_rows, overview_rst, per_class_html, stage_rows, stages_rst, to_csv, to_markdown
from useg.stores.base import provenance
from useg.stores.labelbank import LabelBankWriter
from useg.stores.predictions import PredictionsWriter

CLASSES = ["sky", "road", "car"]


def write_predictions(path: Path, labels: np.ndarray, num_labels: int = 3) -> Path:
    ids = [f"img{i}" for i in range(len(labels))]
    prov = provenance("test", {"k": num_labels, "nested": {"a": [1, 2]}}, 0)
    with PredictionsWriter(path, np.arange(len(labels)), ids, Frame(labels.shape[1:]), num_labels, "hand", prov) as writer:
        writer.write(0, labels)
    return path


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """results/<ds>/ with a manifest of 4 images (20x30 px) and their masks: class = column third."""
    out = tmp_path / "results" / "hand"
    (out / "images").mkdir(parents=True)
    mask = np.repeat(np.repeat(np.arange(3, dtype=np.uint8)[None], 20, 0), 10, 1)  # [20, 30]
    rows = []
    for i in range(4):
        image = write_image(out / "images" / f"img{i}.png", (20, 30), seed=i)
        Image.fromarray(mask).save(out / "images" / f"img{i}-mask.png")
        rows.append({"id": f"img{i}", "path": str(image), "width": 30, "height": 20, "split": "val",
                     "mask_path": str(out / "images" / f"img{i}-mask.png"), "instance_path": "", "label_map": ""})  # fmt: skip
    with (out / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "classes.json").write_text(json.dumps({"classes": CLASSES, "things": ["car"], "ignore_index": 255}))
    return out


def test_palette_is_fixed_distinct_and_draws_ignore_black():
    assert len({tuple(c) for c in PALETTE[:256].tolist()}) == 256
    labels = np.array([[0, 1], [255, -1]])
    rgb = colourize(labels)
    assert tuple(rgb[0, 0]) == colour_of(0) == (230, 25, 75) and tuple(rgb[0, 1]) == colour_of(1)
    assert tuple(rgb[1, 0]) == tuple(rgb[1, 1]) == IGNORE_COLOUR


def test_blend_mixes_colours_and_keeps_ignored_pixels():
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 0], [255, 0]])
    out = blend(image, labels, alpha=0.5)
    assert out.shape == (2, 2, 3)
    assert tuple(out[0, 0]) == tuple(round(0.5 * 100 + 0.5 * c) for c in colour_of(0))
    assert tuple(out[1, 0]) == (100, 100, 100)
    big = blend(np.zeros((4, 4, 3), np.uint8), np.array([[1, 2], [3, 4]]), alpha=1.0)  # labels resized (nearest)
    assert tuple(big[3, 3]) == colour_of(4)


def test_legend_draws_every_swatch_in_its_colour():
    entries = [(name, colour_of(i)) for i, name in enumerate(CLASSES)]
    strip = legend(entries, 300, "classes")
    assert strip.shape[1] == 300
    colours = {tuple(c) for c in strip.reshape(-1, 3).tolist()}
    assert all(colour in colours for _, colour in entries)


def test_overlay_grid_shapes_matched_colours_and_legend(run: Path):
    labels = np.zeros((4, 10, 15), np.uint16)
    labels[:, :, 5:10], labels[:, :, 10:] = 2, 1  # label k covers class (0, 2, 1)[k] (ground truth: column thirds)
    store = write_predictions(run / "m" / "predictions.zarr", labels)
    plain = overlay_rows(open_label_maps(store), n=2, longest=60)
    assert len(plain.cells) == 2 and plain.columns == ["image", "prediction", "ground truth"] and not plain.matched
    assert all(cell.shape == (40, 60, 3) for row in plain.cells for cell in row)
    assert not np.array_equal(plain.cells[0][1], plain.cells[0][2]), "label ids 1, 2 are not classes 1, 2"
    (run / "m" / "metrics.json").write_text(json.dumps({"protocols": {"hungarian": {"matching": {"0": "sky", "1": "car", "2": "road"}}}}))
    matched = overlay_rows(open_label_maps(store), n=2, longest=60)
    assert matched.matched and matched.columns[1] == "prediction (matched)"
    assert np.array_equal(matched.cells[1][1], matched.cells[1][2]), "matched labels take their class colours"
    grid = render_overlays(open_label_maps(store), n=2, longest=60, title="hand")
    assert grid.shape[0] > 2 * 40 and grid.shape[1] >= 3 * 60
    swatches = {tuple(c) for c in grid.reshape(-1, 3).tolist()}
    assert all(colour_of(i) in swatches for i in range(3)) and IGNORE_COLOUR in swatches


def test_show_without_manifest_or_labels_fails_clearly(tmp_path: Path):
    store = write_predictions(tmp_path / "predictions.zarr", np.zeros((1, 4, 4), np.uint16))
    with pytest.raises(DataError, match="manifest.csv"):
        render_overlays(open_label_maps(store), 1)
    from useg.stores.base import write_store

    with write_store(tmp_path / "c.zarr", "Centroids", provenance("t", {}, 0)) as group:
        group.create_array("centroids", shape=(2, 3), dtype="float32")
    with pytest.raises(StoreError, match="without per-image label maps"):
        open_label_maps(tmp_path / "c.zarr")


def write_bank(path: Path, labels: np.ndarray, num_labels: int) -> Path:
    maps = np.eye(num_labels, dtype=np.float32)[labels].transpose(0, 3, 1, 2)
    prov = provenance("transfgu-bank", {"x": None}, 0)
    ids = [f"img{i}" for i in range(len(labels))]
    with LabelBankWriter(path, np.arange(len(labels)), ids, num_labels, labels.shape[1:], prov, background_label=None) as w:
        w.write(0, maps, labels, np.ones_like(labels))
    return path


def test_summary_numbers_on_a_hand_made_bank(tmp_path: Path):
    labels = np.zeros((2, 2, 4), np.uint16)
    labels[0, 0, :] = 1  # 4 of 16 pixels label 1
    labels[1] = 3  # 8 of 16 pixels label 3
    summary = summarize(open_label_maps(write_bank(tmp_path / "bank.zarr", labels, 4)))
    assert summary["images"] == 2 and summary["num_labels"] == 4 and summary["size"] == [2, 4]
    assert summary["pixel_share"] == {"0": 0.25, "1": 0.25, "2": 0.0, "3": 0.5}
    assert summary["labels_present"] == 3


def test_compare_two_banks_with_a_known_difference(tmp_path: Path):
    a = np.zeros((2, 4, 4), np.uint16)
    a[:, :, 2:] = 1
    b = a.copy()
    b[0, 0, 2:] = 0  # 2 of label 1's 16 pixels become 0
    result = compare(open_label_maps(write_bank(tmp_path / "a.zarr", a, 2)), open_label_maps(write_bank(tmp_path / "b.zarr", b, 2)))
    assert result["images"] == 2 and result["changed_pixel_share"] == pytest.approx(2 / 32)
    assert result["per_label"]["0"]["agreement"] == 1.0 and result["per_label"]["1"]["agreement"] == pytest.approx(14 / 16)
    assert result["per_label"]["1"]["iou"] == pytest.approx(14 / 16) and result["per_label"]["0"]["iou"] == pytest.approx(16 / 18)
    swapped = compare(open_label_maps(tmp_path / "a.zarr"), open_label_maps(write_bank(tmp_path / "s.zarr", 1 - a, 2)))
    assert swapped["agreement"] == 0.0 and swapped["matched_agreement"] == 1.0


def write_metrics(tmp_path: Path, method: str, miou: float, supervised: bool = False, iou: dict | None = None) -> Path:
    """A metrics.json of `method`: hungarian, overcluster (+0.1) and a per-image block, or a supervised linear probe."""
    path = tmp_path / f"{method}.json"
    result = {"miou": miou, "pixel_accuracy": 0.5, "per_class_iou": iou or dict.fromkeys(CLASSES, miou)}
    protocols = (
        {"linear-probe": result}
        if supervised
        else {"hungarian": result, "overcluster": {**result, "miou": miou + 0.1}, "per-image": {**result, "miou": 0.9, "comparable": False}}
    )
    metrics = {"method": method, "num_clusters": 3, "num_images": 4, "supervised": supervised, "class_names": CLASSES, "protocols": protocols}
    path.write_text(json.dumps(metrics))
    return path


def test_comparison_table_rows_baseline_markdown_csv(tmp_path: Path):
    paths = [write_metrics(tmp_path, "kmeans", 0.2), write_metrics(tmp_path, "probe", 0.9, True), write_metrics(tmp_path, "transfgu", 0.3)]
    rows = comparison_rows(paths)
    assert [(r["method"], r["protocol"]) for r in rows] == [
        ("kmeans", "hungarian"), ("transfgu", "hungarian"), ("kmeans", "overcluster"), ("transfgu", "overcluster"),
        ("kmeans", "per-image"), ("transfgu", "per-image"), ("probe", "linear-probe"),
    ]  # fmt: skip  (grouped by protocol, hungarian first, methods in the given order)
    assert rows[1]["vs baseline"] == pytest.approx(10.0) and rows[3]["vs baseline"] == pytest.approx(10.0)
    assert rows[0]["vs baseline"] is None and rows[6]["vs baseline"] is None
    assert rows[5]["vs baseline"] is None, "per-image matchings are not comparable: no baseline delta"
    md = to_markdown(rows)
    assert md.splitlines()[0].startswith("| method | protocol | mIoU") and "| transfgu | hungarian | 30.00 | 50.00 | +10.00 | no |" in md
    assert "| transfgu | per-image | 90.00 | 50.00 |  | no |" in md
    parsed = list(csv.DictReader(to_csv(rows).splitlines()))
    assert len(parsed) == 7 and float(parsed[1]["mIoU"]) == pytest.approx(30.0) and parsed[5]["vs baseline"] == ""


def rendered_tables(rst: str) -> list[tuple[str, list[list[str]]]]:
    """(caption, rows of cell HTML) of every table of a reStructuredText page, rendered by docutils."""
    from docutils.core import publish_parts

    body = publish_parts(rst, writer="html")["html_body"]
    tables = []
    for table in re.findall(r"<table.*?</table>", body, re.S):
        caption = re.search(r"<caption>(.*?)</caption>", table, re.S).group(1)
        rows = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)]
        tables.append((caption, [[re.sub(r"</?p>|\s+", " ", c).strip() for c in row] for row in rows]))
    return tables


def test_front_page_has_one_table_per_protocol_best_in_bold_and_no_figures(tmp_path: Path):
    paths = [write_metrics(tmp_path, "kmeans", 0.2), write_metrics(tmp_path, "transfgu", 0.3), write_metrics(tmp_path, "probe", 0.9, True)]
    run = {"dataset": "hand", "kind": "synthetic", "split": "val", "backbone": "vit", "weights": "pretrain", "methods": ["kmeans", "transfgu"]}
    rst = overview_rst(comparison_rows(paths), run, ["Comparison", "Methods"])
    assert "data:image" not in rst and ".. image" not in rst, "figures live in their categories only"
    assert "Comparison_, Methods_" in rst
    tables = rendered_tables(rst.replace("Comparison_, Methods_", "Comparison, Methods"))  # the targets are Snakemake's
    assert [caption.split(" ")[0] for caption, _ in tables] == ["hungarian", "overcluster", "per-image", "linear-probe"]
    hungarian = tables[0][1]
    assert hungarian[0] == ["method", "mIoU", "pixel acc", "vs kmeans", "K"]
    assert hungarian[2][:4] == ["<tt class=\"docutils literal\">transfgu</tt>", "<strong>30.00</strong>", "<strong>50.00</strong>", "+10.00"]
    assert hungarian[1][1] == "20.00", "only the best mIoU is bold"
    assert tables[2][1][0] == ["method", "mIoU", "pixel acc", "K"], "per-image: no baseline column"
    assert "upper bound" in tables[3][0]
    stages = stage_rows({})
    assert stages == [] and "Time and memory" not in overview_rst(comparison_rows(paths), run, [], stages=stages)


def test_per_class_iou_page_puts_methods_side_by_side_with_each_class_best_in_bold(tmp_path: Path):
    a = json.loads(write_metrics(tmp_path, "kmeans", 0.2, iou={"sky": 0.5, "road": None, "car": 0.1}).read_text())
    b = json.loads(write_metrics(tmp_path, "transfgu", 0.3, iou={"sky": 0.4, "road": 0.2, "car": 0.1}).read_text())
    page = per_class_html([a, b])
    first = page[page.index("<h2>hungarian</h2>") : page.index("<h2>overcluster</h2>")]
    assert "<th>kmeans</th><th>transfgu</th>" in first
    assert "<tr><th>sky</th><td><b>50.0</b></td><td>40.0</td></tr>" in first
    assert "<tr><th>road</th><td>n/a</td><td><b>20.0</b></td></tr>" in first
    assert "<tr><th>car</th><td><b>10.0</b></td><td><b>10.0</b></td></tr>" in first, "a tie: both bold"
    assert "<th>mIoU</th><td>20.0</td><td><b>30.0</b></td>" in first
    assert page.index("<h2>hungarian</h2>") < page.index("<h2>per-image</h2>")
    probe = json.loads(write_metrics(tmp_path, "probe", 0.9, True).read_text())
    supervised = per_class_html([a, probe])
    assert "<h2>linear-probe</h2>" in supervised and supervised.count("<th>probe</th>") == 1, "only the methods scored under it"


def test_stage_rows_sum_time_and_take_peak_memory_from_benchmark_files(tmp_path: Path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = {}
    for name, lines in {"a": ["4.0\t0:00:04\t300.5", "3.0\t0:00:03\t250.0"], "b": ["1.5\t0:00:01\t900.0"], "c": ["9.0\t0:00:09\tNA"]}.items():
        files[name] = tmp_path / f"{name}.tsv"
        files[name].write_text(header + "".join(line + "\t1\t1\t1\t0\t0\t50\t1\n" for line in lines))
    rows = stage_rows({"features": [files["a"], files["b"]], "pretrain": [files["c"]]})
    assert [r["stage"] for r in rows] == ["pretrain", "features"], "slowest first"
    assert rows[1] == {"stage": "features", "jobs": 2, "total s": 4.5, "longest s": 3.0, "peak RSS MB": 900.0}, "a file's last run"
    assert rows[0]["peak RSS MB"] is None
    table = rendered_tables(stages_rst(rows))[0][1]
    assert table[2][1:] == ["2", "4.5", "3.0", "900.00"] and table[1][4] == "-"


def test_overlays_of_every_method_share_images_and_class_colours(run: Path):
    labels = np.zeros((4, 10, 15), np.uint16)
    labels[:, :, 5:10], labels[:, :, 10:] = 2, 1  # label k covers class (0, 2, 1)[k]
    good = write_predictions(run / "good" / "predictions.zarr", labels)
    (run / "good" / "metrics.json").write_text(json.dumps({"protocols": {"hungarian": {"matching": {"0": "sky", "1": "car", "2": "road"}}}}))
    flat = write_predictions(run / "flat" / "predictions.zarr", np.zeros_like(labels))
    (run / "flat" / "metrics.json").write_text(json.dumps({"protocols": {"hungarian": {"matching": {"0": "road", "1": None, "2": None}}}}))
    columns = {"good": open_label_maps(good), "flat": open_label_maps(flat)}
    figure = method_overlays(columns, 3, run / "manifest.csv", longest=60)
    cell_h, cell_w, pad = 40, 60, 4
    left = max(text_size(f"img{i}")[0] for i in range(4)) + 2 * pad
    top = figure.shape[0] - 3 * (cell_h + pad) - pad - legend([(n, colour_of(0)) for n in CLASSES + ["unmatched"]], figure.shape[1], "classes").shape[0]
    cells = [[figure[top + r * (cell_h + pad) : top + r * (cell_h + pad) + cell_h, left + c * (cell_w + pad) : left + c * (cell_w + pad) + cell_w] for c in range(4)] for r in range(3)]
    assert figure.shape[1] == left + 4 * (cell_w + pad) + pad, "image | ground truth | good | flat"
    for row in cells:
        assert np.array_equal(row[2], row[1]), "a perfect matching draws the ground truth's colours"
        assert not np.array_equal(row[3], row[1])
    middle = cells[0][3][:, 20:40].reshape(-1, 3)  # ground truth: road; flat predicts road everywhere
    assert np.array_equal(middle, cells[0][1][:, 20:40].reshape(-1, 3))
    other = write_predictions(run / "other" / "predictions.zarr", labels[:2])
    with pytest.raises(DataError, match=r"other/predictions.zarr: no prediction for img3 \(column other\)"):
        method_overlays({**columns, "other": open_label_maps(other)}, 2, run / "manifest.csv")


def test_column_titles_wrap_at_separators_and_jpeg_is_written(tmp_path: Path):
    assert wrap("backbone-eval/pretrain/linear-probe", text_size("backbone-eval/")[0]) == ["backbone-eval/", "pretrain/", "linear-probe"]
    assert wrap("maskdistill-maskrcnn", text_size("maskdistill-")[0]) == ["maskdistill-", "maskrcnn"]
    assert wrap("kmeans", 10) == ["kmeans"], "a word longer than the width stays whole"
    image = np.zeros((8, 12, 3), np.uint8)
    image[:, 6:] = 200
    path = save_jpeg(tmp_path / "figure.jpg", image)
    with Image.open(path) as saved:
        assert saved.format == "JPEG" and saved.size == (12, 8)
        assert abs(int(np.asarray(saved)[0, 11, 0]) - 200) < 8
    assert not list(tmp_path.glob(".figure.jpg.tmp-*"))


def test_charts_draw_bars_and_lines_in_palette_colours():
    bars = bar_chart(CLASSES, [0.5, None, 1.0], "iou")
    colours = {tuple(c) for c in bars.reshape(-1, 3).tolist()}
    assert colour_of(0) in colours and colour_of(2) in colours and colour_of(1) not in colours  # None: no bar
    # the full bar is twice as long as the half one
    lengths = [int((bars == np.array(colour_of(i), np.uint8)).all(-1).sum(1).max()) for i in (0, 2)]
    assert abs(lengths[1] - 2 * lengths[0]) <= 2
    lines = line_chart({"loss": ([1, 2, 3], [3.0, 2.0, 1.0])}, "curve", "epoch")
    assert (lines == np.array(colour_of(0), np.uint8)).all(-1).sum() > 50


def test_report_curve_command_draws_a_train_log(tmp_path: Path):
    log = tmp_path / "train-log.json"
    log.write_text(json.dumps({"epochs": [{"epoch": e, "loss": 1 / e, "loss_dense": 0.5 / e, "lr": 0.1} for e in (1, 2, 3)]}))
    assert main(["report-curve", "--params", '{"name": "croc"}', "--train-log", str(log), "--out", str(tmp_path / "c.png")]) == 0
    image = np.asarray(Image.open(tmp_path / "c.png").convert("RGB"))
    assert (image == np.array(colour_of(0), np.uint8)).all(-1).any() and (image == np.array(colour_of(1), np.uint8)).all(-1).any()
    log.write_text(json.dumps({"epochs": []}))
    assert main(["report-curve", "--train-log", str(log), "--out", str(tmp_path / "d.png")]) == 2


def test_hdf5_export_round_trip(tmp_path: Path):
    rng = np.random.default_rng(0)
    bank = write_bank(tmp_path / "bank.zarr", rng.integers(0, 3, (5, 2, 3)).astype(np.uint16), 3)
    assert main(["export", str(bank), str(tmp_path / "bank.h5")]) == 0
    import zarr

    group = zarr.open_group(str(bank), mode="r")
    with h5py.File(tmp_path / "bank.h5", "r") as h5:
        assert read_hdf5_attrs(h5) == dict(group.attrs)
        assert read_hdf5_attrs(h5)["provenance"]["config"] == {"x": None}
        assert sorted(h5) == sorted(name for name, _ in group.arrays())
        for name, array in group.arrays():
            if name == "ids":
                assert list(h5[name].asstr()[:]) == [str(s) for s in array[:]]
            else:
                assert h5[name].dtype == array.dtype and np.array_equal(h5[name][:], array[:])
    assert not list(tmp_path.glob(".bank.h5.tmp-*"))


@pytest.fixture
def transfgu_model(tmp_path: Path) -> tuple[Path, Path]:
    """A round's decoder checkpoint over the tiny backbone, and the config it was trained with."""
    from useg.methods.transfgu.segmenter import SegmenterConfig, build_segmenter, save_segmenter

    model = tmp_path / "model.pt"
    save_segmenter(build_segmenter(SegmenterConfig(TINY_BACKBONE["embed_dim"], 4, dim=16, layers=1, heads=2), 0), model, {"round": 0})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"seed": 0, "backbone": TINY_BACKBONE, "dataset": {"name": "x"}}))
    return model, config


def test_predict_folder_with_one_corrupt_file(tmp_path: Path, transfgu_model: tuple[Path, Path]):
    model, config = transfgu_model
    folder = tmp_path / "images"
    folder.mkdir()
    write_image(folder / "a.png", (40, 48), seed=1)
    write_image(folder / "b.jpg", (24, 36), seed=2)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("ignored")
    args = ["predict", "--method", "transfgu", "--model", str(model), "--config", str(config), "--images", str(folder)]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    assert not (tmp_path / "refused").exists(), "nothing is written when a file cannot be read"
    assert main([*args, "--out", str(tmp_path / "out"), "--on-corrupt", "skip", "--batch-size", "1"]) == 0
    labels = {p.name: np.asarray(Image.open(p)) for p in (tmp_path / "out" / "labels").iterdir()}
    assert sorted(labels) == ["a.png", "b.png"]
    assert labels["a.png"].shape == (40, 48) and labels["b.png"].shape == (24, 36) and labels["a.png"].max() < 4
    overlays = sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir())
    assert overlays == ["a.png", "b.png"]
    assert Image.open(tmp_path / "out" / "overlays" / "a.png").size[0] == 2 * 48 + 4


def test_predict_streams_the_folder_with_the_same_output_for_any_batch_and_workers(tmp_path: Path, transfgu_model: tuple[Path, Path]):
    import cv2
    import torch

    from useg.backbones import BackboneConfig, build_backbone
    from useg.data.images import load_rgb
    from useg.data.transforms import normalise, resize_rgb
    from useg.methods.common import scores_to_labels
    from useg.methods.transfgu.segmenter import load_predictor

    model, config = transfgu_model
    folder = tmp_path / "images"
    folder.mkdir()
    for i, size in enumerate([(40, 48), (24, 36), (64, 32), (33, 47), (50, 50)]):
        write_image(folder / f"im{i}.png", size, seed=i)
    args = ["predict", "--method", "transfgu", "--model", str(model), "--config", str(config), "--images", str(folder)]
    assert main([*args, "--out", str(tmp_path / "one"), "--batch-size", "1"]) == 0
    assert main([*args, "--out", str(tmp_path / "workers"), "--batch-size", "2", "--threads", "3"]) == 0  # two loader workers
    for kind in ("labels", "overlays"):
        for path in sorted((tmp_path / "one" / kind).iterdir()):
            assert path.read_bytes() == (tmp_path / "workers" / kind / path.name).read_bytes(), f"{kind}/{path.name}"
    backbone = build_backbone(BackboneConfig.from_dict(TINY_BACKBONE), seed=0)
    predictor = load_predictor(model, backbone, torch.device("cpu")).eval()
    for path in sorted(folder.iterdir()):  # each image on its own, as the folder was read before it streamed
        image = load_rgb(path)
        size = tuple(TINY_BACKBONE["input_size"])
        with torch.inference_mode():
            labels = scores_to_labels(predictor(normalise(resize_rgb(image, size))[None]), size)[0]
        expected = cv2.resize(labels.astype(np.int32), image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(np.asarray(Image.open(tmp_path / "workers" / "labels" / path.name)), expected), path.name


def test_predict_errors_name_the_problem(tmp_path: Path, transfgu_model: tuple[Path, Path], capsys):
    model, config = transfgu_model
    folder = tmp_path / "images"
    folder.mkdir()
    write_image(folder / "a.png", seed=1)
    (folder / "broken.png").write_bytes(b"junk")
    base = ["predict", "--model", str(model), "--config", str(config), "--images", str(folder), "--out", str(tmp_path / "o")]
    assert main([*base, "--method", "alignseg"]) == 2
    assert f"{model} is a model of transfgu, not of alignseg: pass --method transfgu" in capsys.readouterr().err
    assert main([*base, "--method", "transfgu"]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "--on-corrupt skip" in err
    wide = yaml.safe_load(config.read_text())
    wide["backbone"] = {**TINY_BACKBONE, "embed_dim": 32}
    config.write_text(yaml.safe_dump(wide))
    assert main([*base, "--method", "transfgu", "--on-corrupt", "skip"]) == 2
    assert "decodes 64-d patch tokens" in capsys.readouterr().err


def test_predict_finds_the_run_from_the_config_not_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from useg.predict import model_path, run_folder

    (tmp_path / "repo" / "configs").mkdir(parents=True)
    (tmp_path / "repo" / "Snakefile").write_text("")
    (tmp_path / "run").mkdir()
    for path in (tmp_path / "repo" / "configs" / "x.yaml", tmp_path / "run" / "c.yaml"):
        path.write_text("seed: 0\n")
    config = {"results_dir": "results", "dataset": {"name": "ds"}, "transfgu": {"schedule": "rounds", "rounds": 2}}
    monkeypatch.chdir(tmp_path / "run")
    in_repo = run_folder(config, [tmp_path / "repo" / "configs" / "x.yaml"], None)
    assert in_repo == tmp_path / "repo" / "results" / "ds"  # the workflow folder above the config
    assert run_folder(config, [tmp_path / "run" / "c.yaml"], None) == tmp_path / "run" / "results" / "ds"
    assert run_folder(config, [tmp_path / "run" / "c.yaml"], tmp_path / "elsewhere") == tmp_path / "elsewhere" / "ds"
    with pytest.raises(ConfigError, match=r"transfgu/round-2/model.pt does not exist.*--results"):
        model_path("transfgu", config, in_repo, None)


def test_inspect_show_and_compare_commands(run: Path, capsys):
    labels = np.zeros((4, 10, 15), np.uint16)
    labels[:, :, 5:] = 1
    store = write_predictions(run / "m" / "predictions.zarr", labels)
    other = write_predictions(run / "o" / "predictions.zarr", np.zeros_like(labels))
    assert main(["inspect", str(store), "--show", "3", "--out", str(run / "show.png")]) == 0
    out = capsys.readouterr().out
    assert "kind: Predictions" in out and "4 images, 10x15 px, 3 labels (2 present)" in out and "overlays of 3 images" in out
    assert Image.open(run / "show.png").size[0] > 3 * 160
    assert main(["inspect", "--compare", str(store), str(other)]) == 0
    assert "changed pixels (A != B): 66.67 %" in capsys.readouterr().out


def test_inspect_show_writes_beside_the_store(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    labels = np.zeros((2, 10, 15), np.uint16)
    stores = [write_predictions(run / m / "predictions.zarr", labels) for m in ("a", "b")]
    monkeypatch.chdir(tmp_path)  # not the stores' folder
    for store in stores:
        assert main(["inspect", str(store), "--show", "2"]) == 0
        assert (store.parent / "predictions-show.png").is_file()
    assert not list(tmp_path.glob("*.png")), "nothing lands in the current folder"


def test_report_curve_of_several_logs_draws_one_total_loss_each(tmp_path: Path):
    logs = []
    for r in range(3):
        (tmp_path / f"round-{r}").mkdir()
        logs.append(tmp_path / f"round-{r}" / "train-log.json")
        logs[-1].write_text(json.dumps({"epochs": [{"epoch": e, "loss": r + 1 / e, "loss_main": 0.1} for e in (1, 2)]}))
    assert main(["report-curve", "--train-log", *map(str, logs), "--out", str(tmp_path / "c.png")]) == 0
    image = np.asarray(Image.open(tmp_path / "c.png").convert("RGB"))
    assert all((image == np.array(colour_of(i), np.uint8)).all(-1).any() for i in range(3))
    assert not (image == np.array(colour_of(3), np.uint8)).all(-1).any(), "only the total loss of each round"


def test_report_curve_draws_the_largest_label_share_of_a_probe_log(tmp_path: Path):
    for name, extra in (("probe", {"label_shares": [0.5, 0.5]}), ("plain", {})):
        log = tmp_path / f"{name}.json"
        log.write_text(json.dumps({"epochs": [{"epoch": e, "loss": 2 / e, **extra} for e in (1, 2)]}))
        assert main(["report-curve", "--train-log", str(log), "--out", str(tmp_path / f"{name}.png")]) == 0
    drawn = {n: np.asarray(Image.open(tmp_path / f"{n}.png").convert("RGB")) for n in ("probe", "plain")}
    second = np.array(colour_of(1), np.uint8)
    assert (drawn["probe"] == second).all(-1).any() and not (drawn["plain"] == second).all(-1).any()
