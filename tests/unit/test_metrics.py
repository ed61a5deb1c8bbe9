import numpy as np
import pytest

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
