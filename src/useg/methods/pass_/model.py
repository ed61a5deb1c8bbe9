"""PASS networks: a torchvision ResNet trunk with pixel attention, SwAV projector and prototypes
(LUSS Sec. 4), and the segmentation head of the basic pipeline (Sec. 3.1, step 3).

`arch`: resnet18 | resnet50 (torchvision, as in the paper) or `tiny` (one BasicBlock per stage,
widths w, 2w, 4w, 8w; for CPU tests). `output_stride` 8 / 16 / 32 removes the stride of the last
stages (without dilation) so small images keep a usable feature grid; `upsample` 4 at stride 32 is the
release's alternative: bilinear 4x upsampling of the stride-32 features (docs/methods/pass.md, "Stride").
The fine-tuned head is a 1x1 conv (`fcn`) or DeepLabV3+'s ASPP and low-level decoder ("Ours-D").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torch.func import functional_call
from torchvision.models.resnet import BasicBlock
from torchvision.models.segmentation.deeplabv3 import ASPP

from useg.backbones.weights import backbone_state, read_state_dict
from useg.errors import ConfigError, WeightsError, check_choice

ARCHS = ("tiny", "resnet18", "resnet50")
HEADS = ("fcn", "deeplabv3plus")


@dataclass(frozen=True)
class NetConfig:
    """The `pass.net` config section."""

    arch: str = "resnet18"
    width: int = 16  # tiny only: channels of the first stage
    output_stride: int = 8
    upsample: int = 1  # bilinear upsampling of the trunk's features (the release: 4 at output_stride 32)
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
        if cfg.upsample not in (1, 2, 4):
            raise ConfigError(f"pass.net.upsample: {cfg.upsample} is not 1, 2 or 4")
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
        self.low_dim: int = self.net.layer1[-1].conv1.in_channels  # channels of layer1 (the input of its last block)
        self.stride, self.upsample = cfg.output_stride, cfg.upsample

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

    def stages(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The stride-4 features of layer1 and the last stage's features at `output_stride`."""
        n = self.net
        low = n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(images)))))
        return low, n.layer4(n.layer3(n.layer2(low)))

    def forward(self, images: Tensor) -> Tensor:
        """The last stage's features, upsampled bilinearly by `upsample`."""
        z = self.stages(images)[1]
        if self.upsample == 1:
            return z
        return F.interpolate(z, scale_factor=self.upsample, mode="bilinear", align_corners=False)


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
        """v~ = M(z~) for pixel rows [n, L] with the gradients to M detached (LUSS Sec. 4); no rows (a process
        whose views do not overlap) give no rows without touching M's batch statistics, except that a
        SyncBatchNorm (CUDA, several processes) takes its part in the collective with no rows."""
        if not len(z) and not isinstance(self.projector[1], nn.SyncBatchNorm):
            return z.new_zeros((0, self.prototypes.in_features))
        params = {k: v.detach() for k, v in self.projector.named_parameters()}
        buffers = dict(self.projector.named_buffers())
        return F.normalize(functional_call(self.projector, {**params, **buffers}, (z,)), dim=1)

    def scores(self, v: Tensor) -> Tensor:
        """Prototype scores of unit embeddings [n, P]."""
        return self.prototypes(v)

    def forward(self, images: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Per batch of views: features z, pixel attention c, image embeddings v^ and their prototype scores
        (the forward DistributedDataParallel wraps)."""
        z = [self.trunk(x) for x in images]
        c = [self.pixel_attention(zi) for zi in z]
        v = [self.image_embedding(zi, ci) for zi, ci in zip(z, c)]
        return z, c, v, [self.scores(e) for e in v]

    @torch.no_grad()
    def normalise_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))


def conv_bn_relu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+ (Chen et al. 2018, Sec. 3.1): ASPP on the last stage (rates 6, 12, 18 at stride 16,
    scaled to the trunk's stride), upsampled to the stride-4 layer1 features reduced to 48 channels,
    two 3x3 convs of 256 and a 1x1 classifier; logits at stride 4."""

    def __init__(self, high_dim: int, low_dim: int, num_categories: int, stride: int) -> None:
        super().__init__()
        self.aspp = ASPP(high_dim, [r * 16 // stride for r in (6, 12, 18)], 256)
        self.reduce = conv_bn_relu(low_dim, 48, 1)
        self.fuse = nn.Sequential(conv_bn_relu(256 + 48, 256, 3), conv_bn_relu(256, 256, 3), nn.Conv2d(256, num_categories, 1))

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        up = F.interpolate(self.aspp(high), size=low.shape[2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([up, self.reduce(low)], dim=1))


class SegmentationNet(nn.Module):
    """Trunk + head to C channels; global pooling gives image logits, no pooling the CAM (Sec. 3.1). Head
    `fcn`: a 1x1 conv on the (upsampled) last stage; `deeplabv3plus`: DeepLabV3PlusHead ("Ours-D")."""

    def __init__(self, cfg: NetConfig, num_categories: int, head: str = "fcn") -> None:
        super().__init__()
        check_choice("pass.finetune.head", head, HEADS)
        self.trunk = ResNetTrunk(NetConfig(**{**cfg.__dict__, "weights": "random"}))
        self.kind = head
        if head == "fcn":
            self.head: nn.Module = nn.Conv2d(self.trunk.out_dim, num_categories, 1)
        else:
            self.head = DeepLabV3PlusHead(self.trunk.out_dim, self.trunk.low_dim, num_categories, cfg.output_stride)

    def cam(self, images: Tensor) -> Tensor:
        """Per-pixel category scores y [B, C, h, w]."""
        if self.kind == "fcn":
            return self.head(self.trunk(images))
        return self.head(*self.trunk.stages(images))

    def forward(self, images: Tensor) -> Tensor:
        """Image logits y^ [B, C] (global average pooling of the CAM)."""
        return self.cam(images).mean(dim=(2, 3))
