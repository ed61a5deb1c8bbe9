import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_image
from useg.backbones import BackboneConfig, build_backbone
from useg.backbones.extract import extract_features
from useg.data.frame import Frame
from useg.data.manifest import ManifestRow
from useg.errors import ConfigError, StoreError
from useg.methods.maskdistill.masks import build_mask_bank
from useg.stores import FeatureStore, FeatureWriter, open_store
from useg.stores.background import WRITERS, ProcessWriter, ThreadWriter, stream_to_store
from useg.stores.features import AUTO_CODECS

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = [write_image(folder / f"img{i}.png", (40, 48), seed=i) for i in range(7)]
    return [(10 + i, ManifestRow(f"img{i}", str(p), 48, 40, "val")) for i, p in enumerate(paths)]


@pytest.fixture(scope="module")
def backbone():
    cfg = BackboneConfig(model="vit_tiny_patch16_224", patch_size=8, embed_dim=64, depth=2, num_heads=2, input_size=(32, 48))
    return build_backbone(cfg, seed=0)


def store_arrays(path) -> dict[str, np.ndarray]:
    group = open_store(path)
    return {name: group[name][:] for name in ("index", "ids", "cls", "patches", "attn")}


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_writes_run_in_submission_order_on_another_thread():
    seen, threads = [], set()

    def write(start, values):
        seen.append((start, values))
        threads.add(threading.get_ident())

    with ThreadWriter(write, depth=2) as writer:
        for start in range(10):
            writer.submit(start, values=start * 2)
    assert seen == [(s, s * 2) for s in range(10)] and threads != {threading.get_ident()}


def test_writes_run_in_submission_order_in_another_process(tmp_path):
    log = tmp_path / "log.txt"

    def write(start, values):
        with log.open("a") as fh:
            fh.write(f"{os.getpid()} {start} {values.sum()}\n")

    with ProcessWriter(write, depth=2) as writer:
        for start in range(10):
            writer.submit(start, values=np.full(3, start))
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [(int(s), int(v)) for _, s, v in lines] == [(s, 3 * s) for s in range(10)]
    assert {int(pid) for pid, _, _ in lines} != {os.getpid()} and len({pid for pid, _, _ in lines}) == 1


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_the_queue_is_bounded_submit_waits_for_the_writer(kind):
    release = multiprocessing.get_context("fork").Event() if kind == "process" else threading.Event()
    with WRITERS[kind](lambda _: release.wait(), depth=2) as writer:
        for item in range(3):  # one being written, two queued
            writer.submit(item)
        blocked = threading.Thread(target=writer.submit, args=(3,))
        blocked.start()
        blocked.join(0.5 if kind == "thread" else 2.5)
        assert blocked.is_alive(), "a fourth batch was queued beyond the depth"
        release.set()
        blocked.join()


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_writer_error_is_raised_in_the_caller_with_its_type(kind):
    def write(start):
        if start == 1:
            raise StoreError(f"bad row {start}")

    with pytest.raises(StoreError, match="bad row 1"):
        with WRITERS[kind](write, depth=1) as writer:
            for start in range(50):
                writer.submit(start)


def test_the_writer_process_ends_on_the_callers_error_whatever_signal_handlers_the_caller_has(tmp_path):
    """A caller that catches SIGTERM (pytest plugins, job schedulers' wrappers) forks that handler into the writer."""

    def write(start):
        if start == 1:
            raise StoreError("bad row 1")

    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        with pytest.raises(StoreError, match="bad row 1"):
            with ProcessWriter(write, depth=1) as writer:
                for start in range(50):
                    writer.submit(start)
        assert not writer.process.is_alive()
        marker = tmp_path / "written"
        child = ProcessWriter(lambda start: marker.touch()).__enter__()
        child.submit(0)
        deadline = time.monotonic() + 20
        while not marker.exists() and time.monotonic() < deadline:  # the writer runs, its handlers are its own
            time.sleep(0.05)
        os.kill(child.process.pid, signal.SIGTERM)
        child.process.join(10)
        assert child.process.exitcode == -signal.SIGTERM, "SIGTERM ends the writer process"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_error_in_the_last_write_is_raised_at_the_end_and_leaves_no_writer_process():
    def write(start):
        if start == 2:
            raise StoreError("bad row 2")

    with pytest.raises(StoreError, match="bad row 2"):
        with ProcessWriter(write, depth=4) as writer:
            for start in range(3):
                writer.submit(start)
            time.sleep(0.5)  # the last write fails before the caller ends the block
    assert not writer.process.is_alive(), "the failed writer was left polling for work"


