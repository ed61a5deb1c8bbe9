import numpy as np

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


def test_colour_does_not_identify_a_thing_class():
    """Mean colours of one class's instances spread over many hues."""
    hues = {name: [] for name in THING_CLASSES}
    for number in range(60):
        scene = render_scene(scene_rng(0, number), CFG)
        for instance in np.unique(scene.instances[scene.instances > 0]):
            region = scene.instances == instance
            mean = scene.image[region].mean(axis=0)
            hues[CLASS_NAMES[scene.semantic[region][0]]].append(np.argmax(mean))
    for name, dominant_channels in hues.items():
        assert len(set(dominant_channels)) == 3, f"{name} instances all share a dominant colour"


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
