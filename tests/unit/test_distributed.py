"""Data-parallel training: 2 gloo processes with torchrun's environment compute the 1-process steps."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import TINY_BACKBONE
from tests.integration.dag import run_snakemake, tiny_config
from tests.integration.test_pass_dag import CONFIG as PASS_DAG
from tests.integration.test_pretrain_dag import TINY_CROC as DAG_CROC
from tests.unit.test_croc import TINY_ARCH, TINY_CROC
from tests.unit.test_maskdistill import TINY_DEEPLAB
from tests.unit.test_transfgu_bootstrap import CFG as TRANSFGU_BOOTSTRAP
from tests.unit.test_transfgu_bootstrap import make_split
from useg.backbones import BackboneConfig, build_backbone
from useg.data.augment import two_views
from useg.data.pipeline import EpochBatches, ImageDataset, make_loader
from useg.data.synthetic import ShapesConfig, write_shapes_dataset
from useg.errors import ConfigError
from useg.methods.alignseg.train import AlignSegConfig, train_alignseg
from useg.methods.croc.train import CrOCConfig, CrOCTrainer, collate_pairs, pretrain
from useg.methods.pass_ import train as pass_train
from useg.methods.pass_.model import NetConfig, PASSNet
from useg.methods.pass_.stages import FinetuneConfig, Finetuner, finetune, finetune_loader
from useg.profiles.gpus import gpu_resource, has_nvidia_gpu
from useg.train import distributed, save_checkpoint

# Measured on a 2-core CPU (docs/measurements.md): the 2-process losses differ from 1 process's by
# at most 1.5e-6 (float32 reductions in another order); 1e-5 leaves a margin and still catches a
# step on per-process statistics (AlignSeg's L_corr summed per process: off by 4.4).
# DeepLab-v3 in eval mode: losses within 1e-5; weights within 1.5e-8 on one CPU but 2.4e-5 on an
# AVX2-only AMD EPYC (float32 sums in another order, grown over 3 steps at lr 0.05),
# so its weights are held to DEEPLAB_WEIGHT_TOLERANCE; a per-process hard-pixel ranking moves the losses by far more.
# TransFGU (dropout 0): losses within 1.2e-7, decoder weights within 1.9e-7 but the key bias (assert_same_segmenter).
# PASS fine-tuning in eval mode: losses within 3.0e-8, weights within 3.5e-7.
TOLERANCE = 1e-5
DEEPLAB_WEIGHT_TOLERANCE = 1e-4
CROC = CrOCConfig(**{**TINY_CROC, "drop_path_rate": 0.0, "freeze_last_layer_epochs": 0, "device": "cpu"})


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    data = write_shapes_dataset(ShapesConfig(num_train=8, num_val=1, image_size=48), tmp_path_factory.mktemp("ddp") / "data")
    return sorted(str(p) for p in (data / "images").glob("*.png"))[:8]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_torchrun_process(rank: int, world: int, port: int, task: Callable[..., None], *args: object) -> None:
    """Run `task` in a process with the environment torchrun gives rank `rank` of `world`."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    task(*args)


def run_processes(world: int, task: Callable[..., None], *args: object) -> None:
    mp.spawn(as_torchrun_process, args=(world, free_port(), task, *args), nprocs=world, join=True)


def croc_step_losses(paths: list[str], out: str) -> None:
    """Two epochs of CrOC steps over the process's shares of the batches; rank 0 writes the logged losses."""
    trainer = CrOCTrainer(CROC, TINY_ARCH, iters_per_epoch=2, seed=0)
    batches = EpochBatches(len(paths), CROC.batch_size, 0, rank=trainer.world.rank, world=trainer.world.size)
    loader = make_loader(ImageDataset(paths, partial(two_views, augs=CROC.view_augments(), patch=8), 0), batches, collate_pairs)
    losses = []
    for epoch in range(2):
        batches.epoch = epoch
        generator = torch.Generator().manual_seed(epoch)
        losses += [trainer.step(batch, epoch * 2 + b, generator) for b, batch in enumerate(loader)]
    if trainer.world.is_main:
        Path(out).write_text(json.dumps(losses))
    distributed.finish()


