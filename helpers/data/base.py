"""What every dataset of the study shares: errors, image decoding, the class-balanced ``limit``
subsample, the up-front readability check and the cache digest.

Images are decoded with PIL and converted to RGB (ImageNet holds a few CMYK and greyscale JPEGs).
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

#: File name endings taken as images (compared in lower case). Other files in a class folder
#: (READMEs, ``.DS_Store``) are ignored, as torchvision's ImageFolder does.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

#: Seed of the ``limit`` subsample. Fixed, so every run of every profile sees the same images.
LIMIT_SEED = 0

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class DatasetLayoutError(ValueError):
    """A dataset folder that is missing or not in the expected on-disk layout. The message names the
    folder or file, the layout that was expected and what was found."""


class UnreadableImageError(OSError):
    """An image file that PIL cannot decode; the message names the file."""


def is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_dirs(folder: Path) -> list[str]:
    """Sorted names of the visible sub-folders of ``folder``."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def list_images(folder: Path) -> list[str]:
    """Sorted names of the image files directly inside ``folder``."""
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and is_image(e.name))


def preview(names: Sequence[str], n: int = 5) -> str:
    """``a, b, c, ... (12 in all)``: enough of a listing to recognise what a folder holds."""
    if not names:
        return "nothing"
    head = ", ".join(repr(x) for x in names[:n])
    return head if len(names) <= n else f"{head}, ... ({len(names)} in all)"


def require_dir(name: str, path: Path, expected: str) -> None:
    if not path.exists():
        raise DatasetLayoutError(f"{name}: {path} does not exist; expected {expected}")
    if not path.is_dir():
        raise DatasetLayoutError(f"{name}: {path} is a file, not a folder; expected {expected}")


def decode_rgb(path: Path) -> Image.Image:
    """Fully decode ``path`` into an RGB PIL image, or raise :class:`UnreadableImageError` naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except _DECODE_ERRORS as exc:
        raise UnreadableImageError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc


def balanced_subsample(labels: np.ndarray, limit: int | None, seed: int = LIMIT_SEED) -> np.ndarray:
    """Positions of the images kept by ``limit``, in increasing order.

    Within each class the images are shuffled by a generator seeded with ``(seed, class)``; the
    classes are then interleaved round-robin (the first image of every class, then the second, ...)
    and the first ``limit`` are kept. So any ``limit`` is as class-balanced as the class sizes
    allow, a smaller limit keeps a subset of a larger one, and adding a class or an image to one
    class leaves the draw of the other classes unchanged.
    """
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    if limit <= 0:
        raise ValueError(f"limit must be a positive integer or None, found {limit}")
    rank = np.empty(n, dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rank[np.random.default_rng([seed, int(c)]).permutation(members)] = np.arange(len(members))
    order = np.lexsort((labels, rank))
    return np.sort(order[:limit])


def _readable(path: Path) -> bool:
    try:
        decode_rgb(path)
    except UnreadableImageError:
        return False
    return True


def find_unreadable(paths: Sequence[Path]) -> list[bool]:
    """Decode every file once (threads: PIL releases the GIL while decoding); True where it fails."""
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        return [not ok for ok in pool.map(_readable, paths)]


def digest_of(name: str, root: Path, files: Sequence[Path], labels: Sequence[int] | None) -> str:
    """sha256 over the dataset name and, per file, its path relative to ``root``, its size, its
    modification time (ns) and its label. Size and mtime catch a replaced file without reading
    every image; a copy that does not preserve mtimes (``cp`` without ``-p``) changes the digest
    and only costs a recomputation, never a stale cache hit."""
    h = hashlib.sha256(f"{name}\n".encode())
    for i, f in enumerate(files):
        st = f.stat()
        label = "" if labels is None else int(labels[i])
        h.update(f"{f.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\t{label}\n".encode())
    return h.hexdigest()


class ImageDataset(torch.utils.data.Dataset):
    """A labelled image dataset over sorted files (map-style torch Dataset).

    ``files[i]`` has label ``labels[i]`` in the dataset's own label space; ``label_space`` says how
    the 1,000 ImageNet logits are scored in that space (:mod:`helpers.data.scoring`).
    ``__getitem__(i)`` returns ``(transform(image), label)``.
    """

    def __init__(self, name: str, root: Path, files: list[Path], labels: np.ndarray, label_space,
                 transform: Callable | None = None, skip_unreadable: bool = False,
                 limit: int | None = None):
        labels = np.asarray(labels, dtype=np.int64)
        keep = balanced_subsample(labels, limit)
        files = [files[i] for i in keep]
        labels = labels[keep]
        self.skipped: list[Path] = []
        if skip_unreadable:
            bad = np.asarray(find_unreadable(files), dtype=bool)
            self.skipped = [f for f, b in zip(files, bad) if b]
            files = [f for f, b in zip(files, bad) if not b]
            labels = labels[~bad]
        if not files:
            raise DatasetLayoutError(f"{name}: {root}: no readable images found")
        self.name = name
        self.root = Path(root)
        self.files = files
        self.labels = labels
        self.label_space = label_space
        self.transform = transform

    @property
    def imagenet_indices(self) -> np.ndarray:
        """The 1,000-way ImageNet class indices this dataset is scored on, in label-space order
        (for ObjectNet: the sorted union of the mapped ImageNet classes)."""
        return self.label_space.imagenet_indices

    @property
    def classnames(self) -> list[str]:
        """Human-readable names of the dataset's label space."""
        return self.label_space.classnames

    @property
    def num_classes(self) -> int:
        return self.label_space.num_classes

    def collapse(self, logits):
        """N x 1000 ImageNet logits -> N x K logits in this dataset's label space (torch or numpy)."""
        return self.label_space.collapse(logits)

    def load_image(self, i: int) -> Image.Image:
        """Image ``i`` as an RGB PIL image; :class:`UnreadableImageError` names an undecodable file."""
        return decode_rgb(self.files[i])

    def digest(self) -> str:
        """Cache key of the file list (see :func:`digest_of`); any added, removed, resized or
        rewritten file changes it."""
        return digest_of(self.name, self.root, self.files, self.labels)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        image = self.load_image(i)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, root={str(self.root)!r}, images={len(self)}, "
                f"classes={self.num_classes}, skipped={len(self.skipped)})")
