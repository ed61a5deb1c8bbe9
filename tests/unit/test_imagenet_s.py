"""The imagenet-s protocol against the official evaluator's definitions; R + 256 G masks; matching and ties; NMI."""

import itertools
import json

import numpy as np
import pytest
from PIL import Image
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score

from tests.imagenet_s_fixture import (
    IGNORE,
    NUM_CLASSES,
    boundary_map,
    fixed_set,
    inverse,
    reference_cooccurrence,
    reference_figures,
)
from useg.data.frame import Frame
from useg.data.labels import encode_rg, read_mask
from useg.data.manifest import ManifestRow
from useg.data.transforms import resize_labels
from useg.errors import DataError
from useg.methods.pass_.stages import image_classes
from useg.eval.imagenet_s import (
    ImageNetSEvaluator,
    band_radius,
    boundary_band,
    f_measure,
    match_labels,
    nmi,
    read_matching,
)
from useg.report.export import export_imagenet_s
from useg.stores.predictions import PredictionsWriter

NAMES2 = ["background", "a"]
BUCKETS = ("S", "MS", "ML", "L")


def evaluator(pairs, num_classes, num_labels):
    ev = ImageNetSEvaluator(num_classes, num_labels, ignore=IGNORE)
    for gt, pred in pairs:
        ev.add(np.asarray(gt), np.asarray(pred))
    return ev


def evaluate(pairs, num_classes, num_labels, mapping=None, names=None):
    names = names or [f"c{i}" for i in range(num_classes)]
    return evaluator(pairs, num_classes, num_labels).result(names, mapping)


@pytest.fixture(scope="module")
def fixed():
    pairs, label_of = fixed_set()
    return pairs, label_of, evaluator(pairs, NUM_CLASSES + 1, NUM_CLASSES + 1)


def nan_to_none(values: dict) -> dict:
    return {k: (None if np.isnan(v) else v) for k, v in values.items()}


