import numpy as np
import pytest

from useg.data.frame import Frame
from useg.eval.metrics import confusion_matrix, evaluate_confusion, scores_from_mapping


def test_confusion_excludes_ignore_pixels():
    gt = np.array([[0, 0, 1], [1, 255, 2]])
    pred = np.array([[1, 1, 0], [0, 2, 2]])
    conf = confusion_matrix(gt, pred, num_classes=3, num_labels=3)
    assert conf.sum() == 5
    assert conf.tolist() == [[0, 2, 0], [2, 0, 0], [0, 0, 1]]


def test_hungarian_miou_against_a_hand_computed_case():
    # classes x clusters; best match: class0<-cluster1, class1<-cluster0, class2<-cluster2
    conf = np.array([[2, 6, 0], [5, 1, 1], [0, 2, 3]])
    result = evaluate_confusion(conf, ["a", "b", "c"])["hungarian"]
    # a: tp 6, fp 1+2, fn 2 -> 6/11 ; b: tp 5, fp 2, fn 2 -> 5/9 ; c: tp 3, fp 1, fn 2 -> 3/6
    expected = [6 / 11, 5 / 9, 3 / 6]
    assert result["per_class_iou"] == pytest.approx(dict(zip("abc", expected)))
    assert result["miou"] == pytest.approx(np.mean(expected))
    assert result["pixel_accuracy"] == pytest.approx(14 / 20)
    assert result["matching"] == {"0": "b", "1": "a", "2": "c"}
    assert "overcluster" not in evaluate_confusion(conf, ["a", "b", "c"])


def test_unmatched_clusters_count_as_misses_and_overcluster_merges_them():
    conf = np.array([[4, 0, 2], [0, 3, 1]])  # 3 clusters, 2 classes
    results = evaluate_confusion(conf, ["a", "b"])
    hung = results["hungarian"]
    # cluster 2 unmatched: a tp 4 fn 2 -> 4/6 ; b tp 3 fn 1 -> 3/4
    assert hung["per_class_iou"] == pytest.approx({"a": 4 / 6, "b": 3 / 4})
    over = results["overcluster"]
    # cluster 2 -> a: a tp 6, fp 1 -> 6/7 ; b tp 3 fn 1 -> 3/4
    assert over["per_class_iou"] == pytest.approx({"a": 6 / 7, "b": 3 / 4})
    assert over["protocol"] == "overcluster"


def test_a_class_absent_from_ground_truth_and_predictions_is_left_out():
    conf = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 0]])
    iou, acc = scores_from_mapping(conf, np.array([0, 1, 2]))
    assert np.isnan(iou[2]) and acc == 1.0
    result = evaluate_confusion(conf, ["a", "b", "c"])["hungarian"]
    assert result["per_class_iou"]["c"] is None and result["miou"] == 1.0


def test_confusion_rejects_size_mismatch():
    with pytest.raises(ValueError, match="differ in size"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 2, 2)


def test_supervised_predictions_are_scored_as_class_ids_under_linear_probe():
    conf = np.array([[5, 1, 0], [0, 4, 0], [2, 0, 3]])
    results = evaluate_confusion(conf, ["a", "b", "c"], supervised=True)
    assert set(results) == {"linear-probe"}
    probe = results["linear-probe"]
    assert probe["supervised"] is True and probe["matching"] == {"0": "a", "1": "b", "2": "c"}
    assert probe["per_class_iou"]["a"] == pytest.approx(5 / 8)


def test_per_image_matching_is_reported_beside_hungarian_and_labelled():
    from useg.eval.metrics import per_image_matched

    # image 1 swaps the labels, image 2 does not: one dataset-level matching gets half the pixels,
    # a matching per image gets all of them
    first = confusion_matrix(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]), 2, 2)
    second = confusion_matrix(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), 2, 2)
    matched = per_image_matched(first) + per_image_matched(second)
    assert matched.tolist() == [[4, 0], [0, 4]]
    results = evaluate_confusion(first + second, ["a", "b"], per_image=matched)
    assert list(results) == ["hungarian", "per-image"]
    assert results["hungarian"]["miou"] == pytest.approx(1 / 3)  # tp 2, union 6 per class
    assert results["per-image"]["miou"] == pytest.approx(1.0)
    assert results["per-image"]["comparable"] is False and "not comparable" in results["per-image"]["note"]
    assert "per-image" not in evaluate_confusion(first + second, ["a", "b"])