def croc_pretrain(paths: list[str], out: str, epochs: int) -> dict:
    """CrOC pretraining for `epochs` into the folder `out` (resuming from its resume.pth)."""
    cfg = CrOCConfig(**{**CROC.__dict__, "epochs": epochs})
    root = Path(out)
    return pretrain(cfg, TINY_ARCH, paths, root / "ck.pth", root / "log.json", root / "resume.pth", "h", seed=0)


def test_two_gloo_processes_give_the_one_process_croc_losses(image_paths, tmp_path):
    run_processes(2, croc_step_losses, image_paths, str(tmp_path / "two.json"))
    croc_step_losses(image_paths, str(tmp_path / "one.json"))
    two, one = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("two", "one"))
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        np.testing.assert_allclose([a["loss"], a["global"], a["dense"]], [b["loss"], b["global"], b["dense"]], rtol=0, atol=TOLERANCE)
        assert sorted(a["k"]) == sorted(b["k"]), "the same clusters are chosen for the global batch"
    assert len(set(round(s["loss"], 4) for s in one)) > 1, "the steps train: losses change"


def test_rank_zero_checkpoint_resumes_in_one_process(image_paths, tmp_path):
    for name in ("two", "one"):
        (tmp_path / name).mkdir()
    run_processes(2, croc_pretrain, image_paths, str(tmp_path / "two"), 2)
    croc_pretrain(image_paths, str(tmp_path / "one"), 2)
    two, one = (json.loads((tmp_path / f"{n}/log.json").read_text()) for n in ("two", "one"))
    for a, b in zip(one["epochs"], two["epochs"], strict=True):
        np.testing.assert_allclose([a["loss"], a["loss_dense"]], [b["loss"], b["loss_dense"]], rtol=0, atol=TOLERANCE)
        assert a["k_histogram"] == b["k_histogram"], "rank 0 logs the clusters of the global batch"
    teachers = [torch.load(tmp_path / f"{n}/ck.pth", weights_only=True) for n in ("two", "one")]
    for key, value in teachers[0].items():
        torch.testing.assert_close(value, teachers[1][key], rtol=0, atol=TOLERANCE)
    resumed = [croc_pretrain(image_paths, str(tmp_path / n), 3) for n in ("two", "one")]
    assert [r["resumed_from_epoch"] for r in resumed] == [2, 2]
    np.testing.assert_allclose(resumed[0]["epochs"][2]["loss"], resumed[1]["epochs"][2]["loss"], rtol=0, atol=TOLERANCE)


PASS_NET = NetConfig(arch="tiny", width=8, output_stride=8, projector_hidden=16, projector_dim=8, prototypes=6)
PASS_CFG = pass_train.PretrainConfig(
    epochs=2, batch_size=4, lr=0.6, view_size=[32, 32], local_crops=2, local_size=[16, 16], overlap_size=2,
    queue_length=8, queue_start_epoch=0, freeze_prototypes_epochs=1, optimiser="larc",
)  # fmt: skip


def pass_step_losses(paths: list[str], out: str) -> None:
    """Two epochs of PASS steps (multi-crop, queue from the first step, LARC) with frozen batch statistics:
    gloo has no SyncBatchNorm, so in training mode each process would normalise its own share."""
    trainer = pass_train.PASSTrainer(PASS_NET, PASS_CFG, iters_per_epoch=2, seed=0, device="cpu")
    trainer.net.eval()
    batches = EpochBatches(len(paths), PASS_CFG.batch_size, 0, rank=trainer.world.rank, world=trainer.world.size)
    sample = partial(pass_train.multi_crop, aug=PASS_CFG.view_augment(), local=PASS_CFG.local_augment(), n_local=2, patch=8)
    loader = make_loader(ImageDataset(paths, sample, 0, (48, 48)), batches, pass_train.collate_crops)
    losses = []
    for epoch in range(2):
        batches.epoch = epoch
        losses += [trainer.step(views, None, (48, 48), epoch * 2 + b).parts for b, (_, views) in enumerate(loader)]
    if trainer.world.is_main:
        Path(out).write_text(json.dumps({"losses": losses, "queue_filled": trainer.queue.filled}))
    distributed.finish()


