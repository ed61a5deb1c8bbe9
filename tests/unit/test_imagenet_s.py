"""The imagenet-s protocol against hand-computed cases; R + 256 G masks; matching; NMI."""

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import normalized_mutual_info_score

from useg.data.labels import encode_rg, read_mask
from useg.eval.imagenet_s import ImageNetSEvaluator, f_measure, nmi, read_matching

NAMES2 = ["background", "a"]


def evaluate(pairs, num_classes, num_labels, mapping=None, names=None):
    ev = ImageNetSEvaluator(num_classes, num_labels, ignore=1000)
    for gt, pred in pairs:
        ev.add(np.asarray(gt), np.asarray(pred))
    return ev.result(names or [f"c{i}" for i in range(num_classes)], mapping)


def test_rg_decoding_round_trip(tmp_path):
    ids = np.array([[0, 1, 255, 256], [919, 1000, 300, 50]])
    Image.fromarray(encode_rg(ids)).save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png", "imagenet-s"), ids)
    assert encode_rg(ids)[1, 1].tolist() == [1000 % 256, 1000 // 256, 0]


def test_hand_computed_image_with_ignore_and_background():
    gt = [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1000, 1000]]
    pred = [[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]
    r = evaluate([(gt, pred)], 2, 2, names=NAMES2)
    # 14 valid pixels; background: tp 7, union 8; class a: tp 6, union 7 (ignore pixels left out)
    assert r["per_class_iou"] == pytest.approx({"background": 7 / 8, "a": 6 / 7})
    assert r["miou"] == pytest.approx((7 / 8 + 6 / 7) / 2)
    assert r["pixel_accuracy"] == pytest.approx(13 / 14)
    # precision 6/7, recall 1: F = 1.3 P R / (0.3 P + R) (beta^2 on P in the denominator)
    assert r["f_measure"] == pytest.approx(1.3 * (6 / 7) / (0.3 * 6 / 7 + 1))
    assert r["f_measure"] != pytest.approx(1.3 * (6 / 7) / (6 / 7 + 0.3))
    assert r["image_accuracy"] == 1.0
    # class a covers 6 of 16 pixels (37.5 %): bucket ML; the background is in every bucket
    assert r["miou_by_size"]["ML"] == pytest.approx((7 / 8 + 6 / 7) / 2)
    for bucket in ("S", "MS", "L"):
        assert r["miou_by_size"][bucket] == pytest.approx(7 / 8)
    assert r["matching_ids"] == {"0": 0, "1": 1}


def test_size_buckets_at_exactly_5_25_50_percent():
    pairs = []
    for k, area in enumerate([20, 100, 200, 201], start=1):  # 20 x 20 images: 5 %, 25 %, 50 %, 50.25 %
        gt = np.zeros(400, np.int64)
        gt[:area] = k
        pred = gt.copy() if k != 2 else np.zeros(400, np.int64)  # the 25 % object is missed
        pairs.append((gt.reshape(20, 20), pred.reshape(20, 20)))
    r = evaluate(pairs, 5, 5)
    bg = 1079 / 1179  # background: 1079 pixels, 100 more predicted
    assert r["miou_by_size"]["MS"] == pytest.approx(bg / 2)  # 25 % is MS, and there IoU 0
    for bucket in ("S", "ML", "L"):  # 5 % is S, 50 % is ML, 50.25 % is L: all perfect
        assert r["miou_by_size"][bucket] == pytest.approx((bg + 1) / 2)
    assert r["image_accuracy"] == pytest.approx(3 / 4)


def test_boundary_miou_penalises_a_one_pixel_shift_that_mIoU_forgives():
    gt = np.zeros((10, 10), np.int64)
    gt[:, 5:] = 1
    shifted = np.zeros((10, 10), np.int64)
    shifted[:, 6:] = 1
    assert evaluate([(gt, gt)], 2, 2)["boundary_miou"] == 1.0
    r = evaluate([(gt, shifted)], 2, 2)
    assert r["miou"] == pytest.approx((5 / 6 + 4 / 5) / 2)
    # band radius 1: GT band = columns 4-5, predicted band = columns 5-6; no pixel agrees
    assert r["boundary_miou"] == 0.0


def test_matching_recovers_a_known_permutation():
    rng = np.random.default_rng(0)
    c = 12
    perm = rng.permutation(c) + 1  # class j is predicted as label perm[j - 1]
    lut = np.concatenate([[0], perm])
    pairs = []
    for _ in range(60):
        gt = np.zeros((8, 8), np.int64)
        classes = rng.choice(c, size=rng.integers(1, 3), replace=False) + 1
        for row, cls in enumerate(classes):
            gt[row * 4 : row * 4 + 3, 1:7] = cls
        gt[7, 7] = 1000
        pred = lut[np.where(gt == 1000, 0, gt)]
        pairs.append((gt, pred))
    r = evaluate(pairs, c + 1, c + 1)
    mapping = {int(k): v for k, v in r["matching_ids"].items()}
    assert all(mapping[perm[j - 1]] == j for j in range(1, c + 1)) and mapping[0] == 0
    assert r["miou"] == 1.0 and r["image_accuracy"] == 1.0 and r["f_measure"] == 1.0


def test_saved_matching_is_reused(tmp_path):
    gt = np.array([[0, 1, 1, 2]])
    pred = np.array([[0, 2, 2, 1]])
    r = evaluate([(gt, pred)], 3, 3)
    assert r["miou"] < 1  # one image: every label co-occurs with every class, the tie is broken arbitrarily
    (tmp_path / "metrics.json").write_text(
        json.dumps({"protocols": {"imagenet-s": {"matching_ids": {"0": 0, "1": 2, "2": 1}}}})
    )
    mapping = read_matching(tmp_path / "metrics.json", 3)
    assert mapping.tolist() == [0, 2, 1]
    assert evaluate([(gt, pred)], 3, 3, mapping=mapping)["miou"] == 1.0


def test_nmi_equals_scikit_learn():
    rng = np.random.default_rng(1)
    for n, ka, kb in [(200, 5, 7), (50, 12, 3), (30, 1, 4), (10, 1, 1)]:
        a, b = rng.integers(ka, size=n), rng.integers(kb, size=n)
        assert nmi(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)
    a = rng.integers(6, size=100)
    assert nmi(a, (a + 3) % 6) == pytest.approx(1.0)


def test_f_measure_edge_cases():
    f = f_measure(np.array([0, 0, 5]), np.array([0, 4, 5]), np.array([0, 0, 10]))
    assert f[0] == 1.0 and f[1] == 0.0  # nothing to find and nothing found; false alarms only
    assert f[2] == pytest.approx(1.3 * 0.5 / (0.3 + 0.5))  # P = 1, R = 0.5
