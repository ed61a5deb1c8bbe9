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
from tests.integration.test_pretrain_dag import TINY_CROC as DAG_CROC
from tests.unit.test_croc import TINY_ARCH, TINY_CROC
from useg.backbones import BackboneConfig, build_backbone
from useg.data.augment import two_views
from useg.data.pipeline import EpochBatches, ImageDataset, make_loader
from useg.data.synthetic import ShapesConfig, write_shapes_dataset
from useg.errors import ConfigError
from useg.methods.alignseg.train import AlignSegConfig, train_alignseg
from useg.methods.croc.train import CrOCConfig, CrOCTrainer, collate_pairs, pretrain
from useg.profiles.gpus import gpu_resource, has_nvidia_gpu
from useg.train import distributed

# Measured on a 2-core CPU (docs/measurements.md): the 2-process losses differ from 1 process's by
# at most 1.5e-6 (float32 reductions in another order); 1e-5 leaves a margin and still catches a
# step on per-process statistics (AlignSeg's L_corr summed per process: off by 4.4).
TOLERANCE = 1e-5
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
        ("pretrain", "pretrain", {"backbone": {"weights": "pretrain"}, "croc": DAG_CROC}, 1),
        ("pretrain", "pretrain", {"backbone": {"weights": "pretrain"}, "croc": DAG_CROC}, 2),
        ("alignseg_train", "alignseg-train", {"methods": ["alignseg"], "alignseg": {}}, 4),
    ],
)
def test_a_training_rule_runs_torchrun_for_more_than_one_gpu_and_asks_for_them(rule, stage, section, gpus, tmp_path):
    key = next(k for k in ("croc", "alignseg") if k in section)
    cfg = tiny_config(**{**section, key: {**section[key], "gpus": gpus}})
    resources, command = dry_run_job(tmp_path, rule, cfg)
    launcher = f"torchrun --standalone --nproc_per_node {gpus} -m useg --" if gpus > 1 else "python -m useg"
    assert command.startswith(f"{launcher} {stage} --params")
    assert '"gpus"' not in command, "the GPU count is not part of the stage's config (nor its hash)"
    assert f"gpu={gpus if has_nvidia_gpu() else 0}" in resources


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


def test_a_stage_asks_for_its_gpus_on_a_cluster_and_for_none_on_a_cpu_machine():
    assert gpu_resource(4, on_cluster=True) == 4
    assert gpu_resource(4, on_cluster=False) == (4 if has_nvidia_gpu() else 0)