def test_two_gloo_processes_give_the_one_process_pass_losses(image_paths, tmp_path):
    run_processes(2, pass_step_losses, image_paths, str(tmp_path / "two.json"))
    pass_step_losses(image_paths, str(tmp_path / "one.json"))
    two, one = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("two", "one"))
    assert len(one["losses"]) == len(two["losses"]) == 4 and one["queue_filled"] == two["queue_filled"] == 8
    for a, b in zip(one["losses"], two["losses"]):
        assert set(a) == set(b) == {"swav", "i2p", "p2p"}
        np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(a)], rtol=0, atol=TOLERANCE)
    assert len({round(s["swav"], 4) for s in one["losses"]}) > 1, "the steps train: losses change"


def pass_pretrain(paths: list[str], out: str, epochs: int) -> dict:
    """PASS pretraining (training-mode batch norm) for `epochs` into the folder `out`, resuming from its resume.pth."""
    root = Path(out)
    cfg = pass_train.PretrainConfig(**{**PASS_CFG.__dict__, "epochs": epochs})
    return pass_train.pretrain(PASS_NET, cfg, paths, (48, 48), None, root / "ck.pth", root / "log.json", root / "resume.pth", "h", 0, "cpu")


def test_rank_zero_pass_checkpoint_resumes_in_one_process(image_paths, tmp_path):
    run_processes(2, pass_pretrain, image_paths, str(tmp_path), 2)
    saved = torch.load(tmp_path / "resume.pth", weights_only=False)
    assert saved["queue"].shape == (2, 8, 8) and saved["queue_filled"] == 8, "rank 0 keeps the global queue"
    assert len(json.loads((tmp_path / "log.json").read_text())["epochs"]) == 2
    resumed = pass_pretrain(image_paths, str(tmp_path), 3)
    assert resumed["resumed_from_epoch"] == 2 and len(resumed["epochs"]) == 3
    assert resumed["epochs"][:2] == saved["history"] and np.isfinite(resumed["epochs"][2]["loss"])


FINETUNE = FinetuneConfig(epochs=2, batch_size=4, lr=0.01)


def finetune_inputs(tmp_path: Path, n: int = 8) -> tuple[list, dict, Path]:
    """Manifest rows of `n` 32 px images, their pseudo labels in 2 categories and a PASS pretraining checkpoint."""
    from tests.unit.test_device_placement import write_rgb

    rows = write_rgb(tmp_path, n, size=32)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "pretrain.pth", {"net": PASSNet(PASS_NET).state_dict(), "net_config": PASS_NET.__dict__})
    return rows, {"ids": [r.id for r in rows], "labels": [i % 2 for i in range(n)], "k": 2}, tmp_path / "pretrain.pth"


def finetune_step_losses(rows: list, pseudo: dict, checkpoint: str, out: str) -> None:
    """Two epochs of two PASS fine-tuning steps on the global batch of 4; rank 0 writes each step's loss and
    correct count and the final weights. The model is in eval mode: on the CPU each gloo process would
    normalise its own share in BatchNorm (torch has no CPU SyncBatchNorm), so train mode makes 2 processes
    differ from 1 by design."""
    trainer = Finetuner(checkpoint, pseudo["k"], FINETUNE, iters_per_epoch=2, seed=0, device="cpu")
    trainer.model.eval()
    batches, loader = finetune_loader(rows, FINETUNE, (32, 32), 0, trainer.world, 1, trainer.device)
    targets = torch.tensor(pseudo["labels"])
    steps = []
    for epoch in range(2):
        batches.epoch = epoch
        for b, (idx, images) in enumerate(loader):
            loss, correct = trainer.step(images, targets[idx], epoch * 2 + b, (epoch, b))
            steps.append([loss, trainer.global_count(correct)])
    if trainer.world.is_main:
        Path(out).write_text(json.dumps(steps))
        torch.save(trainer.model.state_dict(), f"{out}.pt")
    distributed.finish()


def test_two_gloo_processes_give_the_one_process_pass_finetuning_steps(tmp_path):
    rows, pseudo, checkpoint = finetune_inputs(tmp_path)
    run_processes(2, finetune_step_losses, rows, pseudo, str(checkpoint), str(tmp_path / "two.json"))
    finetune_step_losses(rows, pseudo, str(checkpoint), str(tmp_path / "one.json"))
    two, one = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("two", "one"))
    assert len(one) == len(two) == 4 and len({round(loss, 4) for loss, _ in one}) == 4, "four steps that train"
    np.testing.assert_allclose([loss for loss, _ in two], [loss for loss, _ in one], rtol=0, atol=TOLERANCE)
    assert [c for _, c in two] == [c for _, c in one], "the correct predictions of the whole global batch"
    weights = [torch.load(tmp_path / f"{n}.json.pt", weights_only=True) for n in ("two", "one")]
    for key, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][key], rtol=0, atol=TOLERANCE)


