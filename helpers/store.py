"""On-disk stores under ``<cache_dir>``: atomic, resumable, locked cache entries, and the decoded
uint8 image store that every model with the same input geometry shares.

Why a uint8 store: the analyses of Sections 3-5 and Appendix C push the same test sets through up to
39 encoders. JPEG decoding and the bicubic resize cost more than a forward pass of a small encoder on
a GPU, so each dataset is decoded, resized and centre-cropped once per geometry (image size,
interpolation, resize mode) into an ``N x 3 x S x S`` uint8 array; each model then only normalises
with its own mean/std on its device (:mod:`helpers.extract`).

Cache entry layout (one folder per key; the key is a hash of everything the content depends on)::

    <root>/<name>/
        .lock               fcntl lock held while the entry is built (a second process waits)
        manifest.json       written last, atomically; names the run folder holding the arrays
        run-<id>/<array>.npy  committed arrays (read as read-only memmaps)
        partial/            a build in progress: preallocated <array>.npy + progress.json

A reader trusts an entry only if ``manifest.json`` exists, carries the expected key and its arrays
have the recorded shapes. A build writes into ``partial/``; every chunk is flushed and then recorded
in ``progress.json`` (atomically), so a killed build resumes from its last complete chunk. Commit =
rename ``partial/`` to a fresh ``run-<id>/``, then replace ``manifest.json``: until that replace,
the previous complete state stays readable.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

#: Bump when the stored pixels would change for the same inputs (decoding, resizing, layout).
STORE_VERSION = 1

_MANIFEST = "manifest.json"
_PARTIAL = "partial"
_PROGRESS = "progress.json"


class DecodeError(OSError):
    """An image that cannot be decoded into the store; the message names its path."""


def key_of(material: Mapping[str, Any]) -> str:
    """Cache key: sha256 of the canonical JSON of everything an entry's content depends on."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one (fsync then
    ``os.replace``: the rename is atomic on POSIX and survives a crash once the data is on disk)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class CacheEntry:
    """One keyed entry: a folder of named ``.npy`` arrays committed together with a manifest."""

    def __init__(self, root: Path, name: str, material: Mapping[str, Any]):
        self.material = dict(material)
        self.key = key_of(self.material)
        self.dir = Path(root) / f"{name}-{self.key[:16]}"

    def manifest(self) -> dict | None:
        """The committed manifest if this entry is complete and matches its key, else None."""
        try:
            m = json.loads((self.dir / _MANIFEST).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if m.get("key") != self.key:
            return None
        for name, spec in m["arrays"].items():
            path = self.dir / m["run"] / f"{name}.npy"
            try:
                arr = np.load(path, mmap_mode="r")
            except (FileNotFoundError, ValueError):
                return None
            if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
                return None
        return m

    def open(self, manifest: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Read-only memmaps of the committed arrays, in manifest order."""
        return {name: np.load(self.dir / manifest["run"] / f"{name}.npy", mmap_mode="r")
                for name in manifest["arrays"]}

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock for building this entry: two processes asking for the same key do not
        both write it; the second waits, then finds the first one's committed result."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def partial(self, arrays: Mapping[str, tuple[tuple[int, ...], str]], fresh: bool = False,
                state: Mapping[str, Any] | None = None) -> "Partial":
        """Open the build folder (call under :meth:`lock`). A previous partial build with the same
        key and array specs is resumed unless ``fresh``; otherwise the arrays are preallocated."""
        pdir = self.dir / _PARTIAL
        specs = {n: {"shape": list(s), "dtype": str(np.dtype(d))} for n, (s, d) in arrays.items()}
        progress = None
        if not fresh:
            try:
                progress = json.loads((pdir / _PROGRESS).read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                progress = None
            if progress is not None and (progress.get("key") != self.key or progress.get("arrays") != specs):
                progress = None
        if progress is None:
            shutil.rmtree(pdir, ignore_errors=True)
            pdir.mkdir(parents=True)
            mm = {n: np.lib.format.open_memmap(pdir / f"{n}.npy", mode="w+", dtype=np.dtype(s["dtype"]),
                                               shape=tuple(s["shape"])) for n, s in specs.items()}
            progress = {"key": self.key, "arrays": specs, "done": 0, "state": dict(state or {})}
            atomic_write_json(pdir / _PROGRESS, progress)
        else:
            mm = {n: np.lib.format.open_memmap(pdir / f"{n}.npy", mode="r+") for n in specs}
        return Partial(self, pdir, mm, progress)

    def discard_runs(self, keep: str | None) -> None:
        """Remove committed runs other than ``keep`` (superseded by a forced recompute)."""
        for p in self.dir.glob("run-*"):
            if p.name != keep:
                shutil.rmtree(p, ignore_errors=True)


class Partial:
    """A build in progress: preallocated memmaps plus the count of leading rows known complete."""

    def __init__(self, entry: CacheEntry, pdir: Path, arrays: dict[str, np.memmap], progress: dict):
        self.entry, self.dir, self.arrays, self._progress = entry, pdir, arrays, progress

    @property
    def done(self) -> int:
        """Rows ``[0, done)`` of every array are complete (their chunk was flushed and recorded)."""
        return int(self._progress["done"])

    @property
    def state(self) -> dict:
        """Extra resume state recorded with the last complete chunk (e.g. the decoder's position)."""
        return self._progress["state"]

    def advance(self, done: int, state: Mapping[str, Any] | None = None) -> None:
        """Record that rows ``[0, done)`` are complete: flush the memmaps first, then the progress
        file, so a kill between the two leaves the older (still true) progress."""
        for a in self.arrays.values():
            a.flush()
        self._progress = {**self._progress, "done": int(done), "state": dict(state or self.state)}
        atomic_write_json(self.dir / _PROGRESS, self._progress)

    def commit(self, info: Mapping[str, Any], rows: int | None = None) -> dict:
        """Publish the arrays (optionally keeping only their first ``rows`` rows) and return the
        manifest. The manifest replace is the commit point."""
        if rows is not None:
            for n, a in list(self.arrays.items()):
                if a.shape[0] != rows:
                    self.arrays[n] = _shrink(self.dir / f"{n}.npy", a, rows)
        for a in self.arrays.values():
            a.flush()
        specs = {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in self.arrays.items()}
        self.arrays.clear()
        run = f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        (self.dir / _PROGRESS).unlink()
        os.replace(self.dir, self.entry.dir / run)
        manifest = {"key": self.entry.key, "material": self.entry.material, "run": run,
                    "arrays": specs, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **dict(info)}
        atomic_write_json(self.entry.dir / _MANIFEST, manifest)
        self.entry.discard_runs(keep=run)
        return manifest


def _shrink(path: Path, a: np.memmap, rows: int) -> np.memmap:
    """Rewrite an ``.npy`` keeping its first ``rows`` rows (only needed when images were skipped)."""
    tmp = path.with_suffix(".shrink.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=a.dtype, shape=(rows,) + a.shape[1:])
    step = 4096
    for i in range(0, rows, step):
        out[i:i + step] = a[i:min(i + step, rows)]
    out.flush()
    del out, a
    os.replace(tmp, path)
    return np.lib.format.open_memmap(path, mode="r+")


# --------------------------------------------------------------------------------------------
# The decoded uint8 image store
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Geometry:
    """How an image becomes an ``S x S`` model input before normalisation (open_clip's eval
    transform: resize with ``interpolation`` by ``resize_mode``, then centre crop)."""

    image_size: int
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @property
    def key(self) -> str:
        return f"{self.image_size}-{self.interpolation}-{self.resize_mode}"

    @classmethod
    def of(cls, model: Any) -> "Geometry":
        """The geometry a loaded model expects (``helpers.models.LoadedModel``)."""
        return cls(int(model.image_size), str(model.interpolation), str(model.resize_mode))


def pixel_transform(geometry: Geometry) -> Callable:
    """PIL image -> ``3 x S x S`` uint8 array, bit-identical to the pixels open_clip's eval
    preprocess feeds to ``ToTensor``: its own resize/crop transforms, minus ToTensor and Normalize."""
    from open_clip.transform import image_transform

    full = image_transform(geometry.image_size, is_train=False, resize_mode=geometry.resize_mode,
                           interpolation=geometry.interpolation)
    head, tail = full.transforms[:-2], full.transforms[-2:]
    if [type(t).__name__ for t in tail] != ["MaybeToTensor", "Normalize"]:
        raise RuntimeError(f"open_clip's eval transform changed shape ({full}); update helpers.store.pixel_transform")

    def to_uint8(img):
        for t in head:
            img = t(img)
        return np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)

    return to_uint8


class _Decode:
    """Map-style dataset for the decoding DataLoader: row i -> (i, uint8 pixels or None, error).

    Runs in the DataLoader workers, so it holds only picklable state (the dataset and geometry)."""

    def __init__(self, dataset: Any, geometry: Geometry, start: int):
        self.dataset, self.geometry, self.start = dataset, geometry, start
        self._transform = None

    def __len__(self) -> int:
        return len(self.dataset.files) - self.start

    def __getitem__(self, j: int):
        i = self.start + j
        if self._transform is None:
            self._transform = pixel_transform(self.geometry)
        try:
            return i, self._transform(self.dataset.load_image(i)), None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is reported with the path
            path, msg = str(self.dataset.files[i]), str(exc)
            return i, None, msg if path in msg else f"{path}: cannot decode image ({type(exc).__name__}: {msg})"


def _collate(items):
    return items


@dataclass
class ImageStore:
    """A dataset decoded once for one geometry: ``pixels`` (N x 3 x S x S uint8, read-only memmap),
    ``labels`` (N, dataset label space), ``index`` (row of each image in the dataset's file list)."""

    entry: CacheEntry
    manifest: dict
    pixels: np.ndarray
    labels: np.ndarray
    index: np.ndarray

    @property
    def key(self) -> str:
        return self.entry.key

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


def store_material(dataset_name: str, dataset: Any, geometry: Geometry, limit: int | None,
                   skip_unreadable: bool) -> dict:
    """What a store's content depends on: the dataset's files (digest of names and sizes), the
    geometry, the sample limit and whether unreadable images are skipped."""
    return {"kind": "image-store", "version": STORE_VERSION, "dataset": dataset_name,
            "dataset_digest": dataset.digest(), "n_files": len(dataset.files), "geometry": geometry.key,
            "limit": limit, "skip_unreadable": bool(skip_unreadable)}


def ensure_store(dataset_name: str, dataset: Any, geometry: Geometry, cache_dir: Path, *,
                 limit: int | None = None, skip_unreadable: bool = False, batch_size: int = 64,
                 num_workers: int = 0, chunk_images: int = 1024, force: bool = False,
                 on_chunk: Callable[[int], None] | None = None) -> ImageStore:
    """Decode ``dataset`` once into the uint8 store for ``geometry`` (or open the cached one).

    Decoding runs in a DataLoader with ``num_workers`` processes; the store is filled in order and
    checkpointed every ``chunk_images`` images, so an interrupted build resumes. An undecodable
    image raises :class:`DecodeError` naming its path, unless ``skip_unreadable``: then it is left
    out and listed in the manifest's ``skipped``.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    entry = CacheEntry(Path(cache_dir) / "stores", f"{dataset_name}-{geometry.key}",
                       store_material(dataset_name, dataset, geometry, limit, skip_unreadable))
    m = None if force else entry.manifest()
    if m is None:
        with entry.lock():
            m = None if force else entry.manifest()
            if m is None:
                n, s = len(dataset.files), geometry.image_size
                part = entry.partial({"pixels": ((n, 3, s, s), "uint8"), "labels": ((n,), "int64"),
                                      "index": ((n,), "int64")},
                                     fresh=force, state={"next": 0, "skipped": []})
                rows, nxt, skipped = part.done, int(part.state["next"]), list(part.state["skipped"])
                start = nxt
                loader = DataLoader(_Decode(dataset, geometry, nxt), batch_size=batch_size,
                                    num_workers=num_workers, collate_fn=_collate,
                                    persistent_workers=False)
                labels = np.asarray(dataset.labels)
                chunks = 0
                bar = tqdm(total=n, initial=nxt, unit="img", desc=f"decode {dataset_name} ({geometry.key})",
                           smoothing=0.1)
                for batch in loader:
                    for i, px, err in batch:
                        if px is None:
                            if not skip_unreadable:
                                raise DecodeError(err)
                            skipped.append(err)
                        else:
                            part.arrays["pixels"][rows] = px
                            part.arrays["labels"][rows] = labels[i]
                            part.arrays["index"][rows] = i
                            rows += 1
                        nxt = i + 1
                    bar.update(len(batch))
                    if nxt - part.state["next"] >= chunk_images or nxt == n:
                        part.advance(rows, {"next": nxt, "skipped": skipped})
                        chunks += 1
                        if on_chunk is not None:
                            on_chunk(chunks)
                bar.close()
                m = part.commit({"n": rows, "resumed_at": start, "skipped": skipped}, rows=rows)
    arrays = entry.open(m)
    return ImageStore(entry, m, arrays["pixels"], arrays["labels"], arrays["index"])
