"""Every trainer at an absurd learning rate stops with "training diverged" and names the key to lower
(issue 30, case 9): the loss guard of src/useg/train/guard.py is wired into each of them; AlignSeg's bounded
loss cannot explode, so at a too-high (finite-loss) learning rate its collapse guard stops it. TransFGU's
round and the linear probe have their own tests (test_transfgu.py, test_train.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.test_croc import TINY_ARCH, TINY_CROC
from tests.unit.test_device_placement import feature_store, write_rgb
from tests.unit.test_maskdistill import TINY_DEEPLAB, TINY_RCNN
from useg.errors import TrainingError
from useg.stores import provenance

PROV = provenance("test", {}, seed=0)
ABSURD_LR = 1e30


def diverges(key: str):
    """The error a diverged trainer must raise: the guard's message naming `key`."""
    return pytest.raises(TrainingError, match=rf"training diverged.*Try to lower {key}")


def test_croc_pretraining_at_an_absurd_lr_fails_naming_croc_lr():
    from useg.methods.croc.train import CrOCConfig, CrOCTrainer, make_batch

    cfg = CrOCConfig(**{**TINY_CROC, "lr": ABSURD_LR, "clip_grad": 0.0})
    trainer = CrOCTrainer(cfg, TINY_ARCH, iters_per_epoch=4, seed=0)
    images = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(4)]
    with diverges(r"croc\.lr"):
        for it in range(8):
            batch = make_batch(images, cfg.view_augments(), 8, [np.random.default_rng([it, i]) for i in range(4)])
            trainer.step(batch, it, torch.Generator().manual_seed(it))


def test_pass_pretraining_at_an_absurd_lr_fails_naming_its_key():
    from useg.data.augment import make_view
    from useg.methods.pass_.model import NetConfig
    from useg.methods.pass_.train import PASSTrainer, PretrainConfig

    net_cfg = NetConfig(arch="tiny", width=8, output_stride=8, projector_hidden=16, projector_dim=8, prototypes=6)
    cfg = PretrainConfig(batch_size=4, view_size=[32, 32], overlap_size=2, queue_length=0, lr=ABSURD_LR, warmup_epochs=0)
    trainer = PASSTrainer(net_cfg, cfg, iters_per_epoch=4, seed=0, device="cpu")
    images = [np.random.default_rng(i).integers(0, 255, (48, 48, 3), dtype=np.uint8) for i in range(4)]
    aug = cfg.view_augment()
    with diverges(r"pass\.pretrain\.lr"):
        for it in range(8):
            views = tuple([make_view(im, aug, 8, np.random.default_rng([it, i, v])) for i, im in enumerate(images)] for v in (0, 1))
            trainer.step(views, None, (48, 48), it)


def test_pass_finetuning_at_an_absurd_lr_fails_naming_its_key(tmp_path):
    from useg.methods.pass_.model import NetConfig, PASSNet
    from useg.methods.pass_.stages import FinetuneConfig, finetune
    from useg.train import save_checkpoint

    net_cfg = NetConfig(arch="tiny", width=8, output_stride=8, projector_hidden=16, projector_dim=8, prototypes=6)
    save_checkpoint(tmp_path / "p.pth", {"net": PASSNet(net_cfg).state_dict(), "net_config": net_cfg.__dict__})
    rows = write_rgb(tmp_path, 4)
    pseudo = {"ids": [r.id for r in rows], "labels": [0, 1, 0, 1], "k": 2}
    cfg = FinetuneConfig(epochs=6, batch_size=2, lr=ABSURD_LR)
    with diverges(r"pass\.finetune\.lr"):
        finetune(tmp_path / "p.pth", pseudo, rows, cfg, (32, 32), 0, tmp_path / "f.pth", tmp_path / "r.pth", "h", "cpu")
    assert not (tmp_path / "f.pth").exists()


def train_tiny_alignseg(tmp_path, backbone_cfg, lr: float, seed: int = 0, epochs: int = 6) -> dict:
    """AlignSeg's trainer on 4 random 40 px images, 32 / 16 px crops of the tiny ViT, K = 3, 2 steps an epoch."""
    from useg.backbones import build_backbone
    from useg.methods.alignseg.train import AlignSegConfig, train_alignseg

    rows = write_rgb(tmp_path, 4)
    backbone = build_backbone(backbone_cfg, seed=0)
    cfg = AlignSegConfig(k=3, heads=2, global_size=[32, 32], local_size=[16, 16], epochs=epochs, batch_size=2, lr=lr, attention_blur=0.0)
    paths = [r.path for r in rows]
    return train_alignseg(cfg, backbone, paths, 3, tmp_path / "d.pt", tmp_path / "d.json", tmp_path / "r", "h", seed, torch.device("cpu"))