def pass_finetuning(rows: list, pseudo: dict, checkpoint: str, out: str, epochs: int) -> list[dict]:
    """PASS fine-tuning (training-mode batch norm) for `epochs` into the folder `out`, resuming from its resume.pth."""
    root = Path(out)
    cfg = FinetuneConfig(**{**FINETUNE.__dict__, "epochs": epochs})
    return finetune(checkpoint, pseudo, rows, cfg, (32, 32), 0, root / "model.pth", root / "resume.pth", "h", "cpu")


def test_rank_zero_pass_finetuning_state_resumes_in_one_process(tmp_path):
    rows, pseudo, checkpoint = finetune_inputs(tmp_path)
    (tmp_path / "two").mkdir()
    run_processes(2, pass_finetuning, rows, pseudo, str(checkpoint), str(tmp_path / "two"), 2)
    saved = torch.load(tmp_path / "two/resume.pth", weights_only=False)
    assert saved["epoch"] == 1 and [e["epoch"] for e in saved["history"]] == [1, 2]
    assert torch.load(tmp_path / "two/model.pth", weights_only=True)["history"] == saved["history"]
    resumed = pass_finetuning(rows, pseudo, str(checkpoint), str(tmp_path / "two"), 3)
    assert resumed[:2] == saved["history"] and [e["epoch"] for e in resumed] == [1, 2, 3], "epochs 1-2 are rank 0's"
    assert np.isfinite(resumed[2]["loss"]) and 0 <= resumed[2]["pseudo_label_accuracy"] <= 1


def alignseg_training(paths: list[str], out: str) -> None:
    """Three epochs of one step each (the global batch is all 8 images), release losses (a sum over the batch)."""
    cfg = AlignSegConfig(k=3, heads=2, global_size=[32, 32], local_size=[16, 16], epochs=3, batch_size=8, lr=1e-3, attention_blur=0.0)
    backbone = build_backbone(BackboneConfig.from_dict(TINY_BACKBONE), seed=0)
    root = Path(out)
    train_alignseg(cfg, backbone, paths, 3, root / "d.pt", root / "log.json", root / "resume.pth", "h", 0, torch.device("cpu"))


def test_two_gloo_processes_give_the_one_process_alignseg_losses(image_paths, tmp_path):
    for name in ("two", "one"):
        (tmp_path / name).mkdir()
    run_processes(2, alignseg_training, image_paths, str(tmp_path / "two"))
    alignseg_training(image_paths, str(tmp_path / "one"))
    two, one = (json.loads((tmp_path / f"{n}/log.json").read_text())["epochs"] for n in ("two", "one"))
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert set(a) == set(b) == {"epoch", "loss", "loss_proto", "loss_corr", "prototype_cosine"}
        np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(a)], rtol=0, atol=TOLERANCE)
    assert one[0]["loss"] != one[2]["loss"], "the steps train: losses change"
    decoders = [torch.load(tmp_path / f"{n}/d.pt", weights_only=True)["state_dict"] for n in ("two", "one")]
    for key, value in decoders[0].items():
        torch.testing.assert_close(value, decoders[1][key], rtol=0, atol=TOLERANCE)


def deeplab_bank(tmp_path: Path, n: int = 4) -> tuple[list, Path]:
    """Manifest rows of `n` 32 px images and a LabelBank of random labels (2 background) for them."""
    from tests.unit.test_device_placement import write_rgb
    from useg.stores import provenance
    from useg.stores.labelbank import LabelBankWriter

    rows = write_rgb(tmp_path, n, size=32)
    labels = np.random.default_rng(0).integers(0, 3, (n, 32, 32))
    prov, path = provenance("t", {}, seed=0), tmp_path / "bank.zarr"
    with LabelBankWriter(path, np.arange(n), [r.id for r in rows], 3, (32, 32), prov, with_maps=False, input_size=[32, 32], background_label=2) as w:
        w.write(0, None, labels, labels < 2)
    return rows, path


DEEPLAB = {**TINY_DEEPLAB, "batch_size": 4, "epochs": 2, "lr": 0.05}


