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
