"""Tiny datasets written in the exact on-disk layouts of the real ones, deterministic from a seed:
the test fixtures and the data of the demo profile (``clip-study demo-data``).

The images are real JPEGs (PNGs for ObjectNet, as in its download) with class-dependent content a
small model can learn: each class has its own hue, stripe orientation and stripe frequency, drawn
on an elliptical object over a random background, plus noise. The shifts change the rendering as
their real counterparts do, so their accuracies differ from ImageNet's:

- ImageNet-V2: the same rendering with smaller objects and darker backgrounds (a mild shift);
- ImageNet-Sketch: grey pencil lines (the edges of the image) on white: no colour cue left;
- ImageNet-R: a cartoon rendition: flat posterised colours, black outline, pastel background;
- ImageNet-A: hard images: low contrast, occluding patches, distracting stripes in the background;
- ObjectNet: rotated objects on cluttered backgrounds, with the 2-pixel red border of the real
  images (the loader crops it).

Broden: 224 px JPEGs with RG-encoded segmentation PNGs at half resolution (112 px) for color,
object, part and material, and image-level scene and texture labels; :func:`write_broden` returns
the ground-truth presence it wrote.
"""
from __future__ import annotations

import colorsys
import csv
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from helpers.data.classes import imagenet_a_wnids, imagenet_index, imagenet_lemmas, imagenet_r_wnids, imagenet_wnids

#: The 8 ImageNet classes present in ImageNet-R, ImageNet-A and among ObjectNet's mapped classes
#: (bow tie, broom, candle, mitten, sandal, wine bottle, lemon, banana), so every shift has them all.
DEMO_CLASSES = ("n02883205", "n02906734", "n02948072", "n03775071", "n04133789", "n04591713",
                "n07749582", "n07753592")

#: ObjectNet folders as in the real mapping files: folder -> (ObjectNet class, mapped ImageNet wnids).
#: The last two have no ImageNet counterpart; their images must be excluded by the loader.
OBJECTNET_CLASSES = {
    "tie": ("Tie", ("n02883205", "n04591157")),  # bow tie; Windsor tie
    "broom": ("Broom", ("n02906734",)),
    "candle": ("Candle", ("n02948072",)),
    "winter_glove": ("Winter glove", ("n03775071",)),
    "sandal": ("Sandal", ("n04133789",)),
    "wine_bottle": ("Wine bottle", ("n04591713",)),
    "lemon": ("Lemon", ("n07749582",)),
    "banana": ("Banana", ("n07753592",)),
    "squeegee": ("Squeegee", ()),
    "coaster": ("Coaster", ()),
}

#: Where :func:`write_demo_data` puts each dataset under the data root (``configs/demo.yml``).
DEMO_LAYOUT = {
    "imagenet": "imagenet/val",
    "imagenet-train": "imagenet/train",
    "imagenet-v2": "imagenetv2-matched-frequency-format-val",
    "imagenet-r": "imagenet-r",
    "imagenet-sketch": "sketch",
    "objectnet": "objectnet-1.0",
    "imagenet-a": "imagenet-a",
    "broden": "broden1_224",
}

#: Bump when the generated data change for the same arguments (it invalidates the demo marker).
FIXTURE_VERSION = 2
DEMO_MARKER = ".demo-data.json"

Size = tuple[int, int]


# --- rendering -----------------------------------------------------------------------------------

def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _style(wnid: str) -> tuple[float, float, float]:
    """(hue, stripe angle in radians, stripes per image width) of a class. The demo classes are
    spread evenly; any other class gets a golden-ratio hash of its ImageNet index."""
    if wnid in DEMO_CLASSES:
        k, n = DEMO_CLASSES.index(wnid), len(DEMO_CLASSES)
        return k / n, np.pi * ((3 * k) % n) / n, 3.0 + 2 * (k % 3)
    i = imagenet_index()[wnid]
    return (i * 0.618034) % 1.0, np.pi * ((i * 0.381966) % 1.0), 3.0 + 2 * (i % 3)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _grid(size: Size) -> tuple[np.ndarray, np.ndarray]:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx / max(w, h), yy / max(w, h)


