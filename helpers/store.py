"""On-disk stores under ``<cache_dir>``: atomic, resumable, locked cache entries, and the decoded
uint8 image store that every model with the same input geometry shares.

Why a uint8 store: the analyses of Sections 3-5 and Appendix C push the same test sets through up to
39 encoders. JPEG decoding and the bicubic resize cost more than a forward pass of a small encoder on
a GPU, so each dataset is decoded, resized and centre-cropped once per geometry (image size,
interpolation, resize mode) into an ``N x 3 x S x S`` uint8 array; each model then only normalises
with its own mean/std on its device (:mod:`helpers.engine.extract`).

Cache entry layout (one folder per key; the key is a hash of everything the content depends on)::

    <root>/<name>/
        .lock               fcntl lock held while the entry is built (a second process waits)
        .claim              the builder's claim, created exclusively (host, pid; heartbeat in its
                            mtime): the lock where flock does not hold across nodes (:func:`build_claim`)
        manifest.json       written last, atomically; names the run folder holding the arrays
        run-<id>/<array>.npy  committed arrays (read as read-only memmaps)
        partial/            a build in progress: preallocated <array>.npy + progress.json

A reader trusts an entry only if ``manifest.json`` exists, carries the expected key and its arrays
have the recorded shapes and the digest of their file's bytes recorded at commit (checked once per
process and file version, :func:`verified`): a damaged array is named, its entry discarded, and the
caller rebuilds it. A build writes into ``partial/``; at each checkpoint (:class:`Checkpoints`)
the memmaps are flushed and then the number of complete rows is recorded in ``progress.json``
(atomically), so a killed build resumes from its last checkpoint. Commit = rename ``partial/`` to a
fresh ``run-<id>/``, then replace ``manifest.json``: until that replace, the previous complete state
stays readable.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import sys
import warnings

import numpy as np

#: Bump when the stored pixels would change for the same inputs (decoding, resizing, layout).
STORE_VERSION = 1

#: Images and seconds between two resume checkpoints of a build (:class:`Checkpoints`).
CHUNK_IMAGES = 8192
CHECKPOINT_S = 30.0

_MANIFEST = "manifest.json"
_PARTIAL = "partial"
_PROGRESS = "progress.json"


class DecodeError(OSError):
    """An image that cannot be decoded into the store; the message names its path."""


def key_of(material: Mapping[str, Any]) -> str:
    """Cache key: sha256 of the canonical JSON of everything an entry's content depends on."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write text so that a reader sees the old file or the new one, never half of one (fsync then
    ``os.replace``: the rename is atomic on POSIX and survives a crash once the data is on disk)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# Content digests: a cached array is used only if its bytes are those that were committed
# --------------------------------------------------------------------------------------------

class DamagedCacheWarning(UserWarning):
    """A cached file whose bytes differ from the digest recorded when it was committed; it is
    discarded and recomputed (the message names it)."""


#: (path, size, mtime_ns, inode, ctime_ns) -> digest of the bytes, hashed in this process. Any write
#: to the file changes its mtime and ctime (or its inode, for a replace), so a file is hashed once per
#: process and version, not at every read of the entry.
_DIGESTS: dict[tuple, str] = {}
#: The file is hashed in chunks of this size, on up to HASH_THREADS threads (hashlib releases the
#: GIL while it hashes), then the chunks' digests are hashed: a 7.5 GB ImageNet store is verified at
#: the disk's speed rather than one core's (``benchmarks/verification.py``).
HASH_CHUNK = 1 << 24
HASH_THREADS = min(8, os.cpu_count() or 1)
#: Set to 1 to hash every cached file in every process, ignoring the verification stamps.
REHASH_ENV = "CLIP_STUDY_REHASH"


def _version(path: Path) -> tuple:
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def content_digest(path: Path) -> str:
    """Digest of a file's bytes: sha256 over its size and the sha256 of each :data:`HASH_CHUNK`
    bytes (so the chunks hash in parallel), memoised per file version in this process."""
    key = _version(path)
    if key not in _DIGESTS:
        size = key[1]
        with open(path, "rb") as f:
            fd = f.fileno()

            def chunk(offset: int) -> bytes:
                return hashlib.sha256(os.pread(fd, min(HASH_CHUNK, size - offset), offset)).digest()

            offsets = range(0, size, HASH_CHUNK)
            if len(offsets) <= 1 or HASH_THREADS == 1:
                parts = [chunk(o) for o in offsets]
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(HASH_THREADS) as pool:
                    parts = list(pool.map(chunk, offsets))
        h = hashlib.sha256(f"{size}\n".encode())
        for part in parts:
            h.update(part)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


