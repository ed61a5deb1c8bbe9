"""The embedded "shapes" dataset: deterministic synthetic scenes with stuff and thing classes.

Stuff classes are textures (sand, grass, bricks) laid out in smooth random regions. Thing
classes are shape x pattern pairs (disk/square x stripes/dots): neither the shape nor the
pattern alone names the class, and every region and instance gets random colours, so colour
cannot solve the task. Several instances per image, random scale, occlusion by paint order.
Each scene comes from its own seed sequence (seed, image number): scenes do not depend on how
many are generated or in which order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from useg.atomic import atomic_output
from useg.data.images import save_label_map

log = logging.getLogger(__name__)

STUFF_CLASSES = ("sand", "grass", "bricks")
THING_SHAPES = ("disk", "square")
THING_PATTERNS = ("striped", "dotted")
THING_CLASSES = tuple(f"{pattern}_{shape}" for shape in THING_SHAPES for pattern in THING_PATTERNS)
CLASS_NAMES = STUFF_CLASSES + THING_CLASSES


@dataclass(frozen=True)
class ShapesConfig:
    """Size and content of the synthetic dataset."""

    num_train: int = 96
    num_val: int = 48
    image_size: int = 96
    min_objects: int = 2
    max_objects: int = 5
    seed: int = 0


@dataclass
class Scene:
    """One rendered scene: RGB image, semantic ids and instance ids (0 = no instance)."""

    image: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray


def _random_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two contrasting RGB colours of one random hue (values in [0, 1])."""
    hue = rng.uniform(0, 180)
    sat = rng.uniform(0.25, 1.0) * 255
    dark, light = rng.uniform(0.15, 0.45) * 255, rng.uniform(0.6, 1.0) * 255
    hsv = np.array([[[hue, sat, dark], [hue, sat, light]]], dtype=np.uint8)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float32) / 255
    return (rgb[0], rgb[1]) if rng.random() < 0.5 else (rgb[1], rgb[0])


def _normalise(field: np.ndarray) -> np.ndarray:
    lo, hi = field.min(), field.max()
    return (field - lo) / (hi - lo + 1e-8)


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return ys, xs