def deeplab_step_losses(rows: list, bank_path: str, out: str) -> None:
    """Three DeepLab-v3 steps on the global batch of 4; rank 0 writes the losses. The model is in eval mode:
    on the CPU each gloo process would normalise its own share in BatchNorm (torch has no CPU SyncBatchNorm)
    and draw its own dropout masks, so train mode makes 2 processes differ from 1 by design."""
    from useg.methods.maskdistill.deeplab import deeplab_step, training_batches
    from useg.methods.maskdistill.models import build_deeplab, sgd
    from useg.stores.labelbank import LabelBank
    from useg.train import LossGuard
    from useg.train.amp import FULL_PRECISION

    world, device = distributed.start(torch.device("cpu"))
    _, batches, loader = training_batches(rows, LabelBank([bank_path]), DEEPLAB, 0, world, 1, device)
    model = build_deeplab(DEEPLAB, 3, seed=0).eval()
    trained, optimiser, guard = distributed.wrap(model, device), sgd(model, DEEPLAB), LossGuard("lower maskdistill.deeplab.lr")
    losses = []
    for epoch in range(3):
        batches.epoch = epoch
        losses += [deeplab_step(trained, optimiser, FULL_PRECISION, guard, b, DEEPLAB["hard_fraction"], device, (epoch, 0)) for b in loader]
    if world.is_main:
        Path(out).write_text(json.dumps(losses))
        torch.save(model.state_dict(), f"{out}.pt")
    distributed.finish()


def test_two_gloo_processes_give_the_one_process_deeplab_losses(tmp_path):
    rows, bank = deeplab_bank(tmp_path)
    run_processes(2, deeplab_step_losses, rows, str(bank), str(tmp_path / "two.json"))
    deeplab_step_losses(rows, str(bank), str(tmp_path / "one.json"))
    two, one = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("two", "one"))
    assert len(one) == len(two) == 3 and len(set(one)) == 3, "three steps that train"
    np.testing.assert_allclose(two, one, rtol=0, atol=TOLERANCE)
    weights = [torch.load(tmp_path / f"{n}.json.pt", weights_only=True) for n in ("two", "one")]
    for key, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][key], rtol=0, atol=DEEPLAB_WEIGHT_TOLERANCE)


def test_the_global_hard_pixels_are_ranked_over_every_process():
    run_processes(2, check_global_hard_pixels)


def check_global_hard_pixels() -> None:
    """Rank 1's pixels are all harder than rank 0's: the top 25 % of the global batch lie on rank 1 only."""
    from useg.methods.maskdistill.deeplab import global_hard_pixel_ce, hard_pixel_ce

    distributed.start(torch.device("cpu"))
    rank = torch.distributed.get_rank()
    everyone = torch.stack([torch.linspace(0, 1, 16).reshape(1, 1, 4, 4) * 3 * r for r in (1, 4)])  # [2, 1, 1, 4, 4]
    logits = torch.cat([everyone[rank], -everyone[rank]], dim=1).requires_grad_()  # label 1 is wrong
    target = torch.ones(1, 4, 4, dtype=torch.long)
    loss = global_hard_pixel_ce(logits, target, 0.25)
    whole = torch.cat([torch.cat([e, -e], dim=1) for e in everyone])
    torch.testing.assert_close(loss.detach(), hard_pixel_ce(whole, torch.ones(2, 4, 4, dtype=torch.long), 0.25))
    loss.backward()
    assert (logits.grad.abs().sum() > 0) == (rank == 1), "only the hardest pixels, all on rank 1, carry gradient"
    distributed.finish()


def deeplab_training(rows: list, bank_path: str, out: str, epochs: int) -> dict:
    """DeepLab-v3 training for `epochs` into the folder `out`, resuming from its resume.pth."""
    from useg.methods.maskdistill.deeplab import train_deeplab
    from useg.stores.labelbank import LabelBank

    root = Path(out)
    cfg = {**DEEPLAB, "epochs": epochs}
    return train_deeplab(rows, LabelBank([bank_path]), cfg, 0, root / "d.pt", torch.device("cpu"), resume=(root / "resume.pth", "h"))


