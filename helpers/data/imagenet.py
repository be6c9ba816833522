"""ImageNet and the four folder-per-class shifts (V2, R, Sketch, A) over their real on-disk layouts
(Section 3: "the five natural distribution shifts considered by Fang et al. (2022)").

Layouts and labels:

- ImageNet ``val/`` and ``train/``: ``<root>/<wnid>/*.JPEG``; label = index of the wnid among the
  1,000 sorted wnids. A root with fewer class folders is accepted (tiny fixtures) as long as every
  folder is an ImageNet wnid; labels still index the 1,000 classes.
- ImageNet-V2 (matched-frequency): ``<root>/<0..999>/*.jpeg``; label = ``int(folder)``. A plain
  ImageFolder sorts the folder names as strings ('10' before '2') and gets the labels wrong.
- ImageNet-R, ImageNet-A: ``<root>/<wnid>/*.jpg`` over their own 200 wnids; label = index among
  those 200, and the 1,000 logits are scored over the 200 matching columns only.
- ImageNet-Sketch: ``<root>/<wnid>/*.JPEG`` or ``<root>/sketch/<wnid>/*.JPEG`` (the download unpacks
  to a ``sketch/`` folder; both are detected), the 1,000 classes.

Files at the root (``README.txt`` of R and A) and non-image files are ignored.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from helpers.data.base import DatasetLayoutError, ImageDataset, list_dirs, list_images, preview, require_dir
from helpers.data.classes import N_IMAGENET, imagenet_a_wnids, imagenet_index, imagenet_label_space, imagenet_r_wnids

_WNID = re.compile(r"^n\d{8}$")

LAYOUTS = {
    "imagenet": "<root>/<wnid>/*.JPEG, one folder per ILSVRC-2012 class (wnids such as 'n01440764')",
    "imagenet-train": "<root>/<wnid>/*.JPEG, one folder per ILSVRC-2012 class (wnids such as 'n01440764')",
    "imagenet-v2": "<root>/<class index>/*.jpeg, folders named '0' to '999' (ImageNet-V2 matched-frequency)",
    "imagenet-r": "<root>/<wnid>/*.jpg, folders named by ImageNet-R's 200 wnids (such as 'n01443537')",
    "imagenet-a": "<root>/<wnid>/*.jpg, folders named by ImageNet-A's 200 wnids (such as 'n01498041')",
    "imagenet-sketch": "<root>/<wnid>/*.JPEG or <root>/sketch/<wnid>/*.JPEG, one folder per ILSVRC-2012 class",
}

_FLAT_VAL_HINT = (" (the raw ILSVRC-2012 validation tarball unpacks flat: sort its images into "
                  "<wnid>/ folders first, e.g. with the devkit's ground truth)")


def scan_class_folders(name: str, root: Path, label_of: Callable[[str], int | None], what: str,
                       expected: str | None = None,
                       ignore: frozenset[str] = frozenset()) -> tuple[list[Path], np.ndarray]:
    """Sorted image files of ``<root>/<folder>/`` and their labels ``label_of(folder)``.

    ``label_of`` returns None for a folder name that does not belong (``what`` says what a folder
    must be); any such folder not in ``ignore`` is an error that lists it, the expected layout
    (``expected``, default ``LAYOUTS[name]``) and what was found. Folders in ``ignore`` are skipped
    without listing their files.
    """
    expected = expected or LAYOUTS[name]
    require_dir(name, root, expected)
    dirs = list_dirs(root)
    if not dirs:
        images = list_images(root)
        if images:
            hint = _FLAT_VAL_HINT if name in ("imagenet", "imagenet-train") else ""
            found = f"{len(images)} images directly in it and no class folders{hint}"
        else:
            found = f"no class folders (entries: {preview(sorted(os.listdir(root)))})"
        raise DatasetLayoutError(f"{name}: {root}: expected {expected}; found {found}")
    bad = [d for d in dirs if label_of(d) is None and d not in ignore]
    if bad:
        raise DatasetLayoutError(f"{name}: {root}: folder{'s' if len(bad) > 1 else ''} {preview(bad)} "
                                 f"{'are' if len(bad) > 1 else 'is'} not {what}; expected {expected}; "
                                 f"found folders {preview(dirs)}")
    files: list[Path] = []
    labels: list[int] = []
    for d in dirs:
        if d in ignore:
            continue
        names = list_images(root / d)
        files += [root / d / f for f in names]
        labels += [label_of(d)] * len(names)
    if not files:
        counted = [d for d in dirs if d not in ignore]
        raise DatasetLayoutError(f"{name}: {root}: expected {expected}; found no image files in the class "
                                 f"folders {preview(counted)} (folders present: {preview(dirs)})")
    return files, np.asarray(labels, dtype=np.int64)


def open_imagenet(name: str, root: Path, **kw) -> ImageDataset:
    """ImageNet ``val/`` (name ``imagenet``) or ``train/`` (``imagenet-train``), 1,000-way."""
    files, labels = scan_class_folders(name, root, imagenet_index().get, "an ImageNet wnid")
    return ImageDataset(name, root, files, labels, imagenet_label_space(name), **kw)


def _v2_label(folder: str) -> int | None:
    # Only canonical decimal names: '007' or '1000' would not be a folder of the download.
    if folder.isdigit() and str(int(folder)) == folder and int(folder) < N_IMAGENET:
        return int(folder)
    return None


def open_imagenet_v2(root: Path, **kw) -> ImageDataset:
    """ImageNet-V2 matched-frequency: label = int(folder name), never the folder's sorted position."""
    files, labels = scan_class_folders("imagenet-v2", root, _v2_label, "a class index from '0' to '999'")
    return ImageDataset("imagenet-v2", root, files, labels, imagenet_label_space("imagenet-v2"), **kw)


def _open_subset(name: str, title: str, root: Path, wnids: tuple[str, ...], **kw) -> ImageDataset:
    position = {w: k for k, w in enumerate(wnids)}
    what = f"one of {title}'s {len(wnids)} wnids"
    files, labels = scan_class_folders(name, root, position.get, what)
    return ImageDataset(name, root, files, labels, imagenet_label_space(name, wnids), **kw)


def open_imagenet_r(root: Path, **kw) -> ImageDataset:
    """ImageNet-R (renditions): 200 classes, scored over their 200 ImageNet logits."""
    return _open_subset("imagenet-r", "ImageNet-R", root, imagenet_r_wnids(), **kw)


def open_imagenet_a(root: Path, **kw) -> ImageDataset:
    """ImageNet-A (natural adversarial examples): 200 classes, scored over their 200 ImageNet logits."""
    return _open_subset("imagenet-a", "ImageNet-A", root, imagenet_a_wnids(), **kw)


def open_imagenet_sketch(root: Path, **kw) -> ImageDataset:
    """ImageNet-Sketch, 1,000-way; the class folders sit in ``root`` or in ``root/sketch``."""
    name = "imagenet-sketch"
    require_dir(name, root, LAYOUTS[name])
    base = root
    if (root / "sketch").is_dir():
        wnid_dirs = [d for d in list_dirs(root) if _WNID.match(d)]
        if wnid_dirs:
            raise DatasetLayoutError(f"{name}: {root}: holds both a 'sketch/' folder and class folders "
                                     f"({preview(wnid_dirs)}); expected {LAYOUTS[name]}, not both")
        base = root / "sketch"
    files, labels = scan_class_folders(name, base, imagenet_index().get, "an ImageNet wnid")
    return ImageDataset(name, root, files, labels, imagenet_label_space(name), **kw)