# ---- Protocols of the papers (docs/evaluation.md), on hand-made label maps ----------------------


def per_image_miou(images: list[tuple[np.ndarray, np.ndarray]], num_classes: int, num_labels: int) -> float:
    """`per-image` mIoU of (gt, pred) maps, through the same functions the evaluate stage uses."""
    from useg.eval.metrics import per_image_matched

    confusions = [confusion_matrix(gt, pred, num_classes, num_labels) for gt, pred in images]
    matched = sum(per_image_matched(c) for c in confusions)
    names = [f"c{i}" for i in range(num_classes)]
    return evaluate_confusion(sum(confusions), names, per_image=matched)["per-image"]["miou"]


def test_per_image_matches_only_the_classes_present_in_the_image():
    # classes 0 and 1 present (of 3), three labels: label 1 is left over. Matched over all three
    # classes it would land on the absent class 2 (IoU 0 in the mean: 5/9); restricted, it is a miss.
    gt = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([0, 0, 1, 2, 2, 2])
    # class 0: tp 2, fn 1 -> 2/3; class 1: tp 3 -> 1; class 2: empty union, left out
    assert per_image_miou([(gt, pred)], 3, 3) == pytest.approx((2 / 3 + 1) / 2)


@pytest.mark.parametrize("order", [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])
def test_per_image_does_not_depend_on_the_class_order(order):
    # two images, each lacking one class, more labels than present classes
    images = [
        (np.array([0, 0, 0, 1, 1, 1, 1]), np.array([0, 0, 3, 1, 1, 1, 2])),
        (np.array([2, 2, 2, 2, 0, 0, 255]), np.array([1, 1, 1, 0, 2, 2, 3])),
    ]
    lut = np.array(list(order) + [0] * 252 + [255])  # class c -> order[c], 255 stays ignored
    permuted = [(lut[gt], pred) for gt, pred in images]
    assert per_image_miou(permuted, 3, 4) == pytest.approx(per_image_miou(images, 3, 4))
    # image 1: class 0 tp 2 fn 1, class 1 tp 3 fn 1; image 2: class 2 tp 3 fn 1, class 0 tp 2
    # summed: class 0 tp 4 / gt 5, class 1 tp 3 / gt 4, class 2 tp 3 / gt 4 (no false positives)
    assert per_image_miou(images, 3, 4) == pytest.approx((4 / 5 + 3 / 4 + 3 / 4) / 3)


def test_alignseg_protocol_on_hand_made_images():
    from useg.eval.metrics import AlignSegMeans

    means = AlignSegMeans(3)
    # image 1: label 0 covers classes 0, 0, 2 -> class 0 (precision 2/3); label 1 covers 0, 0, 1, 1 -> tie,
    # the lowest class 0; label 2 covers 2 -> class 2. Mapped: class 0 tp 4 of a union 7, class 1 tp 0,
    # class 2 tp 1 of a union 2.
    means.add(confusion_matrix(np.array([0, 0, 0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 1, 1, 1, 2, 0]), 3, 3))
    # image 2 lacks classes 0 and 2 and has an ignore pixel: only class 1 is scored (IoU 1)
    means.add(confusion_matrix(np.array([1, 1, 255, 1]), np.array([2, 2, 0, 1]), 3, 3))
    means.add(confusion_matrix(np.array([255, 255]), np.array([0, 1]), 3, 3))  # nothing valid: skipped
    result = means.result(["bg", "a", "b"])
    first = (4 / 7 + 0 + 1 / 2) / 3
    assert result["miou"] == pytest.approx((first + 1) / 2)
    assert result["images"] == 2
    assert result["per_class_iou"] == pytest.approx({"bg": 4 / 7, "a": 0.5, "b": 0.5})
    assert result["pixel_accuracy"] == pytest.approx((5 + 3) / (8 + 3))
    assert result["protocol"] == "alignseg" and result["comparable"] is False


