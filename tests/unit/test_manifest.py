from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import CAMVID, make_folder_dataset, write_image, write_mask
from useg.data.folder import list_folder_dataset
from useg.data.images import load_rgb
from useg.data.manifest import build_manifest, read_manifest, shard_rows, split_rows, write_manifest
from useg.errors import DataError


def manifest_of(root: Path, **kwargs):
    return build_manifest(list_folder_dataset(root), min_size=8, **kwargs)


def test_manifest_rows_carry_sizes_splits_and_masks(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", count=3)
    rows = manifest_of(root)
    assert [r.id for r in rows] == ["img0", "img1", "img2"]
    assert {(r.width, r.height) for r in rows} == {(48, 40)}
    assert [r.split for r in rows] == ["val", "train", "train"]
    assert all(r.mask_path.endswith(".png") for r in rows)
    listing = list_folder_dataset(root)
    write_manifest(rows, listing, tmp_path / "m.csv", tmp_path / "c.json")
    assert read_manifest(tmp_path / "m.csv") == rows


def test_corrupt_images_are_listed_by_path_in_one_error(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", count=3)
    (root / "images" / "img1.png").write_bytes(b"not an image")
    truncated = (root / "images" / "img2.png").read_bytes()[:60]
    (root / "images" / "img2.png").write_bytes(truncated)
    with pytest.raises(DataError) as err:
        manifest_of(root)
    assert "img1.png" in str(err.value) and "img2.png" in str(err.value)
    assert "on_corrupt: skip" in str(err.value)


def test_corrupt_images_are_skipped_with_a_warning_when_asked(tmp_path, caplog):
    root = make_folder_dataset(tmp_path / "ds", count=3)
    (root / "images" / "img1.png").write_bytes(b"garbage")
    rows = manifest_of(root, on_corrupt="skip")
    assert [r.id for r in rows] == ["img0", "img2"]
    assert "img1.png" in caplog.text


def test_grayscale_and_rgba_become_rgb(tmp_path):
    gray = write_image(tmp_path / "g.png", mode="L")
    rgba = write_image(tmp_path / "a.png", mode="RGBA")
    assert load_rgb(gray).shape == (40, 48, 3)
    assert np.array_equal(load_rgb(gray)[..., 0], load_rgb(gray)[..., 2])
    assert load_rgb(rgba).shape == (40, 48, 3)
    assert np.array_equal(load_rgb(rgba), np.asarray(Image.open(rgba))[..., :3])


def test_image_smaller_than_a_patch_is_rejected(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", count=2)
    write_image(root / "images" / "tiny.png", size=(5, 30))
    with pytest.raises(DataError, match=r"tiny.png is 30x5 px, smaller than one 8-px patch"):
        manifest_of(root)


def test_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "ds" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        manifest_of(tmp_path / "ds")
    with pytest.raises(DataError, match="no images/ folder"):
        list_folder_dataset(tmp_path / "nothing")


def test_mask_of_the_wrong_size_names_both_files(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", count=2)
    write_mask(root / "masks" / "img1.png", size=(20, 20))
    with pytest.raises(DataError) as err:
        manifest_of(root)
    assert "masks/img1.png is 20x20" in str(err.value) and "images/img1.png is 48x40" in str(err.value)


def test_mask_ids_outside_the_classes_are_an_error(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", count=1, classes=3)
    Image.fromarray(np.full((40, 48), 7, np.uint8)).save(root / "masks" / "img0.png")
    with pytest.raises(DataError, match=r"ids \[7\] outside 0..2"):
        manifest_of(root)


def test_ignore_pixels_are_allowed_in_masks(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", count=1, classes=3)
    Image.fromarray(np.full((40, 48), 255, np.uint8)).save(root / "masks" / "img0.png")
    assert len(manifest_of(root)) == 1


def test_rgb_mask_is_rejected(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", count=1)
    write_image(root / "masks" / "img0.png")
    with pytest.raises(DataError, match="single-channel"):
        manifest_of(root)


def test_shards_partition_a_split_contiguously():
    items = list(range(10))
    shards = [shard_rows(items, i, 3) for i in range(3)]
    assert sum(shards, []) == items
    assert {len(s) for s in shards} <= {3, 4}
    assert sum((shard_rows([7], i, 2) for i in range(2)), []) == [7], "more shards than images: some are empty"
    with pytest.raises(ValueError):
        shard_rows(items, 3, 3)


def test_unknown_split_lists_the_available_ones(tmp_path):
    rows = manifest_of(make_folder_dataset(tmp_path / "ds", count=2))
    with pytest.raises(DataError, match=r"split 'test' has no images.*\['train', 'val'\]"):
        split_rows(rows, "test")


@pytest.mark.shared
@pytest.mark.skipif(not CAMVID.exists(), reason="../shared/data/camvid is not available")
def test_camvid_reads_as_it_is():
    listing = list_folder_dataset(CAMVID)
    assert len(listing.records) == 468 and len(listing.classes) == 11
    assert sum(r.split == "val" for r in listing.records) == 101
    assert all(r.mask_path is not None for r in listing.records)
    rows = build_manifest(
        type(listing)(listing.records[:4], listing.classes, listing.things), min_size=8
    )
    assert {(r.width, r.height) for r in rows} == {(480, 360)}


def test_splits_csv_without_a_header_is_refused_naming_the_file(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", count=3)
    (root / "splits.csv").write_text("img0,val\nimg1,train\nimg2,train\n")
    with pytest.raises(DataError, match=r"splits\.csv: the first row 'img0,val' names the image 'img0'.*add a header line"):
        list_folder_dataset(root)


def test_splits_rows_naming_no_image_are_listed_in_a_warning(tmp_path, caplog):
    root = make_folder_dataset(tmp_path / "ds", count=2)
    (root / "splits.csv").write_text("stem,split\nimg0,val\nimg7,val\nIMG1,val\n")
    listing = list_folder_dataset(root)
    assert {r.id: r.split for r in listing.records} == {"img0": "val", "img1": "train"}
    assert "2 row(s) name no image in images/, ignored: IMG1, img7" in caplog.text


def write_rotated_jpeg(path: Path, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A JPEG stored landscape (h, w) with EXIF orientation 6 (display rotated 90° clockwise); the upright pixels."""
    image = Image.fromarray(np.arange(size[0] * size[1] * 3, dtype=np.uint8).reshape(*size, 3))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif, quality=100)
    with Image.open(path) as stored:
        return np.asarray(stored.convert("RGB").transpose(Image.Transpose.ROTATE_270))


def test_exif_orientation_is_applied_to_images_and_masks(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", count=1)
    (root / "images" / "img0.png").unlink()
    upright = write_rotated_jpeg(root / "images" / "img0.jpg")
    assert np.array_equal(load_rgb(root / "images" / "img0.jpg"), upright) and upright.shape == (48, 40, 3)
    mask = Image.fromarray(np.zeros((40, 48), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    mask.save(root / "masks" / "img0.png", exif=exif)
    [row] = manifest_of(root)
    assert (row.width, row.height) == (40, 48), "image and mask are both upright: no size mismatch"