def test_deeplab_rank_zero_writes_and_its_resume_state_resumes_in_one_process(tmp_path):
    rows, bank = deeplab_bank(tmp_path)
    (tmp_path / "two").mkdir()
    run_processes(2, deeplab_training, rows, str(bank), str(tmp_path / "two"), 2)
    assert (tmp_path / "two/d.pt").is_file() and (tmp_path / "two/resume.pth").is_file()
    resumed = deeplab_training(rows, str(bank), str(tmp_path / "two"), 3)
    assert resumed["resumed_from_epoch"] == 2 and [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    assert all(np.isfinite(e["loss"]) for e in resumed["epochs"])


TRANSFGU = {**TRANSFGU_BOOTSTRAP, "decoder": {"dim": 16, "layers": 1, "heads": 2, "dropout": 0.0}, "batch_size": 4, "lr": 1e-2}


def transfgu_round(rows: list, bank_path: str, out: str) -> None:
    """Round 1 of the `rounds` schedule (a teacher on the whole image) for 3 epochs of 2 global batches of 4;
    rank 0 writes the model and the log. The decoder's dropout is 0: each process draws its own dropout masks,
    so with dropout 2 processes differ from 1 by design."""
    from useg.methods.transfgu.segmenter import SegmenterConfig, build_segmenter
    from useg.methods.transfgu.stages import run_training_round
    from useg.stores.labelbank import LabelBank

    backbone = build_backbone(BackboneConfig.from_dict(TINY_BACKBONE), seed=0)
    bank = LabelBank([bank_path])
    teacher = build_segmenter(SegmenterConfig(backbone.embed_dim, bank.num_labels, **TRANSFGU["decoder"]), seed=1)
    root = Path(out)
    cfg = {**TRANSFGU, "epochs": 3}
    run_training_round(backbone, rows, bank, teacher, cfg, 0, 1, root / "model.pt", torch.device("cpu"), root / "log.json")


def epoch_values(entry: dict) -> list[float]:
    """A TransFGU history entry's numbers in key order, its label shares among them."""
    return [float(v) for k in sorted(entry) for v in np.atleast_1d(entry[k])]


def assert_same_segmenter(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Two Segmenter state dicts agree within TOLERANCE, but for the attention's key bias: softmax ignores it,
    so its gradient is float rounding alone, which Adam's normalisation turns into steps of up to lr / 100 that
    differ with the order of the reductions (1e-4 apart after 3 steps at lr 1e-2); it changes no output."""
    for key, value in a.items():
        other = b[key]
        if key.endswith("self_attn.in_proj_bias"):  # [query; key; value] biases
            dim = len(value) // 3
            value, other = (torch.cat([t[:dim], t[2 * dim :]]) for t in (value, other))
        torch.testing.assert_close(value, other, rtol=0, atol=TOLERANCE, msg=lambda m: f"{key}: {m}")


def test_two_gloo_processes_give_the_one_process_transfgu_round(tmp_path):
    rows, _ = make_split(tmp_path, 8)
    for name in ("two", "one"):
        (tmp_path / name).mkdir()
    run_processes(2, transfgu_round, rows, str(tmp_path / "bank.zarr"), str(tmp_path / "two"))
    transfgu_round(rows, str(tmp_path / "bank.zarr"), str(tmp_path / "one"))
    two, one = (json.loads((tmp_path / f"{n}/log.json").read_text())["epochs"] for n in ("two", "one"))
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert set(a) == set(b) == {"epoch", "loss", "loss_main", "loss_div", "loss_unc", "skipped", "alpha", "label_shares"}
        np.testing.assert_allclose(epoch_values(a), epoch_values(b), rtol=0, atol=TOLERANCE)
    assert one[0]["loss"] != one[2]["loss"], "the steps train: losses change"
    assert_same_segmenter(*(torch.load(tmp_path / f"{n}/model.pt", weights_only=True)["state_dict"] for n in ("two", "one")))


def transfgu_bootstrap(rows: list, bank_path: str, out: str) -> None:
    """The release's schedule (6 epochs, teacher updates at epochs 2 and 4) on global batches of 4 into the folder
    `out`, resuming from its resume.pth; rank 0 saves the final weights and history. Dropout 0, as transfgu_round."""
    from useg.methods.transfgu.bootstrap import train_bootstrap
    from useg.stores.labelbank import LabelBank

    backbone = build_backbone(BackboneConfig.from_dict(TINY_BACKBONE), seed=0)
    root = Path(out)
    student, history = train_bootstrap(backbone, rows, LabelBank([bank_path]), TRANSFGU, 0, torch.device("cpu"), root / "resume.pth")
    if distributed.is_main():
        torch.save({"weights": student.state_dict(), "history": history}, root / "final.pth")
    distributed.finish()


def test_two_gloo_processes_give_the_one_process_transfgu_schedule_and_rank_zero_state_resumes(tmp_path):
    rows, _ = make_split(tmp_path, 8)
    bank = str(tmp_path / "bank.zarr")
    for name in ("two", "one"):
        (tmp_path / name).mkdir()
    run_processes(2, transfgu_bootstrap, rows, bank, str(tmp_path / "two"))
    transfgu_bootstrap(rows, bank, str(tmp_path / "one"))
    two, one = (torch.load(tmp_path / f"{n}/final.pth", weights_only=False) for n in ("two", "one"))
    assert [h["teacher_update"] for h in one["history"]] == [False, False, True, False, True, False]
    for a, b in zip(one["history"], two["history"], strict=True):
        np.testing.assert_allclose(epoch_values(a), epoch_values(b), rtol=0, atol=TOLERANCE)
    assert_same_segmenter(one["weights"], two["weights"])
    saved = torch.load(tmp_path / "two/resume.pth", weights_only=True)
    assert saved["epoch"] == 3 and saved["history"] == two["history"][:4], "rank 0 kept the state before the last update"
    transfgu_bootstrap(rows, bank, str(tmp_path / "two"))  # one process resumes rank 0's state at epoch 5
    resumed = torch.load(tmp_path / "two/final.pth", weights_only=False)
    assert resumed["history"][:4] == saved["history"] and len(resumed["history"]) == 6
    assert_same_segmenter(one["weights"], resumed["weights"])


def check_uneven_batch() -> None:
    with pytest.raises(ConfigError, match=r"croc.batch_size \(3\) must be a multiple of the 2 GPUs"):
        distributed.start(torch.device("cpu"))
        distributed.check_global_batch(3, "croc.batch_size")
    distributed.finish()


def test_a_global_batch_that_does_not_split_names_its_key():
    run_processes(2, check_uneven_batch)


def test_one_process_without_torchrun_is_the_plain_run():
    world, device = distributed.start(torch.device("cpu"))
    x = torch.arange(4.0)
    assert world == distributed.World() and world.is_main and device == torch.device("cpu")
    assert distributed.gather_rows(x) is x and distributed.local_rows(x) is x and distributed.global_sum(x) is x
    assert distributed.global_mean(torch.tensor(2.5)) == 2.5
    assert not isinstance(distributed.wrap(torch.nn.Linear(2, 2), device), torch.nn.parallel.DistributedDataParallel)


def dry_run_job(tmp_path: Path, rule: str, cfg: dict) -> tuple[str, str]:
    """The dry run's resources line and shell command of `rule`'s job."""
    result = run_snakemake(tmp_path, cfg, "-n", "-p", "--until", rule)
    assert result.returncode == 0, result.stderr[-3000:]
    job = result.stdout[result.stdout.index(f"rule {rule}:") :]
    head, command = job.split("Shell command: ", 1)
    return head[head.index("resources:") :].splitlines()[0], command.splitlines()[0]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("rule", "stage", "section", "gpus"),
    [
        ("pretrain", "pretrain", {"backbone": {"weights": "pretrain"}, "croc": {**DAG_CROC, "gpus": 1}}, 1),
        ("pretrain", "pretrain", {"backbone": {"weights": "pretrain"}, "croc": {**DAG_CROC, "gpus": 2}}, 2),
        ("alignseg_train", "alignseg-train", {"methods": ["alignseg"], "alignseg": {"gpus": 4}}, 4),
        ("pass_pretrain", "pass-pretrain", {"methods": ["pass"], "pass": {"pretrain": {"gpus": 2}}}, 2),
        ("transfgu_train", "transfgu-train", {"methods": ["transfgu"], "transfgu": {"gpus": 2}}, 2),
        ("transfgu_bootstrap", "transfgu-bootstrap", {"methods": ["transfgu"], "transfgu": {"gpus": 2}}, 2),
        ("transfgu_bootstrap", "transfgu-bootstrap", {"methods": ["transfgu"], "transfgu": {"gpus": 1}}, 1),
        ("pass_finetune", "pass-finetune", {"methods": ["pass"], "pass": {"finetune": {"gpus": 2}}}, 2),
    ],
)
def test_a_training_rule_runs_torchrun_for_more_than_one_gpu_and_asks_for_them(rule, stage, section, gpus, tmp_path):
    cfg = tiny_config(**section)
    resources, command = dry_run_job(tmp_path, rule, cfg)
    launcher = f"torchrun --standalone --nproc_per_node {gpus} -m useg --" if gpus > 1 else "python -m useg"
    assert command.startswith(f"{launcher} {stage} --params")
    assert '"gpus"' not in command, "the GPU count is not part of the stage's config (nor its hash)"
    assert f"gpu={gpus if has_nvidia_gpu() else 0}" in resources and "nodes=1" in resources


@pytest.mark.integration
def test_the_deeplab_rule_runs_torchrun_for_two_gpus_and_keeps_a_resume_state(tmp_path):
    cfg = tiny_config(methods=["maskdistill"], maskdistill={"deeplab": {"gpus": 2}})
    resources, command = dry_run_job(tmp_path, "maskdistill_deeplab", cfg)
    assert command.startswith("torchrun --standalone --nproc_per_node 2 -m useg -- maskdistill-deeplab --params")
    assert '"gpus"' not in command and "--resume results/tiny/maskdistill/deeplab" in command
    assert f"gpu={2 if has_nvidia_gpu() else 0}" in resources and "nodes=1" in resources


@pytest.mark.integration
def test_the_pretrain_rule_trains_in_two_processes_and_rank_zero_writes(tmp_path):
    cfg = tiny_config(backbone={"weights": "pretrain"}, croc={**DAG_CROC, "gpus": 2})
    result = run_snakemake(tmp_path, cfg, "--until", "pretrain")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "results/tiny"
    log = json.loads((out / "croc/train-log.json").read_text())
    assert len(log["epochs"]) == 1 and sum(log["k_histogram"].values()) == 2 * 4 * 2, "steps x images x heads of the global batch"
    assert (out / "croc/checkpoint.pth").is_file() and (out / "croc/resume/last.pth").is_file()
    lines = (out / "logs/pretrain.log").read_text().splitlines()
    assert sum("croc epoch 1/1" in line for line in lines) == 1, "one process writes the log file"


@pytest.mark.integration
def test_the_pass_pretrain_rule_trains_in_two_processes_and_rank_zero_writes(tmp_path):
    section = {**PASS_DAG["pass"], "saliency_prior": False}
    section["pretrain"] = {**section["pretrain"], "gpus": 2, "local_crops": 2, "local_size": [16, 16], "epochs": 2}
    result = run_snakemake(tmp_path, {**PASS_DAG, "pass": section}, "--until", "pass_pretrain")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "results/tiny"
    log = json.loads((out / "pass/pretrain-log.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [1, 2] and log["steps_per_epoch"] == 2, "steps of the global batch of 4"
    assert (out / "pass/pretrain.pth").is_file() and (out / "pass/resume/pretrain.pth").is_file()
    lines = (out / "logs/pass_pretrain.log").read_text().splitlines()
    assert sum("pass epoch 2/2" in line for line in lines) == 1, "one process writes the log file"


@pytest.mark.integration
def test_the_pass_finetune_rule_trains_in_two_processes_and_rank_zero_writes(tmp_path):
    section = {**PASS_DAG["pass"], "saliency_prior": False}
    section["finetune"] = {**section["finetune"], "gpus": 2, "epochs": 2}
    result = run_snakemake(tmp_path, {**PASS_DAG, "pass": section}, "--until", "pass_finetune")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "results/tiny"
    model = torch.load(out / "pass/model.pth", weights_only=True)
    assert [e["epoch"] for e in model["history"]] == [1, 2] and (out / "pass/resume/finetune.pth").is_file()
    lines = (out / "logs/pass_finetune.log").read_text().splitlines()
    assert sum("pass finetune 2/2" in line for line in lines) == 1, "one process writes the log file"


def test_a_stage_asks_for_its_gpus_on_a_cluster_and_for_none_on_a_cpu_machine():
    assert gpu_resource(4, on_cluster=True) == 4
    assert gpu_resource(4, on_cluster=False) == (4 if has_nvidia_gpu() else 0)
