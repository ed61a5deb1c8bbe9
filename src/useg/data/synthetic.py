"""The embedded "shapes" dataset: deterministic synthetic scenes with stuff and thing classes.

Two modes (`dataset.synthetic.mode`): `scenes` (below) and `object-centric`, the stand-in for
ImageNet-S: a textured background (class 0) and one or two dominant objects per image out of many
thing classes (shape x pattern pairs, up to 12), object sizes from a few % to most of the image.

Stuff classes are textures (sand, grass, bricks) laid out in smooth random regions. Thing
classes are shape x pattern pairs (disk/square x stripes/dots): neither the shape nor the
pattern alone names the class. Colours (`colours`): `class` (default) gives every class its own hue,
drawn per region/instance around the class's centre with `hue_std` degrees of spread, so colour is
a strong but incomplete cue as in real scenes (grass is mostly green); `random` draws every hue
uniformly, so colour carries no class information at all. Several instances per image, random
scale, occlusion by paint order.
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
OBJECT_SHAPES = ("disk", "square", "triangle", "ring")
OBJECT_PATTERNS = ("striped", "dotted", "checkered")
OBJECT_CLASSES = tuple(f"{pattern}_{shape}" for shape in OBJECT_SHAPES for pattern in OBJECT_PATTERNS)
MODES = ("scenes", "object-centric")
COLOURS = ("class", "random")


@dataclass(frozen=True)
class ShapesConfig:
    """Size and content of the synthetic dataset."""

    num_train: int = 96
    num_val: int = 48
    image_size: int = 96
    min_objects: int = 2
    max_objects: int = 5
    mode: str = "scenes"  # scenes | object-centric
    num_classes: int = 12  # object-centric: thing classes (background is class 0 besides them)
    num_heldout: int = 0  # images of a third split `heldout` (e.g. for choosing thresholds)
    colours: str = "class"  # class: hue centred on the class's own | random: uniform hue
    hue_std: float = 15.0  # degrees (of 360) of hue spread around the class centre (colours: class)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown synthetic mode {self.mode!r}; one of {MODES}")
        if self.colours not in COLOURS:
            raise ValueError(f"unknown synthetic colours {self.colours!r}; one of {COLOURS}")

    def class_names(self) -> tuple[str, ...]:
        """Class names in id order."""
        if self.mode == "object-centric":
            return ("background", *OBJECT_CLASSES[: self.num_classes])
        return CLASS_NAMES

    def thing_names(self) -> tuple[str, ...]:
        return self.class_names()[1:] if self.mode == "object-centric" else THING_CLASSES


@dataclass
class Scene:
    """One rendered scene: RGB image, semantic ids and instance ids (0 = no instance)."""

    image: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray


def _hue(rng: np.random.Generator, cfg: ShapesConfig, class_id: int) -> float:
    """OpenCV hue (0-180) of one region of class `class_id`: uniform, or around the class's centre."""
    if cfg.colours == "random":
        return rng.uniform(0, 180)
    centre = 180 * class_id / len(cfg.class_names())
    return (centre + rng.normal(0, cfg.hue_std / 2)) % 180


def _two_tones(rng: np.random.Generator, hue: float) -> tuple[np.ndarray, np.ndarray]:
    """Two contrasting RGB colours of one hue, random saturation and brightness (values in [0, 1])."""
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
    if name == "checkered":
        period = rng.uniform(5.0, 8.0)
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
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
    if shape == "triangle":
        corners = [angle + k * 2 * np.pi / 3 for k in range(3)]
        inside = np.ones((size, size), bool)
        for a, b in zip(corners, corners[1:] + corners[:1]):  # left of every edge (counter-clockwise)
            ay, ax, by, bx = radius * np.sin(a), radius * np.cos(a), radius * np.sin(b), radius * np.cos(b)
            inside &= (bx - ax) * (dy - ay) - (by - ay) * (dx - ax) >= 0
        return inside
    if shape == "ring":
        d2 = dx**2 + dy**2
        return (d2 <= radius**2) & (d2 >= (0.55 * radius) ** 2)
    raise ValueError(f"unknown shape {shape!r}")


