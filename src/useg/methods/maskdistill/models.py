"""torchvision Mask R-CNN and DeepLab-v3 as MaskDistill configures them (§3.2, §3.3, §A.1, §A.3)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from useg.backbones.weights import load_state_into, read_state_dict
from useg.errors import ConfigError
from useg.train import save_checkpoint

RESNET_LAYERS = ("conv1", "layer1", "layer2", "layer3", "layer4")
SMALL_RESNETS = ("resnet18", "resnet34")  # BasicBlock ResNets: torchvision cannot dilate them


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (every ResNet width is a multiple of 32)."""
    return nn.GroupNorm(32, channels)


def resnet(name: str, weights: str, dilated: bool = False) -> nn.Module:
    """A torchvision ResNet from a local state-dict file (frozen BatchNorm, as detectors fine-tune), or random
    with GroupNorm (32 groups), which trains from scratch with small batches and images (He et al., 2019)."""
    import torchvision
    from torchvision.ops import FrozenBatchNorm2d

    random_init = weights == "random"
    kwargs: dict[str, Any] = {"weights": None, "norm_layer": group_norm if random_init else FrozenBatchNorm2d}
    if dilated:
        if name in SMALL_RESNETS:
            raise ConfigError(f"maskdistill.deeplab.backbone {name} cannot be dilated; use resnet50, resnet101 or mobilenet_v3_large")
        kwargs["replace_stride_with_dilation"] = [False, True, True]
    model = getattr(torchvision.models, name)(**kwargs)
    if not random_init:
        state = {k: v for k, v in read_state_dict(weights).items() if not k.startswith("fc.")}
        model.fc = nn.Identity()
        load_state_into(model, state, weights)
    return model


def freeze_stages(model: nn.Module, frozen: int) -> None:
    """Freeze the stem and the first `frozen` − 1 residual stages (frozen = 2: stem + layer1, as §4.1)."""
    for name in RESNET_LAYERS[:frozen]:
        getattr(model, name).requires_grad_(False)
        if name == "conv1":
            model.bn1.requires_grad_(False)


def out_channels(stage: nn.Module) -> int:
    """Output channels of a ResNet stage (the last convolution of its last block)."""
    return [m for m in stage[-1].modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def anchor_sizes(short_side: int, levels: int = 5) -> tuple[tuple[int, ...], ...]:
    """Detectron's anchors 32·2^i px at an 800 px short side, scaled to the working short side."""
    return tuple((max(2, round(32 * 2**i * short_side / 800)),) for i in range(levels))


def build_maskrcnn(cfg: dict[str, Any], num_clusters: int, input_size: tuple[int, int], seed: int) -> nn.Module:
    """Mask R-CNN (ResNet-FPN) for C clusters (+ torchvision's background class 0), §3.2 eq. 3."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    torch.manual_seed(seed)
    body = resnet(cfg["backbone"], cfg["weights"])
    freeze_stages(body, 5 - cfg["trainable_layers"])
    stage_channels = [out_channels(getattr(body, f"layer{i + 1}")) for i in range(4)]
    fpn = cfg["fpn_channels"]
    backbone = BackboneWithFPN(
        body, {f"layer{i + 1}": str(i) for i in range(4)}, stage_channels, fpn
    )
    short = min(input_size)
    lo, hi = (round(s * short) for s in cfg["train_scales"])
    head = cfg["head_dim"]
    sizes = anchor_sizes(short)
    return MaskRCNN(
        backbone,
        min_size=tuple(range(lo, hi + 1, 8)) if hi > lo else (hi,),
        max_size=2 * max(input_size),
        rpn_anchor_generator=AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes)),
        rpn_pre_nms_top_n_train=cfg["proposals"],
        rpn_post_nms_top_n_train=cfg["proposals"],
        rpn_pre_nms_top_n_test=max(1, cfg["proposals"] // 2),
        rpn_post_nms_top_n_test=max(1, cfg["proposals"] // 2),
        box_batch_size_per_image=cfg["roi_batch_size"],
        box_head=TwoMLPHead(fpn * 7 * 7, head),
        box_predictor=FastRCNNPredictor(head, num_clusters + 1),
        mask_head=MaskRCNNHeads(fpn, (head // 4,) * 4, 1),
        mask_predictor=MaskRCNNPredictor(head // 4, head // 4, num_clusters + 1),
        box_score_thresh=cfg["min_score"],
        box_detections_per_img=cfg["max_candidates"],
    )


def inference_size(model: nn.Module, input_size: tuple[int, int]) -> None:
    """Inference at the working size (the paper tests at its largest training scale)."""
    model.transform.min_size = (min(input_size),)


def build_deeplab(cfg: dict[str, Any], num_labels: int, seed: int) -> nn.Module:
    """DeepLab-v3 with a dilated ResNet-50/101 (§4.1), or for small CPU runs MobileNet-v3 or a ResNet-18/34
    truncated after layer3 (output stride 16, like the dilated ResNets')."""
    from torchvision.models import segmentation
    from torchvision.models._utils import IntermediateLayerGetter

    torch.manual_seed(seed)
    if cfg["backbone"] == "mobilenet_v3_large":
        if cfg["weights"] != "random" or cfg["frozen_stages"]:
            raise ConfigError("maskdistill.deeplab: mobilenet_v3_large takes weights: random and frozen_stages: 0")
        return segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_labels)
    small = cfg["backbone"] in SMALL_RESNETS  # no dilation in BasicBlocks: stop after layer3 (stride 16)
    body = resnet(cfg["backbone"], cfg["weights"], dilated=not small)
    freeze_stages(body, cfg["frozen_stages"])
    last = "layer3" if small else "layer4"
    head = segmentation.deeplabv3.DeepLabHead(out_channels(getattr(body, last)), num_labels)
    return segmentation.DeepLabV3(IntermediateLayerGetter(body, {last: "out"}), head)


def save_model(path: str | Path, model: nn.Module, kind: str, cfg: dict[str, Any], **extra: Any) -> None:
    """Atomic checkpoint: the architecture config (to rebuild) and the weights."""
    save_checkpoint(path, {"kind": kind, "config": cfg, "state_dict": model.state_dict(), **extra})


def load_model(path: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state dict, checkpoint fields) of a saved model of `kind`."""
    state = torch.load(path, map_location="cpu", weights_only=True) if Path(path).is_file() else None
    if state is None or state.get("kind") != kind:
        raise ConfigError(f"{path} is not a {kind} checkpoint: rerun the stage that writes it")
    return state["state_dict"], state


def num_parameters(model: nn.Module) -> str:
    """Trainable / total parameter counts, for the log."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{trainable / 1e6:.2f} M trainable of {total / 1e6:.2f} M"


def step_lr(base: float, iteration: int, total: int, warmup: int, steps: list[float], gamma: float = 0.1) -> float:
    """Linear warmup over `warmup` iterations, then ×gamma at every fraction of `total` in `steps` (§A.1, §4.1)."""
    factor = gamma ** sum(iteration >= math.floor(s * total) for s in steps)
    if iteration < warmup:
        factor *= 0.001 + (1 - 0.001) * iteration / warmup
    return base * factor