def stuff_pattern(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Texture in [0, 1] for a stuff class."""
    ys, xs = _coords(size)
    if name == "sand":
        return _normalise(cv2.GaussianBlur(rng.random((size, size), np.float32), (0, 0), 2.0))
    if name == "grass":
        streaks = cv2.GaussianBlur(rng.random((size, size), np.float32), (0, 0), sigmaX=0.7, sigmaY=5.0)
        return (_normalise(streaks) > 0.5).astype(np.float32)
    if name == "bricks":
        row_h = rng.integers(7, 10)
        brick_w = 2 * row_h
        row = (ys + rng.integers(0, row_h)) // row_h
        shift = (row % 2) * (brick_w // 2)
        mortar = ((ys + 0) % row_h < 1.5) | (((xs + shift) % brick_w) < 1.5)
        return mortar.astype(np.float32)
    raise ValueError(f"unknown stuff class {name!r}")


def thing_pattern(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Pattern in [0, 1] for a thing pattern name (stripes or dots), random orientation/phase."""
    ys, xs = _coords(size)
    theta = rng.uniform(0, np.pi)
    u = xs * np.cos(theta) + ys * np.sin(theta)
    v = -xs * np.sin(theta) + ys * np.cos(theta)
    if name == "striped":
        period = rng.uniform(4.5, 6.5)
        return (np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float32)
    if name == "dotted":
        period = rng.uniform(5.0, 7.0)
        du = (u + rng.uniform(0, period)) % period - period / 2
        dv = (v + rng.uniform(0, period)) % period - period / 2
        return (du**2 + dv**2 < (0.28 * period) ** 2).astype(np.float32)
    raise ValueError(f"unknown thing pattern {name!r}")


def shape_mask(shape: str, size: int, centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Boolean mask of a disk or a rotated square of the given radius (half side for squares)."""
    ys, xs = _coords(size)
    dy, dx = ys - centre[0], xs - centre[1]
    if shape == "disk":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":
        u = np.abs(dx * np.cos(angle) + dy * np.sin(angle))
        v = np.abs(-dx * np.sin(angle) + dy * np.cos(angle))
        half = radius * 0.85
        return (u <= half) & (v <= half)
    raise ValueError(f"unknown shape {shape!r}")


def _paint(image: np.ndarray, region: np.ndarray, pattern: np.ndarray, rng: np.random.Generator) -> None:
    c0, c1 = _random_colours(rng)
    colour = c0[None, None] * (1 - pattern[..., None]) + c1[None, None] * pattern[..., None]
    image[region] = colour[region]


def _stuff_layout(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random partition of the image into 1-3 stuff classes (ids into STUFF_CLASSES)."""
    count = rng.integers(1, len(STUFF_CLASSES) + 1)
    chosen = rng.choice(len(STUFF_CLASSES), size=count, replace=False)
    fields = [cv2.GaussianBlur(rng.random((size, size), np.float32), (0, 0), size / 6) for _ in chosen]
    return chosen[np.argmax(np.stack(fields), axis=0)]


def render_scene(rng: np.random.Generator, cfg: ShapesConfig) -> Scene:
    """Render one scene: stuff regions, then thing instances painted in order (occlusion)."""
    size = cfg.image_size
    image = np.zeros((size, size, 3), np.float32)
    semantic = _stuff_layout(size, rng).astype(np.uint8)
    for stuff_id, name in enumerate(STUFF_CLASSES):
        region = semantic == stuff_id
        if region.any():
            _paint(image, region, stuff_pattern(name, size, rng), rng)
    instances = np.zeros((size, size), np.uint8)
    for number in range(1, rng.integers(cfg.min_objects, cfg.max_objects + 1) + 1):
        thing = rng.integers(len(THING_CLASSES))
        shape, pattern = THING_SHAPES[thing // len(THING_PATTERNS)], THING_PATTERNS[thing % len(THING_PATTERNS)]
        radius = rng.uniform(0.08, 0.22) * size
        centre = rng.uniform(0.1 * size, 0.9 * size, size=2)
        region = shape_mask(shape, size, centre, radius, rng.uniform(0, np.pi / 2))
        _paint(image, region, thing_pattern(pattern, size, rng), rng)
        semantic[region] = len(STUFF_CLASSES) + thing
        instances[region] = number
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return Scene(image=image, semantic=semantic, instances=_renumber(instances))


def _renumber(instances: np.ndarray) -> np.ndarray:
    """Make visible instance ids consecutive (fully occluded instances vanish)."""
    visible = np.unique(instances[instances > 0])
    lut = np.zeros(256, np.uint8)
    lut[visible] = np.arange(1, len(visible) + 1)
    return lut[instances]


def scene_rng(seed: int, number: int) -> np.random.Generator:
    """The generator of scene `number`: independent of every other scene."""
    return np.random.default_rng([seed, number])


def scene_ids(cfg: ShapesConfig) -> list[tuple[str, str]]:
    """(image id, split) of every scene, train first then val."""
    return [(f"train_{i:05d}", "train") for i in range(cfg.num_train)] + [
        (f"val_{i:05d}", "val") for i in range(cfg.num_val)
    ]


def write_shapes_dataset(cfg: ShapesConfig, out_dir: str | Path) -> Path:
    """Render every scene and write a folder dataset (images/, masks/, instances/, classes.txt, ...)."""
    out_dir = Path(out_dir)
    with atomic_output(out_dir) as tmp:
        for sub in ("images", "masks", "instances"):
            (tmp / sub).mkdir(parents=True)
        ids = scene_ids(cfg)
        for number, (image_id, _) in enumerate(tqdm(ids, desc="shapes", unit="img")):
            scene = render_scene(scene_rng(cfg.seed, number), cfg)
            Image.fromarray(scene.image).save(tmp / "images" / f"{image_id}.png")
            save_label_map(tmp / "masks" / f"{image_id}.png", scene.semantic)
            save_label_map(tmp / "instances" / f"{image_id}.png", scene.instances)
        (tmp / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
        (tmp / "things.txt").write_text("\n".join(THING_CLASSES) + "\n")
        (tmp / "splits.csv").write_text("stem,split\n" + "".join(f"{i},{s}\n" for i, s in ids))
    log.info("wrote %d synthetic scenes (%d classes) to %s", len(ids), len(CLASS_NAMES), out_dir)
    return out_dir
