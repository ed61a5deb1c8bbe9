"""torchvision Mask R-CNN and DeepLab-v3 as MaskDistill configures them (§3.2, §3.3, §A.1, §A.3)."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from useg.backbones.weights import load_state_into, read_state_dict
from useg.errors import ConfigError
from useg.train import checkpoint

RESNET_LAYERS = ("conv1", "layer1", "layer2", "layer3", "layer4")
C4_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")  # stem + res2-res4
SMALL_RESNETS = ("resnet18", "resnet34")  # BasicBlock ResNets: torchvision cannot dilate them
VIT = "vit"  # the pipeline's own self-supervised backbone (config section `backbone`), frozen
FROM_STATE_DICT = "<model.pt>"  # ViT weights of a rebuilt model: loaded with the model's state dict


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (every ResNet width is a multiple of 32)."""
    return nn.GroupNorm(32, channels)


def resnet(name: str, weights: str, dilated: bool = False, norm: str = "batch") -> nn.Module:
    """A torchvision ResNet from a local state-dict file, with trainable BatchNorm (`batch`, the release's
    (Sync)BN) or frozen BatchNorm (`frozen`, as Detectron fine-tunes); or random with GroupNorm (32 groups),
    which trains from scratch with small batches and images (He et al., 2019)."""
    import torchvision
    from torchvision.ops import FrozenBatchNorm2d

    random_init = weights == "random"
    pretrained_norm = nn.BatchNorm2d if norm == "batch" else FrozenBatchNorm2d
    kwargs: dict[str, Any] = {"weights": None, "norm_layer": group_norm if random_init else pretrained_norm}
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


