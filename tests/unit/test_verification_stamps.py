"""Verification stamps: a cached file is hashed once after it is written, not in every process that
reads it, and any later change to it through the file system is still caught.

The scenarios are a user's: a committed entry read by a second process, bytes flipped in it (with
the modification time set back, as a hostile edit would), a stamp that is garbage, a stamp written
in the same instant as the file, and ``CLIP_STUDY_REHASH=1``."""
import hashlib
import os
import time
import warnings

import numpy as np
import pytest

from helpers import store


@pytest.fixture
def hashes(monkeypatch):
    """Count the files :func:`helpers.store.content_digest` hashes (the real function runs)."""
    seen = []
    real = store.content_digest

    def counting(path):
        seen.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(store, "content_digest", counting)
    return seen


def _fresh_process():
    """What a new process knows: nothing verified in memory (the stamps on disk stay)."""
    store._DIGESTS.clear()


def _committed(tmp_path, n=64):
    entry = store.CacheEntry(tmp_path, "acts", {"kind": "test", "n": n})
    values = np.arange(n * 8, dtype=np.float32).reshape(n, 8)
    with entry.lock():
        part = entry.partial({"h": ((n, 8), "float32")}, fresh=True)
        part.arrays["h"][:] = values
        part.commit({})
    return entry, values


def _h_path(entry):
    import json

    return entry.dir / json.loads((entry.dir / "manifest.json").read_text())["run"] / "h.npy"


def test_a_settled_file_is_trusted_by_its_stamp_without_hashing(tmp_path, hashes, monkeypatch):
    monkeypatch.setattr(store, "RACY_S", 0.0)  # the file's last change is "long enough" before the stamp
    entry, values = _committed(tmp_path)
    path = _h_path(entry)
    assert path.with_name("h.npy.verified").exists()
    _fresh_process()
    hashes.clear()
    m, arrays = entry.load()
    np.testing.assert_array_equal(arrays["h"], values)
    assert hashes == []  # the stamp vouched for it


def test_flipped_bytes_with_the_mtime_set_back_are_still_caught(tmp_path, hashes, monkeypatch):
    monkeypatch.setattr(store, "RACY_S", 0.0)
    entry, values = _committed(tmp_path)
    path = _h_path(entry)
    st = path.stat()
    time.sleep(0.05)  # past the file system's clock tick
    with open(path, "r+b") as f:  # a hostile edit: 16 bytes inside the data, times restored
        f.seek(st.st_size - 64)
        f.write(b"\xff" * 16)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    _fresh_process()
    hashes.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert entry.load() is None  # discarded: the caller recomputes
    assert str(path) in hashes
    assert any(issubclass(w.category, store.DamagedCacheWarning) and str(path) in str(w.message) for w in caught)


@pytest.mark.parametrize("stamp", ["not json", '{"digest": "0"}', ""])
def test_a_damaged_stamp_means_hashing_again(tmp_path, hashes, monkeypatch, stamp):
    monkeypatch.setattr(store, "RACY_S", 0.0)
    entry, values = _committed(tmp_path)
    path = _h_path(entry)
    path.with_name("h.npy.verified").write_text(stamp)
    _fresh_process()
    hashes.clear()
    m, arrays = entry.load()
    np.testing.assert_array_equal(arrays["h"], values)
    assert hashes == [str(path)]


def test_a_stamp_written_in_the_same_instant_as_the_file_is_not_trusted(tmp_path, hashes):
    entry, values = _committed(tmp_path)  # RACY_S as shipped: the stamp is fresh after the commit
    path = _h_path(entry)
    _fresh_process()
    hashes.clear()
    assert entry.load() is not None
    assert hashes == [str(path)]  # hashed once more by the first reader


def test_rehash_env_ignores_the_stamps(tmp_path, hashes, monkeypatch):
    monkeypatch.setattr(store, "RACY_S", 0.0)
    entry, _ = _committed(tmp_path)
    monkeypatch.setenv(store.REHASH_ENV, "1")
    _fresh_process()
    hashes.clear()
    assert entry.load() is not None
    assert hashes == [str(_h_path(entry))]


def test_the_stamped_digest_is_the_files_sha256_construction(tmp_path, monkeypatch):
    """The digest a stamp carries is that of the bytes on disk, computed here independently:
    sha256 over the size line and the sha256 of each chunk."""
    monkeypatch.setattr(store, "HASH_CHUNK", 1024)
    path = tmp_path / "a.npy"
    store.atomic_save_npy(path, np.arange(3000, dtype=np.int64))
    data = path.read_bytes()
    h = hashlib.sha256(f"{len(data)}\n".encode())
    for i in range(0, len(data), 1024):
        h.update(hashlib.sha256(data[i:i + 1024]).digest())
    import json

    assert json.loads(path.with_name("a.npy.verified").read_text())["digest"] == h.hexdigest()
    assert path.with_name("a.npy.digest").read_text().strip() == h.hexdigest()
