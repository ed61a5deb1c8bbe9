"""TransFGU's release schedule (teacher updates, α steps, peer loss only while bootstrapping, resume after a
kill), its batch-level augmentation and the label-share probe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO, TINY_BACKBONE
from useg.data.manifest import ManifestRow
from useg.methods.transfgu.augment import RELEASE_PHOTOMETRIC, batch_photometric, per_image_photometric, side_scale_box
from useg.methods.transfgu.bootstrap import bootstrap_schedule, release_alpha, train_bootstrap
from useg.methods.transfgu.training import EpochProbe

CFG = {
    "decoder": {"dim": 16, "layers": 1, "heads": 2}, "lr": 1e-3, "weight_decay": 5e-4, "epochs": 6,
    "batch_size": 2, "alpha": [0.03, 0.1], "alpha_step": 0.01, "w_div": 1.0, "w_unc": 0.3, "optimiser": "adam",
    "grad_clamp": 1.0, "skip_nonpositive_loss": True, "losses": {"peer": True, "uncertainty": True, "diversity": True},
    "diversity_form": "release", "augment_rule": "batch", "augment": {}, "teacher_view": "augmented",
    "bootstrap_start": 2, "bootstrap_every": 2, "amp": "off",
}  # fmt: skip


def test_release_schedule_on_six_epochs():
    plans = bootstrap_schedule(6, 2, 2, (0.03, 0.1), 0.01)
    assert [p.epoch for p in plans if p.update] == [2, 4], "updates at e >= 2 with e mod 2 = 0"
    assert [p.bootstrapping for p in plans] == [False, False, True, True, True, True]
    # epochs since the last update: 1, 2, 0, 1, 0, 1 -> alpha 0.03 + 0.01 n
    assert [p.alpha for p in plans] == pytest.approx([0.04, 0.05, 0.03, 0.04, 0.03, 0.04])
    assert [p.epoch for p in bootstrap_schedule(6, 3, 2, (0.03, 0.1), 0.01) if p.update] == [4], "release: e mod every, not (e - start)"
    assert release_alpha(7, 0.03, 0.1, 0.01) == pytest.approx(0.1) and release_alpha(20, 0.03, 0.1, 0.01) == 0.1


def test_side_scale_crops_are_square_scales_on_the_tenths():
    rng = np.random.default_rng(0)
    scales = set()
    for _ in range(200):
        box, _ = side_scale_box(40, 60, (0.4, 0.9), rng)
        x0, y0, x1, y1 = box.tolist()
        s = (y1 - y0) / 40
        assert (x1 - x0) == int(60 * s) and 0 <= x0 and x1 <= 60 and 0 <= y0 and y1 <= 40
        scales.add(round(s, 2))
    assert scales == {0.4, 0.5, 0.6, 0.7, 0.8, 0.9}


def test_batch_rule_draws_one_photometric_per_batch_and_image_rule_one_per_image():
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    batch = image.expand(4, -1, -1, -1).clone()
    changed = 0
    for seed in range(20):
        out = batch_photometric(batch, "batch", np.random.default_rng(seed))
        assert all(torch.equal(out[0], o) for o in out), "one draw for the whole batch"
        changed += not torch.allclose(out, batch_photometric(batch, "image", np.random.default_rng(seed)))
    assert changed > 0, "the release's draw changes some batches"
    per_image = per_image_photometric(batch, RELEASE_PHOTOMETRIC, "image", np.random.default_rng(3))
    assert any(not torch.equal(per_image[0], p) for p in per_image), "the image rule draws per image"
    assert torch.equal(per_image_photometric(batch, RELEASE_PHOTOMETRIC, "batch", np.random.default_rng(3)), batch)


def test_probe_shares_count_predicted_labels():
    probe = EpochProbe(3)
    probe.add({"loss": 1.0, "predicted": torch.tensor([[0, 0], [2, 0]])})
    probe.add({"loss": 3.0, "predicted": torch.tensor([[2, 2], [2, 2]])})
    assert probe.means() == {"loss": 2.0, "label_shares": [0.375, 0.0, 0.625]}


def make_split(root: Path, n: int = 4) -> tuple[list[ManifestRow], "object"]:
    """`n` 32x32 images on disk and a label bank of random 3-label maps on their 4x4 grid."""
    from useg.stores.labelbank import LabelBank, LabelBankWriter

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        rows.append(ManifestRow(f"img{i}", str(path), 32, 32, "train"))
    maps = rng.random((n, 3, 4, 4)).astype(np.float32)
    bank_path = root / "bank.zarr"
    if not bank_path.exists():
        with LabelBankWriter(bank_path, np.arange(n), [r.id for r in rows], 3, (4, 4), {}, input_size=[32, 32]) as writer:
            writer.write(0, maps, maps.argmax(1), np.ones((n, 4, 4), np.uint8))
    return rows, LabelBank([bank_path])


def run_schedule(root: str, resume: str) -> dict[str, torch.Tensor]:
    """The 6-epoch schedule on the split under `root`; returns the final student's weights."""
    from useg.backbones import BackboneConfig, build_backbone

    backbone = build_backbone(BackboneConfig.from_dict(TINY_BACKBONE), seed=0).requires_grad_(False)
    rows, bank = make_split(Path(root))
    student, history = train_bootstrap(backbone, rows, bank, CFG, 0, torch.device("cpu"), resume)
    run_schedule.history = history  # type: ignore[attr-defined]
    return student.state_dict()