def test_nearest_resize_samples_as_torch_interpolate():
    import torch
    import torch.nn.functional as F

    from useg.eval.metrics import nearest_resize

    rng = np.random.default_rng(0)
    for shape, size in [((37, 53), (100, 100)), ((448, 448), (100, 100)), ((28, 28), (100, 100)), ((5, 7), (5, 7))]:
        labels = rng.integers(0, 9, shape)
        want = F.interpolate(torch.from_numpy(labels)[None, None].float(), size=size, mode="nearest")[0, 0]
        assert np.array_equal(nearest_resize(labels, size), want.long().numpy()), (shape, size)


def test_hungarian_discard_leaves_out_the_pixels_of_unmatched_clusters():
    conf = np.array([[4, 1, 2], [1, 3, 1]])  # 3 clusters, 2 classes; cluster 2 stays unmatched
    results = evaluate_confusion(conf, ["a", "b"], protocols=("hungarian", "hungarian-discard"))
    # hungarian: a tp 4, gt 7, pred 5 -> 4/8; b tp 3, gt 5, pred 4 -> 3/6; accuracy 7/12
    assert results["hungarian"]["per_class_iou"] == pytest.approx({"a": 4 / 8, "b": 3 / 6})
    assert results["hungarian"]["pixel_accuracy"] == pytest.approx(7 / 12)
    # discard: cluster 2's pixels are gone: a gt 5, pred 5 -> 4/6; b gt 4, pred 4 -> 3/5; accuracy 7/9
    discard = results["hungarian-discard"]
    assert discard["per_class_iou"] == pytest.approx({"a": 4 / 6, "b": 3 / 5})
    assert discard["pixel_accuracy"] == pytest.approx(7 / 9)
    assert discard["matching"] == {"0": "a", "1": "b", "2": None}


def test_hungarian_iou_matches_on_iou_and_counts_an_empty_union_as_zero():
    # pixel matching: cluster 0 -> a, 1 -> b (8 + 0 > 4 + 3); IoU matching: 1 -> a (4/12), 0 -> b (3/11)
    conf = np.array([[8, 4], [3, 0], [0, 0]])  # class c: no pixels, no cluster
    results = evaluate_confusion(conf, ["a", "b", "c"], protocols=("hungarian", "hungarian-iou"))
    assert results["hungarian"]["matching"] == {"0": "a", "1": "b"}
    assert results["hungarian"]["miou"] == pytest.approx((8 / 15 + 0) / 2)  # c left out (null)
    iou = results["hungarian-iou"]
    assert iou["matching"] == {"0": "b", "1": "a"}
    assert iou["per_class_iou"] == pytest.approx({"a": 1 / 3, "b": 3 / 11, "c": 0.0})
    assert iou["miou"] == pytest.approx((1 / 3 + 3 / 11 + 0) / 3)
    assert iou["pixel_accuracy"] == pytest.approx(7 / 15)


def test_all_ignore_evaluation_fails_and_writes_no_metrics(tmp_path):
    from PIL import Image

    from useg.data.manifest import ManifestRow
    from useg.errors import DataError
    from useg.eval.stage import evaluate_predictions
    from useg.stores.predictions import PredictionsWriter

    rows = []
    for n in range(2):
        Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / f"m{n}.png")
        rows.append(ManifestRow(f"im{n}", str(tmp_path / f"im{n}.png"), 8, 8, "val", mask_path=str(tmp_path / f"m{n}.png")))
    with PredictionsWriter(tmp_path / "p.zarr", np.arange(2), ["im0", "im1"], Frame((8, 8)), 2, "hand", {}) as writer:
        writer.write(0, np.zeros((2, 8, 8), np.int64))
    with pytest.raises(DataError, match="no labelled pixel.*ignore id 255.*dataset.eval_split"):
        evaluate_predictions(tmp_path / "p.zarr", rows, ["a", "b"], tmp_path / "metrics.json", {})
    assert not (tmp_path / "metrics.json").exists()


def test_json_outputs_hold_null_never_nan(tmp_path):
    import json

    from useg.atomic import write_json

    write_json(tmp_path / "m.json", {"miou": float("nan"), "per": [1.0, float("inf")], "n": 2})
    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=pytest.fail) == {"miou": None, "per": [1.0, None], "n": 2}
