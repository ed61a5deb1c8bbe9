"""Mixed precision: the `amp` modes, a bf16 training step on the CPU, the NaN guard under AMP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.test_croc import TINY_ARCH, TINY_CROC
from useg.data.augment import make_view
from useg.errors import ConfigError, TrainingError
from useg.train.amp import resolve_precision


def test_modes_resolve_to_a_dtype_and_a_scaler_for_fp16_only():
    assert resolve_precision("auto", "cpu").dtype is None  # auto is off on the CPU
    assert resolve_precision("off", "cpu").dtype is None
    bf16 = resolve_precision("bf16", "cpu")
    assert bf16.dtype is torch.bfloat16 and bf16.scaler is None
    fp16 = resolve_precision("fp16", "cpu")
    assert fp16.dtype is torch.float16 and fp16.scaler is not None
    with pytest.raises(ConfigError, match="amp"):
        resolve_precision("fp8", "cpu")


def test_bf16_autocast_runs_a_croc_step_on_the_cpu():
    from useg.methods.croc.train import CrOCConfig, CrOCTrainer, make_batch

    cfg = CrOCConfig(**{**TINY_CROC, "amp": "bf16", "device": "cpu", "freeze_last_layer_epochs": 0})
    trainer = CrOCTrainer(cfg, TINY_ARCH, iters_per_epoch=1, seed=0)
    images = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(2)]
    batch = make_batch(images, cfg.view_augments(), 8, [np.random.default_rng(i) for i in range(2)])
    before = trainer.student.head.global_last.weight.detach().clone()
    with trainer.precision.autocast():  # the step's forward runs in bf16
        assert trainer.student.backbone(batch.views[0], qkv_blocks=(1,)).qkv[1][0].dtype is torch.bfloat16
    out = trainer.step(batch, 0, torch.Generator().manual_seed(0))
    assert np.isfinite(out["loss"]) and not torch.equal(trainer.student.head.global_last.weight, before)
    assert trainer.student.head.global_last.weight.dtype is torch.float32  # master weights stay fp32


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_the_guard_sees_the_unscaled_nan_loss_under_amp(amp):
    from useg.methods.pass_.model import NetConfig
    from useg.methods.pass_.train import PASSTrainer, PretrainConfig

    net_cfg = NetConfig(arch="tiny", width=8, output_stride=8, projector_hidden=16, projector_dim=8, prototypes=6)
    cfg = PretrainConfig(batch_size=2, view_size=[16, 16], overlap_size=2)
    trainer = PASSTrainer(net_cfg, cfg, iters_per_epoch=1, seed=0, device="cpu", amp=amp)
    images = [np.random.default_rng(i).integers(0, 255, (24, 24, 3), dtype=np.uint8) for i in range(2)]
    views = tuple([make_view(im, cfg.view_augment(), 8, np.random.default_rng([i, v])) for i, im in enumerate(images)] for v in (0, 1))
    views[0][0].image[:] = float("nan")
    weights = trainer.net.attention.weight.detach().clone()
    with pytest.raises(TrainingError, match="nan"):
        trainer.step(views, None, (24, 24), 0)
    assert torch.equal(trainer.net.attention.weight, weights)  # no step was taken


def deeplab_parts(amp: str):
    """A tiny DeepLab-v3, its SGD, the precision of `amp` on the CPU and a guard (MaskDistill §3.3)."""
    from tests.unit.test_maskdistill import TINY_DEEPLAB
    from useg.methods.maskdistill.models import build_deeplab, sgd
    from useg.train import LossGuard

    model = build_deeplab(TINY_DEEPLAB, 3, seed=0).train()
    return model, sgd(model, TINY_DEEPLAB), resolve_precision(amp, "cpu"), LossGuard("lower maskdistill.deeplab.lr")


def maskrcnn_parts(amp: str):
    """A tiny Mask R-CNN, its SGD, the precision of `amp` on the CPU, a guard and one (image, target) pair."""
    from tests.unit.test_maskdistill import TINY_RCNN, square
    from useg.methods.maskdistill.models import build_maskrcnn, sgd
    from useg.train import LossGuard

    model = build_maskrcnn(TINY_RCNN, 3, (32, 32), seed=0).train()
    target = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([2]), "masks": torch.from_numpy(square(4, 20, 32))[None]}
    pair = (torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)), target)
    return model, sgd(model, {**TINY_RCNN, "lr": 0.01, "weight_decay": 0.0}), resolve_precision(amp, "cpu"), LossGuard("lower maskdistill.maskrcnn.lr"), pair


def test_bf16_autocast_runs_a_deeplab_step_on_the_cpu():
    from useg.methods.maskdistill.deeplab import deeplab_step

    model, optimiser, precision, guard = deeplab_parts("bf16")
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    with precision.autocast():
        assert model(x)["out"].dtype is torch.bfloat16
    weight = model.classifier[-1].weight.detach().clone()
    loss = deeplab_step(model, optimiser, precision, guard, (x, y), 0.2, torch.device("cpu"), (0, 0))
    assert np.isfinite(loss) and not torch.equal(model.classifier[-1].weight, weight)
    assert model.classifier[-1].weight.dtype is torch.float32


def test_bf16_autocast_runs_a_mask_rcnn_step_on_the_cpu():
    from useg.methods.maskdistill.maskrcnn import maskrcnn_step

    model, optimiser, precision, guard, pair = maskrcnn_parts("bf16")
    with precision.autocast():
        assert model.backbone(pair[0][None])["0"].dtype is torch.bfloat16
    weight = model.roi_heads.box_predictor.cls_score.weight.detach().clone()
    loss, terms = maskrcnn_step(model, optimiser, precision, guard, [pair], torch.device("cpu"), 0)
    assert torch.isfinite(loss) and {"loss_classifier", "loss_mask"} <= set(terms)
    assert not torch.equal(model.roi_heads.box_predictor.cls_score.weight, weight)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_the_guard_sees_the_nan_loss_of_deeplab_and_mask_rcnn_under_amp(amp):
    from useg.methods.maskdistill.deeplab import deeplab_step
    from useg.methods.maskdistill.maskrcnn import maskrcnn_step

    model, optimiser, precision, guard = deeplab_parts(amp)
    x = torch.full((2, 3, 32, 32), float("nan"))
    weight = model.classifier[-1].weight.detach().clone()
    with pytest.raises(TrainingError, match=r"nan.*maskdistill\.deeplab\.lr"):
        deeplab_step(model, optimiser, precision, guard, (x, torch.zeros(2, 32, 32)), 0.2, torch.device("cpu"), (0, 0))
    assert torch.equal(model.classifier[-1].weight, weight)  # no step was taken
    model, optimiser, precision, guard, (image, target) = maskrcnn_parts(amp)
    weight = model.roi_heads.box_predictor.cls_score.weight.detach().clone()
    with pytest.raises(TrainingError, match=r"nan.*maskdistill\.maskrcnn\.lr"):
        maskrcnn_step(model, optimiser, precision, guard, [(image * float("nan"), target)], torch.device("cpu"), 0)
    assert torch.equal(model.roi_heads.box_predictor.cls_score.weight, weight)
