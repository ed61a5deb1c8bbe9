"""Tiny fake copies of the benchmark layouts: real file names and label encodings, random pixels.

Each `make_<kind>(root)` writes the layout and returns the dataset options the tests use with it.
Masks are drawn from a few raw ids of the real encoding (plus the ignore value) in blocks, so
every class present covers several pixels after resizing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (40, 48)  # height, width


def _image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8), mode="RGB").save(path)


def block_ids(raw_ids: list[int], seed: int) -> np.ndarray:
    """A SIZE map of 8x8 blocks, each one of `raw_ids` (every id used at least once)."""
    rng = np.random.default_rng(seed)
    blocks = (SIZE[0] // 8, SIZE[1] // 8)
    cells = np.resize(np.array(raw_ids), blocks[0] * blocks[1])
    rng.shuffle(cells)
    return np.kron(cells.reshape(blocks), np.ones((8, 8), np.int64))


def _gray(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8), mode="L").save(path)


def _palette(path: Path, ids: np.ndarray) -> None:
    """A palette PNG as VOC ships them: the pixel values are the indices."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(ids.astype(np.uint8), mode="P")
    img.putpalette(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tolist())
    img.save(path)


def _rg(path: Path, ids: np.ndarray) -> None:
    """An ImageNet-S mask: class id = R + 256 G."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)
    Image.fromarray(rgb, mode="RGB").save(path)


def make_voc(root: Path) -> dict:
    """VOC2012: train (SegmentationClass), val, and a train_aug id whose mask is only in SegmentationClassAug."""
    splits = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033", "2007_000042"]}
    for n, image_id in enumerate(splits["train"] + splits["val"]):
        _image(root / "JPEGImages" / f"{image_id}.jpg", n)
        _palette(root / "SegmentationClass" / f"{image_id}.png", block_ids([0, 1, 15, 255], n))
        _palette(root / "SegmentationObject" / f"{image_id}.png", block_ids([0, 1, 2, 255], n))
    _image(root / "JPEGImages" / "2008_000002.jpg", 9)
    _gray(root / "SegmentationClassAug" / "2008_000002.png", block_ids([0, 20, 255], 9))
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    for split, ids in {**splits, "train_aug": [*splits["train"], "2008_000002"]}.items():
        (sets / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return {"kind": "voc", "train_split": "train_aug", "eval_split": "val"}


def make_voc0712(devkit: Path) -> dict:
    """VOCdevkit/VOC2012 (make_voc) beside VOC2007 with two detection-only images, and VOC2012's detection
    trainval (ImageSets/Main) of three images: the split trainval0712 as the union of both trainval lists."""
    options = make_voc(devkit / "VOC2012")
    for n, image_id in enumerate(["000005", "000007"]):
        _image(devkit / "VOC2007" / "JPEGImages" / f"{image_id}.jpg", 20 + n)
    for year, ids in {"VOC2007": ["000005", "000007"], "VOC2012": ["2007_000032", "2007_000033", "2008_000002"]}.items():
        (devkit / year / "ImageSets" / "Main").mkdir(parents=True)
        (devkit / year / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    lists = ["../VOC2007/ImageSets/Main/trainval.txt", "ImageSets/Main/trainval.txt"]
    return {**options, "extra_splits": ["trainval0712"], "split_lists": {"trainval0712": lists}}


COCO_IDS = {"train2017": ["000000000009", "000000000025", "000000000030"], "val2017": ["000000000139", "000000000285"]}
COCO_RAW = [0, 2, 91, 168, 255]  # person, car, banner, tree, unlabeled


def make_cocostuff(root: Path, setting: int | None = None) -> dict:
    """COCO-Stuff 2017: images/<split>/, annotations/<split>/ stuffthingmaps, a curated train list."""
    for n, (split, image_id) in enumerate((s, i) for s, ids in COCO_IDS.items() for i in ids):
        _image(root / "images" / split / f"{image_id}.jpg", n)
        _gray(root / "annotations" / split / f"{image_id}.png", block_ids(COCO_RAW, n))
    (root / "curated" / "train2017").mkdir(parents=True)
    (root / "curated" / "train2017" / "Coco164kFull_Stuff_Coarse_7.txt").write_text("000000000009\n000000000030\n")
    options = {"kind": "cocostuff", "train_split": "train2017", "eval_split": "val2017"}
    return options | ({"setting": setting} if setting else {})


def make_coco20k(root: Path) -> dict:
    """COCO20k: the COCO-Stuff layout and a COCO_train2014_* file list."""
    make_cocostuff(root)
    (root / "coco_20k_filenames.txt").write_text("COCO_train2014_000000000009.jpg\nCOCO_train2014_000000000025.jpg\n")
    return {
        "kind": "coco20k",
        "train_split": "train2017",
        "eval_split": "train2017",
        "image_lists": {"train2017": "coco_20k_filenames.txt"},
    }


CITY_RAW = [0, 3, 7, 11, 23, 26, 33]  # unlabeled, out of roi, road, building, sky, car, bicycle


def make_cityscapes(root: Path) -> dict:
    """Cityscapes: leftImg8bit/ and gtFine/ in city folders."""
    frames = {"train": [("aachen", "000000_000019"), ("bochum", "000001_000019")], "val": [("frankfurt", "000000_000294")]}
    frames["test"] = [("berlin", "000000_000019")]
    for n, (split, (city, frame)) in enumerate((s, f) for s, fs in frames.items() for f in fs):
        stem = f"{city}_{frame}"
        _image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", n)
        _gray(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", block_ids(CITY_RAW, n))
    return {"kind": "cityscapes", "train_split": "train", "eval_split": "val"}


LIP_RAW = [0, 2, 5, 14, 15, 18, 19]  # background, hair, upper-clothes, left/right arm, left/right shoe


def make_lip(root: Path, setting: int | None = None) -> dict:
    """LIP: TrainVal_images/, TrainVal_parsing_annotations/, <split>_id.txt."""
    ids = {"train": ["100034_483681", "10005_205677", "100142_449784"], "val": ["100034_1280399", "10018_419045"]}
    for n, (split, image_id) in enumerate((s, i) for s, group in ids.items() for i in group):
        _image(root / "TrainVal_images" / f"{split}_images" / f"{image_id}.jpg", n)
        _gray(root / "TrainVal_parsing_annotations" / f"{split}_segmentations" / f"{image_id}.png", block_ids(LIP_RAW, n))
    for split, group in ids.items():
        (root / f"{split}_id.txt").write_text("\n".join(group[:2] if split == "train" else group) + "\n")
    return {"kind": "lip", "train_split": "train", "eval_split": "val"} | ({"setting": setting} if setting else {})


IMAGENET_S_WNIDS = [f"n{i:08d}" for i in range(300)]


def make_imagenet_s(root: Path) -> dict:
    """ImageNet-S300: class-per-folder train images, validation masks with ids up to 300, 1000 = ignore."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "ImageNetS_categories_im300.txt").write_text("\n".join(IMAGENET_S_WNIDS) + "\n")
    used = {IMAGENET_S_WNIDS[0]: 1, IMAGENET_S_WNIDS[256]: 257, IMAGENET_S_WNIDS[299]: 300}
    for n, wnid in enumerate(used):
        _image(root / "train" / wnid / f"{wnid}_{n}.JPEG", n)
    _image(root / "train" / "n99999999" / "n99999999_0.JPEG", 7)  # a class outside the subset
    for n, (wnid, class_id) in enumerate(used.items()):
        stem = f"ILSVRC2012_val_{n + 1:08d}"
        _image(root / "validation" / wnid / f"{stem}.JPEG", 10 + n)
        _rg(root / "validation-segmentation" / wnid / f"{stem}.png", block_ids([0, class_id, 1000], n))
    return {
        "kind": "imagenet-s",
        "train_split": "train",
        "eval_split": "validation",
        "setting": 300,
        "class_list": "ImageNetS_categories_im300.txt",
    }


MAKERS = {
    "voc": make_voc,
    "cocostuff": make_cocostuff,
    "coco20k": make_coco20k,
    "cityscapes": make_cityscapes,
    "lip": make_lip,
    "imagenet-s": make_imagenet_s,
}