# A verification stamp, ``<name>.verified`` beside a cached file, says "these bytes were hashed
# and matched this digest while the file had this inode, size, mtime and ctime". A later process
# that finds the file unchanged by all four trusts the stamp instead of hashing it again: the
# store of a test set is then hashed once after it is written (or copied to another file system),
# not once per model job (43 jobs read each store at the paper's scale). Any write through the
# file system changes the ctime, which no user tool can set back, so an edited, truncated or
# replaced file is hashed and caught. What a stamp cannot see is a change below the file system
# (a disk's silent bit rot, which storage checksums catch); CLIP_STUDY_REHASH=1 hashes anyway.
# As git does for its index, a stamp written less than RACY_S after the file's last change is not
# trusted (a write in the same clock tick of a coarse-grained file system would leave the times
# unchanged): the next reader hashes the file once more and writes a stamp that holds.

#: A stamp vouches only for a file whose ctime is at least this much older than the stamp.
RACY_S = 2.0


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _identity(version: tuple) -> dict:
    """What a stamp records of a file, from its :func:`_version` (one stat serves both)."""
    _, size, mtime_ns, inode, ctime_ns = version
    return {"inode": inode, "size": size, "mtime_ns": mtime_ns, "ctime_ns": ctime_ns}


def stamp_verified(path: Path, digest: str) -> None:
    """Record that ``path`` now holds the bytes of ``digest`` (call right after hashing or writing
    them). Best effort: a read-only cache only loses the saving."""
    path = Path(path)
    version = _version(path)
    _DIGESTS[version] = digest
    with contextlib.suppress(OSError):
        atomic_write_json(_stamp_path(path), {"digest": digest, **_identity(version)})


