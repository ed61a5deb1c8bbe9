"""Paper-shape smoke harness: the models of every preset's stages, built at the preset's shapes, one step each.

A step is a function of a preset's resolved config that builds a stage's model(s) the way the stage
does (the config's architecture, resolutions and K; random weights, nothing downloaded) and runs one
forward and backward pass on a batch of BATCH images at the stage's resolution. The tensors live on
PyTorch's `meta` device: every shape is computed, no arithmetic is done, so ViT-S/8 at 320 px or
DeepLab-v3 at 640 px cost no FLOPs on a CPU. What depends on the data rather than on the shapes
(k-means, Sinkhorn, Hungarian matching, NMS, the evaluation) is run by the integration tests.

A method adds a stage with `@shape_step("method", "stage", reads=(...))`, `reads` naming the config keys
the step depends on (dotted paths): presets that agree on them share one run of the step.
tests/unit/test_presets.py runs every step registered for the methods of every preset.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tests.conftest import REPO
from useg.train.distributed import without_gpus

PRESETS = sorted((REPO / "configs" / "presets").glob("*/*.yaml"))
META = torch.device("meta")
BATCH = 2

Config = dict[str, Any]
Step = Callable[[Config], None]
CLASSES = ("dataset.kind", "dataset.setting")  # what dataset_classes() reads


@dataclass(frozen=True)
class ShapeStep:
    """One stage's shape check and the config keys it depends on."""

    run: Step
    reads: tuple[str, ...]

    def signature(self, cfg: Config) -> str:
        """The values of the keys the step reads: equal signatures, equal checks."""
        return json.dumps([lookup(cfg, key) for key in self.reads], sort_keys=True)


SHAPE_STEPS: dict[str, dict[str, ShapeStep]] = {}


def shape_step(method: str, stage: str, reads: tuple[str, ...]) -> Callable[[Step], Step]:
    """Register `step` as the shape check of one stage of `method` (a method of `methods`, or croc)."""

    def register(step: Step) -> Step:
        SHAPE_STEPS.setdefault(method, {})[stage] = ShapeStep(step, ("backbone", "seed", *reads))
        return step

    return register


def lookup(cfg: Config, key: str) -> Any:
    """The value at a dotted key path."""
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


@functools.cache
def preset_config(path: Path) -> Config:
    """The resolved and validated config of a preset file."""
    from useg.config.layers import check_config, resolve_config

    resolved = resolve_config([path])
    check_config(resolved)
    return resolved.config


def preset_methods(cfg: Config) -> list[str]:
    """The methods whose stages a preset's run builds: its `methods`, croc when it pretrains, and the backbone
    evaluation's linear probe when it runs (on the backbone the run pretrains, or on an external one)."""
    pretrains = cfg["backbone"]["weights"] == "pretrain"
    evaluation = cfg["backbone_eval"]
    probes = evaluation["enabled"] and (pretrains or evaluation["external"]) and "linear-probe" in evaluation["protocols"]
    return [*cfg["methods"], *(["croc"] if pretrains else []), *(["linear-probe"] if probes else [])]


def dataset_classes(dataset: Config) -> tuple[int, int]:
    """(classes C, thing classes) of a benchmark dataset's label setting (ImageNet-S: setting + background)."""
    from useg.data.labels import label_setting

    kind, setting = dataset["kind"], dataset["setting"]
    if kind == "imagenet-s":
        return setting + 1, setting
    name = {"voc": "voc", "coco20k": "cocostuff-80"}.get(kind, f"{kind}-{setting}")
    labels = label_setting(name)
    return len(labels.classes), len(labels.things)


def images(size: list[int] | tuple[int, int]) -> Tensor:
    """A batch of BATCH normalised images [B, 3, H, W] on the meta device."""
    return torch.empty(BATCH, 3, *size, device=META)


