"""Broden (Bau et al., 2017), the concept dataset of Section 5: for each concept c, a balanced set of
positive images P^c (images that contain c) and negative images N^c, |P^c| = |N^c|.

Layout of ``broden1_224`` (NetDissect's release; every CSV is read by its header names)::

    index.csv      image,split,ih,iw,sh,sw,color,object,part,material,scene,texture
    category.csv   name,first,last,count,frequency
    label.csv      number,name,category,frequency,coverage,syns
    c_<category>.csv  code,number,name,frequency,coverage   (one per row of category.csv)
    images/        the JPEGs (224 px) and the segmentation PNGs (112 px, half resolution)

A category cell of ``index.csv`` holds ``;``-separated entries. An entry made of digits is an
image-level label number (scene and texture); any other entry is a PNG under ``images/`` whose pixel
(R, G, B) carries the global label number R + 256 G (color, object, part, material); 0 is unlabeled.
A concept is a row of ``label.csv`` (numbers from 1; a row 0 "-", found in some copies, is the
unlabeled pixel and is skipped): 1,197 in broden1_224. ``frequency`` (a sum over categories) and
the codes of ``c_<category>.csv`` are not read. An image is a
positive of a concept when one of its image-level labels is the concept or any pixel of one of its
masks carries it. Each concept's category is its first most frequent one in ``label.csv``'s
``category`` cell (``material(36);object(3)`` -> material). All images are used, both splits.
"""
from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image

from helpers.data.base import (DatasetLayoutError, UnreadableImageError, balanced_subsample, decode_rgb, digest_of,
                   find_unreadable, preview, require_dir)

INDEX_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")
CATEGORY_COLUMNS = ("name", "first", "last", "count", "frequency")
LABEL_COLUMNS = ("number", "name", "category", "frequency", "coverage", "syns")
C_COLUMNS = ("code", "number", "name", "frequency", "coverage")

LAYOUT = ("<root>/index.csv (" + ",".join(INDEX_COLUMNS) + ",<one column per category>), <root>/category.csv ("
          + ",".join(CATEGORY_COLUMNS) + "), <root>/label.csv (" + ",".join(LABEL_COLUMNS)
          + "), <root>/c_<category>.csv (" + ",".join(C_COLUMNS) + ") and <root>/images/ (NetDissect's broden1_224)")


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DatasetLayoutError(f"broden: {path}: no such file; expected {LAYOUT}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DatasetLayoutError(f"broden: {path}: expected the columns {','.join(required)}; found header "
                                     f"{','.join(header) or '(empty file)'} (missing {', '.join(missing)})")
        return list(reader)


def _int(path: Path, row: dict, column: str) -> int:
    try:
        return int(row[column])
    except (TypeError, ValueError):
        raise DatasetLayoutError(f"broden: {path}: expected an integer in column {column!r}, "
                                 f"found {row[column]!r} in row {row}") from None


def _primary_category(cell: str) -> str:
    """``"material(36);object(3)"`` -> ``"material"``: the category the label occurs in most."""
    best, best_count = "", -1
    for part in filter(None, (p.strip() for p in cell.split(";"))):
        name, _, count = part.partition("(")
        n = int(count.rstrip(")")) if count.rstrip(")").isdigit() else 0
        if n > best_count:
            best, best_count = name, n
    return best


