"""Shared training machinery: schedules, EMA, checkpoints, loss guard."""

import math

import numpy as np
import pytest
import torch

from useg.errors import TrainingError
from useg.train import check_finite, cosine_schedule, ema_update, load_checkpoint, save_checkpoint


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
    with pytest.raises(TrainingError, match="epoch 2, step 5"):
        check_finite(torch.tensor(value), 2, 5)