def _object(rng, style, size: Size, scale: tuple[float, float], angle_jitter: float = 0.0):
    """Mask and stripe field (in [0, 1]) of the class object: an ellipse with the class's stripes."""
    hue, angle, freq = style
    xx, yy = _grid(size)
    w, h = size
    cx, cy = rng.uniform(0.35, 0.65) * w / max(w, h), rng.uniform(0.35, 0.65) * h / max(w, h)
    r = rng.uniform(*scale) * min(w, h) / max(w, h)
    ratio = rng.uniform(0.7, 1.3)
    mask = ((xx - cx) / r) ** 2 + ((yy - cy) / (r * ratio)) ** 2 <= 1.0
    a = angle + rng.uniform(-angle_jitter, angle_jitter)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(a) + yy * np.sin(a)) + rng.uniform(0, 2 * np.pi))
    return mask, stripes


def _background(rng, size: Size, lo: float, hi: float) -> np.ndarray:
    xx, yy = _grid(size)
    c0, c1 = rng.uniform(lo, hi, 3), rng.uniform(lo, hi, 3)
    a = rng.uniform(0, 2 * np.pi)
    t = xx * np.cos(a) + yy * np.sin(a)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    return c0 + (c1 - c0) * t[..., None]


def _photo(rng, wnid: str, size: Size, scale=(0.3, 0.45), bg=(0.25, 0.85), noise=0.04,
           angle_jitter=0.15) -> np.ndarray:
    style = _style(wnid)
    mask, stripes = _object(rng, style, size, scale, angle_jitter)
    hue = style[0]
    light, dark = _hsv(hue, 0.85, 0.95), _hsv(hue + 0.03, 0.7, 0.35)
    img = _background(rng, size, *bg)
    img[mask] = (dark + (light - dark) * stripes[..., None])[mask]
    return img + rng.normal(0.0, noise, img.shape)


def _sketch(rng, wnid: str, size: Size) -> np.ndarray:
    grey = _photo(rng, wnid, size, noise=0.0).mean(-1)
    gy, gx = np.gradient(grey)
    edges = np.hypot(gx, gy)
    edges = np.clip(edges / max(float(np.percentile(edges, 99)), 1e-6), 0, 1)
    paper = 0.97 - 0.85 * edges + rng.normal(0.0, 0.02, edges.shape)
    return np.repeat(paper[..., None], 3, axis=-1)


def _rendition(rng, wnid: str, size: Size) -> np.ndarray:
    style = _style(wnid)
    mask, stripes = _object(rng, style, size, (0.3, 0.45))
    hue = style[0]
    img = np.ones((size[1], size[0], 3)) * _hsv(rng.uniform(0, 1), 0.2, 0.97)
    flat = np.where((stripes > 0.5)[..., None], _hsv(hue, 1.0, 1.0), _hsv(hue + 0.08, 0.9, 0.6))
    img[mask] = flat[mask]
    outline = mask & ~(np.roll(mask, 3, 0) & np.roll(mask, -3, 0) & np.roll(mask, 3, 1) & np.roll(mask, -3, 1))
    img[outline] = 0.05
    return img + rng.normal(0.0, 0.01, img.shape)


