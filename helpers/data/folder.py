"""Any folder of images, searched recursively and unlabelled: the in-distribution images a new model is
diagnosed on (Section 7: outlier features are found "when the exact form of distribution shift is
typically unknown", so no labels and no shifted data are needed).

Layout: ``<root>/**/*.<image extension>``, any depth, symbolic links followed; hidden files and
folders (names starting with ``.``) and non-image files are left out. Files are sorted by path.
The label of an image is its position in that sorted (and ``limit``-ed) list, so a row of the
extraction cache can always be traced back to its file, also when unreadable images were skipped.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from helpers.data.base import IMAGE_EXTENSIONS, DatasetLayoutError, ImageDataset, balanced_subsample, is_image, preview

#: The name the extraction engine files these stores and activations under
#: (``stores/folder-...``, ``activations/<entry>/folder-...``); the key tells folders apart.
NAME = "folder"

EXPECTED = f"a folder of images ({', '.join(IMAGE_EXTENSIONS)}), searched recursively"


def scan_images(root: Path) -> list[Path]:
    """Sorted image files under ``root`` (recursively, hidden entries left out); a missing folder, an
    empty one or one without images raises :class:`DatasetLayoutError` naming it and what it holds."""
    if not root.exists():
        raise DatasetLayoutError(f"images folder {root} does not exist; expected {EXPECTED}")
    if not root.is_dir():
        raise DatasetLayoutError(f"images folder {root} is a file, not a folder; expected {EXPECTED}")
    files = []
    for here, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(here) / n for n in names if not n.startswith(".")]
    files.sort()
    if not files:
        raise DatasetLayoutError(f"images folder {root} is empty; expected {EXPECTED}")
    images = [f for f in files if is_image(f.name)]
    if not images:
        names = [f.relative_to(root).as_posix() for f in files]
        raise DatasetLayoutError(f"images folder {root} holds {len(files)} file(s) but no image: {preview(names)}; "
                                 f"expected {EXPECTED}")
    return images


class ImageFolderDataset(ImageDataset):
    """The images under ``root`` as an :class:`~.base.ImageDataset` (``files``, ``labels``,
    ``digest()``, ``load_image``, the same ``limit`` and ``skip_unreadable`` handling as every
    other dataset of the study). ``labels[i]`` is the position of ``files[i]`` in the listing;
    the dataset has no label space, so it cannot be scored for accuracy."""

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None, skip_unreadable: bool = False,
                 limit: int | None = None):
        root = Path(root).expanduser().resolve()
        files = scan_images(root)
        if limit is not None and not (isinstance(limit, int) and limit > 0):
            raise DatasetLayoutError(f"images folder {root}: limit must be a positive number of images or None; "
                                     f"got {limit!r}")
        # One class: the fixed-seed subsample of every dataset (helpers.data.base.balanced_subsample).
        keep = balanced_subsample(np.zeros(len(files), dtype=np.int64), limit)
        files = [files[i] for i in keep]
        super().__init__(NAME, root, files, np.arange(len(files)), label_space=None, transform=transform,
                         skip_unreadable=skip_unreadable)

    @property
    def num_classes(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)}, skipped={len(self.skipped)})"


def open_image_folder(root: str | os.PathLike, transform: Callable | None = None, skip_unreadable: bool = False,
                      limit: int | None = None) -> ImageFolderDataset:
    """:class:`ImageFolderDataset` over ``root`` (the signature of :func:`helpers.data.open_dataset`)."""
    return ImageFolderDataset(root, transform=transform, skip_unreadable=skip_unreadable, limit=limit)
