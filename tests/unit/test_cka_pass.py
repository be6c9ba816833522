"""Appendix C without a layer cache (helpers.engine.cka_pass): the chapter's one-pass CKA equals the
layer-cache path (layer_activations, then cka_minibatch per layer over the same minibatches), stores
only the accumulators, resumes an interrupted pass exactly and builds no model on a cache hit."""
from __future__ import annotations

import numpy as np
import pytest

from helpers.engine import cka_pass
from helpers.engine import extract
from helpers.demo import fixtures
from helpers import models
from helpers.chapters import cka_layers
from helpers.config import load_profile
from helpers.metrics import cka_minibatch
from helpers.study import open_study

from conftest import write_profile

CLASSES = fixtures.DEMO_CLASSES[:3]
N = 18  # 3 classes x 6 images: CKA minibatches of 4 from forward batches of 6, a trailing 2 dropped

POOL = [
    {"id": "p-vit-zs", "arch": "ViT-B-32", "family": "supervised", "pretraining": "x", "model": "demo-ViT-B-32", "seed": 0},
    {"id": "p-vit-ft", "arch": "ViT-B-32", "family": "supervised", "pretraining": "x", "model": "demo-ViT-B-32", "seed": 1,
     "finetuned_from": "p-vit-zs"},
    {"id": "p-rn-zs", "arch": "RN50", "family": "supervised", "pretraining": "x", "model": "demo-RN50", "seed": 2},
    {"id": "p-rn-ft", "arch": "RN50", "family": "supervised", "pretraining": "x", "model": "demo-RN50", "seed": 3,
     "finetuned_from": "p-rn-zs"},
]
DATASETS = ("imagenet", "imagenet-sketch")


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("cka")
    fixtures.write_imagenet(root / "data" / "imagenet", "val", classes=CLASSES, per_class=6, size=(80, 60))
    fixtures.write_imagenet_sketch(root / "data" / "sketch", classes=CLASSES, per_class=6, size=(70, 90))
    return write_profile(root, pool=POOL, batch_size=6, device="cpu", precision="fp32",
                         datasets={"imagenet": "{data_root}/imagenet/val", "imagenet-sketch": "{data_root}/sketch"})


def old_batches(a: np.ndarray, size: int) -> list[np.ndarray]:
    """The layer-cache chapter's minibatches (before this module): a trailing batch below 4 dropped."""
    n = (len(a) // size) * size + (len(a) % size if len(a) % size >= 4 else 0)
    return [np.asarray(a[i:min(i + size, n)], dtype=np.float64) for i in range(0, n, size)]


def test_chapter_values_equal_the_layer_cache_path(profile_path, monkeypatch):
    S = open_study(cka_layers.SECTION, str(profile_path), show_banner=False)
    P = S.profile
    table = cka_layers.measure(S, datasets=DATASETS)
    assert not (P.cache_dir / "layers").exists()  # no per-layer array on disk
    stored = [p for p in (P.cache_dir / "cka").rglob("*.npy")]
    assert stored and sum(p.stat().st_size for p in stored) < 64 * 1024  # accumulators only
    assert len(table) > 0
    size = cka_pass.default_batch(N)
    assert size == 4
    for zs, ft in (("p-vit-zs", "p-vit-ft"), ("p-rn-zs", "p-rn-ft")):
        for d in DATASETS:
            la, lb = extract.layer_activations(zs, d, P), extract.layer_activations(ft, d, P)
            old = {name: cka_minibatch(old_batches(la[name], size), old_batches(lb[name], size))
                   for name in la if name in lb}
            new = table[(table.entry == ft) & (table.dataset == d)].set_index("layer")["cka"]
            assert list(new.index) == list(old)  # network order
            np.testing.assert_allclose(new.to_numpy(), list(old.values()), rtol=1e-10, atol=1e-12,
                                       err_msg=f"{ft} {d}")

    def refuse(*args, **kwargs):
        raise AssertionError("a finished CKA pass must be a cache hit that builds no model")
    monkeypatch.setattr(models, "load", refuse)
    monkeypatch.setattr(models, "load_from_profile", refuse)
    monkeypatch.setattr(models.LoadedModel, "encode", refuse)
    extract.release_models()
    again = cka_layers.measure(S, datasets=DATASETS)
    np.testing.assert_array_equal(again["cka"].to_numpy(), table["cka"].to_numpy())


def test_interrupted_pass_resumes_to_the_same_accumulators(profile_path, tmp_path):
    whole = cka_pass.pair_cka("p-vit-zs", "p-vit-ft", "imagenet",
                              load_profile(profile_path, overrides={"paths.cache_dir": str(tmp_path / "a")}))
    P = load_profile(profile_path, overrides={"paths.cache_dir": str(tmp_path / "b")})

    class Stop(Exception):
        pass

    def stop(k):
        raise Stop(k)
    with pytest.raises(Stop):  # the checkpoint at image 12 (a minibatch and a forward batch end) is on disk
        cka_pass.pair_cka("p-vit-zs", "p-vit-ft", "imagenet", P, chunk_images=1, on_chunk=stop)
    partial = next((P.cache_dir / "cka" / "p-vit-zs--p-vit-ft").glob("imagenet-*/partial"))
    assert '"done": 12' in (partial / "progress.json").read_text()
    resumed = cka_pass.pair_cka("p-vit-zs", "p-vit-ft", "imagenet", P)
    assert resumed.n_batches == whole.n_batches == 4
    for k in ("xy", "xx", "yy"):
        np.testing.assert_array_equal(getattr(resumed, k), getattr(whole, k))


def test_an_undecodable_image_is_left_out_as_the_extraction_leaves_it(profile_path, tmp_path):
    """With the profile's skip_unreadable, the CKA pass reads the extraction's store: one store, the
    bad file left out of both (the pass itself equals the layer-cache path: the first test)."""
    import shutil

    from helpers.store import DecodeError

    data = tmp_path / "data"
    shutil.copytree(profile_path.parent / "data", data)
    bad = sorted((data / "imagenet" / "val" / CLASSES[1]).iterdir())[2]
    bad.write_bytes(bad.read_bytes()[:300])  # a truncated download
    strict = load_profile(profile_path, overrides={"paths.data_root": str(data), "paths.cache_dir": str(tmp_path / "c0")})
    with pytest.raises(DecodeError, match=str(bad)):
        cka_pass.pair_cka("p-vit-zs", "p-vit-ft", "imagenet", strict)
    P = load_profile(profile_path, overrides={"paths.data_root": str(data), "paths.cache_dir": str(tmp_path / "c1"),
                                              "skip_unreadable": True})
    acts = extract.activations("p-vit-zs", "imagenet", P)
    assert len(acts.h) == N - 1 and len(acts.manifest["skipped"]) == 1
    got = cka_pass.pair_cka("p-vit-zs", "p-vit-ft", "imagenet", P)
    assert len(list((P.cache_dir / "stores").glob("imagenet-*/manifest.json"))) == 1  # no second store
    # 17 images in minibatches of 4: four batches, the trailing image dropped (18 would give four too,
    # so the store's length is checked through the manifest the pass records)
    assert got.n_batches == 4 and got.manifest["n"] == N - 1 and got.manifest["images_used"] == 16


def test_minibatch_partition_drops_a_trailing_batch_below_four():
    assert cka_pass.minibatch_bounds(18, 4) == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert cka_pass.minibatch_bounds(21, 4) == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20)]
    assert cka_pass.minibatch_bounds(13, 5) == [(0, 5), (5, 10)]
    assert cka_pass.minibatch_bounds(14, 5) == [(0, 5), (5, 10), (10, 14)]
