"""A damaged cache file is never used: every committed array carries the sha256 of its bytes, a
reader checks it (once per process and file version), and a mismatch is named, discarded and
recomputed. Scenarios as a user meets them: bytes flipped on disk inside a committed ``h.npy``, the
decoded uint8 store and a cached AP matrix, then a re-run in a new process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers.demo import fixtures
from helpers.store import DamagedCacheWarning, atomic_save_npy, load_npy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    data = root / "data"
    fixtures.write_imagenet(data / "imagenet", "val", classes=fixtures.DEMO_CLASSES[:2], per_class=4, size=(160, 120))
    cfg = {"profile": "test", "device": "cpu", "batch_size": 4, "num_workers": 0, "precision": "fp32",
           "allow_random_init": True,
           "paths": {"data_root": str(data), "cache_dir": str(root / "cache"), "results_dir": str(root / "results")},
           "datasets": {"imagenet": "{data_root}/imagenet/val"},
           # three entries of one geometry: its decoded store is kept on disk (extract.keeps_store)
           "pool": [{"id": f"t-vit{s}", "arch": "ViT-B-32", "family": "supervised", "pretraining": "test",
                     "model": "demo-ViT-B-32", "seed": int(s or 0)} for s in ("", "2", "3")]}
    path = root / "test.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def rerun(profile: Path, out: Path, force: bool = False) -> str:
    """Extract in a fresh process (a re-run of a job), save h to ``out``; returns its stderr."""
    code = textwrap.dedent(f"""
        import json, numpy as np
        from helpers.config import load_profile
        from helpers.engine import extract
        a = extract.activations("t-vit", "imagenet", load_profile({str(profile)!r}), force={force})
        np.save({str(out)!r}, np.asarray(a.h))
        print(json.dumps(a.manifest["run"]))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stderr


def flip(path: Path, n: int = 64) -> None:
    """Invert ``n`` bytes in the data part of an ``.npy`` (past its header), in place."""
    with open(path, "r+b") as f:
        f.seek(0, 2)
        size = f.tell()
        at = max(128, size // 2)
        f.seek(at)
        data = bytes(b ^ 0xFF for b in f.read(n))
        f.seek(at)
        f.write(data)


def committed(cache: Path, kind: str, name: str) -> Path:
    [manifest] = [p for p in (cache / kind).rglob("manifest.json")]
    m = json.loads(manifest.read_text())
    return manifest.parent / m["run"] / f"{name}.npy"


def test_flipped_bytes_in_h_and_in_the_store_are_named_recomputed_and_the_result_is_the_clean_one(world, tmp_path):
    cache = Path(yaml.safe_load(world.read_text())["paths"]["cache_dir"])
    clean = tmp_path / "clean.npy"
    assert "damaged" not in rerun(world, clean)
    h_clean = np.load(clean)

    h_file = committed(cache, "activations", "h")
    flip(h_file)
    err = rerun(world, tmp_path / "after_h.npy")
    assert f"damaged cache file {h_file}" in err and "recomputed" in err
    np.testing.assert_array_equal(np.load(tmp_path / "after_h.npy"), h_clean)

    pixels = committed(cache, "stores", "pixels")
    flip(pixels)
    err = rerun(world, tmp_path / "after_store.npy", force=True)  # a forced re-run reads the store
    assert f"damaged cache file {pixels}" in err
    np.testing.assert_array_equal(np.load(tmp_path / "after_store.npy"), h_clean)
    # the damaged store was rebuilt: its new commit verifies in a fresh process without a word
    assert "damaged" not in rerun(world, tmp_path / "again.npy", force=True)


def test_a_damaged_saved_array_is_named_removed_and_read_as_missing(tmp_path):
    path = tmp_path / "concepts" / "ap.npy"
    ap = np.arange(600, dtype=np.float64).reshape(20, 30)
    atomic_save_npy(path, ap)
    np.testing.assert_array_equal(load_npy(path), ap)
    flip(path)
    with pytest.warns(DamagedCacheWarning, match=f"damaged cache file {path}"):
        assert load_npy(path) is None
    assert not path.exists()  # the caller recomputes and saves it again
    assert load_npy(tmp_path / "absent.npy") is None


def test_an_array_saved_without_its_digest_is_not_trusted(tmp_path):
    path = tmp_path / "old.npy"
    np.save(path, np.ones(3))  # written by a version that recorded no digest
    with pytest.warns(DamagedCacheWarning):
        assert load_npy(path) is None