def test_schedule_run_logs_updates_alpha_peer_and_label_shares(tmp_path):
    run_schedule(str(tmp_path), str(tmp_path / "resume.pth"))
    history = run_schedule.history  # type: ignore[attr-defined]
    assert [h["teacher_update"] for h in history] == [False, False, True, False, True, False]
    assert [h["peer"] for h in history] == [False, False, True, True, True, True], "no peer term on the initial labels"
    assert [h["alpha"] for h in history] == pytest.approx([0.04, 0.05, 0.03, 0.04, 0.03, 0.04])
    assert all(len(h["label_shares"]) == 3 and sum(h["label_shares"]) == pytest.approx(1, abs=1e-3) for h in history)
    assert torch.load(tmp_path / "resume.pth", weights_only=True)["epoch"] == 3, "state written before the last update"


def schedule_in_a_fresh_process(root: Path, resume: Path, wait: bool = True) -> subprocess.Popen:
    """run_schedule in its own interpreter (thread counts and RNG untouched by earlier tests); it saves
    the weights and the history to root/final.pth."""
    code = (
        "from tests.unit.test_transfgu_bootstrap import run_schedule; import torch; "
        f"weights = run_schedule({str(root)!r}, {str(resume)!r}); "
        f"torch.save({{'weights': weights, 'history': run_schedule.history}}, {str(root / 'final.pth')!r})"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if wait:
        assert proc.wait() == 0, proc.stderr.read().decode()
    return proc


def test_resume_after_a_kill_gives_the_uninterrupted_weights(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    schedule_in_a_fresh_process(whole, whole / "resume.pth")
    expected = torch.load(whole / "final.pth", weights_only=True)["weights"]
    resume = killed / "resume.pth"
    proc = schedule_in_a_fresh_process(killed, resume, wait=False)
    deadline = time.time() + 120
    while not resume.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert resume.exists(), "the killed run wrote a resume state"
    assert torch.load(resume, weights_only=True)["epoch"] in (1, 3), "the state of an epoch before an update"
    schedule_in_a_fresh_process(killed, resume)  # the three runs all start from fresh processes
    resumed = torch.load(killed / "final.pth", weights_only=False)
    assert resumed["history"][0]["epoch"] == 1 and len(resumed["history"]) == 6
    for name, value in expected.items():
        assert torch.equal(value, resumed["weights"][name]), f"{name} differs after resuming"


def test_teacher_on_the_whole_image_and_per_image_views_change_the_student(tmp_path):
    from useg.backbones import BackboneConfig, build_backbone

    backbone = build_backbone(BackboneConfig.from_dict(TINY_BACKBONE), seed=0).requires_grad_(False)
    rows, bank = make_split(tmp_path)
    short = {**CFG, "epochs": 3, "bootstrap_start": 1, "bootstrap_every": 1, "augment_rule": "image"}
    weights = {}
    for view in ("augmented", "whole"):
        student, history = train_bootstrap(backbone, rows, bank, {**short, "teacher_view": view}, 0, torch.device("cpu"), tmp_path / f"{view}.pth")
        assert [h["teacher_update"] for h in history] == [False, True, True]
        weights[view] = student.class_embed.detach()
    assert not torch.equal(weights["augmented"], weights["whole"]), "the teacher's view sets the bootstrapped labels"
