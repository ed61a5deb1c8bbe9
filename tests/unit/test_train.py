"""Shared training machinery: schedules, EMA, checkpoints, loss guard."""

import math

import numpy as np
import pytest
import torch

from useg.errors import TrainingError
from useg.train import LossGuard, check_finite, cosine_schedule, ema_update, load_checkpoint, save_checkpoint


def test_cosine_schedule_warmup_then_cosine():
    values = cosine_schedule(1.0, 0.1, epochs=10, iters_per_epoch=4, warmup_epochs=2, warmup_start=0.0)
    assert len(values) == 40
    assert values[0] == 0.0 and values[7] < 1.0 and np.all(np.diff(values[:8]) > 0)
    assert values[8] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1)
    assert np.all(np.diff(values[8:]) <= 1e-12)


def test_ema_update_moves_teacher_towards_student():
    teacher, student = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    t0 = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.9)
    for before, t, s in zip(t0, teacher.parameters(), student.parameters()):
        torch.testing.assert_close(t, 0.9 * before + 0.1 * s)
    ema_update(teacher, student, 1.0)  # momentum 1 freezes the teacher
    ema_update(teacher, student, 0.0)  # momentum 0 copies the student
    for t, s in zip(teacher.parameters(), student.parameters()):
        torch.testing.assert_close(t, s)


def test_checkpoint_round_trip_and_config_check(tmp_path):
    path = tmp_path / "resume" / "last.pth"
    assert load_checkpoint(path) is None
    save_checkpoint(path, {"epoch": 3, "w": torch.arange(4), "config_hash": "abc"})
    assert not list(path.parent.glob(".*tmp*")), "no temporary file is left behind"
    state = load_checkpoint(path, "abc")
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.arange(4))
    assert load_checkpoint(path, "other") is None, "a different configuration does not resume"


def test_damaged_checkpoint_is_reported(tmp_path):
    path = tmp_path / "last.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="Delete it"):
        load_checkpoint(path)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_loss_guard(value):
    check_finite(torch.tensor(1.5, requires_grad=True), 0, 0)
    with pytest.raises(TrainingError, match="epoch 3, step 6") as caught:
        check_finite(torch.tensor(value), 2, 5)
    assert "a changed learning rate or any other training key restarts the stage from scratch" in str(caught.value)


def test_divergence_guard_fails_on_a_finite_loss_far_above_its_start():
    guard = LossGuard("lower transfgu.lr")
    for step, value in enumerate([6.0, 4.0, 300.0, 550.0]):  # below 100 times the start: still training
        guard.check(torch.tensor(value), 0, step)
    with pytest.raises(TrainingError, match=r"reached 1\.4e\+06 at epoch 2, step 1, over 100 times its start \(6\).*lower transfgu\.lr"):
        guard.check(torch.tensor(1.4e6), 1, 0)


def test_divergence_guard_lets_a_loss_starting_near_zero_grow_to_the_usual_scale():
    guard = LossGuard("lower the lr")
    for step, value in enumerate([1e-4, 0.5, 50.0]):
        guard.check(value, 0, step)
    with pytest.raises(TrainingError, match="diverged"):
        guard.check(101.0, 0, 3)


def test_linear_probe_at_an_absurd_learning_rate_fails_naming_its_key():
    from useg.eval.probe import train_probe

    feats = torch.randn(4, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 3, (4, 16, 16), generator=torch.Generator().manual_seed(1))
    cfg = {"epochs": 5, "lr": 1e36, "weight_decay": 0.0, "optimizer": "adam", "lr_steps": [], "lr_gamma": 0.1}
    batches = lambda epoch: [(feats[:2], targets[:2]), (feats[2:], targets[2:])]  # noqa: E731
    with pytest.raises(TrainingError, match="backbone_eval.probe.lr"):
        train_probe(batches, None, 8, 3, cfg, seed=0, size=(16, 16))
