"""Config layering, the presets' values against their papers, and the paper-shape smoke steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.paper_shapes import PRESETS, SHAPE_STEPS, lookup, preset_config, preset_methods
from useg.config.layers import (
    COMMAND_LINE,
    DEMO_CONFIG,
    SCHEMA_DEFAULT,
    check_config,
    fill_defaults,
    load_schema,
    resolve_config,
)
from useg.errors import ConfigError

CONFIG_FILES = sorted((REPO / "configs").rglob("*.yaml"))
SCHEMA = load_schema()


def leaves(node: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf (non-mapping value or empty mapping) of a nested mapping by key path."""
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in leaves(value, (*path, key)).items()}
    return {path: node}


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# ---- layering ------------------------------------------------------------------------------------


def test_merge_order_is_schema_defaults_then_bases_in_order_then_the_file_then_the_command_line(tmp_path: Path):
    (tmp_path / "bases").mkdir()
    first = write(tmp_path / "bases" / "first.yaml", {"seed": 1, "kmeans": {"niter": 5, "nredo": 2}})
    write(tmp_path / "bases" / "second.yaml", {"_base_": "first.yaml", "seed": 2, "kmeans": {"niter": 6}})
    main = write(tmp_path / "main.yaml", {"_base_": ["bases/second.yaml"], "kmeans": {"nredo": 4}})
    later = write(tmp_path / "later.yaml", {"features": {"shards": 3}})
    resolved = resolve_config([main, later], {"features": {"batch_size": 7}})
    cfg = resolved.config
    assert (cfg["seed"], cfg["kmeans"]["niter"], cfg["kmeans"]["nredo"]) == (2, 6, 4)
    assert (cfg["features"]["shards"], cfg["features"]["batch_size"]) == (3, 7)
    assert cfg["kmeans"]["max_train_points"] == 100000  # untouched: the schema's default
    assert resolved.source("seed") == str(tmp_path / "bases" / "second.yaml")
    assert resolved.source("kmeans", "nredo") == str(main)
    assert resolved.source("features", "batch_size") == COMMAND_LINE
    assert resolved.source("kmeans", "max_train_points") == SCHEMA_DEFAULT
    assert resolved.files == [str(first), str(tmp_path / "bases" / "second.yaml"), str(main), str(later)]
    assert "_base_" not in cfg


def test_no_file_is_the_demo_and_a_file_never_inherits_it(tmp_path: Path):
    demo = resolve_config([])
    assert demo.config["backbone"]["depth"] == yaml.safe_load(DEMO_CONFIG.read_text())["backbone"]["depth"]
    assert demo.source("croc", "epochs") == str(DEMO_CONFIG)
    own = resolve_config([write(tmp_path / "mine.yaml", {"seed": 3})])
    assert str(DEMO_CONFIG) not in own.sources.values()
    assert own.config["croc"]["epochs"] == SCHEMA["properties"]["croc"]["properties"]["epochs"]["default"]