def frozen_norms(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm2d replaced by a FrozenBatchNorm2d holding its affine weights and running
    statistics: a frozen stage neither learns nor updates its statistics (the release puts them in eval mode)."""
    from torchvision.ops import FrozenBatchNorm2d

    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(frozen, name).copy_(getattr(module, name).detach())
        return frozen
    for name, child in module.named_children():
        setattr(module, name, frozen_norms(child))
    return module


def freeze_stages(model: nn.Module, frozen: int) -> None:
    """Freeze the stem and the first `frozen` − 1 residual stages, their BatchNorm statistics included
    (2: stem + layer1, the paper's "first two ResNet blocks"; 3: + layer2, the release's DeepLab-v3)."""
    for name in RESNET_LAYERS[:frozen]:
        setattr(model, name, frozen_norms(getattr(model, name)).requires_grad_(False))
        if name == "conv1":
            model.bn1 = frozen_norms(model.bn1).requires_grad_(False)


def out_channels(stage: nn.Module) -> int:
    """Output channels of a ResNet stage (the last convolution of its last block)."""
    return [m for m in stage[-1].modules() if isinstance(m, nn.Conv2d)][-1].out_channels


class FrozenViT(nn.Module):
    """The pipeline's ViT as a frozen dense feature extractor: images [B, 3, H, W] -> patch map [B, D, h, w]
    (input padded at the bottom/right to a multiple of the patch size)."""

    def __init__(self, backbone_cfg: dict[str, Any], weights: str | None) -> None:
        super().__init__()
        from useg.backbones import BackboneConfig, build_backbone
        from useg.backbones.vit import ViTBackbone, create_vit

        cfg = BackboneConfig.from_dict(backbone_cfg)
        if cfg.weights == FROM_STATE_DICT:  # the caller loads a saved model's state dict next
            self.vit = ViTBackbone(create_vit(cfg).eval(), name=cfg.name)
        else:
            self.vit = build_backbone(cfg, weights)
        self.vit.requires_grad_(False)
        self.out_channels = self.vit.embed_dim

    def train(self, mode: bool = True) -> FrozenViT:
        """The ViT stays in eval mode (frozen, no dropout) whatever the mode of the model around it."""
        super().train(mode)
        self.vit.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        """Patch tokens of the last block as a feature map at stride patch_size."""
        patch = self.vit.patch_size
        height, width = images.shape[-2:]
        images = F.pad(images, (0, -width % patch, 0, -height % patch))
        with torch.no_grad():
            return self.vit(images).patches.permute(0, 3, 1, 2).contiguous()


class SimplePyramid(nn.Module):
    """ViTDet's simple feature pyramid on a single stride-s map: strides s/2, s, 2s, 4s (+ max-pooled 8s),
    each projected to `channels` by a 1x1 and a 3x3 convolution with GroupNorm, as torchvision's FPN names them."""

    def __init__(self, body: FrozenViT, channels: int) -> None:
        super().__init__()
        self.body, self.out_channels = body, channels
        dim = body.out_channels
        self.upsample = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
        self.projections = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(dim, channels, 1), nn.GroupNorm(min(32, channels // 4), channels),
                nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(min(32, channels // 4), channels),
            )  # fmt: skip
            for _ in range(4)
        )

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """Levels "0"-"3" and "pool", finest first."""
        x = self.body(images)
        scales = [self.upsample(x), x, F.max_pool2d(x, 2), F.max_pool2d(x, 4)]
        levels = OrderedDict((str(i), proj(f)) for i, (proj, f) in enumerate(zip(self.projections, scales)))
        levels["pool"] = F.max_pool2d(levels["3"], 1, 2)
        return levels


def check_vit_options(cfg: dict[str, Any], section: str) -> None:
    """`backbone: vit` takes the `backbone` section's weights; a ResNet weights file here would be ignored."""
    if cfg["weights"] != "random":
        raise ConfigError(
            f"maskdistill.{section}.weights applies to ResNet backbones; with backbone: vit the weights are the"
            " `backbone` section's (set weights: random here)"
        )
    if "vit" not in cfg:
        raise ConfigError(f"maskdistill.{section}.backbone: vit needs the `backbone` section in the stage parameters")


def for_rebuild(cfg: dict[str, Any]) -> dict[str, Any]:
    """A saved model's config whose ViT is built without weights: the checkpoint's state dict holds them."""
    return {**cfg, "vit": {**cfg["vit"], "weights": FROM_STATE_DICT}} if cfg["backbone"] == VIT else cfg


def anchor_sizes(short_side: int, top: float, levels: int = 5) -> tuple[tuple[int, ...], ...]:
    """One anchor size per pyramid level, doubling level to level up to `top` × the short side at the coarsest
    (Detectron's 32·2^i px at an 800 px short side: top = 512 / 800 = 0.64)."""
    return tuple((max(2, round(top * short_side / 2 ** (levels - 1 - i))),) for i in range(levels))


def detection_resnet(cfg: dict[str, Any]) -> nn.Module:
    """The detector's ResNet with the top `trainable_layers` of its five stages trained, the rest frozen (§A.1)."""
    body = resnet(cfg["backbone"], cfg["weights"], norm=cfg["norm"])
    freeze_stages(body, 5 - cfg["trainable_layers"])
    return body


def resnet_fpn(cfg: dict[str, Any]) -> nn.Module:
    """ResNet-FPN with the top `trainable_layers` stages trained (§A.1)."""
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    body = detection_resnet(cfg)
    stage_channels = [out_channels(getattr(body, f"layer{i + 1}")) for i in range(4)]
    return BackboneWithFPN(body, {f"layer{i + 1}": str(i) for i in range(4)}, stage_channels, cfg["fpn_channels"])


class C4Body(nn.Module):
    """Detectron's ResNet-C4 backbone: the stem and res2-res4 as one stride-16 feature map {"0": C4}."""

    def __init__(self, resnet_model: nn.Module) -> None:
        super().__init__()
        self.stages = nn.Sequential(*(getattr(resnet_model, name) for name in C4_STAGES))
        self.out_channels = out_channels(resnet_model.layer3)

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """The res4 feature map under the one key the RPN and the RoI pools read."""
        return OrderedDict([("0", self.stages(images))])


class PooledRes5(nn.Module):
    """The R50-C4 box head: res5 on each 14 x 14 RoI, then global average pooling (Mask R-CNN §3, Fig. 4 left)."""

    def __init__(self, res5: nn.Module) -> None:
        super().__init__()
        self.res5 = res5

    def forward(self, rois: Tensor) -> Tensor:
        """[R, C4, 14, 14] RoI features -> [R, C5] box features."""
        return self.res5(rois).mean(dim=(2, 3))


def resnet_c4(cfg: dict[str, Any]) -> tuple[C4Body, nn.Module]:
    """(ResNet-C4 body, its res5 stage) with the top `trainable_layers` stages trained, res5 counted as the top (§A.1)."""
    if cfg["backbone"] == VIT:
        raise ConfigError("maskdistill.maskrcnn.head: c4 needs a ResNet backbone; set maskrcnn.backbone to a resnet or head: fpn")
    body = detection_resnet(cfg)
    return C4Body(body), body.layer4


def detection_backbone(cfg: dict[str, Any], weights: str | None) -> nn.Module:
    """The multi-level backbone of Mask R-CNN: ResNet-FPN, or the frozen pipeline ViT with a simple pyramid."""
    if cfg["backbone"] != VIT:
        return resnet_fpn(cfg)
    check_vit_options(cfg, "maskrcnn")
    return SimplePyramid(FrozenViT(cfg["vit"], weights), cfg["fpn_channels"])


def build_maskrcnn(
    cfg: dict[str, Any], num_clusters: int, input_size: tuple[int, int], seed: int, weights: str | None = None
) -> nn.Module:
    """Mask R-CNN for C clusters (+ torchvision's background class 0), §3.2 eq. 3: a multi-level backbone
    (`head: fpn`) or the paper's R50-C4 (`head: c4`); `weights` is the checkpoint of a `backbone.weights:
    pretrain` ViT when cfg["backbone"] is vit."""
    from torchvision.models.detection import MaskRCNN

    short = min(input_size)
    lo, hi = (round(s * short) for s in cfg["train_scales"])
    torch.manual_seed(seed)
    parts = c4_parts(cfg, num_clusters, short, seed) if cfg["head"] == "c4" else fpn_parts(cfg, num_clusters, short, seed, weights)
    return MaskRCNN(
        min_size=tuple(range(lo, hi + 1, 8)) if hi > lo else (hi,),
        max_size=2 * max(input_size),
        rpn_pre_nms_top_n_train=cfg["proposals"],
        rpn_post_nms_top_n_train=cfg["proposals"],
        rpn_pre_nms_top_n_test=max(1, cfg["proposals"] // 2),
        rpn_post_nms_top_n_test=max(1, cfg["proposals"] // 2),
        box_batch_size_per_image=cfg["roi_batch_size"],
        box_score_thresh=cfg["min_score"],
        box_detections_per_img=cfg["max_candidates"],
        **parts,
    )


def fpn_parts(cfg: dict[str, Any], num_clusters: int, short: int, seed: int, weights: str | None) -> dict[str, Any]:
    """Backbone, anchors and heads of the FPN Mask R-CNN: one anchor size per pyramid level, a 2-MLP box head
    and a 4-conv mask head on the pyramid's RoIs (torchvision's maskrcnn_resnet50_fpn at our widths)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    backbone = detection_backbone(cfg, weights)
    torch.manual_seed(seed)  # the heads' draws do not depend on the backbone's
    fpn, head = cfg["fpn_channels"], cfg["head_dim"]
    sizes = anchor_sizes(short, cfg["anchor_top"])
    return {
        "backbone": backbone,
        "rpn_anchor_generator": AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes)),
        "box_head": TwoMLPHead(fpn * 7 * 7, head),
        "box_predictor": FastRCNNPredictor(head, num_clusters + 1),
        "mask_head": MaskRCNNHeads(fpn, (head // 4,) * 4, 1),
        "mask_predictor": MaskRCNNPredictor(head // 4, head // 4, num_clusters + 1),
    }


def c4_parts(cfg: dict[str, Any], num_clusters: int, short: int, seed: int) -> dict[str, Any]:
    """Backbone, anchors and heads of R50-C4 Mask R-CNN (Detectron's, the paper's §A.1): the RPN with every
    anchor size on the one stride-16 map, 14 x 14 RoIAlign, res5 + average pooling as the box head and the same
    res5 under the mask branch's 2x deconvolution to 14 x 14 masks (Mask R-CNN Fig. 4 left)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    body, res5 = resnet_c4(cfg)
    torch.manual_seed(seed)  # the heads' draws do not depend on the backbone's
    sizes = tuple(size for (size,) in anchor_sizes(short, cfg["anchor_top"]))
    res5_channels = out_channels(res5)
    return {
        "backbone": body,
        "rpn_anchor_generator": AnchorGenerator((sizes,), ((0.5, 1.0, 2.0),)),
        "box_roi_pool": MultiScaleRoIAlign(["0"], 14, 0),
        "box_head": PooledRes5(res5),
        "box_predictor": FastRCNNPredictor(res5_channels, num_clusters + 1),
        "mask_roi_pool": MultiScaleRoIAlign(["0"], 14, 0),
        "mask_head": res5,
        "mask_predictor": MaskRCNNPredictor(res5_channels, cfg["head_dim"] // 4, num_clusters + 1),
    }


def inference_size(model: nn.Module, input_size: tuple[int, int], train_scales: list[float]) -> None:
    """Inference at the largest training scale of the working short side, as the paper (§A.1: trained
    at 480-800 px, tested at 800)."""
    model.transform.min_size = (round(max(train_scales) * min(input_size)),)


class DenseBody(nn.Module):
    """DeepLab-v3's backbone interface over the frozen pipeline ViT: {"out": patch map}."""

    def __init__(self, body: FrozenViT) -> None:
        super().__init__()
        self.body = body

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Patch map at stride patch_size under the key DeepLabV3 reads."""
        return {"out": self.body(images)}


def build_deeplab(cfg: dict[str, Any], num_labels: int, seed: int, weights: str | None = None) -> nn.Module:
    """DeepLab-v3 with a dilated ResNet-50/101 (§4.1), or for small CPU runs MobileNet-v3, a ResNet-18/34
    truncated after layer3 (output stride 16, like the dilated ResNets'), or the frozen pipeline ViT
    (`weights`: the checkpoint of a `backbone.weights: pretrain` ViT)."""
    from torchvision.models import segmentation
    from torchvision.models._utils import IntermediateLayerGetter

    torch.manual_seed(seed)
    if cfg["backbone"] == VIT:
        check_vit_options(cfg, "deeplab")
        body = FrozenViT(cfg["vit"], weights)
        torch.manual_seed(seed)
        return segmentation.DeepLabV3(DenseBody(body), segmentation.deeplabv3.DeepLabHead(body.out_channels, num_labels))
    if cfg["backbone"] == "mobilenet_v3_large":
        if cfg["weights"] != "random" or cfg["frozen_stages"]:
            raise ConfigError("maskdistill.deeplab: mobilenet_v3_large takes weights: random and frozen_stages: 0")
        return segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_labels)
    small = cfg["backbone"] in SMALL_RESNETS  # no dilation in BasicBlocks: stop after layer3 (stride 16)
    body = resnet(cfg["backbone"], cfg["weights"], dilated=not small, norm=cfg["norm"])
    freeze_stages(body, cfg["frozen_stages"])
    last = "layer3" if small else "layer4"
    head = segmentation.deeplabv3.DeepLabHead(out_channels(getattr(body, last)), num_labels)
    return segmentation.DeepLabV3(IntermediateLayerGetter(body, {last: "out"}), head)


def sgd(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.SGD:
    """SGD with momentum 0.9 over the trainable parameters at `lr` and `weight_decay` (§A.1, §4.1)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=cfg["lr"], momentum=0.9, weight_decay=cfg["weight_decay"])


def save_model(path: str | Path, model: nn.Module, kind: str, cfg: dict[str, Any], **extra: Any) -> None:
    """Atomic checkpoint: the architecture config (to rebuild) and the weights."""
    checkpoint.save_model(path, "maskdistill", cfg, model.state_dict(), kind=kind, **extra)


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
