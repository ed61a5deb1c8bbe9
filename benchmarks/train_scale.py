"""Peak RSS of the training stages' input path at growing N, and loader vs model rates.

For every N (synthetic shapes images) and training stage (CrOC, PASS pretraining, AlignSeg, a
TransFGU round with its teacher on a label bank of random maps, MaskDistill's DeepLab-v3 and Mask R-CNN, the linear probe; on banks and a feature store of N rows
written beside the images), a fresh
process builds the stage's dataset, loader and trainer exactly as the stage does and runs a fixed
number of steps; its peak RSS (VmHWM) is reported beside that of decoding the whole split into
memory, the path the stages took before the input pipeline. Then, on the same batches, the loader's
images/s with 0, 1 and 2 workers and the model's own step rate.

    nice python benchmarks/train_scale.py --sizes 1000 5000 20000 --out benchmarks/results/train_scale.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import subprocess
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from useg.data.augment import two_views
from useg.data.pipeline import EpochBatches, ImageDataset, make_loader
from useg.data.synthetic import ShapesConfig, write_shapes_dataset

STEPS, BATCH, SIZE = 4, 8, 48
TINY_ARCH = dict(model="vit_tiny_patch16_224", patch_size=8, embed_dim=64, depth=2, num_heads=2, input_size=(32, 32))
TINY_CROC = dict(epochs=1, batch_size=BATCH, warmup_epochs=0, k_start=4, sinkhorn_iters=20, head_hidden_dim=32,
                 head_bottleneck_dim=16, head_global_dim=64, head_dense_dim=32, view_size=[32, 32], device="cpu")  # fmt: skip
TINY_TRANSFGU = {
    "decoder": {"dim": 16, "layers": 1, "heads": 2}, "alpha": [0.03, 0.1], "w_div": 1.0, "w_unc": 0.3, "grad_clamp": 1.0,
    "skip_nonpositive_loss": True, "losses": {"peer": True, "uncertainty": True, "diversity": True},
    "diversity_form": "release", "augment_rule": "batch", "augment": {}, "amp": "off",
}  # fmt: skip


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def croc_stage(paths: list[str], threads: int):
    """CrOC's trainer and loader, as `useg.methods.croc.train.pretrain` builds them."""
    from useg.backbones.vit import BackboneConfig
    from useg.methods.croc.train import CrOCConfig, CrOCTrainer, collate_pairs

    cfg = CrOCConfig(**TINY_CROC)
    trainer = CrOCTrainer(cfg, BackboneConfig(**TINY_ARCH), len(paths) // BATCH, 0)
    dataset = ImageDataset(paths, partial(two_views, augs=cfg.view_augments(), patch=8), 0)
    loader = make_loader(dataset, EpochBatches(len(paths), BATCH, 0), collate_pairs, threads)
    generator = torch.Generator().manual_seed(0)
    return loader, lambda it, batch: trainer.step(batch, it, generator)


def pass_stage(paths: list[str], threads: int):
    """PASS pretraining's trainer and loader, as `useg.methods.pass_.train.pretrain` builds them."""
    from useg.methods.pass_.model import NetConfig
    from useg.methods.pass_.train import PASSTrainer, PretrainConfig, collate_crops, multi_crop

    net_cfg = NetConfig(arch="tiny", width=8, output_stride=8, projector_hidden=16, projector_dim=8, prototypes=6)
    cfg = PretrainConfig(batch_size=BATCH, view_size=[32, 32], overlap_size=2)
    trainer = PASSTrainer(net_cfg, cfg, len(paths) // BATCH, 0, "cpu")
    sample = partial(multi_crop, aug=cfg.view_augment(), local=cfg.local_augment(), n_local=cfg.local_crops, patch=8)
    dataset = ImageDataset(paths, sample, 0, (SIZE, SIZE))
    loader = make_loader(dataset, EpochBatches(len(paths), BATCH, 0), collate_crops, threads)
    return loader, lambda it, batch: trainer.step(batch[1], None, (SIZE, SIZE), it)


def alignseg_stage(paths: list[str], threads: int):
    """AlignSeg's decoder step and loader, as `useg.methods.alignseg.train.train_alignseg` builds them."""
    from useg.backbones import BackboneConfig, build_backbone
    from useg.methods.alignseg.crops import collate_crops, image_crops
    from useg.methods.alignseg.decoder import build_decoder
    from useg.methods.alignseg.optim import build_optimiser
    from useg.methods.alignseg.train import AlignSegConfig, step_loss

    cfg = AlignSegConfig(k=3, heads=2, global_size=[32, 32], local_size=[16, 16], batch_size=BATCH, attention_blur=0.0)
    backbone = build_backbone(BackboneConfig(**TINY_ARCH), seed=0).eval().requires_grad_(False)
    decoder = build_decoder(cfg.decoder(64, 3), 0)
    optimiser, crops, losses = build_optimiser(decoder, cfg), cfg.crops(), cfg.loss()
    dataset = ImageDataset(paths, partial(image_crops, crops, 8), 0)
    loader = make_loader(dataset, EpochBatches(len(paths), BATCH, 0), partial(collate_crops, crops.num_local), threads)

    def step(_: int, batch) -> None:
        loss, _ = step_loss(decoder, backbone, batch, cfg, losses, torch.device("cpu"))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return loader, step


def manifest_rows(paths: list[str]):
    """Manifest rows of the synthetic train images."""
    from useg.data.manifest import ManifestRow

    return [ManifestRow(id=Path(p).stem, path=p, width=SIZE, height=SIZE, split="train") for p in paths]


def banks_folder(paths: list[str]) -> Path:
    """Where write_banks put the label and mask banks of these images."""
    return Path(paths[0]).parents[1]


def write_banks(paths: list[str], chunk: int = 1000) -> None:
    """A LabelBank (random labels, 2 the background) and a MaskBank (one square object each) of the images."""
    from useg.stores import provenance
    from useg.stores.labelbank import LabelBankWriter
    from useg.stores.maskbank import MaskBankWriter

    n, grid, prov, rng = len(paths), SIZE // 8, provenance("benchmark", {}, seed=0), np.random.default_rng(0)
    ids, folder = [Path(p).stem for p in paths], banks_folder(paths)
    with LabelBankWriter(folder / "labels.zarr", np.arange(n), ids, 3, (SIZE, SIZE), prov, with_maps=False, input_size=[SIZE, SIZE], background_label=2) as w:
        for start in range(0, n, chunk):
            labels = rng.integers(0, 3, (min(chunk, n - start), SIZE, SIZE), dtype=np.uint8)
            w.write(start, None, labels, labels < 2)
    masks = np.zeros((n, grid, grid), np.uint8)
    masks[:, 1 : grid - 1, 1 : grid - 1] = 1
    attrs = {"input_size": [SIZE, SIZE], "patch_size": 8, "topk": 0.4, "background": "none"}
    with MaskBankWriter(folder / "masks.zarr", np.arange(n), ids, (grid, grid), 8, prov, **attrs) as w:
        w.write(0, masks=masks, boxes=np.tile([8, 8, SIZE - 8, SIZE - 8], (n, 1)), source=np.zeros(n), cls=np.zeros((n, 8)))


def label_bank(paths: list[str], labels: int = 3) -> str:
    """A label bank of random response maps for `paths` at the tiny backbone's grid (TransFGU's input)."""
    from useg.stores.labelbank import LabelBankWriter

    bank_path = Path(paths[0]).parent.parent / "bank.zarr"
    if not bank_path.exists():
        n, grid = len(paths), SIZE // TINY_ARCH["patch_size"]
        maps = np.random.default_rng(0).random((n, labels, grid, grid), dtype=np.float32)
        with LabelBankWriter(bank_path, np.arange(n), [Path(p).stem for p in paths], labels, (grid, grid), {}, input_size=[SIZE, SIZE]) as writer:
            writer.write(0, maps, maps.argmax(1), np.ones((n, grid, grid), np.uint8))
    return str(bank_path)


def transfgu_stage(paths: list[str], threads: int):
    """A TransFGU round with a teacher (round 1 of `rounds`; the release job's batches are the same), as
    `useg.methods.transfgu.stages.train_round` builds it: images and maps streamed from the bank."""
    from useg.backbones import BackboneConfig, build_backbone
    from useg.data.manifest import ManifestRow
    from useg.methods.transfgu.segmenter import SegmenterConfig, build_segmenter
    from useg.methods.transfgu.training import step_setup, train_batch, training_stream
    from useg.stores.labelbank import LabelBank
    from useg.train.descent import build_optimiser
    from useg.world import World

    cfg = {**TINY_TRANSFGU, "batch_size": BATCH}
    backbone = build_backbone(BackboneConfig(**TINY_ARCH), seed=0).eval().requires_grad_(False)
    bank = LabelBank([label_bank(paths)])
    rows = [ManifestRow(Path(p).stem, p, SIZE, SIZE, "train") for p in paths]
    cpu = torch.device("cpu")
    stream = training_stream(backbone, rows, bank, cfg, 0, True, World(), cpu, threads)
    seg_cfg = SegmenterConfig(64, bank.num_labels, **cfg["decoder"])
    student, teacher = build_segmenter(seg_cfg, 0), build_segmenter(seg_cfg, 1).eval()
    optimiser, setup = build_optimiser(student, "adam", 1e-4, 5e-4), step_setup(cfg, cpu)
    generator = torch.Generator().manual_seed(0)
    return stream.loader, lambda it, batch: train_batch(student, optimiser, backbone, stream, teacher, setup, batch, 0, it, 0.05, (0, 1, 0), generator, cpu)


TINY_DEEPLAB = {
    "backbone": "resnet18", "weights": "random", "norm": "batch", "frozen_stages": 0, "epochs": 1, "batch_size": BATCH,
    "lr": 0.01, "lr_step": 0.5, "weight_decay": 1e-4, "hard_fraction": 0.2, "input_size": None, "rotate": 5.0,
    "scale": [0.75, 1.25], "amp": "off",
}  # fmt: skip
TINY_RCNN = {
    "backbone": "resnet18", "weights": "random", "head": "fpn", "trainable_layers": 5, "fpn_channels": 16, "head_dim": 32,
    "proposals": 50, "roi_batch_size": 16, "train_scales": [0.75, 1.0], "min_score": 0.0, "max_candidates": 5,
    "anchor_top": 0.64, "norm": "batch", "amp": "off", "lr": 0.01, "weight_decay": 1e-4,
}  # fmt: skip


def deeplab_stage(paths: list[str], threads: int):
    """DeepLab-v3's loader and step, as `useg.methods.maskdistill.deeplab.train_deeplab` builds them."""
    from useg.methods.maskdistill.deeplab import deeplab_step, training_batches
    from useg.methods.maskdistill.models import build_deeplab, sgd
    from useg.stores.labelbank import LabelBank
    from useg.train import LossGuard
    from useg.train.amp import FULL_PRECISION
    from useg.world import World

    cpu, bank = torch.device("cpu"), LabelBank([banks_folder(paths) / "labels.zarr"])
    _, _, loader = training_batches(manifest_rows(paths), bank, TINY_DEEPLAB, 0, World(), threads, cpu)
    model = build_deeplab(TINY_DEEPLAB, bank.num_labels, 0).train()
    optimiser, guard = sgd(model, TINY_DEEPLAB), LossGuard("lower maskdistill.deeplab.lr")
    return loader, lambda it, batch: deeplab_step(model, optimiser, FULL_PRECISION, guard, batch, 0.2, cpu, (0, it))


def maskrcnn_stage(paths: list[str], threads: int):
    """Mask R-CNN's loader and step, as `useg.methods.maskdistill.maskrcnn.train_maskrcnn` builds them: images and
    each one's object (mask, box) read per batch from the MaskBank."""
    from useg.methods.maskdistill.maskrcnn import maskrcnn_step, training_loader
    from useg.methods.maskdistill.models import build_maskrcnn, sgd
    from useg.stores.maskbank import MaskBank
    from useg.train import LossGuard
    from useg.train.amp import FULL_PRECISION

    cpu, bank = torch.device("cpu"), MaskBank([banks_folder(paths) / "masks.zarr"])
    _, loader = training_loader(manifest_rows(paths), bank, {int(i): int(i) % 2 for i in bank.index}, {"batch_size": BATCH}, 0, threads, cpu)
    model = build_maskrcnn(TINY_RCNN, 2, bank.input_size, 0).train()
    optimiser, guard = sgd(model, TINY_RCNN), LossGuard("lower maskdistill.maskrcnn.lr")
    return loader, lambda it, pairs: maskrcnn_step(model, optimiser, FULL_PRECISION, guard, pairs, cpu, it)


def write_features(paths: list[str], chunk: int = 1000) -> None:
    """A FeatureStore of random 64-d patch tokens on the 8 px grid of the images (the probe reads tokens, not pixels)."""
    from useg.stores import provenance
    from useg.stores.features import FeatureWriter

    n, grid, rng = len(paths), SIZE // 8, np.random.default_rng(0)
    prov, ids = provenance("benchmark", {}, seed=0), [Path(p).stem for p in paths]
    with FeatureWriter(banks_folder(paths) / "features.zarr", np.arange(n), ids, (grid, grid), 64, 2, prov, input_size=[SIZE, SIZE]) as w:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            patches = rng.standard_normal((m, grid, grid, 64)).astype(np.float16)
            w.write(start, np.zeros((m, 64), np.float32), patches, np.zeros((m, 2, grid, grid), np.float16))


PROBE = {"optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "batch_size": BATCH}


def probe_stage(paths: list[str], threads: int):
    """The linear probe's chunk loader, shuffle pool and step, as `useg.eval.probe.linear_probe` builds them."""
    from useg.eval.probe import ChunkDataset, epoch_generator, only_item, probe_optimizer, probe_step, rebatch, sample_chunks, store_chunks
    from useg.stores.features import FeatureStore
    from useg.train import LossGuard

    store = FeatureStore(banks_folder(paths) / "features.zarr")
    masks = banks_folder(paths) / "masks"
    rows = [replace(row, mask_path=str(masks / Path(row.path).name)) for row in manifest_rows(paths)]
    chunks = sample_chunks(store_chunks([store]), 1.0, 0)
    order = EpochBatches(len(chunks), 1, 0, drop_last=False)
    loader = make_loader(ChunkDataset([store.path], chunks, rows, (SIZE, SIZE), 255), order, only_item, threads)
    probe = torch.nn.Conv2d(64, 12, 1)
    opt, guard, stats = probe_optimizer(probe.parameters(), PROBE), LossGuard("lower backbone_eval.probe.lr"), (torch.zeros(64), torch.ones(64))
    step = partial(probe_step, probe, opt, guard, stats=stats, size=(SIZE, SIZE))
    return rebatch(loader, BATCH, epoch_generator(0, 0)), lambda it, batch: step(batch=batch, where=(0, it))


STAGES = {"croc": croc_stage, "pass": pass_stage, "alignseg": alignseg_stage, "transfgu": transfgu_stage, "deeplab": deeplab_stage, "maskrcnn": maskrcnn_stage, "probe": probe_stage}


def run_stage(stage: str, paths: list[str], threads: int, queue: mp.Queue) -> None:
    """In a fresh process: STEPS steps of `stage`; report the peak RSS."""
    torch.set_num_threads(1)
    loader, step = STAGES[stage](paths, threads)
    for it, batch in enumerate(loader):
        if it == STEPS:
            break
        step(it, batch)
    queue.put(peak_rss_mb())


def run_load_all(paths: list[str], queue: mp.Queue) -> None:
    """In a fresh process: the whole split decoded into memory (the path before the pipeline)."""
    from useg.data.images import load_rgb_all

    images = load_rgb_all(paths)
    queue.put((peak_rss_mb(), len(images)))


def in_process(target, *args):
    """Run `target(*args, queue)` in a fresh spawned process and return what it reports."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def rates(stage: str, paths: list[str]) -> dict[str, float]:
    """Images/s of the loader alone with 0, 1, 2 workers and of the model's steps on the same batches."""
    out = {}
    for threads in (1, 2, 3):
        loader, step = STAGES[stage](paths, threads)
        batches, began = [], time.perf_counter()
        for batch in loader:
            batches.append(batch)
            if len(batches) == 2 * STEPS:
                break
        out[f"loader_{threads - 1}_workers"] = len(batches) * BATCH / (time.perf_counter() - began)
    began = time.perf_counter()
    for it, batch in enumerate(batches):
        step(it, batch)
    out["model"] = len(batches) * BATCH / (time.perf_counter() - began)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--out", default="benchmarks/results/train_scale.json")
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES), help="the stages to measure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {"commit": commit, "machine": platform.processor() or platform.machine(), "steps": STEPS, "batch": BATCH,
              "image_size": SIZE, "rss_mb": {}, "rates_images_per_s": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(args.sizes):
            root = write_shapes_dataset(ShapesConfig(num_train=n, num_val=1, image_size=SIZE), Path(tmp) / f"n{n}")
            paths = sorted(str(p) for p in (root / "images").glob("*.png"))[:n]
            write_banks(paths)
            write_features(paths)
            row = {stage: in_process(run_stage, stage, paths, 1) for stage in args.stages}
            row["decode_whole_split"] = in_process(run_load_all, paths)[0]
            result["rss_mb"][str(n)] = row
            print(n, {k: round(v, 1) for k, v in row.items()}, flush=True)
            if n == min(args.sizes):
                result["rates_images_per_s"] = {stage: rates(stage, paths) for stage in args.stages}
                print(result["rates_images_per_s"], flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2))  # after every N: an interrupted run keeps its rows


if __name__ == "__main__":
    main()