def test_bad_bases_fail_naming_the_file(tmp_path: Path):
    loop_a, loop_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    write(loop_a, {"_base_": "b.yaml"})
    write(loop_b, {"_base_": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        resolve_config([loop_a])
    missing = write(tmp_path / "m.yaml", {"_base_": ["nowhere.yaml"]})
    with pytest.raises(ConfigError, match=r"m\.yaml names the base .*nowhere\.yaml"):
        resolve_config([missing])
    with pytest.raises(ConfigError, match="must be a file path or a list"):
        resolve_config([write(tmp_path / "n.yaml", {"_base_": {"x": 1}})])


def test_a_bad_value_is_reported_with_the_file_that_set_it(tmp_path: Path):
    bad = write(tmp_path / "bad.yaml", {"dataset": {"on_corrupt": "maybe"}})
    with pytest.raises(ConfigError, match=r"dataset\.on_corrupt: 'maybe' is not one of .*\(set in .*bad\.yaml\)"):
        check_config(resolve_config([bad]))


def test_useg_config_prints_every_value_with_its_source(capsys: pytest.CaptureFixture[str]):
    from useg.cli import main

    preset = REPO / "configs" / "presets" / "transfgu" / "voc.yaml"
    assert main(["config", str(preset), "--set", "transfgu.epochs=3"]) == 0
    text = capsys.readouterr().out
    assert "  epochs: 3  # command line" in text
    assert "  k: 20  # " in text and "presets/transfgu/voc.yaml" in text.split("  k: 20  # ")[1].splitlines()[0]
    assert "  crop_size: 320  # " in text and "  niter: 30  # schema default" in text
    assert yaml.safe_load(text)["transfgu"]["epochs"] == 3  # the annotated output is itself a config


# ---- no toy value of the demo in any config under configs/ -------------------------------------

SCHEMA_DEFAULTS = leaves(fill_defaults(SCHEMA, {}, {}))
TOY = {path: value for path, value in leaves(resolve_config([]).config).items() if SCHEMA_DEFAULTS.get(path) != value}
# Values a preset shares with the demo on purpose (the paper's or release's value happens to be the demo's).
SHARED_WITH_DEMO = {
    (("alignseg", "global_scale"), (0.5, 1.0)): "release configs/train_voc_config.yml: min/max_scale_crops 0.5-1",
    (("backbone", "weights"), "pretrain"): "CrOC presets pretrain their own backbone (§4.1)",
    (("maskdistill", "crf", "enabled"), True): "MaskDistill's +CRF row (Table S1)",
}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_no_value_of_the_demo_reaches_a_config_under_configs(path: Path):
    resolved = resolve_config([path])
    check_config(resolved)
    assert str(DEMO_CONFIG) not in resolved.sources.values(), f"{path} takes values from config.yaml"
    if "presets" not in path.parts:
        return
    got = leaves(resolved.config)
    for key, toy in TOY.items():
        shared = (key, tuple(toy) if isinstance(toy, list) else toy) in SHARED_WITH_DEMO
        assert shared or got.get(key) != toy, f"{'.'.join(key)} = {toy!r} is the demo's toy value"


# ---- every preset states its paper's numbers -----------------------------------------------------

TRANSFGU = "TransFGU (ECCV 2022)"
# (preset, {dotted key: the paper's value}, where the paper states it). `paper.results` holds the published
# figures as [column, protocol, metric, value] rows.
# fmt: off
PAPER_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("transfgu/cocostuff27", {"backbone.model": "vit_small_patch8_224", "backbone.weights": "vit_small_patch8_224.dino",
                              "transfgu.k": 27, "transfgu.k_fg": 12, "transfgu.batch_size": 256, "transfgu.lr": 1e-4,
                              "transfgu.epochs": 200, "transfgu.crop_size": 320, "backbone.input_size": [320, 320]},
     f"{TRANSFGU} §4.2, supplementary Training Details (256/1e-4/200 on MS-COCO); release: 12 + 15 concepts, 320 px"),
    ("transfgu/cocostuff27", {"transfgu.w_div": 1.0, "transfgu.w_unc": 0.3, "transfgu.alpha": [0.03, 0.1],
                              "transfgu.betas": [0.5, 0.4, 0.3, 0.2]},
     f"{TRANSFGU} eq. 16 (omega 1 and 0.3), §4.2 (beta), supplementary (alpha 0.03 -> 0.1)"),
    ("transfgu/cocostuff27", {"paper.results": [["transfgu-initial", "hungarian", "miou", 8.95],
                                                ["transfgu-trained", "hungarian", "miou", 13.19],
                                                ["transfgu", "hungarian", "miou", 16.19],
                                                ["transfgu", "hungarian", "pixel_accuracy", 44.52]]},
     f"{TRANSFGU} Table 3 (COCO-S-27: 8.95 / 13.19 / 16.19), Table 1 (16.19, 44.52)"),
    ("transfgu/cocostuff27", {"transfgu.schedule": "release", "transfgu.bootstrap_start": 2, "transfgu.bootstrap_every": 2,
                              "transfgu.augment_rule": "batch", "transfgu.teacher_view": "augmented"},
     "TransFGU release Command.md (COCO-Stuff-27: teacher_update_interval 2, bootstrapping_start_epoch 2), its Segmenter"),
    ("transfgu/cocostuff27-curated", {"transfgu.bootstrap_start": 1, "transfgu.bootstrap_every": 1},
     "TransFGU release Command.md (curated: teacher_update_interval 1, bootstrapping_start_epoch 1)"),
    ("transfgu/cityscapes27", {"transfgu.bootstrap_start": 1, "transfgu.bootstrap_every": 1},
     "TransFGU release configs/cityscapes.yaml (teacher_update_interval 1, bootstrapping_start_epoch 1)"),
    ("transfgu/cocostuff27", {"evaluate.scored_at": "frame"},
     "TransFGU release cocostuff_trainval.py: eval_coco scores the labels ResizeTensor resized (nearest) to 320 x 320"),
    ("transfgu/cityscapes27", {"backbone.input_size": [320, 640], "evaluate.scored_at": "frame"},
     "TransFGU release cityscapes_{crop,generate_pseudo_label,trainval}.py: ResizeTensor(size=(resize, resize * 2)), resize 320"),
    ("transfgu/lip16", {"backbone.input_size": [640, 320], "evaluate.scored_at": "frame"},
     "TransFGU release lip_{crop,generate_pseudo_label,trainval}.py: ResizeTensor(size=(resize * 2, resize)), resize 320"),
    ("transfgu/cocostuff27-curated", {"transfgu.k": 27, "transfgu.lr": 2.2e-4,
                                      "paper.results": [["transfgu", "hungarian", "miou", 17.47],
                                                        ["transfgu", "hungarian", "pixel_accuracy", 52.66]]},
     f"{TRANSFGU} Table 1 (COCO-S-27*); release Command.md (curated: lr 2.2e-4)"),
    ("transfgu/cocostuff171", {"transfgu.k": 171, "transfgu.k_fg": 80,
                               "paper.results": [["transfgu-initial", "hungarian", "miou", 5.05],
                                                 ["transfgu-trained", "hungarian", "miou", 8.66],
                                                 ["transfgu", "hungarian", "miou", 11.93],
                                                 ["transfgu", "hungarian", "pixel_accuracy", 34.32]]},
     f"{TRANSFGU} Table 3, Table 1 (COCO-S-171)"),
    ("transfgu/coco80", {"transfgu.k": 80, "transfgu.foreground_only": True,
                         "paper.results": [["transfgu-initial", "hungarian", "miou", 4.23],
                                           ["transfgu-trained", "hungarian", "miou", 8.28],
                                           ["transfgu", "hungarian", "miou", 12.69],
                                           ["transfgu", "hungarian", "pixel_accuracy", 64.31]]},
     f"{TRANSFGU} Table 3, Table 1 (COCO-80); §4.2 eq. 8 background"),
    ("transfgu/cityscapes27", {"transfgu.k": 27, "transfgu.foreground_prior": False, "transfgu.batch_size": 256,
                               "transfgu.lr": 5e-5, "transfgu.epochs": 50,
                               "paper.results": [["transfgu", "hungarian", "miou", 16.83],
                                                 ["transfgu", "hungarian", "pixel_accuracy", 77.92]]},
     f"{TRANSFGU} Table 1 (Cityscapes), §4.2 (no foreground prior), supplementary (256/5e-5/50)"),
    ("transfgu/voc", {"transfgu.k": 20, "transfgu.foreground_only": True, "transfgu.batch_size": 512,
                      "transfgu.lr": 1e-4, "transfgu.epochs": 100, "dataset.train_split": "train",
                      "paper.results": [["transfgu", "hungarian", "miou", 37.15],
                                        ["transfgu", "hungarian", "pixel_accuracy", 83.59]]},
     f"{TRANSFGU} Table 1 (Pascal-VOC), §4.1 (1464 train images), supplementary (512/1e-4/100)"),
    *[
        (f"transfgu/lip{k}", {"transfgu.k": k, "transfgu.foreground_only": True, "dataset.setting": k,
                              "transfgu.batch_size": 256, "transfgu.lr": 2e-5, "transfgu.epochs": 100,
                              "paper.results": [["transfgu", "hungarian", "miou", miou],
                                                ["transfgu", "hungarian", "pixel_accuracy", acc]]},
         f"{TRANSFGU} Table 1 (LIP-{k}), supplementary (256/2e-5/100)")
        for k, miou, acc in ((5, 25.16, 65.76), (16, 15.49, 60.08), (19, 12.24, 42.52))
    ],
    ("maskdistill/voc", {"backbone.model": "vit_small_patch16_224", "backbone.input_size": [640, 640], "maskdistill.mask_short_side": 640,
                         "maskdistill.topk": 0.4, "maskdistill.tau": 0.9, "maskdistill.k": 20,
                         "maskdistill.deeplab.epochs": 45, "maskdistill.deeplab.batch_size": 16,
                         "maskdistill.deeplab.lr": 0.002, "maskdistill.deeplab.lr_step": 0.889,
                         "maskdistill.deeplab.weight_decay": 1e-4, "maskdistill.deeplab.hard_fraction": 0.2,
                         "maskdistill.deeplab.frozen_stages": 3, "maskdistill.deeplab.input_size": [512, 512],
                         "maskdistill.deeplab.rotate": 5.0, "maskdistill.deeplab.scale": [0.75, 1.25],
                         "maskdistill.maskrcnn.lr": 0.02,
                         "maskdistill.maskrcnn.iterations": 24000, "maskdistill.maskrcnn.steps": [0.8333, 0.9167],
                         "maskdistill.maskrcnn.warmup_iters": 100, "maskdistill.maskrcnn.batch_size": 16,
                         "maskdistill.detector_split": "trainval0712", "dataset.extra_splits": ["trainval0712"],
                         "dataset.split_lists.trainval0712": ["../VOC2007/ImageSets/Main/trainval.txt", "ImageSets/Main/trainval.txt"]},
     "MaskDistill §4.1 (ViT-S/16, short side 640, top-40 %, tau 0.9, DeepLab 45 epochs, batch 16, 2e-3 -> 2e-4 "
     "after 40, top-20 % pixels), §A.3 (flips and ScaleNRotate), §A.1 (Mask R-CNN lr 0.02, steps 20k/22k of 24k, "
     "100 warm-up), §A.4 (VOC2007 and VOC2012 for Mask R-CNN); the release's DeepLab: stem, layer1 and layer2 frozen, 512 x 512"),
    ("maskdistill/voc", {"maskdistill.linear.enabled": True, "maskdistill.linear.epochs": 45, "maskdistill.linear.batch_size": 24,
                         "maskdistill.linear.lr": 0.1, "maskdistill.linear.lr_epochs": [25], "maskdistill.linear.weight_decay": 1e-4},
     "MaskDistill §A.2 (linear probe: 45 epochs, batch 24, SGD lr 0.1 -> 0.01 after 25, weight decay 1e-4)"),
    ("maskdistill/voc", {"paper.results": [["maskdistill-initial", "hungarian-iou", "miou", 39.0],
                                           ["maskdistill-maskrcnn", "hungarian-iou", "miou", 42.0],
                                           ["maskdistill", "hungarian-iou", "miou", 45.8],
                                           ["maskdistill-crf", "hungarian-iou", "miou", 48.9],
                                           ["maskdistill-linear", "linear-probe", "miou", 58.7],
                                           ["maskdistill-linear-crf", "linear-probe", "miou", 62.8]]},
     "MaskDistill Table 1 (39.0 / 42.0 / 45.8), Table S1 (+CRF 48.9), Table 2a (linear 58.7 / +CRF 62.8)"),
    ("maskdistill/coco20k", {"maskdistill.k": 80,
                             "paper.results": [["maskdistill", source, metric, value] for source, metric, value in (
                                 ("maskrcnn", "ap", 3.5), ("maskrcnn", "ap50", 7.7), ("maskrcnn", "ap75", 2.9),
                                 ("maskrcnn", "ap", 6.6), ("maskrcnn", "ap50", 14.6), ("maskrcnn", "ap75", 5.5),
                                 ("initial", "ap", 1.7))]},
     "MaskDistill Table 3 (f) multi and (d) single, COCO20k, MaskDistill† and MaskDistill"),
    ("alignseg/voc", {"backbone.model": "vit_small_patch16_224", "alignseg.k": 5, "alignseg.layers": 1,
                      "alignseg.local_crops": 2, "alignseg.batch_size": 32, "alignseg.epochs": 10,
                      "backbone.input_size": [448, 448], "evaluate.alignseg_size": 100,
                      "paper.results": [["alignseg", "alignseg", "miou", 69.5]]},
     "AlignSeg §V-A (ViT-S/16, L = 1, K = 5), Table II (a) crops 2, (c) batch 32 / 10 epochs, Table I (69.5); "
     "release eval_voc_config.yml (448 px, 100 x 100 maps)"),
    ("alignseg/cocostuff27", {"alignseg.k": 5, "dataset.setting": 27,
                              "paper.results": [["alignseg", "alignseg", "miou", 35.1]]},
     "AlignSeg Table I and Table II (d) (COCO-Stuff-27, trained on COCO: 35.1)"),
    ("croc/coco", {"backbone.model": "vit_small_patch16_224", "croc.epochs": 300, "croc.batch_size": 256,
                   "croc.alpha": 1.0, "croc.lam": 20.0, "croc.tau_s": 0.1, "croc.tau_t": 0.07,
                   "croc.lambda_pos": 4.0, "croc.k_start": 12, "croc.tokens": "values",
                   "croc.head_global_dim": 65536, "croc.head_dense_dim": 8192, "dataset.train_split": "train2017"},
     "CrOC §4.1 (ViT-S/16, COCO train2017, 300 epochs, batch 256, alpha 1, lambda 20, temperatures 0.1 / 0.07, "
     "lambda_pos 4, K_start 12, values tokens, heads 65 536 / 8 192)"),
    *[
        (f"croc/{row}", {"paper.results": [["kmeans", "hungarian", "miou", kmeans],
                                           ["backbone-eval/pretrain/linear-probe", "linear-probe", "miou", linear]],
                         "dataset.setting": setting, "backbone.weights": "results/coco-croc/croc/checkpoint.pth",
                         "backbone_eval.external": True, "backbone_eval.probe.train_fraction": fraction},
         f"CrOC Table 1 (linear, {name}: {linear}) and Table 3 (k-means, {name}: {kmeans}), ViT-S/16 / CC")
        for row, name, setting, kmeans, linear, fraction in (
            ("voc", "PVOC12", None, 16.1, 54.5, 1.0),
            ("coco-things", "CC-Th.", 12, 17.2, 55.6, 0.1),
            ("coco-stuff", "CC-St.", 15, 20.0, 49.7, 0.1),
        )
    ],
    *[
        (f"croc/{row}", {"backbone.model": "vit_small_patch16_224", "backbone.input_size": [448, 448],
                         "backbone_eval.probe.epochs": 25, "backbone_eval.probe.batch_size": 60,
                         "backbone_eval.probe.lr": 0.01, "backbone_eval.probe.optimizer": "sgd",
                         "backbone_eval.probe.momentum": 0.9, "backbone_eval.probe.weight_decay": 1e-4,
                         "backbone_eval.probe.lr_steps": [20], "backbone_eval.probe.lr_gamma": 0.1,
                         "backbone_eval.probe.standardise": False, "backbone_eval.probe.loss_size": 100},
         "CrOC §4.2 (linear layer on frozen spatial features), following Leopart's released linear probe "
         "(448 px, 1x1 conv on raw tokens, SGD 0.01 / momentum 0.9 / wd 1e-4, x0.1 after 20 of 25 epochs, batch 60, "
         "100 x 100 maps, a tenth of COCO train2017)")
        for row in ("voc", "coco-things", "coco-stuff")
    ],
    ("pass/imagenet-s50", {"pass.net.arch": "resnet18", "dataset.setting": 50,
                           "paper.results": [["pass", "imagenet-s", "miou", 35.7]]},
     "LUSS/PASS Sec. 3.1 (ResNet-18 for ImageNet-S50), Table 2 (Ours-S4, val 35.7)"),
    ("pass/imagenet-s50", {"pass.net.projector_hidden": 512, "pass.net.prototypes": 500, "pass.net.output_stride": 32,
                           "pass.net.upsample": 4, "pass.pretrain.local_crops": 6, "pass.pretrain.local_size": [96, 96],
                           "pass.pretrain.local_scale": [0.05, 0.14], "pass.pretrain.crop_scale": [0.14, 1.0],
                           "pass.pretrain.optimiser": "larc", "pass.pretrain.larc_trust": 0.001,
                           "pass.pretrain.larc_clip": False, "pass.pretrain.momentum": 0.9, "pass.pretrain.lr": 0.6,
                           "pass.pretrain.batch_size": 256, "pass.pretrain.queue_length": 2048,
                           "pass.pretrain.queue_start_epoch": 15, "pass.pretrain.epochs": 200,
                           "pass.finetune.optimiser": "larc", "pass.finetune.head": "fcn"},
     "PASS release scripts/luss50_pass.sh (nmb_crops 2 6, size_crops 224 96, LARC trust 0.001 clip False, "
     "hidden_mlp 512, queue 2048 from epoch 15) and src/resnet.py (stride 32, features upsampled 4x)"),
    *[
        (f"pass/imagenet-s{n}", {"pass.net.arch": "resnet50", "dataset.setting": n,
                                 "paper.results": [["pass", "imagenet-s", "miou", miou]]},
         f"LUSS/PASS Sec. 3.1 (ResNet-50), {table} (Ours-S4, val {miou})")
        for n, table, miou in ((300, "Table 2", 26.3), (919, "Table 3", 18.3))
    ],
    *[
        (f"pass/imagenet-s{n}", {"pass.net.projector_hidden": 2048, "pass.net.prototypes": 3000,
                                 "pass.pretrain.local_crops": 0, "pass.pretrain.crop_scale": [0.08, 1.0],
                                 "pass.pretrain.queue_length": 3840, "pass.pretrain.epochs": 100,
                                 "pass.pretrain.optimiser": "larc", "pass.net.output_stride": 32, "pass.net.upsample": 4},
         f"PASS release scripts/luss{n}_pass.sh (nmb_crops 2, min_scale 0.08, hidden_mlp 2048, 3000 prototypes, queue 3840)")
        for n in (300, 919)
    ],
    *[
        (f"pass/imagenet-s{n}-d", {"pass.finetune.head": "deeplabv3plus", "dataset.setting": n, "paper.row": row,
                                   "paper.results": [["pass", "imagenet-s", "miou", miou]]},
         f"LUSS/PASS {table} (Ours-D: the modified DeepLabV3+ head, val {miou})")
        for n, table, row, miou in ((50, "Table 2", "Ours-D, ImageNet-S50", 38.7), (300, "Table 2", "Ours-D, ImageNet-S300", 26.8),
                                    (919, "Table 3", "Ours-D, ImageNet-S", 19.7))
    ],
]
# fmt: on


@pytest.mark.parametrize(
    ("preset", "values", "citation"), PAPER_VALUES, ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(PAPER_VALUES)]
)
def test_preset_values_are_the_papers(preset: str, values: dict[str, Any], citation: str):
    cfg = preset_config(REPO / "configs" / "presets" / f"{preset}.yaml")
    for key, want in values.items():
        got = lookup(cfg, key)
        if key == "paper.results":
            got = [[r["column"], r["protocol"], r["metric"], r["value"]] for r in got]
        assert got == want, f"{key}: {got!r}, but {citation} says {want!r}"