def test_alignseg_at_an_absurd_lr_fails_naming_alignseg_lr(tmp_path, tiny_backbone_cfg):
    with diverges(r"alignseg\.lr"):
        train_tiny_alignseg(tmp_path, tiny_backbone_cfg, ABSURD_LR)
    assert not (tmp_path / "d.pt").exists()


@pytest.mark.parametrize("lr", [0.1, 1.0])
def test_alignseg_collapsing_at_a_high_lr_with_a_finite_loss_fails_naming_alignseg_lr(tmp_path, tiny_backbone_cfg, lr):
    with pytest.raises(TrainingError, match=r"prototypes collapsed: their mean pairwise cosine similarity was (0\.9[5-9]\d|1\.000) at epoch.*Try to lower alignseg\.lr"):
        train_tiny_alignseg(tmp_path, tiny_backbone_cfg, lr, epochs=8)
    assert not (tmp_path / "d.pt").exists()


@pytest.mark.parametrize("seed", [0, 1])
def test_alignseg_at_its_release_lr_keeps_its_prototypes_apart(tmp_path, tiny_backbone_cfg, seed):
    history = train_tiny_alignseg(tmp_path, tiny_backbone_cfg, 5e-4, seed=seed)["epochs"]
    assert len(history) == 6 and max(e["prototype_cosine"] for e in history) < 0.2


def test_mean_pairwise_cosine_averages_the_distinct_pairs():
    from useg.train import mean_pairwise_cosine

    # pairs (a, b) 0, (a, c) 1/sqrt(2), (b, c) 1/sqrt(2), each counted twice, over 3 x 2 ordered pairs
    vectors = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])
    assert mean_pairwise_cosine(vectors) == pytest.approx(2 / 3 / 2**0.5)
    assert mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="at least 2"):
        mean_pairwise_cosine(torch.ones(1, 4))


def test_collapse_guard_needs_its_steps_in_a_row():
    from useg.train import CollapseGuard

    guard = CollapseGuard("lower x.lr", threshold=0.9, steps=3)
    for step, cosine in enumerate([0.99, 0.99, 0.5, 0.99, 0.99]):  # the dip resets the count
        guard.check(cosine, 0, step)
    with pytest.raises(TrainingError, match=r"0\.995 at epoch 1, step 6, above 0\.9 for 3 steps in a row.*lower x\.lr"):
        guard.check(0.995, 0, 5)


def object_masks(tmp_path, rows) -> "MaskBank":  # noqa: F821
    """A MaskBank of one square object per image on a 4 x 4 grid of a 32 x 32 working size."""
    from useg.stores.maskbank import MaskBank, MaskBankWriter

    n = len(rows)
    masks = np.zeros((n, 4, 4), np.uint8)
    masks[:, 1:3, 1:3] = 1
    attrs = {"input_size": [32, 32], "patch_size": 8, "topk": 0.4, "background": "none"}
    with MaskBankWriter(tmp_path / "m.zarr", np.arange(n), [r.id for r in rows], (4, 4), 8, PROV, **attrs) as writer:
        writer.write(0, masks=masks, boxes=np.tile([8, 8, 24, 24], (n, 1)), source=np.zeros(n), cls=np.zeros((n, 8)))
    return MaskBank([tmp_path / "m.zarr"])


def test_mask_rcnn_at_an_absurd_lr_fails_naming_its_key(tmp_path):
    from useg.methods.maskdistill.maskrcnn import train_maskrcnn

    rows = write_rgb(tmp_path, 4, size=32)
    cfg = {**TINY_RCNN, "iterations": 20, "batch_size": 2, "lr": ABSURD_LR, "warmup_iters": 0, "steps": [], "weight_decay": 0.0}
    with diverges(r"maskdistill\.maskrcnn\.lr"):
        train_maskrcnn(rows, object_masks(tmp_path, rows), {i: i % 2 for i in range(4)}, 2, cfg, 0, tmp_path / "rcnn.pt", torch.device("cpu"))
    assert not (tmp_path / "rcnn.pt").exists()


def test_deeplab_at_an_absurd_lr_fails_naming_its_key(tmp_path):
    from useg.methods.maskdistill.deeplab import train_deeplab
    from useg.stores.labelbank import LabelBank, LabelBankWriter

    rows = write_rgb(tmp_path, 4, size=32)
    labels = np.random.default_rng(0).integers(0, 3, (4, 32, 32))
    with LabelBankWriter(tmp_path / "b.zarr", np.arange(4), [r.id for r in rows], 3, (32, 32), PROV, with_maps=False, input_size=[32, 32]) as w:
        w.write(0, None, labels, labels > 0)
    cfg = {**TINY_DEEPLAB, "epochs": 6, "lr": ABSURD_LR, "weight_decay": 0.0}
    with diverges(r"maskdistill\.deeplab\.lr"):
        train_deeplab(rows, LabelBank([tmp_path / "b.zarr"]), cfg, 0, tmp_path / "deeplab.pt", torch.device("cpu"))
    assert not (tmp_path / "deeplab.pt").exists()