class BrodenDataset(torch.utils.data.Dataset):
    """Broden images (``__getitem__(i)`` -> ``(transform(image), labels[i])``) with their concepts.

    ``concepts``: DataFrame (number, name, category), one row per concept, in label-number order;
    ``presence``: bool array n_images x C, computed on first use (it decodes every mask once;
    callers cache it); :meth:`balanced_sets` draws P^c and N^c. Broden has no class labels:
    ``labels[i]`` is the image's position in the dataset opened without ``skip_unreadable``
    (``i`` when nothing was skipped), so cached outputs can be aligned with ``presence`` rows.
    """

    def __init__(self, root: Path, transform: Callable | None = None, limit: int | None = None,
                 skip_unreadable: bool = False):
        self.name = "broden"
        self.root = Path(root)
        require_dir("broden", self.root, LAYOUT)
        categories = [r["name"] for r in _read_csv(self.root / "category.csv", CATEGORY_COLUMNS)]
        if not categories:
            raise DatasetLayoutError(f"broden: {self.root / 'category.csv'}: expected one row per category; "
                                     "found none")
        for cat in categories:
            _read_csv(self.root / f"c_{cat}.csv", C_COLUMNS)
        label_path = self.root / "label.csv"
        labels = _read_csv(label_path, LABEL_COLUMNS)
        concepts = sorted(((_int(label_path, r, "number"), r["name"], _primary_category(r["category"]))
                           for r in labels), key=lambda t: t[0])
        concepts = [c for c in concepts if c[0] != 0]  # 0 is "-", the unlabeled pixel
        numbers = [c[0] for c in concepts]
        if len(set(numbers)) != len(numbers):
            raise DatasetLayoutError(f"broden: {label_path}: expected unique label numbers; found duplicates")
        self.concepts = pd.DataFrame(concepts, columns=["number", "name", "category"])
        self._column = {n: k for k, n in enumerate(numbers)}

        index_path = self.root / "index.csv"
        rows = _read_csv(index_path, INDEX_COLUMNS + tuple(categories))
        require_dir("broden", self.root / "images", LAYOUT)
        rows.sort(key=lambda r: r["image"])
        dup = [a["image"] for a, b in zip(rows, rows[1:]) if a["image"] == b["image"]]
        if dup:
            raise DatasetLayoutError(f"broden: {index_path}: expected one row per image; "
                                     f"found repeated {preview(dup)}")
        if not rows:
            raise DatasetLayoutError(f"broden: {index_path}: expected one row per image; found no rows")
        keep = balanced_subsample(np.zeros(len(rows), dtype=np.int64), limit)
        rows = [rows[i] for i in keep]
        files = [self.root / "images" / r["image"] for r in rows]
        absent = [str(f.relative_to(self.root)) for f in files if not os.path.isfile(f)]
        if absent:
            raise DatasetLayoutError(f"broden: {index_path}: lists {len(absent)} image(s) missing from "
                                     f"{self.root / 'images'}: {preview(absent)}; expected every image of "
                                     f"index.csv under images/ (an incomplete download or extraction)")
        self.labels = np.arange(len(files), dtype=np.int64)
        self.skipped: list[Path] = []
        if skip_unreadable:
            bad = np.asarray(find_unreadable(files), dtype=bool)
            self.skipped = [f for f, b in zip(files, bad) if b]
            rows = [r for r, b in zip(rows, bad) if not b]
            files = [f for f, b in zip(files, bad) if not b]
            self.labels = self.labels[~bad]
        self.files = files
        self._entries = [[e.strip() for cat in categories for e in (r[cat] or "").split(";") if e.strip()]
                         for r in rows]
        self.transform = transform
        self._presence: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.files)

    def load_image(self, i: int) -> Image.Image:
        return decode_rgb(self.files[i])

    def __getitem__(self, i: int):
        image = self.load_image(i)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i])

    def _masks(self) -> list[Path]:
        return sorted({self.root / "images" / e for entries in self._entries for e in entries if not e.isdigit()})

    def digest(self) -> str:
        """Cache key over the CSVs, the images and the masks they reference (see
        :func:`helpers.data.base.digest_of`)."""
        csvs = sorted(self.root.glob("*.csv"))
        return digest_of(self.name, self.root, csvs + self.files + self._masks(), None)

    def _labels_of(self, i: int) -> np.ndarray:
        found = []
        for e in self._entries[i]:
            if e.isdigit():
                if int(e) != 0 and int(e) not in self._column:
                    raise DatasetLayoutError(f"broden: {self.root / 'index.csv'}: image-level label {e} of "
                                             f"{self.files[i].name} is not a concept number of label.csv")
                found.append(np.array([int(e)]))
                continue
            path = self.root / "images" / e
            try:
                with Image.open(path) as im:
                    rgb = np.asarray(im.convert("RGB"))
            except (OSError, SyntaxError, ValueError) as exc:
                raise UnreadableImageError(f"{path}: cannot read Broden mask (listed for {self.files[i].name} "
                                           f"in index.csv): {type(exc).__name__}: {exc}") from exc
            # Label number R + 256 G; bincount finds the labels present faster than np.unique's sort.
            rg = rgb[..., :2].astype(np.int64)
            values = np.flatnonzero(np.bincount((rg[..., 0] + 256 * rg[..., 1]).ravel()))
            unknown = [int(v) for v in values if v != 0 and int(v) not in self._column]
            if unknown:
                raise DatasetLayoutError(f"broden: {path}: pixel labels {preview(unknown)} (R + 256 G) are not "
                                         "concept numbers of label.csv")
            found.append(values)
        return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)

    @property
    def presence(self) -> np.ndarray:
        """Bool n_images x C: image i is a positive of concept c (column order of ``concepts``)."""
        if self._presence is None:
            presence = np.zeros((len(self), len(self.concepts)), dtype=bool)
            with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
                for i, numbers in enumerate(pool.map(self._labels_of, range(len(self)))):
                    presence[i, [self._column[int(n)] for n in numbers if n != 0]] = True
            self._presence = presence
        return self._presence

    def balanced_sets(self, min_positives: int = 10, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
        """Balanced concept sets of Section 5: ``selection[:, c]`` marks P^c and N^c of concept c.

        Every positive is taken with as many negatives, drawn without replacement by a generator
        seeded with ``(seed, concept number)`` (so a concept's draw does not depend on the others).
        A concept with more positives than negatives keeps all negatives and as many drawn
        positives. A concept with fewer than ``min_positives`` positives, or fewer than
        ``min_positives`` negatives, gets an all-False column. Both kinds are listed in ``report``
        (number, name, category, positives, negatives, per_side, reason); per_side is the size of
        P^c (= N^c) actually selected, 0 for the concepts left out.
        """
        presence = self.presence
        selection = np.zeros_like(presence)
        report = []
        for c, (number, name, category) in enumerate(self.concepts.itertuples(index=False)):
            pos, neg = np.flatnonzero(presence[:, c]), np.flatnonzero(~presence[:, c])
            row = dict(number=number, name=name, category=category, positives=len(pos), negatives=len(neg))
            if len(pos) < min_positives:
                report.append(row | dict(per_side=0, reason=f"fewer than {min_positives} positives"))
                continue
            if len(neg) < min_positives:
                report.append(row | dict(per_side=0, reason=f"fewer than {min_positives} negatives"))
                continue
            k = min(len(pos), len(neg))
            rng = np.random.default_rng([seed, int(number)])
            if len(pos) > k:
                pos = rng.choice(pos, k, replace=False)
                report.append(row | dict(per_side=k, reason="more positives than negatives: positives subsampled"))
            else:
                neg = rng.choice(neg, k, replace=False)
            selection[pos, c] = True
            selection[neg, c] = True
        columns = ["number", "name", "category", "positives", "negatives", "per_side", "reason"]
        return selection, pd.DataFrame(report, columns=columns)

    def __repr__(self) -> str:
        return f"BrodenDataset(root={str(self.root)!r}, images={len(self)}, concepts={len(self.concepts)})"


def open_broden(root: str | Path, transform: Callable | None = None, limit: int | None = None,
                skip_unreadable: bool = False) -> BrodenDataset:
    """Broden over its ``broden1_224`` layout, images sorted by path; ``limit`` keeps a fixed-seed
    random subset of them (still sorted), so the demo and smoke runs can subsample;
    ``skip_unreadable`` drops, up front, the images PIL cannot decode (listed in ``.skipped``)."""
    return BrodenDataset(Path(root), transform=transform, limit=limit, skip_unreadable=skip_unreadable)
