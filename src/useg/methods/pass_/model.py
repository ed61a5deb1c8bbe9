"""PASS networks: a torchvision ResNet trunk with pixel attention, SwAV projector and prototypes
(LUSS Sec. 4), and the segmentation head of the basic pipeline (Sec. 3.1, step 3).

`arch`: resnet18 | resnet50 (torchvision, as in the paper) or `tiny` (one BasicBlock per stage,
widths w, 2w, 4w, 8w; for CPU tests). `output_stride` 8 / 16 / 32 removes the stride of the last
stages so small images keep a usable feature grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torch.func import functional_call
from torchvision.models.resnet import BasicBlock

from useg.backbones.weights import backbone_state, read_state_dict
from useg.errors import ConfigError, WeightsError

ARCHS = ("tiny", "resnet18", "resnet50")


@dataclass(frozen=True)
class NetConfig:
    """The `pass.net` config section."""

    arch: str = "resnet18"
    width: int = 16  # tiny only: channels of the first stage
    output_stride: int = 8
    weights: str = "random"  # random | <.pth / .safetensors file of torchvision ResNet weights>
    projector_hidden: int = 2048
    projector_dim: int = 128
    prototypes: int = 500


def _tiny_resnet(width: int) -> torchvision.models.ResNet:
    """A ResNet with one BasicBlock per stage and widths w, 2w, 4w, 8w (same module names as torchvision)."""
    net = torchvision.models.ResNet(BasicBlock, [1, 1, 1, 1])
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(BasicBlock, width, 1)
    net.layer2 = net._make_layer(BasicBlock, 2 * width, 1, stride=2)
    net.layer3 = net._make_layer(BasicBlock, 4 * width, 1, stride=2)
    net.layer4 = net._make_layer(BasicBlock, 8 * width, 1, stride=2)
    net.fc = nn.Identity()
    return net


def _unstride(layer: nn.Module) -> None:
    """Make a ResNet stage keep its input resolution (stride-2 convolutions become stride 1)."""
    for module in layer.modules():
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)


class ResNetTrunk(nn.Module):
    """ResNet without pooling and classifier: images [B, 3, H, W] -> features z [B, L, H/s, W/s]."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        if cfg.arch not in ARCHS:
            raise ConfigError(f"pass.net.arch: {cfg.arch!r} is not one of {list(ARCHS)}")
        if cfg.output_stride not in (8, 16, 32):
            raise ConfigError(f"pass.net.output_stride: {cfg.output_stride} is not 8, 16 or 32")
        if cfg.arch == "tiny":
            self.net = _tiny_resnet(cfg.width)
        else:
            self.net = getattr(torchvision.models, cfg.arch)(weights=None)
            self.net.fc = nn.Identity()
        if cfg.weights != "random":
            self.load(cfg.weights)
        stages = [self.net.layer3, self.net.layer4]
        for layer in stages[: {8: 2, 16: 1, 32: 0}[cfg.output_stride]]:
            _unstride(layer)
        self.out_dim: int = self.net.inplanes  # channels of the last stage
        self.stride = cfg.output_stride

    def load(self, path: str) -> None:
        """Load torchvision-style ResNet weights (the classifier, if any, is dropped)."""
        state = {k: v for k, v in backbone_state(read_state_dict(path)).items() if not k.startswith("fc.")}
        try:
            missing, unexpected = self.net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shapes differ: weights of another architecture
            raise WeightsError(f"pass.net.weights: {path} does not fit pass.net.arch: {str(exc)[:300]}") from exc
        if missing or unexpected:
            raise WeightsError(
                f"pass.net.weights: {path} does not fit the {type(self).__name__} "
                f"({len(missing)} missing keys, e.g. {missing[:3]}; "
                f"{len(unexpected)} unexpected, e.g. {unexpected[:3]})"
            )

    def forward(self, images: Tensor) -> Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(images))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))


class PASSNet(nn.Module):
    """Trunk + pixel attention c(z) + projector M + prototypes (LUSS Sec. 4, Fig. 5)."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.trunk = ResNetTrunk(cfg)
        dim = self.trunk.out_dim
        self.attention = nn.Conv2d(dim, 1, 1)
        self.projector = nn.Sequential(
            nn.Linear(dim, cfg.projector_hidden),
            nn.BatchNorm1d(cfg.projector_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.projector_hidden, cfg.projector_dim),
        )
        self.prototypes = nn.Linear(cfg.projector_dim, cfg.prototypes, bias=False)

    def pixel_attention(self, z: Tensor) -> Tensor:
        """c(z) = Sigmoid(Conv1x1(z)) [B, 1, h, w] (LUSS Sec. 4, pixel attention)."""
        return torch.sigmoid(self.attention(z))

    def image_embedding(self, z: Tensor, c: Tensor) -> Tensor:
        """v^ = M(Pooling(c(z) * z)), L2-normalised [B, D] (LUSS Sec. 4)."""
        return F.normalize(self.projector((c * z).mean(dim=(2, 3))), dim=1)

    def pixel_embedding(self, z: Tensor) -> Tensor:
        """v~ = M(z~) for pixel rows [n, L] with the gradients to M detached (LUSS Sec. 4)."""
        params = {k: v.detach() for k, v in self.projector.named_parameters()}
        buffers = dict(self.projector.named_buffers())
        return F.normalize(functional_call(self.projector, {**params, **buffers}, (z,)), dim=1)

    def scores(self, v: Tensor) -> Tensor:
        """Prototype scores of unit embeddings [n, P]."""
        return self.prototypes(v)

    @torch.no_grad()
    def normalise_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))


class SegmentationNet(nn.Module):
    """Trunk + 1x1 conv to C channels; global pooling gives image logits, no pooling the CAM (Sec. 3.1)."""

    def __init__(self, cfg: NetConfig, num_categories: int) -> None:
        super().__init__()
        self.trunk = ResNetTrunk(NetConfig(**{**cfg.__dict__, "weights": "random"}))
        self.head = nn.Conv2d(self.trunk.out_dim, num_categories, 1)

    def cam(self, images: Tensor) -> Tensor:
        """Per-pixel category scores y [B, C, h, w]."""
        return self.head(self.trunk(images))

    def forward(self, images: Tensor) -> Tensor:
        """Image logits y^ [B, C] (global average pooling of the CAM)."""
        return self.cam(images).mean(dim=(2, 3))