def on_meta(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """A module built with every parameter and buffer on the meta device."""
    with torch.device(META):
        return build()


def vit(cfg: Config, size: list[int] | None = None):
    """The preset's ViT (random weights) for inputs of `size` (default: backbone.input_size), on meta."""
    section = {**cfg["backbone"], "weights": "random", "input_size": size or cfg["backbone"]["input_size"]}
    return _vit(json.dumps(section, sort_keys=True))


@functools.cache
def _vit(section: str):
    """One meta ViT per backbone section (timm's weight init skipped: meta tensors hold no values)."""
    from useg.backbones.vit import BackboneConfig, ViTBackbone, create_vit

    bcfg = BackboneConfig.from_dict({**json.loads(section), "timm_kwargs": {"weight_init": "skip"}})
    return on_meta(lambda: ViTBackbone(create_vit(bcfg), name=bcfg.name))


def grid_of(size: list[int], patch: int) -> tuple[int, int]:
    """The patch grid of a `size` input; the size must be a multiple of the patch size, as every stage checks."""
    assert size[0] % patch == 0 and size[1] % patch == 0, f"{size} is not a multiple of the patch size {patch}"
    return size[0] // patch, size[1] // patch


def backward(*outputs: Tensor) -> None:
    """One backward pass through every output (shape-checks the gradients of the trainable parameters)."""
    sum(o.float().sum() for o in outputs).backward()


def check_features(cfg: Config, size: list[int], qkv_block: int = -1, trainable: bool = False):
    """The ViT at `size`: tokens, CLS attention and q/k/v of `qkv_block` with the grid the stores record.
    A frozen backbone (every stage but CrOC's pretraining) runs without gradients, once per input shape."""
    backbone = vit(cfg, size)
    if trainable:
        out = backbone(images(size), qkv_blocks=(qkv_block,))
    else:
        out = forward(backbone, tuple(size), qkv_block)
    grid = grid_of(size, backbone.patch_size)
    assert out.patches.shape == (BATCH, *grid, backbone.embed_dim)
    assert out.attn.shape == (BATCH, backbone.num_heads, *grid)
    return backbone, out


@functools.cache
def forward(backbone: torch.nn.Module, size: tuple[int, int], qkv_block: int):
    """A frozen backbone's outputs on a meta batch of `size` (no autograd graph, so they can be shared)."""
    with torch.no_grad():
        return backbone(images(size), qkv_blocks=(qkv_block,))


# ---- steps shared by the methods that read the ViT's features ------------------------------------


def features_step(cfg: Config) -> None:
    """features: a FeatureStore shard's batch at backbone.input_size."""
    check_features(cfg, cfg["backbone"]["input_size"])


for _method in ("kmeans", "transfgu", "alignseg", "maskdistill"):
    shape_step(_method, "features", reads=())(features_step)


# ---- CrOC ----------------------------------------------------------------------------------------


@shape_step("croc", "pretrain", reads=("croc",))
def croc_pretrain(cfg: Config) -> None:
    """pretrain: student ViT on two views of croc.view_size, both heads at their output widths (eq. 3, 5)."""
    from useg.methods.croc.heads import CrOCHead

    croc = cfg["croc"]
    backbone, out = check_features(cfg, croc["view_size"], croc["block"], trainable=True)
    dims = [croc[f"head_{name}_dim"] for name in ("hidden", "bottleneck", "global", "dense")]
    head = on_meta(lambda: CrOCHead(backbone.embed_dim, *dims))
    image_logits = head.image(out.cls)
    centroids = out.patches.flatten(1, 2)[:, : croc["k_start"]]  # [B, K_start, D]: one token per centroid
    dense_logits = head.centroid(centroids)
    assert image_logits.shape == (BATCH, croc["head_global_dim"])
    assert dense_logits.shape[-1] == croc["head_dense_dim"]
    backward(image_logits, dense_logits)


# ---- backbone evaluation -------------------------------------------------------------------------


@shape_step("linear-probe", "train", reads=("backbone_eval.probe.loss_size", *CLASSES))
def linear_probe_train(cfg: Config) -> None:
    """linear-probe: the 1x1 conv on the frozen patch grid, logits at the loss size (CrOC Sec. 4.2)."""
    from useg.eval.probe import loss_size

    backbone, out = check_features(cfg, cfg["backbone"]["input_size"])
    classes = dataset_classes(cfg["dataset"])[0]
    probe = on_meta(lambda: torch.nn.Conv2d(backbone.embed_dim, classes, 1))
    size = loss_size(cfg["backbone_eval"]["probe"], tuple(cfg["backbone"]["input_size"]))
    logits = F.interpolate(probe(out.patches.permute(0, 3, 1, 2)), size=size, mode="bilinear", align_corners=False)
    assert logits.shape == (BATCH, classes, *size)
    backward(F.cross_entropy(logits, torch.empty(BATCH, *size, dtype=torch.long, device=META), ignore_index=-100))


# ---- TransFGU ------------------------------------------------------------------------------------


def transfgu_labels(cfg: Config) -> int:
    """Labels of the TransFGU decoder: K concepts (+ the eq. 8 background map when foreground_only)."""
    from useg.methods.transfgu.concepts import concept_counts

    t = cfg["transfgu"]
    classes, things = dataset_classes(cfg["dataset"])
    k = t["k"] or classes
    if t["foreground_prior"] and not t["foreground_only"]:
        concept_counts(k, t["k_fg"], things)  # K_fg and K_bg must both be positive
    return k + int(t["foreground_only"])


@shape_step("transfgu", "crops", reads=("transfgu.crop_size",))
def transfgu_crops(cfg: Config) -> None:
    """crops: CLS tokens of crops resized to crop_size x crop_size (§4.2)."""
    side = cfg["transfgu"]["crop_size"]
    check_features(cfg, [side, side])


TRANSFGU_LABELS = ("transfgu.k", "transfgu.k_fg", "transfgu.foreground_prior", "transfgu.foreground_only", *CLASSES)


@shape_step("transfgu", "train", reads=(*TRANSFGU_LABELS, "transfgu.decoder"))
def transfgu_train(cfg: Config) -> None:
    """train / bootstrap rounds: the Segmenter on the frozen patch grid, K masks and K class embeddings (eq. 2)."""
    from useg.methods.transfgu.segmenter import Segmenter, SegmenterConfig

    backbone, out = check_features(cfg, cfg["backbone"]["input_size"])
    labels = transfgu_labels(cfg)
    model = on_meta(lambda: Segmenter(SegmenterConfig(backbone.embed_dim, labels, **cfg["transfgu"]["decoder"])))
    masks, classes = model(out.patches)
    assert masks.shape == (BATCH, labels, *out.grid)
    target = torch.empty(BATCH, *out.grid, dtype=torch.long, device=META)
    backward(F.cross_entropy(masks, target), classes)


# ---- AlignSeg ------------------------------------------------------------------------------------


ALIGNSEG_DECODER = ("alignseg.k", "alignseg.layers", "alignseg.heads", *CLASSES)


def alignseg_decoder(cfg: Config, dim: int):
    """The prototype decoder as alignseg-train builds it (K = alignseg.k or the number of classes)."""
    from useg.methods.alignseg.decoder import PrototypeDecoder
    from useg.methods.alignseg.train import AlignSegConfig

    section = AlignSegConfig(**without_gpus(cfg["alignseg"]))
    k = section.k or dataset_classes(cfg["dataset"])[0]
    return on_meta(lambda: PrototypeDecoder(section.decoder(dim, k))), k


@shape_step("alignseg", "train", reads=(*ALIGNSEG_DECODER, "alignseg.global_size", "alignseg.local_size"))
def alignseg_train(cfg: Config) -> None:
    """train: prototypes queried by the global and the local crops' tokens (eq. 1-2)."""
    from useg.methods.alignseg.decoder import similarity

    a = cfg["alignseg"]
    backbone, global_out = check_features(cfg, a["global_size"])
    _, local_out = check_features(cfg, a["local_size"])
    decoder, k = alignseg_decoder(cfg, backbone.embed_dim)
    scores = []
    for out in (global_out, local_out):
        tokens = out.patches.flatten(1, 2)
        scores.append(similarity(tokens, decoder(tokens)))
        assert scores[-1].shape == (BATCH, out.grid[0] * out.grid[1], k)
    backward(*scores)


@shape_step("alignseg", "predict", reads=ALIGNSEG_DECODER)
def alignseg_predict(cfg: Config) -> None:
    """predict: every eval image segmented by its own prototypes at backbone.input_size (eq. 3)."""
    from useg.methods.alignseg.decoder import segment

    backbone, out = check_features(cfg, cfg["backbone"]["input_size"])
    decoder, k = alignseg_decoder(cfg, backbone.embed_dim)
    assert segment(decoder, out.patches).shape == (BATCH, k, *out.grid)


# ---- MaskDistill ---------------------------------------------------------------------------------


def maskdistill_clusters(cfg: Config) -> int:
    """C: maskdistill.k, or the number of classes - 1 (the last label is the background)."""
    return cfg["maskdistill"]["k"] or dataset_classes(cfg["dataset"])[0] - 1


def model_section(cfg: Config, name: str) -> Config:
    """A MaskDistill model section as its stage passes it (random weights; the ViT config for a vit backbone)."""
    return {**cfg["maskdistill"][name], "weights": "random", "vit": {**cfg["backbone"], "weights": "random"}}


@shape_step("maskdistill", "masks", reads=("maskdistill.mask_short_side",))
def maskdistill_masks(cfg: Config) -> None:
    """masks: q/k of the last block at the working size, or with mask_short_side at a 375 x 500 VOC image's
    short-side size padded to whole patches (eq. 1-2)."""
    from useg.methods.maskdistill.masks import short_side_shape

    size, side = cfg["backbone"]["input_size"], cfg["maskdistill"].get("mask_short_side")
    if side is not None:
        patch = vit(cfg).patch_size
        size = [-(-n // patch) * patch for n in short_side_shape((375, 500), side)]
    _, out = check_features(cfg, size)
    q, k, _ = out.qkv[max(out.qkv)]
    assert q.shape == k.shape and q.shape[2] == 1 + out.grid[0] * out.grid[1]


@shape_step("maskdistill", "maskrcnn", reads=("maskdistill.k", "maskdistill.maskrcnn", *CLASSES))
def maskdistill_maskrcnn(cfg: Config) -> None:
    """maskrcnn: the detector for C clusters; its backbone and RPN head at the largest training short side,
    the one it is tested at (§A.1)."""
    from useg.methods.maskdistill.models import build_maskrcnn

    size = cfg["backbone"]["input_size"]
    section = model_section(cfg, "maskrcnn")
    model = on_meta(lambda: build_maskrcnn(section, maskdistill_clusters(cfg), tuple(size), cfg["seed"]))
    side = round(max(section["train_scales"]) * min(size))
    assert side <= model.transform.max_size, "the largest training scale exceeds the detector's max_size"
    features = model.backbone(images([side, side]))
    objectness, boxes = model.rpn.head(list(features.values()))
    anchors_per_place = model.rpn.anchor_generator.num_anchors_per_location()
    assert [o.shape[1] for o in objectness] == anchors_per_place
    backward(*objectness, *boxes)


@shape_step("maskdistill", "deeplab", reads=("maskdistill.k", "maskdistill.deeplab", *CLASSES))
def maskdistill_deeplab(cfg: Config) -> None:
    """deeplab: DeepLab-v3 for the C + 1 labels of the confident bank at the working size (eq. 4)."""
    from useg.methods.maskdistill.models import build_deeplab

    size = cfg["backbone"]["input_size"]
    labels = maskdistill_clusters(cfg) + 1
    model = on_meta(lambda: build_deeplab(model_section(cfg, "deeplab"), labels, cfg["seed"]).train())
    logits = model(images(size))["out"]
    assert logits.shape[:2] == (BATCH, labels)
    backward(logits)


# ---- PASS ----------------------------------------------------------------------------------------


def pass_net_config(cfg: Config):
    """pass.net as the PASS stages read it (random weights)."""
    from useg.methods.pass_.model import NetConfig

    return NetConfig(**{**cfg["pass"]["net"], "weights": "random"})


@shape_step(
    "pass", "pretrain", reads=("pass.net", "pass.pretrain.view_size", "pass.pretrain.local_crops", "pass.pretrain.local_size", "pass.saliency_prior")
)
def pass_pretrain(cfg: Config) -> None:
    """pass-pretrain: trunk on the global views (and any local views), pixel attention, projector, prototype scores."""
    from useg.methods.pass_.model import PASSNet

    net = on_meta(lambda: PASSNet(pass_net_config(cfg)).train())
    section = cfg["pass"]["pretrain"]
    crops = [images(section["view_size"])] * 2 + [images(section["local_size"])] * section["local_crops"]
    scores = net(crops)[3]
    assert [s.shape for s in scores] == [(BATCH, cfg["pass"]["net"]["prototypes"])] * len(crops)
    backward(*scores)
    if cfg["pass"]["saliency_prior"]:  # the prior is the backbone's CLS attention on the train split
        check_features(cfg, cfg["backbone"]["input_size"])


@shape_step("pass", "finetune", reads=("pass.net", "pass.k", "pass.input_size", "pass.finetune.head", *CLASSES))
def pass_finetune(cfg: Config) -> None:
    """pass-finetune / threshold / predict: the segmentation head's CAM for the C pseudo categories (Sec. 3.1)."""
    from useg.methods.pass_.model import SegmentationNet

    k = cfg["pass"]["k"] or dataset_classes(cfg["dataset"])[1]
    model = on_meta(lambda: SegmentationNet(pass_net_config(cfg), k, cfg["pass"]["finetune"]["head"]).train())
    cam = model.cam(images(cfg["pass"]["input_size"]))
    assert cam.shape[:2] == (BATCH, k)
    backward(cam)