def _paint(image: np.ndarray, region: np.ndarray, pattern: np.ndarray, rng: np.random.Generator, hue: float) -> None:
    c0, c1 = _two_tones(rng, hue)
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
            _paint(image, region, stuff_pattern(name, size, rng), rng, _hue(rng, cfg, stuff_id))
    instances = np.zeros((size, size), np.uint8)
    for number in range(1, rng.integers(cfg.min_objects, cfg.max_objects + 1) + 1):
        thing = rng.integers(len(THING_CLASSES))
        shape, pattern = THING_SHAPES[thing // len(THING_PATTERNS)], THING_PATTERNS[thing % len(THING_PATTERNS)]
        radius = rng.uniform(0.08, 0.22) * size
        centre = rng.uniform(0.1 * size, 0.9 * size, size=2)
        region = shape_mask(shape, size, centre, radius, rng.uniform(0, np.pi / 2))
        _paint(image, region, thing_pattern(pattern, size, rng), rng, _hue(rng, cfg, len(STUFF_CLASSES) + thing))
        semantic[region] = len(STUFF_CLASSES) + thing
        instances[region] = number
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return Scene(image=image, semantic=semantic, instances=_renumber(instances))


def render_object_centric(rng: np.random.Generator, cfg: ShapesConfig) -> Scene:
    """One or two dominant objects of distinct classes (1..num_classes) on a textured background (0)."""
    size = cfg.image_size
    image = np.zeros((size, size, 3), np.float32)
    background = stuff_pattern(STUFF_CLASSES[rng.integers(3)], size, rng)
    _paint(image, np.ones((size, size), bool), background, rng, _hue(rng, cfg, 0))
    semantic = np.zeros((size, size), np.uint8)
    instances = np.zeros((size, size), np.uint8)
    count = 1 if rng.random() < 0.6 else 2
    for number, thing in enumerate(rng.choice(cfg.num_classes, size=count, replace=False), start=1):
        shape = OBJECT_SHAPES[thing // len(OBJECT_PATTERNS)]
        pattern = OBJECT_PATTERNS[thing % len(OBJECT_PATTERNS)]
        radius = rng.uniform(0.12, 0.45) * size if number == 1 else rng.uniform(0.08, 0.22) * size
        lo, hi = (0.3, 0.7) if number == 1 else (0.15, 0.85)
        centre = rng.uniform(lo * size, hi * size, size=2)
        region = shape_mask(shape, size, centre, radius, rng.uniform(0, 2 * np.pi))
        _paint(image, region, thing_pattern(pattern, size, rng), rng, _hue(rng, cfg, thing + 1))
        semantic[region] = thing + 1
        instances[region] = number
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return Scene(image=image, semantic=semantic, instances=_renumber(instances))


def render(rng: np.random.Generator, cfg: ShapesConfig) -> Scene:
    """One image of the configured mode."""
    return render_object_centric(rng, cfg) if cfg.mode == "object-centric" else render_scene(rng, cfg)


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
    """(image id, split) of every scene: train, then val, then heldout."""
    counts = (("train", cfg.num_train), ("val", cfg.num_val), ("heldout", cfg.num_heldout))
    return [(f"{split}_{i:05d}", split) for split, n in counts for i in range(n)]


def write_shapes_dataset(cfg: ShapesConfig, out_dir: str | Path) -> Path:
    """Render every scene and write a folder dataset (images/, masks/, instances/, classes.txt, ...)."""
    out_dir = Path(out_dir)
    with atomic_output(out_dir) as tmp:
        for sub in ("images", "masks", "instances"):
            (tmp / sub).mkdir(parents=True)
        ids = scene_ids(cfg)
        for number, (image_id, _) in enumerate(tqdm(ids, desc="shapes", unit="img")):
            scene = render(scene_rng(cfg.seed, number), cfg)
            Image.fromarray(scene.image).save(tmp / "images" / f"{image_id}.png")
            save_label_map(tmp / "masks" / f"{image_id}.png", scene.semantic)
            save_label_map(tmp / "instances" / f"{image_id}.png", scene.instances)
        (tmp / "classes.txt").write_text("\n".join(cfg.class_names()) + "\n")
        (tmp / "things.txt").write_text("\n".join(cfg.thing_names()) + "\n")
        (tmp / "splits.csv").write_text("stem,split\n" + "".join(f"{i},{s}\n" for i, s in ids))
    log.info("wrote %d synthetic %s images (%d classes) to %s", len(ids), cfg.mode, len(cfg.class_names()), out_dir)
    return out_dir