def test_every_preset_is_in_the_table_and_names_its_paper_row():
    assert {p for p, _, _ in PAPER_VALUES} == {f"{p.parent.name}/{p.stem}" for p in PRESETS}
    for path in PRESETS:
        paper = preset_config(path)["paper"]
        assert paper["method"] == path.parent.name and paper["table"] and paper["row"]


# ---- paper shapes: every stage's models at each preset's shapes (tests/paper_shapes.py) ----------

_CHECKED: set[tuple[str, str, str]] = set()


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_stage_runs_one_step_at_the_presets_shapes(preset: Path):
    cfg = preset_config(preset)
    steps = [(m, stage, step) for m in preset_methods(cfg) for stage, step in SHAPE_STEPS.get(m, {}).items()]
    assert steps, f"no shape steps registered for {preset_methods(cfg)}"
    for method, stage, step in steps:
        key = (method, stage, step.signature(cfg))
        if key not in _CHECKED:  # presets that agree on what a step reads share one run of it
            step.run(cfg)
            _CHECKED.add(key)


def test_paper_figures_are_reported_beside_the_runs(tmp_path: Path):
    import json

    from useg.report.tables import paper_markdown, paper_rows

    (tmp_path / "alignseg").mkdir()
    metrics = {"protocols": {"alignseg": {"miou": 0.65, "pixel_accuracy": 0.8}}}
    (tmp_path / "alignseg" / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "maskdistill").mkdir()
    (tmp_path / "maskdistill" / "ap.json").write_text(json.dumps({"maskrcnn": {"semantic/multi": {"ap": 0.02}}}))
    paper = {
        "paper": "P", "table": "Table I", "row": "r",
        "results": [
            {"column": "alignseg", "protocol": "alignseg", "metric": "miou", "value": 69.5},
            {"column": "maskdistill", "file": "ap.json", "protocol": "maskrcnn", "setting": "semantic/multi",
             "metric": "ap", "value": 3.5},
            {"column": "transfgu", "protocol": "hungarian", "metric": "miou", "value": 10.0, "table": "Table 3"},
        ],
    }  # fmt: skip
    rows = paper_rows(paper, tmp_path)
    assert [(r["ours"], r["difference"]) for r in rows[:2]] == [pytest.approx((65.0, -4.5)), pytest.approx((2.0, -1.5))]
    assert rows[2]["ours"] is None and rows[2]["table"] == "Table 3" and rows[0]["table"] == "Table I"
    table = paper_markdown(paper, rows)
    assert "| alignseg | alignseg | miou | 69.50 | 65.00 | -4.50 | Table I |" in table
    assert "| transfgu | hungarian | miou | 10.00 | - | - | Table 3 |" in table  # not run (yet)


def test_a_json_config_reads_as_snakemake_reads_it(tmp_path: Path):
    import json

    # the report step re-runs Snakemake on the resolved config dumped as JSON: 1e-06 must stay a number
    (tmp_path / "run.json").write_text(json.dumps({"croc": {"min_lr": 1e-06}}))
    resolved = resolve_config([tmp_path / "run.json"])
    check_config(resolved)
    assert resolved.config["croc"]["min_lr"] == 1e-06