def test_a_killed_writer_process_fails_the_caller_instead_of_hanging():
    def write(start):
        if start == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(RuntimeError, match="exit code -9"):
        with ProcessWriter(write, depth=1) as writer:
            for start in range(50):
                writer.submit(start)


def test_the_writer_process_ends_when_its_caller_dies(tmp_path):
    script = (
        "import os, sys, time\n"
        "from useg.stores.background import ProcessWriter\n"
        "writer = ProcessWriter(lambda start: None).__enter__()\n"
        "print(writer.process.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process_running(pid):
        time.sleep(0.2)
    assert not process_running(pid), "the writer process outlived its caller"


def process_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_features_are_identical_with_0_and_2_loader_workers_and_every_writer(tmp_path, rows, backbone):
    stores = {}
    for workers, background in [(0, "none"), (0, "process"), (0, "thread"), (2, "none"), (2, "process")]:
        path = tmp_path / f"w{workers}-{background}.zarr"
        extract_features(backbone, rows, path, Frame((32, 48)), {}, CPU, batch_size=3, background=background, workers=workers)
        stores[workers, background] = store_arrays(path)
    reference = stores[0, "none"]
    assert list(reference["index"]) == [r[0] for r in rows] and list(reference["ids"]) == [r[1].id for r in rows]
    assert reference["patches"].shape == (7, 4, 6, 64) and np.abs(reference["patches"]).max() > 0
    for key, arrays in stores.items():
        assert_same_arrays(reference, arrays)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_bad_array_in_the_writer_fails_the_stage_and_leaves_no_store(tmp_path, kind):
    target = tmp_path / "s.zarr"
    batches = [(0, 2), (2, 2), (4, 1)]

    def bad_second_batch(start, n):  # the second batch's patch tokens have the wrong width
        width = 3 if start == 2 else 4
        return {"cls": torch.zeros(n, 4), "patches": torch.zeros(n, 1, 1, width), "attn": torch.zeros(n, 1, 1, 1)}

    with pytest.raises(ValueError):
        with FeatureWriter(target, np.arange(5), [f"i{i}" for i in range(5)], (1, 1), 4, 1, {}) as writer:
            stream_to_store(batches, bad_second_batch, writer.write, kind)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StoreError, match="does not exist"):
        FeatureStore(target)


@pytest.mark.parametrize("codec", ["none", "lz4", "zstd"])
def test_every_codec_stores_the_same_features(tmp_path, rows, backbone, codec):
    auto, other = tmp_path / "auto.zarr", tmp_path / f"{codec}.zarr"
    extract_features(backbone, rows[:3], auto, Frame((32, 48)), {}, CPU, batch_size=2)
    extract_features(backbone, rows[:3], other, Frame((32, 48)), {}, CPU, batch_size=2, codec=codec)
    assert_same_arrays(store_arrays(auto), store_arrays(other))
    compressors = {name: open_store(other)[name].compressors for name in AUTO_CODECS}
    assert all(bool(c) == (codec != "none") for c in compressors.values())


def test_auto_takes_the_measured_codec_of_each_array(tmp_path, rows, backbone):
    extract_features(backbone, rows[:2], tmp_path / "s.zarr", Frame((32, 48)), {}, CPU, batch_size=2)
    group = open_store(tmp_path / "s.zarr")
    for name, codec in AUTO_CODECS.items():
        names = [type(c).__name__ for c in group[name].compressors]
        assert names == {"none": [], "lz4": ["BloscCodec"], "zstd": ["ZstdCodec"]}[codec], name


def test_an_unknown_codec_names_the_key(tmp_path, rows, backbone):
    with pytest.raises(ConfigError, match="features.codec must be one of auto, none, lz4, zstd; got 'gzip'"):
        extract_features(backbone, rows[:1], tmp_path / "s.zarr", Frame((32, 48)), {}, CPU, codec="gzip")
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("cluster_input", ["box_crop", "masked"])
def test_mask_banks_are_identical_with_0_and_2_loader_workers(tmp_path, rows, backbone, cluster_input):
    cfg = {"topk": 0.4, "cls_heads": None, "cls_mass": None, "connected": False, "background": "zero", "batch_size": 3,
           "cluster_input": cluster_input}  # fmt: skip
    banks = []
    for workers in (0, 2):
        build_mask_bank(backbone, rows, cfg, Frame((32, 48)), tmp_path / f"m{workers}.zarr", {}, CPU, workers=workers)
        group = open_store(tmp_path / f"m{workers}.zarr")
        banks.append({name: group[name][:] for name in ("index", "masks", "boxes", "source", "cls")})
    assert banks[0]["masks"].shape == (7, 4, 6) and banks[0]["masks"].any()
    assert_same_arrays(*banks)