def test_rg_decoding_round_trip(tmp_path):
    ids = np.array([[0, 1, 255, 256], [919, 1000, 300, 50]])
    Image.fromarray(encode_rg(ids)).save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png", "imagenet-s"), ids)
    assert encode_rg(ids)[1, 1].tolist() == [1000 % 256, 1000 // 256, 0]


def test_the_fixed_set_covers_what_the_figures_depend_on(fixed):
    pairs, label_of, _ = fixed
    shares = [(gt == c).sum() / (gt != IGNORE).sum() for gt, _ in pairs for c in np.unique(gt) if 0 < c < IGNORE]
    assert len(pairs) == 43 and min(shares) < 0.015 and max(shares) > 0.6
    assert sum((gt == IGNORE).any() for gt, _ in pairs) >= 10
    assert not (pairs[0][0] % IGNORE).any() and not pairs[0][1].any()  # no object, nothing predicted
    on_ignore_only = [set(np.unique(p[g == IGNORE])) - set(np.unique(p[g != IGNORE])) - {0} for g, p in pairs]
    assert sum(bool(s) for s in on_ignore_only) >= 3
    largest = [np.bincount(p[p > 0]).argmax() if (p > 0).any() else 0 for _, p in pairs]
    assert sum(int(top) in s for top, s in zip(largest, on_ignore_only)) >= 2  # largest only counting ignore pixels
    assert set(range(45, 51)).isdisjoint(np.unique(np.concatenate([g.ravel() for g, _ in pairs])))


@pytest.mark.parametrize("which", ["hidden", "own"])
def test_every_figure_equals_the_official_definitions(fixed, which):
    pairs, label_of, ev = fixed
    mapping = inverse(label_of) if which == "hidden" else ev.matching()
    r = ev.result([f"c{i}" for i in range(NUM_CLASSES + 1)], mapping)
    ref = reference_figures(pairs, mapping)
    for key in ("miou", "boundary_miou", "f_measure", "image_accuracy"):
        assert r[key] == pytest.approx(ref[key], abs=1e-4), key
    for key in ("miou_by_size", "boundary_miou_by_size"):
        assert r[key] == pytest.approx(nan_to_none(ref[key]), abs=1e-4), key
    ours = np.array([np.nan if v is None else v for v in r["per_class_iou"].values()])
    assert np.nan_to_num(ours) == pytest.approx(ref["iou"], abs=1e-4)
    assert r["miou_present"] == pytest.approx(np.nanmean(ours)) and r["miou_present"] > r["miou"]


def test_co_occurrence_leaves_ignore_pixels_out_and_the_matching_is_optimal(fixed):
    pairs, _, ev = fixed
    s = reference_cooccurrence(pairs)
    assert np.array_equal(ev.co_occurrence(), s)
    rows, cols = linear_sum_assignment(s, maximize=True)
    mapping = ev.matching()
    assert s[np.arange(NUM_CLASSES), mapping[1:] - 1].sum() == s[rows, cols].sum()


def test_boundary_band_is_the_official_inner_band_with_the_border():
    rng = np.random.default_rng(3)
    for shape in [(9, 13), (40, 56), (64, 48)]:
        blocks = rng.integers(0, 4, (shape[0] // 4 + 1, shape[1] // 4 + 1))
        ids = np.kron(blocks, np.ones((4, 4), np.int64))[: shape[0], : shape[1]]
        ids[rng.random(shape) < 0.05] = 7
        assert np.array_equal(boundary_band(ids, band_radius(shape)), boundary_map(ids) > 0)
    assert band_radius((375, 500)) == 19  # 3 % of the diagonal


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
    assert r["image_accuracy"] == 1.0
    # class a covers 6 of the 14 valid pixels (ceil 43 %): ML, with the image's background; no other bucket
    assert r["miou_by_size"] == {"S": None, "MS": None, "ML": pytest.approx((7 / 8 + 6 / 7) / 2), "L": None}
    assert r["matching_ids"] == {"0": 0, "1": 1}


def test_size_buckets_at_exactly_5_25_50_percent():
    pairs = []
    for k, area in enumerate([20, 100, 200, 201], start=1):  # 20 x 20 images: 5 %, 25 %, 50 %, 50.25 %
        gt = np.zeros(400, np.int64)
        gt[:area] = k
        pred = gt.copy() if k != 2 else np.zeros(400, np.int64)  # the 25 % object is missed
        pairs.append((gt.reshape(20, 20), pred.reshape(20, 20)))
    r = evaluate(pairs, 5, 5, mapping=np.arange(5))
    # a bucket holds the background of the images with an object of its size only
    assert r["miou_by_size"]["MS"] == pytest.approx((300 / 400 + 0) / 2)  # 25 % is MS, and there IoU 0
    for bucket in ("S", "ML", "L"):  # 5 % is S, 50 % is ML, 50.25 % is L: all perfect
        assert r["miou_by_size"][bucket] == pytest.approx(1.0)
    assert r["image_accuracy"] == pytest.approx(3 / 4)


def test_a_bucket_counts_the_predictions_on_its_own_pixels_only():
    gt_a = np.zeros((10, 20), np.int64)
    gt_a[:, :2] = 1  # 10 %: MS
    gt_a[:, 10:] = 2  # 50 %: ML
    pred_a = gt_a.copy()
    pred_a[:5, 10:] = 1  # class 1 spills onto half of class 2, i.e. onto ML pixels
    gt_b = np.zeros((10, 20), np.int64)
    gt_b[:, 10:] = 1  # class 1 at 50 % in another image: ML
    r = evaluate([(gt_a, pred_a), (gt_b, gt_b)], 3, 3, mapping=np.arange(3))
    assert r["miou_by_size"]["MS"] == pytest.approx(1.0)  # the spill lies outside MS's pixels
    # ML: background 180 / 180; class 1: 100 / (100 + 150 - 100); class 2: 50 / 100
    assert r["miou_by_size"]["ML"] == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert r["miou"] == pytest.approx((1 + 120 / 170 + 0.5) / 3)


def test_image_accuracy_and_matching_ignore_predictions_on_ignore_pixels():
    gt = np.zeros((10, 10), np.int64)
    gt[4:6, 4:6] = 1
    gt[:3] = IGNORE
    pred = np.where(gt == 1, 1, 0)
    pred[:3] = 2  # a label predicted on ignore pixels only, larger than label 1
    ev = evaluator([(gt, pred)], 2, 3)
    assert ev.co_occurrence().tolist() == [[1], [0]]
    r = ev.result(NAMES2, np.array([0, 1, -1]))
    assert r["image_accuracy"] == 1.0 and r["miou"] == 1.0


def test_f_measure_is_zero_without_a_true_positive():
    f = f_measure(np.array([0, 0, 5]), np.array([0, 4, 5]), np.array([0, 0, 10]))
    assert f[0] == 0.0 and f[1] == 0.0  # nothing to find and nothing found (official: 0); false alarms only
    assert f[2] == pytest.approx(1.3 * 0.5 / (0.3 + 0.5))  # P = 1, R = 0.5


def test_absent_classes_count_as_zero_in_miou_and_are_left_out_of_miou_present():
    gt = np.array([[0, 0, 1, 1]])
    r = evaluate([(gt, gt)], 4, 4, mapping=np.arange(4))
    assert r["per_class_iou"] == {"c0": 1.0, "c1": 1.0, "c2": None, "c3": None}
    assert r["miou"] == 0.5 and r["miou_present"] == 1.0


def test_a_constructed_tie_is_reported_and_broken_by_pixel_overlap():
    # both images hold classes 1 and 2 and labels 1 and 2: S = [[2, 2], [2, 2]], both bijections optimal
    gt = np.array([[1, 1, 1, 2, 2, 2]])
    pairs = [(gt, np.array([[2, 2, 1, 1, 1, 1]])), (gt, np.array([[2, 2, 2, 1, 1, 1]]))]
    r = evaluate(pairs, 3, 3)
    assert r["matching_ids"] == {"0": 0, "1": 2, "2": 1}  # label 1 lies on class 2 (6 px vs 1)
    ties = r["matching_ties"]
    assert ties["alternative_optima"] and ties["labels_moved"] == 2 and ties["moved_labels"] == [1, 2]
    assert ties["labels_moved_after_tie_break"] == 0
    swapped = evaluate(pairs, 3, 3, mapping=np.array([0, 1, 2]))
    assert ties["miou_over_optima"] == pytest.approx({"min": swapped["miou"], "max": r["miou"]})
    assert swapped["miou"] < r["miou"]
    relabelled = evaluate([(g, np.array([0, 2, 1])[p]) for g, p in pairs], 3, 3)
    assert relabelled["matching_ids"] == {"0": 0, "1": 1, "2": 2}  # the same classes whatever the label order


def test_no_tie_no_report_and_a_tie_the_pixels_cannot_break_is_left_counted():
    pairs = [(np.array([[1, 1, 0, 0]]),) * 2, (np.array([[2, 2, 0, 0]]),) * 2]
    r = evaluate(pairs, 3, 3)
    assert not r["matching_ties"]["alternative_optima"] and r["matching_ties"]["labels_moved"] == 0
    # labels 1 and 2 only on background, beside classes 1 and 2: same S, same (zero) overlap
    tie = evaluate([(np.array([[0, 0, 1, 2]]), np.array([[1, 2, 0, 0]]))], 3, 3)
    assert tie["matching_ties"]["labels_moved"] == 2 and tie["matching_ties"]["labels_moved_after_tie_break"] == 2


@pytest.mark.parametrize("shape", [(5, 5), (4, 6), (6, 4)])
def test_moved_labels_and_miou_range_equal_brute_force(shape):
    rng = np.random.default_rng(sum(shape) * shape[0])
    k, c = shape
    n = max(k, c)
    for _ in range(20):
        s = rng.integers(0, 3, shape)
        pair = rng.random(shape)
        found = match_labels(s)
        weight, score = np.zeros((n, n)), np.zeros((n, n))
        weight[:k, :c], score[:k, :c] = s, pair
        perms = [np.array(p) for p in itertools.permutations(range(n))]
        totals = np.array([weight[np.arange(n), p].sum() for p in perms])
        optima = [p for p, total in zip(perms, totals) if total == totals.max()]
        matched = [np.where(p[:k] < c, p[:k], -1) for p in optima]  # unmatched labels are one "class"
        moved = {i + 1 for i in range(k) if len({int(m[i]) for m in matched}) > 1}
        assert set(found.tied.tolist()) == moved
        sums = [score[np.arange(n), p].sum() for p in optima]
        assert found.extreme_sums(pair) == pytest.approx((min(sums), max(sums)))


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
        gt[7, 7] = IGNORE
        pred = lut[np.where(gt == IGNORE, 0, gt)]
        pairs.append((gt, pred))
    r = evaluate(pairs, c + 1, c + 1)
    mapping = {int(k): v for k, v in r["matching_ids"].items()}
    assert all(mapping[perm[j - 1]] == j for j in range(1, c + 1)) and mapping[0] == 0
    assert r["miou"] == 1.0 and r["image_accuracy"] == 1.0 and r["f_measure"] == 1.0


def test_saved_matching_is_reused_from_metrics_json_or_the_official_match_json(tmp_path):
    gt = np.array([[0, 1, 1, 2]])
    pred = np.array([[0, 2, 1, 1]])
    assert evaluate([(gt, pred)], 3, 3)["miou"] < 1
    (tmp_path / "metrics.json").write_text(
        json.dumps({"protocols": {"imagenet-s": {"matching_ids": {"0": 0, "1": 2, "2": 1}}}})
    )
    mapping = read_matching(tmp_path / "metrics.json", 3)
    assert mapping.tolist() == [0, 2, 1]
    (tmp_path / "official.json").write_text(json.dumps({"1": 2, "2": 1, "0": 0}))  # official match.py output
    assert read_matching(tmp_path / "official.json", 3).tolist() == [0, 2, 1]
    assert evaluate([(gt, pred)], 3, 3, mapping=mapping)["miou"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_train_nmi_reads_the_class_folders_before_the_masks(tmp_path):
    gt = np.zeros((4, 4), np.int64)
    gt[1:, 1:] = 3
    Image.fromarray(encode_rg(gt)).save(tmp_path / "m.png")
    masked = [ManifestRow(f"i{n}", f"/x/i{n}.JPEG", 4, 4, "train", str(tmp_path / "m.png"), "", "imagenet-s") for n in range(2)]
    labels, source = image_classes(masked, IGNORE)
    assert source == "largest mask class" and labels.tolist() == [3, 3]
    folders = [ManifestRow(r.id, r.path, 4, 4, "train", r.mask_path, "", "imagenet-s", wnid) for r, wnid in zip(masked, "ab")]
    labels, source = image_classes(folders, IGNORE)
    assert source == "class folders" and labels.tolist() == ["a", "b"]
    assert nmi(np.array([4, 7]), labels) == 1.0
    assert image_classes([ManifestRow("i", "/x/i.JPEG", 4, 4, "train")], IGNORE) is None


def test_nmi_equals_scikit_learn():
    rng = np.random.default_rng(1)
    for n, ka, kb in [(200, 5, 7), (50, 12, 3), (30, 1, 4), (10, 1, 1)]:
        a, b = rng.integers(ka, size=n), rng.integers(kb, size=n)
        assert nmi(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)
    a = rng.integers(6, size=100)
    assert nmi(a, (a + 3) % 6) == pytest.approx(1.0)


def test_server_export_round_trip_scores_as_the_official_evaluator_would(tmp_path):
    rng = np.random.default_rng(5)
    sizes = [(30, 40), (24, 24), (41, 27), (20, 36)]
    labels = rng.integers(0, 5, (len(sizes), 4, 4)).repeat(4, 1).repeat(4, 2)  # K = 4 labels for 3 classes
    rows = [
        ManifestRow(f"im{n}", str(tmp_path / "validation" / f"n0{n % 2}" / f"im{n}.JPEG"), w, h, "validation")
        for n, (h, w) in enumerate(sizes)
    ]
    gts = [resize_labels(lab, size) for lab, size in zip(labels.clip(max=3), sizes)]
    gts[0][:3] = IGNORE
    preds = [resize_labels(lab, size) for lab, size in zip(labels, sizes)]
    with PredictionsWriter(tmp_path / "p.zarr", np.arange(4), [r.id for r in rows], Frame((16, 16)), 5, "hand", {}) as w:
        w.write(0, labels)
    r = evaluate(list(zip(gts, preds)), 4, 5)
    (tmp_path / "metrics.json").write_text(json.dumps({"protocols": {"imagenet-s": r}}))
    export_imagenet_s(tmp_path / "p.zarr", rows, tmp_path / "pngs", tmp_path / "metrics.json", tmp_path / "validation")
    mapping = np.array([r["matching_ids"][str(k)] for k in range(5)])
    assert (mapping == -1).sum() == 1
    written = [read_mask(tmp_path / "pngs" / f"n0{n % 2}" / f"im{n}.png", "imagenet-s") for n in range(4)]
    for got, pred in zip(written, preds):
        assert np.array_equal(got, np.where(mapping[pred] >= 0, mapping[pred], IGNORE))  # encode, decode, same ids
    ref = reference_figures(list(zip(gts, written)), np.arange(IGNORE + 1), c=3)  # the server's view of the files
    for key in ("miou", "boundary_miou", "f_measure", "image_accuracy"):
        assert r[key] == pytest.approx(ref[key], abs=1e-9), key
    for key in ("miou_by_size", "boundary_miou_by_size"):
        assert r[key] == pytest.approx(nan_to_none(ref[key]), abs=1e-9), key
    with pytest.raises(DataError, match="not under --split-dir"):
        export_imagenet_s(tmp_path / "p.zarr", rows, tmp_path / "other", None, tmp_path / "test")
    assert not (tmp_path / "other").exists()
