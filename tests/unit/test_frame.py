"""Working frames: images and label maps into a frame and back, and what the evaluation compares."""

from __future__ import annotations

import numpy as np
import pytest

from useg.data.frame import Frame
from useg.errors import ConfigError


def stripes(shape: tuple[int, int]) -> np.ndarray:
    """A label map whose id is the column's quarter of the width (0..3): any shift or squash shows."""
    return np.broadcast_to((np.arange(shape[1]) * 4 // shape[1]).astype(np.uint16), shape).copy()


@pytest.mark.parametrize("mode", ["squash", "crop", "pad"])
def test_labels_go_into_the_frame_and_back(mode):
    labels = stripes((30, 60))
    frame = Frame((16, 16), mode)
    fitted = frame.fit_labels(labels, fill=255)
    assert fitted.shape == (16, 16)
    back = frame.unfit_labels(fitted, labels.shape, fill=255)
    seen = back != 255
    assert back.shape == labels.shape and (back[seen] == labels[seen]).mean() > 0.9
    assert seen.mean() == pytest.approx({"squash": 1, "crop": 0.5, "pad": 1}[mode], abs=0.04)


def test_crop_shows_the_centre_and_pad_the_whole_image_inside_a_border():
    labels = stripes((30, 60))  # twice as wide as high
    crop = Frame((16, 16), "crop").fit_labels(labels, fill=255)
    assert set(np.unique(crop)) == {1, 2}  # the middle half of the columns
    pad = Frame((16, 16), "pad").fit_labels(labels, fill=255)
    assert (pad[:4] == 255).all() and (pad[-4:] == 255).all() and set(np.unique(pad[4:12])) == set(range(4))
    assert Frame((16, 16), "pad").placement((30, 60)) == ((0, 0, 30, 60), (4, 0, 12, 16))
    assert Frame((16, 16), "crop").placement((30, 60)) == ((0, 15, 30, 45), (0, 0, 16, 16))

    assert Frame((16, 16), "pad").to_image(4, 0, (30, 60)) == (0, 0) and Frame((16, 16), "pad").to_image(12, 16, (30, 60)) == (30, 60)
    assert Frame((16, 16), "crop").to_image(0, 0, (30, 60)) == (0, 15) and Frame((16, 16), "crop").to_image(16, 16, (30, 60)) == (30, 45)
    assert Frame((16, 16)).to_image(8, 8, (30, 60)) == (15, 30)


@pytest.mark.parametrize("mode", ["squash", "crop", "pad"])
def test_aligned_compares_a_perfect_prediction_exactly(mode):
    truth = stripes((30, 60))
    frame = Frame((16, 32), mode) if mode != "pad" else Frame((32, 32), mode)
    seen, predicted = frame.aligned(truth, frame.fit_labels(truth, fill=0))
    assert predicted.shape == seen.shape and (predicted == seen).mean() > 0.95


def test_frames_round_trip_through_store_attrs_and_reject_unknown_modes():
    frame = Frame((24, 32), "pad")
    assert Frame.of(frame.attrs()) == frame and Frame.of({"input_size": [8, 8]}) == Frame((8, 8), "squash")
    with pytest.raises(ConfigError, match="resize"):
        Frame((8, 8), "stretch")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_evaluation_maps_predictions_back_through_the_frame_they_were_made_in(tmp_path, mode):
    from PIL import Image

    from useg.data.manifest import ManifestRow
    from useg.eval.stage import evaluate_predictions
    from useg.stores.predictions import Predictions, PredictionsWriter

    truth = stripes((30, 60))  # wide images: a squashed reading of a crop or pad frame misplaces the stripes
    Image.fromarray(truth.astype(np.uint8)).save(tmp_path / "m.png")
    rows = [ManifestRow("im", str(tmp_path / "im.png"), 60, 30, "val", mask_path=str(tmp_path / "m.png"))]
    frame = Frame((16, 16), mode)

    def miou(stored: Frame) -> float:
        path = tmp_path / f"{stored.mode}.zarr"
        with PredictionsWriter(path, np.arange(1), ["im"], stored, 4, "hand", {}) as writer:
            writer.write(0, frame.fit_labels(truth, fill=0)[None])
        assert Predictions(path).frame == stored
        names = ["a", "b", "c", "d"]
        return evaluate_predictions(path, rows, names, tmp_path / f"{stored.mode}.json", {})["protocols"]["hungarian"]["miou"]

    assert miou(frame) > 0.9
    assert miou(Frame((16, 16), "squash")) < 0.7


def test_scoring_in_the_frame_reads_the_truth_by_torchs_nearest_rule_and_counts_the_frames_pixels(tmp_path):
    import torch
    from PIL import Image

    from useg.data.manifest import ManifestRow
    from useg.data.transforms import resize_labels
    from useg.eval.stage import evaluate_predictions
    from useg.stores.predictions import PredictionsWriter

    truth = np.random.default_rng(0).integers(0, 4, (72, 96)).astype(np.uint8)
    Image.fromarray(truth).save(tmp_path / "m.png")
    rows = [ManifestRow("im", str(tmp_path / "im.png"), 96, 72, "val", mask_path=str(tmp_path / "m.png"))]
    frame = Frame((20, 20), "squash")
    # TransFGU's release: F.interpolate(label, size) with its default nearest mode
    released = torch.nn.functional.interpolate(torch.from_numpy(truth)[None, None].float(), frame.size)[0, 0].numpy().astype(np.uint8)
    assert (released != resize_labels(truth, frame.size)).any(), "OpenCV's nearest must differ here for the test to tell them apart"
    prediction = released.copy()
    prediction[0] = (prediction[0] + 1) % 4  # the first row (20 of 400 pixels) wrong
    with PredictionsWriter(tmp_path / "p.zarr", np.arange(1), ["im"], frame, 4, "hand", {}) as writer:
        writer.write(0, prediction[None])

    def metrics(scored_at: str) -> dict:
        return evaluate_predictions(tmp_path / "p.zarr", rows, list("abcd"), tmp_path / f"{scored_at}.json", {}, scored_at=scored_at)

    in_frame, at_image = metrics("frame"), metrics("image")
    assert np.sum(in_frame["confusion"]) == 400 and in_frame["scored_at"] == "frame"
    assert in_frame["protocols"]["hungarian"]["pixel_accuracy"] == pytest.approx(380 / 400)
    assert np.sum(at_image["confusion"]) == 72 * 96 and at_image["protocols"]["hungarian"]["pixel_accuracy"] < 0.9
