"""Benchmark readers on fake copies of the real layouts: ids, ignore, splits and class mappings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fake_benchmarks import (
    IMAGENET_S_WNIDS,
    make_cityscapes,
    make_coco20k,
    make_cocostuff,
    make_imagenet_s,
    make_lip,
    make_voc,
    make_voc0712,
)
from useg.data.labels import IMAGENET_S_IGNORE, label_setting, load_instances, load_mask, read_mask, table_rows
from useg.data.manifest import build_manifest, read_classes, read_manifest, write_manifest
from useg.data.options import DatasetOptions
from useg.data.registry import list_dataset
from useg.errors import ConfigError, DataError


def listed(root: Path, options: dict):
    return list_dataset(options["kind"], root, DatasetOptions.from_params(options))


def by_id(listing) -> dict:
    return {r.id: r for r in listing.records}


def lut(setting: str, raw: int) -> int:
    return int(label_setting(setting).lut[raw])


# --- tables ---------------------------------------------------------------------------------


def test_cocostuff_table_has_171_classes_80_things_27_superclasses():
    rows = table_rows("cocostuff.csv")
    raws = [int(r["raw"]) for r in rows]
    assert len(rows) == 171 and len(set(raws)) == 171 and max(raws) == 181
    assert sum(r["kind"] == "thing" for r in rows) == 80
    unused = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}  # COCO ids without masks (street sign, hat, ...)
    assert set(range(182)) - set(raws) == unused
    assert len({r["coarse"] for r in rows}) == 27


@pytest.mark.parametrize(
    ("raw", "coarse"),
    [(0, "person"), (2, "vehicle"), (17, "animal"), (61, "furniture-things"), (52, "food-things"),
     (91, "textile"), (168, "plant"), (156, "sky"), (148, "ground"), (181, "solid"), (120, "food-stuff")],
)  # fmt: skip
def test_cocostuff_raw_ids_land_in_their_superclass(raw, coarse):
    classes = label_setting("cocostuff-27").classes
    assert classes[lut("cocostuff-27", raw)] == coarse


def test_cocostuff_171_and_80_settings():
    s171, s80 = label_setting("cocostuff-171"), label_setting("cocostuff-80")
    assert s171.classes[lut("cocostuff-171", 2)] == "car" and lut("cocostuff-171", 91) == 80
    assert s171.classes[lut("cocostuff-171", 181)] == "wood"
    assert len(s80.classes) == 81 and s80.classes[0] == "background"
    assert s80.classes[lut("cocostuff-80", 89)] == "toothbrush" and lut("cocostuff-80", 0) == 1
    assert lut("cocostuff-80", 91) == 0, "stuff is background in the things setting"
    for setting in ("cocostuff-27", "cocostuff-171", "cocostuff-80"):
        assert lut(setting, 255) == 255 and lut(setting, 11) == -1, "255 is ignored, unused raw ids are unknown"


def test_coco_things_and_stuff15_keep_one_side_and_ignore_the_other():
    # Leopart / CrOC (Tables 1 and 3): COCO-Things = 12 thing super-classes, COCO-Stuff = 15 stuff super-classes
    things, stuff = label_setting("cocostuff-12"), label_setting("cocostuff-15")
    assert len(things.classes) == 12 and things.things == things.classes
    assert len(stuff.classes) == 15 and stuff.things == []
    assert set(things.classes) | set(stuff.classes) == set(label_setting("cocostuff-27").classes)
    assert things.classes[lut("cocostuff-12", 0)] == "person" and things.classes[lut("cocostuff-12", 89)] == "indoor"
    assert stuff.classes[lut("cocostuff-15", 168)] == "plant" and stuff.classes[lut("cocostuff-15", 156)] == "sky"
    assert lut("cocostuff-12", 91) == 255 and lut("cocostuff-12", 181) == 255, "stuff is ignored in COCO-Things"
    assert lut("cocostuff-15", 0) == 255 and lut("cocostuff-15", 2) == 255, "things are ignored in COCO-Stuff-15"
    for setting in ("cocostuff-12", "cocostuff-15"):
        assert lut(setting, 255) == 255 and lut(setting, 11) == -1


def test_cityscapes_27_drops_void():
    s = label_setting("cityscapes-27")
    assert len(s.classes) == 27 and s.classes[lut("cityscapes-27", 7)] == "road"
    assert s.classes[lut("cityscapes-27", 33)] == "bicycle" and s.classes[lut("cityscapes-27", 24)] == "person"
    assert all(lut("cityscapes-27", raw) == 255 for raw in range(7)), "void classes are ignored"
    assert "car" in s.things and "road" not in s.things


def test_lip_settings_follow_transfgu_table_3():
    s19, s16, s5 = (label_setting(f"lip-{n}") for n in (19, 16, 5))
    assert (len(s19.classes), len(s16.classes), len(s5.classes)) == (20, 17, 6)
    assert lut("lip-19", 15) == 15 and lut("lip-16", 14) == lut("lip-16", 15) == 14, "left/right arm merge"
    assert s16.classes[14] == "arms" and lut("lip-16", 19) == 16 and lut("lip-16", 17) == 15
    assert {lut("lip-5", raw) for raw in (1, 2, 4, 13)} == {1} and s5.classes[1] == "head"
    assert lut("lip-5", 3) == lut("lip-5", 14) == 3 and lut("lip-5", 8) == lut("lip-5", 18) == 5
    assert lut("lip-5", 0) == 0 and lut("lip-5", 255) == 255


# --- readers on fake layouts ----------------------------------------------------------------


def test_voc_palette_masks_splits_and_objects(tmp_path):
    options = make_voc(tmp_path)
    listing = listed(tmp_path, options)
    records = by_id(listing)
    assert len(listing.classes) == 21 and listing.classes[15] == "person" and "background" not in listing.things
    assert {r.id for r in listing.records if r.split == "train_aug"} == {"2007_000032", "2007_000039", "2008_000002"}
    assert {r.id for r in listing.records if r.split == "val"} == {"2007_000033", "2007_000042"}
    mask = load_mask(records["2007_000032"])
    assert set(np.unique(mask)) == {0, 1, 15, 255}, "palette indices are the class ids, 255 ignored"
    assert records["2008_000002"].mask_path.parent.name == "SegmentationClassAug"
    assert set(np.unique(load_mask(records["2008_000002"]))) == {0, 20, 255}
    objects = load_instances(records["2007_000033"])
    assert set(np.unique(objects)) == {0, 1, 2}, "object borders (255) are no instance"
    assert records["2008_000002"].instance_path is None


def test_voc_split_lists_make_one_split_of_voc2007_and_voc2012_trainval(tmp_path):
    options = make_voc0712(tmp_path)
    listing = list_dataset("voc", tmp_path / "VOC2012", DatasetOptions.from_params(options))
    union = {r.id: r for r in listing.records if r.split == "trainval0712"}
    assert set(union) == {"000005", "000007", "2007_000032", "2007_000033", "2008_000002"}
    assert union["000005"].path == (tmp_path / "VOC2007" / "JPEGImages" / "000005.jpg").resolve()
    assert union["000005"].mask_path is None and union["2007_000032"].mask_path.parent.name == "SegmentationClass"
    assert {r.id for r in listing.records if r.split == "train_aug"} == {"2007_000032", "2007_000039", "2008_000002"}
    rows = build_manifest(listing, min_size=8)  # an image in two splits is one row per split
    assert sum(row.id == "2007_000032" for row in rows) == 2
    twice = {**options, "split_lists": {"trainval0712": ["ImageSets/Main/trainval.txt"] * 2}}
    with pytest.raises(DataError, match="split_lists.trainval0712"):
        list_dataset("voc", tmp_path / "VOC2012", DatasetOptions.from_params(twice))


def test_voc_unknown_split_is_an_error(tmp_path):
    make_voc(tmp_path)
    with pytest.raises(DataError, match="trainval"):
        listed(tmp_path, {"kind": "voc", "train_split": "trainval", "eval_split": "val"})


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(None, {9, 11, 17, 22, 255}), (171, {0, 2, 80, 157, 255}), (80, {0, 1, 3, 255}), (12, {9, 11, 255}), (15, {5, 10, 255})],
)  # fmt: skip
def test_cocostuff_masks_in_each_setting(tmp_path, setting, expected):
    listing = listed(tmp_path, make_cocostuff(tmp_path, setting))
    assert len(listing.classes) == {None: 27, 171: 171, 80: 81, 12: 12, 15: 15}[setting]
    assert set(np.unique(load_mask(listing.records[0]))) == expected
    assert {r.split for r in listing.records} == {"train2017", "val2017"} and len(listing.records) == 5


def test_cocostuff_curated_list_keeps_only_listed_images(tmp_path):
    options = make_cocostuff(tmp_path) | {"image_lists": {"train2017": "curated/train2017/Coco164kFull_Stuff_Coarse_7.txt"}}
    listing = listed(tmp_path, options)
    assert [r.id for r in listing.records if r.split == "train2017"] == ["000000000009", "000000000030"]
    assert sum(r.split == "val2017" for r in listing.records) == 2, "splits without a list keep every image"


def test_coco20k_reads_coco2014_names_and_needs_its_list(tmp_path):
    options = make_coco20k(tmp_path)
    listing = listed(tmp_path, options)
    assert [r.id for r in listing.records] == ["000000000009", "000000000025"] and len(listing.classes) == 81
    with pytest.raises(ConfigError, match="image_lists"):
        listed(tmp_path, {**options, "image_lists": {}})


def test_cityscapes_city_folders_and_labelids(tmp_path):
    listing = listed(tmp_path, make_cityscapes(tmp_path))
    records = by_id(listing)
    assert set(records) == {"aachen_000000_000019", "bochum_000001_000019", "frankfurt_000000_000294"}
    assert records["frankfurt_000000_000294"].split == "val", "test split not configured, not listed"
    assert set(np.unique(load_mask(records["aachen_000000_000019"]))) == {0, 4, 16, 19, 26, 255}


def test_lip_id_files_select_images_and_settings_merge_parts(tmp_path):
    listing = listed(tmp_path, make_lip(tmp_path, setting=16))
    assert [r.id for r in listing.records if r.split == "train"] == ["100034_483681", "10005_205677"]
    assert set(np.unique(load_mask(listing.records[0]))) == {0, 2, 5, 14, 16}
    assert set(np.unique(load_mask(listed(tmp_path, make_lip(tmp_path / "b", setting=5)).records[0]))) == {0, 1, 2, 3, 5}


def test_imagenet_s_class_list_rg_ids_above_255_and_ignore_1000(tmp_path):
    options = make_imagenet_s(tmp_path)
    listing = listed(tmp_path, options)
    assert len(listing.classes) == 301 and listing.classes[0] == "background"
    assert listing.classes[257] == IMAGENET_S_WNIDS[256]
    assert listing.ignore_index == IMAGENET_S_IGNORE
    train = [r for r in listing.records if r.split == "train"]
    assert len(train) == 3 and all("n99999999" not in str(r.path) for r in train), "classes outside the list are skipped"
    assert all(r.mask_path is None for r in train)
    val = sorted((r for r in listing.records if r.split == "validation"), key=lambda r: r.id)
    assert [set(np.unique(load_mask(r))) for r in val] == [{0, 1, 1000}, {0, 257, 1000}, {0, 300, 1000}]


def test_imagenet_s_subset_size_must_match_the_class_list(tmp_path):
    options = make_imagenet_s(tmp_path)
    with pytest.raises(DataError, match="300 classes"):
        listed(tmp_path, {**options, "setting": 50})
    with pytest.raises(ConfigError, match="class_list"):
        listed(tmp_path, {**options, "class_list": None})


def test_settings_outside_a_kind_are_config_errors(tmp_path):
    options = make_lip(tmp_path)
    with pytest.raises(ConfigError, match=r"dataset.setting: 27 is not one of \[19, 16, 5\]"):
        listed(tmp_path, {**options, "setting": 27})


# --- manifest: mapped masks validate, classes.json carries the ignore id ------------------


def test_manifest_validates_mapped_masks_and_records_the_label_map(tmp_path):
    listing = listed(tmp_path / "d", make_imagenet_s(tmp_path / "d"))
    rows = build_manifest(listing, min_size=8)
    write_manifest(rows, listing, tmp_path / "m.csv", tmp_path / "c.json")
    assert read_classes(tmp_path / "c.json")["ignore_index"] == 1000
    back = [r for r in read_manifest(tmp_path / "m.csv") if r.mask_path]
    assert all(r.label_map == "imagenet-s" for r in back) and load_mask(back[0]).max() == 1000


def test_imagenet_s_class_folders_become_the_images_classes_in_the_manifest(tmp_path):
    options = make_imagenet_s(tmp_path / "d")
    Image.open(next((tmp_path / "d" / "train").rglob("*.JPEG"))).save(tmp_path / "d" / "train" / "loose.JPEG")
    listing = listed(tmp_path / "d", options)
    write_manifest(build_manifest(listing, min_size=8), listing, tmp_path / "m.csv", tmp_path / "c.json")
    rows = {r.id: r for r in read_manifest(tmp_path / "m.csv")}
    assert rows.pop("loose").image_class == ""  # at the split's top level: no class folder
    assert all(r.image_class == Path(r.path).parent.name for r in rows.values())
    assert {r.image_class for r in rows.values()} == {IMAGENET_S_WNIDS[i] for i in (0, 256, 299)}


def test_manifest_reports_raw_ids_the_table_does_not_know(tmp_path):
    options = make_cocostuff(tmp_path)
    mask = tmp_path / "annotations" / "val2017" / "000000000139.png"
    Image.fromarray(np.full((40, 48), 11, np.uint8), mode="L").save(mask)  # 11: COCO's unused 'street sign'
    with pytest.raises(DataError, match="cocostuff-27"):
        build_manifest(listed(tmp_path, options), min_size=8)


def test_read_mask_without_setting_is_the_raw_file(tmp_path):
    listing = listed(tmp_path, make_cityscapes(tmp_path))
    record = by_id(listing)["aachen_000000_000019"]
    assert set(np.unique(read_mask(record.mask_path))) == {0, 3, 7, 11, 23, 26, 33}


# --- config schema: the per-kind settings ---------------------------------------------------


def _schema_errors(dataset: dict) -> list[str]:
    import jsonschema
    import yaml

    from tests.conftest import REPO

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors({"dataset": dataset})]


def test_schema_checks_settings_per_kind_and_required_keys():
    assert not _schema_errors({"kind": "cocostuff", "root": "/d", "setting": 171, "image_lists": {"val2017": "x.txt"}})
    assert not _schema_errors({"kind": "synthetic"})
    assert any("setting" in e and "27" in e for e in _schema_errors({"kind": "lip", "root": "/d", "setting": 27}))
    assert any("class_list" in e for e in _schema_errors({"kind": "imagenet-s", "root": "/d"}))
    assert any("root" in e for e in _schema_errors({"kind": "voc"}))
    assert any("kind" in e for e in _schema_errors({"kind": "ade20k", "root": "/d"}))


def test_imagenet_s_extra_splits_are_listed_with_their_masks(tmp_path):
    options = make_imagenet_s(tmp_path)
    shutil.copytree(tmp_path / "validation", tmp_path / "train-semi")
    shutil.copytree(tmp_path / "validation-segmentation", tmp_path / "train-semi-segmentation")
    semi = [r for r in listed(tmp_path, {**options, "extra_splits": ["train-semi"]}).records if r.split == "train-semi"]
    assert len(semi) == 3 and all(r.mask_path for r in semi)
    assert not [r for r in listed(tmp_path, options).records if r.split == "train-semi"]
