import cv2
import numpy as np
import pytest

from useg.data.folder import list_folder_dataset
from useg.data.images import load_label_map, load_rgb
from useg.data.synthetic import (
    CLASS_NAMES,
    STUFF_CLASSES,
    THING_CLASSES,
    ShapesConfig,
    render,
    render_scene,
    scene_rng,
)

CFG = ShapesConfig(image_size=64)


def test_same_seed_same_scene_different_seed_different_scene():
    a, b = render_scene(scene_rng(0, 3), CFG), render_scene(scene_rng(0, 3), CFG)
    c = render_scene(scene_rng(1, 3), CFG)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.semantic, b.semantic)
    assert np.array_equal(a.instances, b.instances)
    assert not np.array_equal(a.image, c.image)


def test_scene_ground_truth_is_consistent():
    first_thing = len(STUFF_CLASSES)
    for number in range(20):
        scene = render_scene(scene_rng(0, number), CFG)
        is_thing = scene.semantic >= first_thing
        assert np.array_equal(is_thing, scene.instances > 0), "thing pixels are exactly instance pixels"
        ids = np.unique(scene.instances[scene.instances > 0])
        assert np.array_equal(ids, np.arange(1, len(ids) + 1)), "instance ids are consecutive"
        for instance in ids:
            assert len(np.unique(scene.semantic[scene.instances == instance])) == 1, "one class per instance"
        assert scene.semantic.max() < len(CLASS_NAMES)


def test_scenes_have_several_instances_and_scale_variation():
    areas, counts = [], []
    for number in range(30):
        scene = render_scene(scene_rng(0, number), CFG)
        ids = np.unique(scene.instances[scene.instances > 0])
        counts.append(len(ids))
        areas += [(scene.instances == i).sum() for i in ids]
    assert max(counts) >= 3 and np.mean(counts) >= 2
    assert max(areas) > 4 * np.median(areas) or min(areas) < np.median(areas) / 4


def _instance_hues(cfg: ShapesConfig, scenes: int) -> dict[str, list[float]]:
    """OpenCV hue (0-180) of the light colour of every thing instance, per class."""
    hues: dict[str, list[float]] = {name: [] for name in THING_CLASSES}
    for number in range(scenes):
        scene = render_scene(scene_rng(0, number), cfg)
        hsv = cv2.cvtColor(scene.image, cv2.COLOR_RGB2HSV)
        for instance in np.unique(scene.instances[scene.instances > 0]):
            region = scene.instances == instance
            brightest = np.argmax(hsv[..., 2][region])
            hues[CLASS_NAMES[scene.semantic[region][0]]].append(float(hsv[..., 0][region][brightest]))
    return hues


def test_random_colours_do_not_identify_a_thing_class():
    """colours: random -- one class's instances spread over the whole hue circle."""
    for name, hues in _instance_hues(ShapesConfig(image_size=64, colours="random"), 60).items():
        counts, _ = np.histogram(hues, bins=3, range=(0, 180))
        assert (counts > 0).all(), f"{name} instances all share one third of the hue circle"


def test_class_colours_centre_each_class_on_its_own_hue():
    """colours: class -- instance hues lie around the class's centre, 360/7 degrees apart."""
    cfg = ShapesConfig(image_size=64, colours="class", hue_std=15.0)
    for name, hues in _instance_hues(cfg, 60).items():
        centre = 180 * CLASS_NAMES.index(name) / len(CLASS_NAMES)
        offset = (np.asarray(hues) - centre + 90) % 180 - 90
        assert np.median(np.abs(offset)) < 10, f"{name} hues are not centred on {centre}"
        assert np.abs(offset).max() > 2, f"{name} hues do not vary"


def test_colour_mode_changes_colours_not_layout():
    a = render_scene(scene_rng(0, 4), ShapesConfig(image_size=64, colours="class"))
    b = render_scene(scene_rng(0, 4), ShapesConfig(image_size=64, colours="random"))
    assert np.array_equal(a.semantic, b.semantic) and np.array_equal(a.instances, b.instances)
    assert not np.array_equal(a.image, b.image)


def test_unknown_mode_or_colours_is_rejected():
    with pytest.raises(ValueError, match="colours"):
        ShapesConfig(colours="rainbow")
    with pytest.raises(ValueError, match="mode"):
        ShapesConfig(mode="panorama")


def test_written_dataset_is_a_folder_dataset(shapes_dir):
    listing = list_folder_dataset(shapes_dir)
    assert listing.classes == list(CLASS_NAMES)
    assert listing.things == list(THING_CLASSES)
    splits = [r.split for r in listing.records]
    assert splits.count("train") == 6 and splits.count("val") == 4
    record = listing.records[0]
    assert load_rgb(record.path).shape == (48, 48, 3)
    assert load_label_map(record.mask_path).shape == (48, 48)
    assert record.instance_path is not None


def test_scene_does_not_depend_on_dataset_size():
    small, large = ShapesConfig(num_train=2, image_size=48), ShapesConfig(num_train=50, image_size=48)
    assert np.array_equal(render_scene(scene_rng(0, 1), small).image, render_scene(scene_rng(0, 1), large).image)


def test_object_centric_mode_has_one_or_two_dominant_objects_of_many_classes():
    cfg = ShapesConfig(image_size=48, mode="object-centric", num_classes=12)
    seen, counts = set(), []
    for number in range(40):
        scene = render(scene_rng(0, number), cfg)
        ids = set(np.unique(scene.semantic).tolist()) - {0}
        assert ids <= set(range(1, 13)) and 1 <= len(ids) <= 2
        assert np.array_equal(scene.semantic > 0, scene.instances > 0)
        seen |= ids
        counts.append(len(ids))
    assert len(seen) >= 10 and 1 in counts and 2 in counts
    assert cfg.class_names()[0] == "background" and len(cfg.class_names()) == 13
    assert ShapesConfig(num_heldout=3).num_heldout == 3
