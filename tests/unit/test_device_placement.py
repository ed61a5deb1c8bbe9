"""Every training stage takes an optimisation step and every prediction stage a batch on a stand-in
accelerator (tests/device_guard.py) that fails on any tensor left on the host: a tensor created on
the CPU beside device tensors is caught without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.device_guard import DEVICE, DeviceGuard, MixedDevices
from tests.unit.test_croc import TINY_ARCH, TINY_CROC
from useg.data.augment import make_view
from useg.data.frame import Frame
from useg.data.manifest import ManifestRow
from useg.stores import FeatureStore, FeatureWriter, provenance

PROV = provenance("test", {}, seed=0)


def write_rgb(tmp_path, count: int = 4, size: int = 40) -> list[ManifestRow]:
    from PIL import Image

    rng, rows = np.random.default_rng(0), []
    for i in range(count):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        rows.append(ManifestRow(id=f"im{i}", path=str(path), width=size, height=size, split="train"))
    return rows


def feature_store(tmp_path, backbone, rows: list[ManifestRow]) -> FeatureStore:
    from useg.data.augment import normalise_images
    from useg.methods.common import load_images

    with torch.no_grad():
        out = backbone(normalise_images(load_images(rows, Frame((32, 32)))))
    n, h, w, d = out.patches.shape
    with FeatureWriter(tmp_path / "f.zarr", np.arange(n), [r.id for r in rows], (h, w), d, 2, PROV, input_size=[32, 32]) as writer:
        writer.write(0, out.cls.numpy(), out.patches.numpy(), out.attn.numpy())
    return FeatureStore(tmp_path / "f.zarr")


def test_the_guard_catches_a_host_tensor_and_passes_moved_ones():
    with DeviceGuard():
        x = torch.ones(3, 2).to(DEVICE)
        assert x.device == DEVICE and torch.zeros(2, device=x.device).device == DEVICE
        assert float((x + torch.tensor(1.0)).sum()) == 12  # 0-d host tensors join, as on CUDA
        assert torch.equal(x[torch.tensor([0, 2])], torch.ones(2, 2).to(DEVICE))  # host indices, as on CUDA
        with pytest.raises(MixedDevices, match="host tensors"):
            torch.where(torch.tensor([True, False, True])[:, None], x, -x)
        with pytest.raises(MixedDevices):
            x.cpu() + x


def test_croc_pretraining_step():
    from useg.methods.croc.train import CrOCConfig, CrOCTrainer, make_batch

    images = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(2)]
    cfg = CrOCConfig(**{**TINY_CROC, "device": "cpu:0"})
    with DeviceGuard():
        trainer = CrOCTrainer(cfg, TINY_ARCH, iters_per_epoch=1, seed=0)
        batch = make_batch(images, cfg.view_augments(), 8, [np.random.default_rng(i) for i in range(2)])
        out = trainer.step(batch, 0, torch.Generator().manual_seed(0))
    assert np.isfinite(out["loss"])


def test_pass_pretraining_step_with_the_saliency_prior_and_the_queue():
    from useg.methods.pass_.model import NetConfig
    from useg.methods.pass_.train import PASSTrainer, PretrainConfig

    net_cfg = NetConfig(arch="tiny", width=8, output_stride=8, projector_hidden=16, projector_dim=8, prototypes=6)
    cfg = PretrainConfig(batch_size=4, view_size=[32, 32], overlap_size=2, queue_length=4)
    images = [np.random.default_rng(i).integers(0, 255, (48, 48, 3), dtype=np.uint8) for i in range(4)]
    with DeviceGuard():
        trainer = PASSTrainer(net_cfg, cfg, iters_per_epoch=1, seed=0, device="cpu:0")
        aug = cfg.view_augment()
        for it in range(2):  # the second step scores the full queue
            views = tuple([make_view(im, aug, 8, np.random.default_rng([it, i, v])) for i, im in enumerate(images)] for v in (0, 1))
            out = trainer.step(views, torch.rand(4, 1, 6, 6), (48, 48), it)
    assert trainer.queue.full and {"swav", "i2p", "p2p", "prior"} <= set(out.parts)


def test_pass_finetuning_step(tmp_path):
    from useg.methods.pass_.model import NetConfig, PASSNet
    from useg.methods.pass_.stages import FinetuneConfig, finetune
    from useg.train import save_checkpoint

    net_cfg = NetConfig(arch="tiny", width=8, output_stride=8, projector_hidden=16, projector_dim=8, prototypes=6)
    save_checkpoint(tmp_path / "p.pth", {"net": PASSNet(net_cfg).state_dict(), "net_config": net_cfg.__dict__})
    rows = write_rgb(tmp_path, 2)
    pseudo = {"ids": [r.id for r in rows], "labels": [0, 1], "k": 2}
    cfg = FinetuneConfig(epochs=1, batch_size=2)
    with DeviceGuard():
        history = finetune(tmp_path / "p.pth", pseudo, rows, cfg, (32, 32), 0, tmp_path / "f.pth", tmp_path / "r.pth", "h", "cpu:0")
    assert np.isfinite(history[0]["loss"])


def test_alignseg_training_step_and_prediction_batch(tmp_path, tiny_backbone_cfg):
    from useg.backbones import build_backbone
    from useg.methods.alignseg.decoder import build_decoder, save_decoder
    from useg.methods.alignseg.infer import load_predictor, predict_alignseg
    from useg.methods.alignseg.train import AlignSegConfig, train_alignseg

    rows = write_rgb(tmp_path, 2)
    backbone = build_backbone(tiny_backbone_cfg, seed=0)
    store = feature_store(tmp_path, backbone, rows)
    cfg = AlignSegConfig(k=3, heads=2, global_size=[32, 32], local_size=[16, 16], epochs=1, batch_size=2, attention_blur=0.0)
    with DeviceGuard():
        info = train_alignseg(cfg, backbone, [r.path for r in rows], 3, tmp_path / "d.pt", tmp_path / "d.json", tmp_path / "r", "h", 0, DEVICE)
        decoder = build_decoder(cfg.decoder(64, 3), 0)
        predict_alignseg(decoder, [store], tmp_path / "p.zarr", PROV, DEVICE)
        save_decoder(decoder, tmp_path / "e.pt", {})
        scores = load_predictor(tmp_path / "e.pt", backbone, DEVICE)(torch.rand(1, 3, 32, 32).to(DEVICE))
    assert np.isfinite(info["epochs"][0]["loss"]) and scores.shape == (1, 3, 4, 4)


def test_transfgu_round_teacher_and_prediction_batch(tmp_path, tiny_backbone_cfg):
    from tests.unit.test_transfgu_bootstrap import make_split
    from useg.backbones import build_backbone
    from useg.methods.transfgu.stages import predict_segmenter, train_round

    cfg = {
        "decoder": {"dim": 16, "layers": 1, "heads": 2}, "lr": 1e-3, "weight_decay": 5e-4, "epochs": 1,
        "batch_size": 2, "alpha": [0.03, 0.1], "w_div": 1.0, "w_unc": 0.3, "optimiser": "adam", "grad_clamp": 1.0,
        "skip_nonpositive_loss": False, "losses": {"peer": True, "uncertainty": True, "diversity": True},
        "diversity_form": "release", "augment_rule": "batch", "augment": {"crop_scale": [0.3, 1.0]},
    }  # fmt: skip
    backbone = build_backbone(tiny_backbone_cfg, seed=0)
    store = feature_store(tmp_path, backbone, write_rgb(tmp_path, 2))
    (tmp_path / "split").mkdir()
    rows, bank = make_split(tmp_path / "split", 2)
    history: list = []
    with DeviceGuard():
        student = train_round(backbone, rows, bank, None, cfg, 0, 0, DEVICE, history)
        taught = train_round(backbone, rows, bank, student, cfg, 0, 1, DEVICE, history)
        predict_segmenter(taught, [store], tmp_path / "p.zarr", "transfgu", PROV, DEVICE)
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)


def test_transfgu_bootstrap_job_with_its_teacher_on_whole_images(tmp_path, tiny_backbone_cfg):
    from tests.unit.test_transfgu_bootstrap import CFG, make_split
    from useg.backbones import build_backbone
    from useg.methods.transfgu.bootstrap import train_bootstrap

    backbone = build_backbone(tiny_backbone_cfg, seed=0)
    rows, bank = make_split(tmp_path, 2)
    cfg = {**CFG, "epochs": 2, "bootstrap_start": 1, "bootstrap_every": 1, "teacher_view": "whole"}
    with DeviceGuard():
        _, history = train_bootstrap(backbone, rows, bank, cfg, 0, DEVICE, tmp_path / "resume.pth")
    assert [h["teacher_update"] for h in history] == [False, True] and np.isfinite(history[-1]["loss"])


def test_maskdistill_deeplab_and_mask_rcnn(tmp_path):
    from tests.unit.test_maskdistill import TINY_DEEPLAB, TINY_RCNN, square
    from useg.methods.maskdistill.deeplab import hard_pixel_ce, predict_deeplab, train_deeplab
    from useg.methods.maskdistill.maskrcnn import build_maskrcnn, load_maskrcnn, predict_candidates
    from useg.methods.maskdistill.models import save_model
    from useg.stores.labelbank import LabelBank, LabelBankWriter

    rows = write_rgb(tmp_path, 2)
    labels = np.random.default_rng(0).integers(0, 3, (2, 32, 32))
    with LabelBankWriter(tmp_path / "b.zarr", np.arange(2), [r.id for r in rows], 3, (32, 32), PROV, with_maps=False, input_size=[32, 32]) as w:
        w.write(0, None, labels, labels > 0)
    cfg = TINY_DEEPLAB
    target = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([2]), "masks": torch.from_numpy(square(4, 20, 32))[None]}
    with DeviceGuard():
        train_deeplab(rows, LabelBank([tmp_path / "b.zarr"]), cfg, 0, tmp_path / "deeplab.pt", DEVICE)
        predict_deeplab(tmp_path / "deeplab.pt", list(enumerate(rows)), tmp_path / "p.zarr", PROV, DEVICE)
        model = build_maskrcnn(TINY_RCNN, 3, (32, 32), seed=0).to(DEVICE).train()
        losses = model([torch.rand(3, 32, 32).to(DEVICE)], [{k: v.to(DEVICE) for k, v in target.items()}])
        sum(losses.values()).backward()
        save_model(tmp_path / "rcnn.pt", model.cpu(), "MaskRCNN", TINY_RCNN, num_clusters=3, input_size=[32, 32])
        rcnn, k, frame, own_size = load_maskrcnn(tmp_path / "rcnn.pt", DEVICE)
        predict_candidates(rcnn, list(enumerate(rows)), k, frame, 2, tmp_path / "c.zarr", PROV, DEVICE, own_size=own_size)
    assert hard_pixel_ce is not None and (tmp_path / "c.zarr").exists()