def _adversarial(rng, wnid: str, size: Size) -> np.ndarray:
    img = _photo(rng, wnid, size, scale=(0.25, 0.4), noise=0.08, angle_jitter=0.5)
    w, h = size
    distractor = _photo(rng, rng.choice(DEMO_CLASSES), size, scale=(0.5, 0.6), noise=0.0)
    # A third of the image shows another class's stripes, then occluders hide parts of the object.
    img[:, : w // 3] = 0.5 * img[:, : w // 3] + 0.5 * distractor[:, : w // 3]
    for _ in range(rng.integers(2, 5)):
        pw, ph = int(rng.uniform(0.15, 0.35) * w), int(rng.uniform(0.15, 0.35) * h)
        x0, y0 = int(rng.uniform(0, w - pw)), int(rng.uniform(0, h - ph))
        img[y0:y0 + ph, x0:x0 + pw] = rng.uniform(0.2, 0.8, 3)
    return 0.5 + 0.55 * (img - 0.5)


def _cluttered(rng, wnid: str | None, size: Size) -> np.ndarray:
    w, h = size
    img = _background(rng, size, 0.3, 0.7)
    for _ in range(rng.integers(4, 9)):
        pw, ph = int(rng.uniform(0.1, 0.3) * w), int(rng.uniform(0.1, 0.3) * h)
        x0, y0 = int(rng.uniform(0, w - pw)), int(rng.uniform(0, h - ph))
        img[y0:y0 + ph, x0:x0 + pw] = rng.uniform(0.1, 0.9, 3)
    if wnid is not None:
        # Unusual viewpoint and lighting: rotated stripes, dimmer and shifted colours, part hidden.
        style = _style(wnid)
        mask, stripes = _object(rng, style, size, (0.2, 0.35), angle_jitter=0.8)
        hue = style[0] + rng.uniform(-0.04, 0.04)
        light, dark = _hsv(hue, 0.6, 0.8), _hsv(hue + 0.03, 0.5, 0.3)
        img[mask] = ((dark + (light - dark) * stripes[..., None]) * rng.uniform(0.5, 1.0))[mask]
        pw, ph = int(rng.uniform(0.15, 0.3) * w), int(rng.uniform(0.15, 0.3) * h)
        x0, y0 = int(rng.uniform(0.3, 0.7) * w - pw / 2), int(rng.uniform(0.3, 0.7) * h - ph / 2)
        img[y0:y0 + ph, x0:x0 + pw] = rng.uniform(0.1, 0.9, 3)
    return img + rng.normal(0.0, 0.05, img.shape)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _save(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(img if img.dtype == np.uint8 else _to_uint8(img))
    if path.suffix.lower() == ".png":
        im.save(path)
    else:
        im.save(path, format="JPEG", quality=90)


# --- ImageNet and the folder-per-class shifts ---------------------------------------------------

def _check_classes(classes: Sequence[str], allowed: Sequence[str], what: str) -> None:
    bad = [c for c in classes if c not in set(allowed)]
    if bad:
        raise ValueError(f"{bad} are not {what}")


def write_imagenet(root: str | Path, split: str = "val", classes: Sequence[str] = DEMO_CLASSES,
                   per_class: int = 8, size: Size = (256, 192), seed: int = 0) -> Path:
    """ImageNet ``<root>/<split>/<wnid>/*.JPEG`` (val: ``ILSVRC2012_val_<n>.JPEG``, train:
    ``<wnid>_<n>.JPEG``). Returns the dataset root ``<root>/<split>``."""
    _check_classes(classes, imagenet_wnids(), "ImageNet wnids")
    out = Path(root) / split
    tag = 1 if split == "train" else 0
    n = 0
    for wnid in sorted(classes):
        c = imagenet_index()[wnid]
        for j in range(per_class):
            n += 1
            name = f"{wnid}_{j}.JPEG" if split == "train" else f"ILSVRC2012_val_{n:08d}.JPEG"
            _save(_photo(_rng(seed, tag, c, j), wnid, size), out / wnid / name)
    return out


def write_imagenet_v2(root: str | Path, classes: Sequence[str] = DEMO_CLASSES, per_class: int = 8,
                      size: Size = (256, 192), seed: int = 0) -> Path:
    """ImageNet-V2 matched-frequency: ``<root>/<class index>/<40 hex digits>.jpeg``. Returns ``root``."""
    _check_classes(classes, imagenet_wnids(), "ImageNet wnids")
    out = Path(root)
    for wnid in classes:
        c = imagenet_index()[wnid]
        for j in range(per_class):
            rng = _rng(seed, 2, c, j)
            name = "".join(rng.choice(list("0123456789abcdef"), 40)) + ".jpeg"
            _save(_photo(rng, wnid, size, scale=(0.2, 0.35), bg=(0.1, 0.6)), out / str(c) / name)
    return out


_R_KINDS = ("art", "cartoon", "deviantart", "embroidery", "graffiti", "graphic", "misc", "origami",
            "painting", "sculpture", "sketch", "sticker", "tattoo", "toy", "videogame")


def write_imagenet_r(root: str | Path, classes: Sequence[str] = DEMO_CLASSES, per_class: int = 8,
                     size: Size = (256, 192), seed: int = 0) -> Path:
    """ImageNet-R: ``<root>/<wnid>/<rendition>_<n>.jpg`` plus the download's ``README.txt``."""
    _check_classes(classes, imagenet_r_wnids(), "ImageNet-R wnids")
    out = Path(root)
    for wnid in classes:
        c = imagenet_index()[wnid]
        for j in range(per_class):
            _save(_rendition(_rng(seed, 3, c, j), wnid, size), out / wnid / f"{_R_KINDS[j % len(_R_KINDS)]}_{j}.jpg")
    (out / "README.txt").write_text("ImageNet-R fixture: renditions of 200 ImageNet classes.\n")
    return out


def write_imagenet_a(root: str | Path, classes: Sequence[str] = DEMO_CLASSES, per_class: int = 8,
                     size: Size = (256, 192), seed: int = 0) -> Path:
    """ImageNet-A: ``<root>/<wnid>/<score>_<name> _ <name>_<score>.jpg`` (the download's naming, with
    spaces) plus ``README.txt``."""
    _check_classes(classes, imagenet_a_wnids(), "ImageNet-A wnids")
    out = Path(root)
    for wnid in classes:
        c = imagenet_index()[wnid]
        lemma = imagenet_lemmas()[wnid].split(",")[0]
        for j in range(per_class):
            rng = _rng(seed, 4, c, j)
            name = f"{rng.uniform():.6f}_{lemma} _ {lemma}_{rng.uniform():.6f}.jpg"
            _save(_adversarial(rng, wnid, size), out / wnid / name)
    (out / "README.txt").write_text("ImageNet-A fixture: natural adversarial examples of 200 classes.\n")
    return out


def write_imagenet_sketch(root: str | Path, classes: Sequence[str] = DEMO_CLASSES, per_class: int = 8,
                          size: Size = (256, 192), seed: int = 0) -> Path:
    """ImageNet-Sketch: ``<root>/<wnid>/sketch_<n>.JPEG`` (``root`` plays the download's ``sketch/``)."""
    _check_classes(classes, imagenet_wnids(), "ImageNet wnids")
    out = Path(root)
    for wnid in classes:
        c = imagenet_index()[wnid]
        for j in range(per_class):
            _save(_sketch(_rng(seed, 5, c, j), wnid, size), out / wnid / f"sketch_{j}.JPEG")
    return out


# --- ObjectNet ----------------------------------------------------------------------------------

#: ObjectNet's red border, in pixels on every side.
OBJECTNET_BORDER = 2


def _ilsvrc2012_ids() -> np.ndarray:
    """A fixed permutation standing in for the ILSVRC-2012 ids of the 1,000 class indices: the real
    ids are not the class order either, so the loader must follow the mapping to get them right."""
    return np.random.default_rng(2012).permutation(1000)


def write_objectnet(root: str | Path, folders: Sequence[str] = tuple(OBJECTNET_CLASSES), per_class: int = 8,
                    size: Size = (256, 192), seed: int = 0) -> Path:
    """ObjectNet: ``<root>/images/<folder>/<hex>.png`` with a 2-pixel red border, and
    ``<root>/mappings/`` holding the four mapping files in the download's formats (for the given
    folders, taken from :data:`OBJECTNET_CLASSES`). Returns ``root``."""
    bad = [f for f in folders if f not in OBJECTNET_CLASSES]
    if bad:
        raise ValueError(f"{bad} are not fixture ObjectNet folders ({', '.join(OBJECTNET_CLASSES)})")
    out = Path(root)
    wnids, lemmas = imagenet_wnids(), imagenet_lemmas()
    for folder in sorted(folders):
        mapped = OBJECTNET_CLASSES[folder][1]
        for j in range(per_class):
            rng = _rng(seed, 6, list(OBJECTNET_CLASSES).index(folder), j)
            img = _to_uint8(_cluttered(rng, mapped[0] if mapped else None, size))
            b = OBJECTNET_BORDER
            img[:b], img[-b:], img[:, :b], img[:, -b:] = (255, 0, 0), (255, 0, 0), (255, 0, 0), (255, 0, 0)
            name = "".join(rng.choice(list("0123456789abcdef"), 32)) + ".png"
            _save(img, out / "images" / folder / name)
    maps = out / "mappings"
    maps.mkdir(parents=True, exist_ok=True)
    ids = _ilsvrc2012_ids()
    (maps / "folder_to_objectnet_label.json").write_text(
        json.dumps({f: OBJECTNET_CLASSES[f][0] for f in folders}, indent=2) + "\n")
    (maps / "objectnet_to_imagenet_1k.json").write_text(json.dumps(
        {OBJECTNET_CLASSES[f][0]: "; ".join(lemmas[w] for w in OBJECTNET_CLASSES[f][1])
         for f in folders if OBJECTNET_CLASSES[f][1]}, indent=2) + "\n")
    (maps / "pytorch_to_imagenet_2012_id.json").write_text(
        json.dumps({str(i): int(ids[i]) for i in range(1000)}, indent=2) + "\n")
    lines = [""] * 1000
    for i, w in enumerate(wnids):
        lines[ids[i]] = lemmas[w]
    (maps / "imagenet_to_label_2012_v2").write_text("\n".join(lines) + "\n")
    return out


# --- Broden -------------------------------------------------------------------------------------

#: Fixture concepts: number -> (name, categories). Numbers above 255 use the G channel of the masks,
#: as most of broden1_224's do; 'wheel' is both an object and a part.
BRODEN_CONCEPTS = {
    1: ("black-c", ("color",)), 2: ("blue-c", ("color",)), 3: ("green-c", ("color",)),
    4: ("red-c", ("color",)), 5: ("white-c", ("color",)), 6: ("yellow-c", ("color",)),
    12: ("sky", ("object",)), 13: ("tree", ("object",)), 14: ("building", ("object",)),
    15: ("person", ("object",)), 16: ("car", ("object",)), 17: ("grass", ("object",)),
    18: ("wheel", ("part", "object")),
    301: ("head", ("part",)), 302: ("leg", ("part",)), 303: ("window", ("part",)),
    520: ("wood", ("material",)), 521: ("metal", ("material",)), 522: ("fabric", ("material",)),
    523: ("glass", ("material",)),
    700: ("street-s", ("scene",)), 701: ("kitchen-s", ("scene",)), 702: ("forest-s", ("scene",)),
    703: ("beach-s", ("scene",)),
    1150: ("striped", ("texture",)), 1151: ("dotted", ("texture",)), 1152: ("chequered", ("texture",)),
    1153: ("meshed", ("texture",)), 1154: ("flecked", ("texture",)), 1155: ("knitted", ("texture",)),
}
BRODEN_CATEGORIES = ("color", "object", "part", "material", "scene", "texture")
#: A texture given to two images only: too few positives for a balanced set, to be reported.
BRODEN_RARE = 1155

_COLOURS = {1: (0.05, 0.05, 0.05), 2: (0.15, 0.3, 0.9), 3: (0.15, 0.75, 0.2), 4: (0.9, 0.1, 0.1),
            5: (0.95, 0.95, 0.95), 6: (0.95, 0.85, 0.1)}
_PARTS = {15: (301, 302), 16: (18, 303), 14: (303,)}  # object -> its parts (upper, lower region)
_SOURCES = ("ade20k", "pascal", "opensurfaces", "dtd")
_MASK = 112  # broden1_224 segmentations are at half the 224 px image resolution


def _ellipse(rng, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n] / n
    cx, cy, rx, ry = rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.75), rng.uniform(0.12, 0.3), rng.uniform(0.12, 0.3)
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _texture(number: int, n: int) -> np.ndarray:
    """A pattern in [0, 1] per texture concept, so the concepts are visible in the images."""
    yy, xx = np.mgrid[0:n, 0:n]
    k = number - 1150
    if k == 0:
        return (xx // 8) % 2 * 1.0
    if k == 1:
        return (((xx % 16) - 8) ** 2 + ((yy % 16) - 8) ** 2 < 12) * 1.0
    if k == 2:
        return ((xx // 16 + yy // 16) % 2) * 1.0
    if k == 3:
        return ((xx % 10 < 2) | (yy % 10 < 2)) * 1.0
    if k == 4:
        return (np.random.default_rng(number).uniform(size=(n, n)) < 0.08) * 1.0
    return 0.5 + 0.5 * np.sin(xx / 2.0) * np.sin(yy / 3.0)


def _encode_mask(labels: np.ndarray) -> np.ndarray:
    """Global label numbers -> RGB PNG pixels, R + 256 G (B left 0)."""
    out = np.zeros(labels.shape + (3,), dtype=np.uint8)
    out[..., 0], out[..., 1] = labels % 256, labels // 256
    return out


def write_broden(root: str | Path, n_images: int = 120, seed: int = 0) -> tuple[Path, dict[str, set[int]]]:
    """Broden in the ``broden1_224`` layout (CSV headers, 224 px JPEGs, RG-encoded 112 px masks,
    image-level scene and texture labels) over :data:`BRODEN_CONCEPTS`.

    Returns ``(root, truth)``: ``truth[image]`` is the set of concept numbers written for that
    image (its ``index.csv`` path), the ground truth of the loader's presence matrix.
    """
    out = Path(root)
    (out / "images").mkdir(parents=True, exist_ok=True)
    by_cat = {c: [n for n, (_, cats) in BRODEN_CONCEPTS.items() if c in cats] for c in BRODEN_CATEGORIES}
    truth: dict[str, set[int]] = {}
    in_category: dict[str, dict[int, int]] = {c: {} for c in BRODEN_CATEGORIES}
    pixels: dict[int, float] = {}
    rows = []
    counters = {s: 0 for s in _SOURCES}
    for i in range(n_images):
        rng = _rng(seed, 7, i)
        src = _SOURCES[i % len(_SOURCES)]
        counters[src] += 1
        n_src = counters[src]
        stem = {"ade20k": f"ADE_train_{n_src:08d}", "pascal": f"2008_{n_src:06d}",
                "opensurfaces": f"{100000 + n_src}", "dtd": f"g_{n_src:04d}"}[src]
        planes, image_level = _broden_segmentation(rng, src, n_src, by_cat)
        written, labels = _write_broden_labels_of_image(out, f"{src}/{stem}", planes, image_level, in_category, pixels)
        image = f"{src}/{stem}.jpg"
        _save(_broden_pixels(rng, {c: ms[0] for c, ms in planes.items()}, image_level), out / "images" / image)
        truth[image] = labels
        rows.append({"image": image, "split": "train" if i % 5 else "val", "ih": 2 * _MASK, "iw": 2 * _MASK,
                     "sh": _MASK, "sw": _MASK, **{c: ";".join(written[c]) for c in BRODEN_CATEGORIES}})
    _write_csv(out / "index.csv", ["image", "split", "ih", "iw", "sh", "sw", *BRODEN_CATEGORIES], rows)
    _write_broden_label_tables(out, by_cat, in_category, pixels, truth)
    return out, truth


def _broden_segmentation(rng: np.random.Generator, src: str, n_src: int, by_cat: dict[str, list[int]]
                         ) -> tuple[dict[str, list[np.ndarray]], dict[str, list[int]]]:
    """One image's pixel labels: the segmentation planes per pixel category and the image-level
    scene and texture labels, drawn from ``rng`` (the image's own generator)."""
    objects = [n for n in by_cat["object"] if n != 18]
    textures = [n for n in by_cat["texture"] if n != BRODEN_RARE]
    # One segmentation plane per pixel category, two for parts: the part of an object's upper half
    # in ``_part_1.png``, of its lower half in ``_part_2.png`` (a cell listing two masks).
    planes = {c: [np.zeros((_MASK, _MASK), dtype=np.int64) for _ in range(2 if c == "part" else 1)]
              for c in ("color", "object", "part", "material")}
    maps = {c: ms[0] for c, ms in planes.items()}
    # Black backgrounds in most images: a concept with more positives than negatives.
    maps["color"][:] = 1 if rng.uniform() < 0.6 else rng.choice([2, 3, 5])
    image_level: dict[str, list[int]] = {"scene": [], "texture": []}
    if src == "ade20k":
        maps["object"][: _MASK // 3] = 12
        image_level["scene"] = [by_cat["scene"][(n_src - 1) % len(by_cat["scene"])]]
    if src == "dtd":
        image_level["texture"] = [textures[(n_src - 1) % len(textures)]]
        if n_src <= 2:
            image_level["texture"].append(BRODEN_RARE)
    for _ in range(rng.integers(1, 4)):
        region = _ellipse(rng, _MASK)
        maps["color"][region] = rng.choice(list(_COLOURS))
        if src in ("ade20k", "pascal"):
            obj = int(rng.choice(objects + [18] if src == "pascal" else objects))
            maps["object"][region] = obj
            filled = np.flatnonzero(region.any(1))
            upper = region & (np.arange(_MASK) < (filled[0] + filled[-1]) // 2)[:, None]
            for part, where, plane in zip(_PARTS.get(obj, ()), (upper, region & ~upper), planes["part"]):
                plane[where] = part
        elif src == "opensurfaces":
            maps["material"][region] = rng.choice(by_cat["material"])
    return planes, image_level


def _write_broden_labels_of_image(out: Path, prefix: str, planes: dict[str, list[np.ndarray]],
                                  image_level: dict[str, list[int]], in_category: dict[str, dict[int, int]],
                                  pixels: dict[int, float]) -> tuple[dict[str, list[str]], set[int]]:
    """Write one image's masks (``<prefix>_<category>[_k].png``); count its concepts per category
    (``in_category``) and their pixel coverage (``pixels``). Returns its ``index.csv`` cells and
    the set of concept numbers present."""
    written: dict[str, list[str]] = {c: [] for c in BRODEN_CATEGORIES}
    labels: set[int] = set()
    for cat, ms in planes.items():
        for k, m in enumerate(ms):
            present = set(int(v) for v in np.unique(m)) - {0}
            if not present:
                continue
            name = f"{prefix}_{cat}.png" if len(ms) == 1 else f"{prefix}_{cat}_{k + 1}.png"
            _save(_encode_mask(m), out / "images" / name)
            written[cat].append(name)
            labels |= present
            for v in present:
                in_category[cat][v] = in_category[cat].get(v, 0) + 1
                pixels[v] = pixels.get(v, 0.0) + float(np.mean(m == v))
    for cat, numbers in image_level.items():
        written[cat] = [str(n) for n in numbers]
        labels |= set(numbers)
        for v in numbers:
            in_category[cat][v] = in_category[cat].get(v, 0) + 1
            pixels[v] = pixels.get(v, 0.0) + 1.0
    return written, labels


def _broden_pixels(rng: np.random.Generator, maps: dict[str, np.ndarray], image_level: dict[str, list[int]]) -> np.ndarray:
    """The 224 px image: each region in its colour, textured where a texture applies, plus noise."""
    palette = np.zeros((max(_COLOURS) + 1, 3))
    palette[list(_COLOURS)] = list(_COLOURS.values())
    colour = palette[maps["color"]]
    shade = 0.75 + 0.25 * np.sin(maps["object"] * 0.7 + maps["material"] * 1.3)[..., None]
    img = colour * shade
    for t in image_level["texture"]:
        img = img * (0.6 + 0.4 * _texture(t, _MASK)[..., None])
    return np.kron(img, np.ones((2, 2, 1))) + rng.normal(0.0, 0.03, (2 * _MASK, 2 * _MASK, 3))


def _write_broden_label_tables(out: Path, by_cat: dict[str, list[int]], in_category: dict[str, dict[int, int]],
                               pixels: dict[int, float], truth: dict[str, set[int]]) -> None:
    # As in broden1_224's label.csv: no row 0 (the unlabeled pixel), numbers from 1, and a frequency
    # that sums the per-category counts of the category cell (an object that is also a part counts
    # in both); each c_<category>.csv lists its codes by descending frequency in that category.
    frequency = {n: sum(in_category[c].get(n, 0) for c in cats) for n, (_, cats) in BRODEN_CONCEPTS.items()}
    coverage = {n: round(pixels.get(n, 0.0), 6) for n in BRODEN_CONCEPTS}
    label_rows = []
    for n, (name, cats) in sorted(BRODEN_CONCEPTS.items()):
        cell = ";".join(f"{c}({in_category[c].get(n, 0)})" for c in cats)
        label_rows.append({"number": n, "name": name, "category": cell, "frequency": frequency[n],
                           "coverage": coverage[n], "syns": ""})
    _write_csv(out / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"], label_rows)
    cat_rows = []
    for c in BRODEN_CATEGORIES:
        numbers = sorted(by_cat[c], key=lambda n: (-in_category[c].get(n, 0), n))
        cat_rows.append({"name": c, "first": min(numbers), "last": max(numbers), "count": len(numbers),
                         "frequency": sum(any(n in s for n in numbers) for s in truth.values())})
        _write_csv(out / f"c_{c}.csv", ["code", "number", "name", "frequency", "coverage"],
                   [{"code": k + 1, "number": n, "name": BRODEN_CONCEPTS[n][0],
                     "frequency": in_category[c].get(n, 0), "coverage": coverage[n]} for k, n in enumerate(numbers)])
    _write_csv(out / "category.csv", ["name", "first", "last", "count", "frequency"], cat_rows)


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# --- the demo tree ------------------------------------------------------------------------------

def write_demo_data(root: str | Path, seed: int = 0, size: Size = (256, 192)) -> Path:
    """Write every dataset of the demo profile under ``root`` at the paths ``configs/demo.yml``
    expects (:data:`DEMO_LAYOUT`): the 8 :data:`DEMO_CLASSES` in ImageNet val (8 per class) and
    train (10 per class), V2, R, Sketch, A (8 per class each), ObjectNet (8 per class, the 8 mapped
    ones and 2 unmapped ones) and Broden (120 images, 30 concepts). Images are ``size`` (w, h).

    Idempotent: ``root/.demo-data.json`` records the arguments and, written last, that the tree is
    complete; a second call with the same arguments returns at once. An interrupted or different
    earlier write is removed and redone. A root holding these folders without the marker is not
    ours and is left alone (error).
    """
    root = Path(root)
    marker = root / DEMO_MARKER
    params = {"version": FIXTURE_VERSION, "seed": seed, "size": list(size)}
    if marker.exists():
        state = json.loads(marker.read_text() or "{}")
        if state.get("complete") and state.get("params") == params:
            return root
    else:
        tops = sorted({p.split("/")[0] for p in DEMO_LAYOUT.values()})
        present = [t for t in tops if (root / t).exists()]
        if present:
            raise FileExistsError(f"{root}: holds {', '.join(present)} but no {DEMO_MARKER}: not a demo tree "
                                  "written by helpers.demo.fixtures; refusing to overwrite it")
    root.mkdir(parents=True, exist_ok=True)
    _write_marker(marker, params, complete=False)
    for top in sorted({p.split("/")[0] for p in DEMO_LAYOUT.values()}):
        shutil.rmtree(root / top, ignore_errors=True)

    per = dict(size=size, seed=seed)
    write_imagenet(root / "imagenet", "val", per_class=8, **per)
    write_imagenet(root / "imagenet", "train", per_class=10, **per)
    write_imagenet_v2(root / DEMO_LAYOUT["imagenet-v2"], per_class=8, **per)
    write_imagenet_r(root / DEMO_LAYOUT["imagenet-r"], per_class=8, **per)
    write_imagenet_sketch(root / DEMO_LAYOUT["imagenet-sketch"], per_class=8, **per)
    write_imagenet_a(root / DEMO_LAYOUT["imagenet-a"], per_class=8, **per)
    write_objectnet(root / DEMO_LAYOUT["objectnet"], per_class=8, **per)
    write_broden(root / DEMO_LAYOUT["broden"], n_images=120, seed=seed)
    _write_marker(marker, params, complete=True)
    return root


def _write_marker(path: Path, params: dict, complete: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"params": params, "complete": complete}, indent=1) + "\n")
    os.replace(tmp, path)