def _stamped_digest(path: Path, version: tuple) -> str | None:
    """The digest a valid stamp vouches for the file at ``version`` (None: no stamp, a damaged
    one, or a changed file)."""
    if os.environ.get(REHASH_ENV) == "1":
        return None
    try:
        stamp_path = _stamp_path(path)
        stamp, identity = json.loads(stamp_path.read_text()), _identity(version)
        if {k: stamp.get(k) for k in identity} != identity:
            return None
        # both times from the same file system's clock
        if stamp_path.stat().st_mtime_ns - identity["ctime_ns"] < RACY_S * 1e9:
            return None
        return str(stamp["digest"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def verified(path: Path, digest: str | None) -> bool:
    """Whether the file holds exactly the bytes of ``digest`` (False for no digest or no file):
    from this process's memo, else a valid verification stamp, else by hashing it (and stamping it
    when it matches)."""
    if digest is None:
        return False
    path = Path(path)
    try:
        version = _version(path)
        if version in _DIGESTS:
            return _DIGESTS[version] == digest
        stamped = _stamped_digest(path, version)
        if stamped is not None:
            _DIGESTS[version] = stamped
            return stamped == digest
        if content_digest(path) != digest:
            return False
        stamp_verified(path, digest)
        return True
    except FileNotFoundError:
        return False


def report_damaged(path: Path, what: str) -> None:
    """Say which cached file was found damaged and that it is being recomputed (a warning, so a
    notebook shows it and a test can catch it; also on stderr for the job log)."""
    msg = (f"damaged cache file {path}: its content does not match the digest recorded when it was "
           f"written; {what}")
    print(msg, file=sys.stderr, flush=True)
    warnings.warn(msg, DamagedCacheWarning, stacklevel=3)


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".digest")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` with the same all-or-nothing guarantee as :func:`atomic_write_text`, and the
    file's :func:`content_digest` beside it (``<name>.digest``, written first: a crash between the two leaves a
    pair that does not match, which :func:`load_npy` treats as missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npy")
    try:
        np.save(tmp, array)
        with open(tmp, "rb") as f:  # to disk before the rename, as atomic_write_text does
            os.fsync(f.fileno())
        digest = content_digest(tmp)
        atomic_write_text(_digest_path(path), digest + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    stamp_verified(path, digest)  # the bytes just hashed: no second hash when read back


def load_npy(path: Path) -> np.ndarray | None:
    """An array written by :func:`atomic_save_npy`, or None when it is absent or its bytes do not
    match their recorded digest (then it is named, removed, and the caller recomputes it)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        digest = _digest_path(path).read_text().strip()
    except FileNotFoundError:
        digest = None
    if verified(path, digest):
        try:
            return np.load(path)
        except (ValueError, OSError):
            pass
    report_damaged(path, "it is removed and recomputed")
    path.unlink(missing_ok=True)
    return None


def atomic_write_json(path: Path, obj: Any) -> None:
    """:func:`atomic_write_text` of ``obj`` as JSON."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str))


class Checkpoints:
    """When a build records its progress: after ``rows`` rows or ``seconds`` of work since the last
    checkpoint, whichever comes first. Rows bound the loss on a fast GPU run without flushing every
    fraction of a second; seconds bound it on a slow CPU run (a ViT-L-14 does a few images a second)."""

    def __init__(self, rows: int, seconds: float = CHECKPOINT_S, done: int = 0):
        self.rows, self.seconds = rows, seconds
        self.count, self._rows, self._t = 0, done, time.monotonic()

    def due(self, done: int) -> bool:
        return done - self._rows >= self.rows or time.monotonic() - self._t >= self.seconds

    def mark(self, done: int) -> int:
        """Record a checkpoint at ``done`` rows; returns how many this build has written."""
        self.count, self._rows, self._t = self.count + 1, done, time.monotonic()
        return self.count


class CacheEntry:
    """One keyed entry: a folder of named ``.npy`` arrays committed together with a manifest."""

    def __init__(self, root: Path, name: str, material: Mapping[str, Any]):
        self.material = dict(material)
        self.key = key_of(self.material)
        self.dir = Path(root) / f"{name}-{self.key[:16]}"

    def load(self) -> tuple[dict, dict[str, np.ndarray]] | None:
        """The committed manifest and read-only memmaps of its arrays, if this entry is complete and
        matches its key; else None. The arrays are opened while checking, so a forced recompute
        that replaces them later cannot pull them from under the reader (POSIX keeps an unlinked
        file readable while it is mapped)."""
        for _ in range(2):  # a second look when a concurrent commit swapped the run in between
            try:
                m = json.loads((self.dir / _MANIFEST).read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                return None
            if m.get("key") != self.key:
                return None
            try:
                arrays = {name: np.load(self.dir / m["run"] / f"{name}.npy", mmap_mode="r") for name in m["arrays"]}
            except (FileNotFoundError, ValueError):
                continue
            if not all(list(a.shape) == m["arrays"][n]["shape"] and str(a.dtype) == m["arrays"][n]["dtype"]
                       for n, a in arrays.items()):
                return None
            for name, spec in m["arrays"].items():
                path = self.dir / m["run"] / f"{name}.npy"
                if not verified(path, spec.get("digest")):
                    report_damaged(path, f"the entry {self.dir} is discarded and recomputed")
                    self._discard(m["run"])
                    return None
            return m, arrays
        return None

    def committed(self) -> bool:
        """Whether a build of this key was committed: its manifest (written last by a commit)
        carries the key. One small file read; the arrays are neither opened nor verified
        (:meth:`load` does that), so this only decides whether there is anything to build."""
        try:
            return json.loads((self.dir / _MANIFEST).read_text()).get("key") == self.key
        except (OSError, ValueError):
            return False

    def _discard(self, run: str) -> None:
        """Withdraw a damaged commit: remove the manifest if it still names ``run`` (a concurrent
        rebuild may have committed a new one meanwhile), so every reader sees a miss."""
        try:
            if json.loads((self.dir / _MANIFEST).read_text()).get("run") == run:
                (self.dir / _MANIFEST).unlink(missing_ok=True)
        except (FileNotFoundError, json.JSONDecodeError):
            pass

    @contextmanager
    def _flock(self, name: str, mode: int) -> Iterator[None]:
        """An advisory lock (``fcntl.LOCK_EX`` or ``LOCK_SH``) on the file ``name`` of this entry."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / name, "a+") as f:
            fcntl.flock(f.fileno(), mode)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    @contextmanager
    def lock(self):
        """Exclusive lock for building this entry: two processes asking for the same key do not
        both write it; the second waits, then finds the first one's committed result. The flock
        queues the processes of one node; the claim file (:func:`build_claim`) those of several
        nodes, where the shared file system does not pass flocks between them."""
        with self._flock(".lock", fcntl.LOCK_EX), build_claim(self.dir / ".claim"):
            yield

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
        mm = None
        if progress is not None:
            try:
                mm = {n: np.lib.format.open_memmap(pdir / f"{n}.npy", mode="r+") for n in specs}
            except (FileNotFoundError, ValueError):
                progress = None  # arrays lost or damaged: start over
        if progress is None:
            shutil.rmtree(pdir, ignore_errors=True)
            pdir.mkdir(parents=True)
            mm = {n: np.lib.format.open_memmap(pdir / f"{n}.npy", mode="w+", dtype=np.dtype(s["dtype"]),
                                               shape=tuple(s["shape"])) for n, s in specs.items()}
            progress = {"key": self.key, "arrays": specs, "done": 0, "state": dict(state or {})}
            atomic_write_json(pdir / _PROGRESS, progress)
        return Partial(self, pdir, mm, progress)

    def reading(self):
        """Shared lock held while this entry's files are read (by this process and its DataLoader
        workers): :meth:`remove_unused` leaves an entry alone while anyone holds it."""
        return self._flock(".readers", fcntl.LOCK_SH)

    def remove_unused(self) -> bool:
        """Delete the committed content (manifest first, then the runs) if no process is reading
        it (:meth:`reading`); returns whether it was removed. For derived entries whose disk cost
        outweighs a rebuild (stores of a geometry few models read)."""
        try:
            f = open(self.dir / ".readers", "a+")
        except FileNotFoundError:
            return False
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # someone reads it: the last reader removes it
            try:
                (self.dir / _MANIFEST).unlink(missing_ok=True)
                self.discard_runs(keep=None)
                return True
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def discard_runs(self, keep: str | None) -> None:
        """Remove committed runs other than ``keep`` (superseded by a forced recompute)."""
        for p in self.dir.glob("run-*"):
            if p.name != keep:
                shutil.rmtree(p, ignore_errors=True)


#: A build claim whose heartbeat (the claim file's mtime) is older than this is stale: its builder
#: died or its node went away; the next builder takes it over, saying so.
CLAIM_STALE_S = 600.0
#: How often a builder refreshes its claim's heartbeat.
CLAIM_HEARTBEAT_S = 30.0


def _process_alive(pid) -> bool:
    """Whether process ``pid`` runs on this node (a pid that cannot be read counts as alive)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


def _read_claim(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


@contextmanager
def build_claim(path: Path, *, stale_s: float = CLAIM_STALE_S, heartbeat_s: float = CLAIM_HEARTBEAT_S,
                poll_s: float = 1.0, say: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the claim file ``path`` while building: created with ``O_CREAT | O_EXCL``, which is
    atomic on local file systems, NFS v3+ and Lustre even where ``flock`` is local to a node
    (Lustre ``localflock``, NFS without lockd). It holds the builder's host, pid and a token; a
    thread refreshes its mtime every ``heartbeat_s`` (the heartbeat). Another builder waits while
    the heartbeat is fresh and takes over a claim whose heartbeat is older than ``stale_s``, naming
    its holder. Released by deleting it (only if it is still this builder's)."""
    path = Path(path)
    me = {"host": os.uname().nodename, "pid": os.getpid(), "token": uuid.uuid4().hex, "since": time.time()}
    waited = False
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_claim(path)
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile
            who = f"{holder.get('host', '?')} pid {holder.get('pid', '?')}"
            # a holder on this node whose process is gone (killed mid-build) needs no heartbeat to
            # time out: its claim is taken over at once
            gone = holder.get("host") == me["host"] and not _process_alive(holder.get("pid"))
            if age > stale_s or gone:
                say(f"taking over the stale build claim {path}: held by {who}, "
                    + ("a process that no longer runs on this node" if gone else
                       f"last heartbeat {age:.0f} s ago (more than {stale_s:.0f} s)"))
                aside = path.with_name(f"{path.name}.stale-{me['token']}")
                try:
                    os.rename(path, aside)
                except FileNotFoundError:
                    continue
                if _read_claim(aside).get("token") != holder.get("token"):  # a fresh claim: put it back
                    try:
                        os.link(aside, path)
                    except FileExistsError:
                        pass
                aside.unlink(missing_ok=True)
                continue
            if not waited:
                say(f"waiting: {path.parent} is being built by {who} (heartbeat {age:.0f} s ago)")
                waited = True
            time.sleep(poll_s)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    stop = threading.Event()

    def beat():
        while not stop.wait(heartbeat_s):
            try:
                os.utime(path)
            except FileNotFoundError:
                return

    t = threading.Thread(target=beat, daemon=True, name=f"heartbeat {path}")
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        if _read_claim(path).get("token") == me["token"]:
            path.unlink(missing_ok=True)


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

    def commit(self, info: Mapping[str, Any], rows: int | None = None) -> tuple[dict, dict[str, np.ndarray]]:
        """Publish the arrays (optionally keeping only their first ``rows`` rows); returns what
        :meth:`CacheEntry.load` returns. The manifest replace is the commit point."""
        if rows is not None:
            for n, a in list(self.arrays.items()):
                if a.shape[0] != rows:
                    self.arrays[n] = _shrink(self.dir / f"{n}.npy", a, rows)
        for a in self.arrays.values():
            a.flush()
        specs = {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in self.arrays.items()}
        self.arrays.clear()
        for n, spec in specs.items():  # the bytes as committed; a reader checks them (CacheEntry.load)
            with open(self.dir / f"{n}.npy", "rb") as f:
                os.fsync(f.fileno())
            spec["digest"] = content_digest(self.dir / f"{n}.npy")
        run = f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        (self.dir / _PROGRESS).unlink()
        os.replace(self.dir, self.entry.dir / run)
        for n, spec in specs.items():  # the rename keeps the bytes: no second hash when read back
            stamp_verified(self.entry.dir / run / f"{n}.npy", spec["digest"])
        manifest = {"key": self.entry.key, "material": self.entry.material, "run": run,
                    "arrays": specs, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **dict(info)}
        atomic_write_json(self.entry.dir / _MANIFEST, manifest)
        self.entry.discard_runs(keep=run)
        return manifest, {n: np.load(self.entry.dir / run / f"{n}.npy", mmap_mode="r") for n in specs}


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
    """How an image becomes an ``S x S`` model input before normalisation.

    ``resize_size`` None (open_clip's eval transform): resize by ``resize_mode`` to ``image_size``
    with ``interpolation``, then centre crop. ``resize_size`` R (torchvision's
    ``ImageClassification`` preset, e.g. its ViTs: R = 256, bilinear): resize the shortest side to
    R with antialiasing, then centre crop ``image_size``. One uint8 store per distinct geometry."""

    image_size: int
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    resize_size: int | None = None

    @property
    def key(self) -> str:
        base = f"{self.image_size}-{self.interpolation}-{self.resize_mode}"
        return base if self.resize_size in (None, self.image_size) else f"{base}-from{self.resize_size}"

    @classmethod
    def of(cls, model: Any) -> "Geometry":
        """The geometry a loaded model expects (``helpers.models.loading.LoadedModel``)."""
        resize = getattr(model, "resize_size", None)
        return cls(int(model.image_size), str(model.interpolation), str(model.resize_mode),
                   None if resize is None else int(resize))


def pixel_transform(geometry: Geometry) -> Callable:
    """PIL image -> ``3 x S x S`` uint8 array, bit-identical to the pixels the model's eval
    preprocess feeds to ``ToTensor``: open_clip's own resize/crop transforms (minus ToTensor and
    Normalize), or, with ``resize_size``, torchvision's preset (resize R, centre crop S)."""
    if geometry.resize_size not in (None, geometry.image_size):
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        mode = InterpolationMode(geometry.interpolation)

        def to_uint8_tv(img):
            # the operations of torchvision.transforms._presets.ImageClassification on a PIL image
            img = TF.resize(img.convert("RGB"), geometry.resize_size, interpolation=mode, antialias=True)
            img = TF.center_crop(img, geometry.image_size)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)

        return to_uint8_tv

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


def store_entry(dataset_name: str, geometry: Geometry, cache_dir: Path, material: dict) -> CacheEntry:
    """The cache entry of a dataset's uint8 store for one geometry (``material``: :func:`store_material`)."""
    return CacheEntry(Path(cache_dir) / "stores", f"{dataset_name}-{geometry.key}", material)


def ensure_store(dataset_name: str, dataset: Any, geometry: Geometry, cache_dir: Path, *,
                 limit: int | None = None, skip_unreadable: bool = False, batch_size: int = 64,
                 num_workers: int = 0, chunk_images: int = CHUNK_IMAGES,
                 on_chunk: Callable[[int], None] | None = None, material: dict | None = None) -> ImageStore:
    """Decode ``dataset`` once into the uint8 store for ``geometry`` (or open the cached one).

    Decoding runs in a DataLoader with ``num_workers`` processes; the store is filled in order and
    checkpointed every ``chunk_images`` images or :data:`CHECKPOINT_S` seconds, so an interrupted
    build resumes (``on_chunk(k)`` is called after the k-th checkpoint is on disk). Undecodable
    images raise one :class:`DecodeError` at the end of the pass naming every one of them (the
    build keeps its last checkpoint before the first), unless ``skip_unreadable``: then they are
    left out and listed in the manifest's ``skipped``. ``material``: :func:`store_material` of these
    arguments when the caller has it already (it stats every file).
    """
    entry = store_entry(dataset_name, geometry, cache_dir,
                        material or store_material(dataset_name, dataset, geometry, limit, skip_unreadable))
    loaded = entry.load()
    if loaded is None:
        with entry.lock():
            # Another process may have built it while this one waited for the lock.
            loaded = entry.load() or _build_store(entry, dataset_name, dataset, geometry, skip_unreadable,
                                                  batch_size, num_workers, chunk_images, on_chunk)
    m, arrays = loaded
    return ImageStore(entry, m, arrays["pixels"], arrays["labels"], arrays["index"])


def _build_store(entry: CacheEntry, dataset_name: str, dataset: Any, geometry: Geometry, skip_unreadable: bool,
                 batch_size: int, num_workers: int, chunk_images: int,
                 on_chunk: Callable[[int], None] | None) -> tuple[dict, dict[str, np.ndarray]]:
    """Fill (or resume filling) the store's partial build in dataset order, then commit it."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm  # plain bars: notebook widgets need ipywidgets and would warn

    n, s = len(dataset.files), geometry.image_size
    part = entry.partial({"pixels": ((n, 3, s, s), "uint8"), "labels": ((n,), "int64"), "index": ((n,), "int64")},
                         state={"next": 0, "skipped": []})
    # rows: store rows written; nxt: next dataset image to decode (they differ once images are skipped)
    rows, nxt, skipped = part.done, int(part.state["next"]), list(part.state["skipped"])
    start = nxt
    loader = DataLoader(_Decode(dataset, geometry, nxt), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_collate)
    labels = np.asarray(dataset.labels)
    checkpoints = Checkpoints(chunk_images, done=nxt)
    failed: list[str] = []  # without skip_unreadable: every bad file of the pass, then one error
    with tqdm(total=n, initial=nxt, unit="img", desc=f"decode {dataset_name} ({geometry.key})", smoothing=0.1) as bar:
        for batch in loader:
            for i, px, err in batch:
                if px is None and not skip_unreadable:
                    failed.append(err)
                if failed:
                    continue  # keep decoding to name every bad file; record nothing past the first
                if px is None:
                    skipped.append(err)
                else:
                    part.arrays["pixels"][rows] = px
                    part.arrays["labels"][rows] = labels[i]
                    part.arrays["index"][rows] = i
                    rows += 1
                nxt = i + 1
            bar.update(len(batch))
            if not failed and (nxt == n or checkpoints.due(nxt)):
                part.advance(rows, {"next": nxt, "skipped": skipped})
                k = checkpoints.mark(nxt)
                if on_chunk is not None:
                    on_chunk(k)
    if failed:
        raise DecodeError(f"{dataset_name}: {len(failed)} image(s) cannot be decoded (fix or remove them, or leave them "
                          "out: skip_unreadable: true in the profile, or clip-study run --skip-unreadable):\n" + "\n".join(failed))
    return part.commit({"n": rows, "resumed_at": start, "skipped": skipped}, rows=rows)
