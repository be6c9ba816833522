"""The extraction engine (helpers.engine.extract, helpers.store): decode once, cache, resume, faults.

Real components throughout: JPEG trees written by helpers.demo.fixtures in ImageNet's layout, the data
helper's datasets, the models helper's demo architectures (random init, supervised heads so no
text tower runs), DataLoaders and numpy memmaps on disk. Kills are real SIGKILLs of a subprocess.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers.engine import extract  # noqa: E402
from helpers.demo import fixtures
from helpers import models
from helpers.config import load_profile  # noqa: E402
from helpers.data import ImageDataset, accuracy, open_dataset  # noqa: E402
from helpers.store import DecodeError, Geometry, ensure_store  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLASSES = fixtures.DEMO_CLASSES[:2]
N = 8  # images in the test ImageNet (2 classes x 4)

POOL = [
    {"id": "t-vit-a", "arch": "ViT-B-32", "family": "supervised", "pretraining": "test", "model": "demo-ViT-B-32", "seed": 0},
    {"id": "t-vit-b", "arch": "ViT-B-32", "family": "supervised", "pretraining": "test", "model": "demo-ViT-B-32", "seed": 1},
    {"id": "t-rn", "arch": "RN50", "family": "supervised", "pretraining": "test", "model": "demo-RN50", "seed": 2},
    {"id": "t-coca", "arch": "coca_ViT-B-32", "family": "supervised", "pretraining": "test",
     "model": "demo-coca_ViT-B-32", "seed": 3},
    {"id": "t-tv", "arch": "ViT-B-32", "family": "supervised", "pretraining": "test", "source": "torchvision",
     "model": "demo_vit_b_32", "seed": 4},
    {"id": "t-ckpt", "arch": "ViT-B-32", "family": "supervised", "pretraining": "test", "model": "demo-ViT-B-32",
     "checkpoint": "{data_root}/ckpt.pt"},
    {"id": "t-nan", "arch": "ViT-B-32", "family": "supervised", "pretraining": "test", "model": "demo-ViT-B-32",
     "checkpoint": "{data_root}/nan.pt"},
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data root with a small ImageNet val (two image sizes) and the checkpoints, and a profile."""
    root = tmp_path_factory.mktemp("extract")
    data = root / "data"
    fixtures.write_imagenet(data / "imagenet", "val", classes=CLASSES[:1], per_class=4, size=(500, 375))
    fixtures.write_imagenet(data / "imagenet", "val", classes=CLASSES[1:], per_class=4, size=(150, 200), seed=1)
    fixtures.write_broden(data / "broden1_224", n_images=6)
    cfg = {"profile": "test", "device": "cpu", "batch_size": 2, "num_workers": 0, "precision": "fp32",
           "allow_random_init": True,
           "paths": {"data_root": str(data), "cache_dir": str(root / "cache"), "results_dir": str(root / "results")},
           "datasets": {"imagenet": "{data_root}/imagenet/val", "broden": "{data_root}/broden1_224"}, "pool": POOL}
    path = root / "test.yml"
    path.write_text(yaml.safe_dump(cfg))
    P = load_profile(path)
    vit = models.load_from_profile(P, "t-vit-a")
    models.save_classifier(vit, data / "ckpt.pt", entry="t-ckpt")
    with torch.no_grad():
        vit.encoder.conv1.weight[0, 0, 0, 0] = float("nan")
    models.save_classifier(vit, data / "nan.pt", entry="t-nan")
    return path


def profile(world: Path, cache: Path, **overrides):
    return load_profile(world, overrides={"paths.cache_dir": str(cache), **overrides})


class CountDecodes:
    """Counts real calls of the dataset's image decoder (DataLoader with num_workers=0 runs them in
    this process)."""

    def __init__(self, monkeypatch):
        self.n = 0
        original = ImageDataset.load_image

        def counting(ds, i):
            self.n += 1
            return original(ds, i)
        monkeypatch.setattr(ImageDataset, "load_image", counting)


def test_store_pixels_match_open_clip_preprocess(world, tmp_path):
    P = profile(world, tmp_path)
    ds = open_dataset("imagenet", P.dataset_root("imagenet"))
    # add awkward inputs: a greyscale JPEG and a tiny one that has to be upscaled
    from PIL import Image
    rng = np.random.default_rng(0)
    extra = P.dataset_root("imagenet").parent / "extra" / CLASSES[0]
    extra.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (300, 227), dtype=np.uint8), "L").save(extra / "grey.JPEG")
    Image.fromarray(rng.integers(0, 255, (61, 97, 3), dtype=np.uint8)).save(extra / "tiny.JPEG")
    ds = ImageDataset("imagenet", extra.parent.parent, ds.files + sorted(extra.iterdir()),
                      np.zeros(len(ds.files) + 2, np.int64), ds.label_space)
    model = models.load_from_profile(P, "t-vit-a")
    store = ensure_store("imagenet", ds, Geometry.of(model), P.cache_dir, batch_size=3)
    mine = model.normalize_input(torch.from_numpy(np.array(store.pixels)))
    ref = torch.stack([model.preprocess(ds.load_image(i)) for i in range(len(ds.files))])
    # PIL's bicubic resize already yields uint8, so the store loses nothing: only float rounding differs
    assert mine.shape == ref.shape == (N + 2, 3, 224, 224)
    assert (mine - ref).abs().max().item() < 1e-5


def test_activations_are_the_models_outputs_and_a_hit_reloads_nothing(world, tmp_path, monkeypatch):
    P = profile(world, tmp_path)
    a = extract.activations("t-vit-a", "imagenet", P)
    assert isinstance(a.h, np.memmap) and a.h.shape == (N, 64) and a.logits.shape == (N, 1000)
    ds = open_dataset("imagenet", P.dataset_root("imagenet"))
    np.testing.assert_array_equal(a.labels, ds.labels)
    model = models.load_from_profile(P, "t-vit-a")
    with torch.inference_mode():
        x = torch.stack([model.preprocess(ds.load_image(i)) for i in range(N)])
        h = torch.cat([model.encode(x[i:i + 2]) for i in range(0, N, 2)])
        np.testing.assert_allclose(a.h, h.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a.logits, model.logits_from_features(h).numpy(), rtol=1e-4, atol=1e-5)
    # The logits are derived, not stored: the cache holds h and labels only.
    assert set(a.manifest["arrays"]) == {"h", "labels"}
    assert not list(P.cache_dir.rglob("logits*.npy"))
    # Accuracy by hand: argmax of W h + b (a supervised head) in float64 against the labels.
    W, bias = model.head.detach().double().numpy(), model.bias.detach().double().numpy()
    by_hand = float(np.mean((np.asarray(a.h, dtype=np.float64) @ W.T + bias).argmax(axis=1) == ds.labels))
    assert a.accuracy == by_hand
    assert extract.accuracies("t-vit-a", P, datasets=("imagenet",)) == {"imagenet": by_hand}

    def refuse(*args, **kwargs):
        raise AssertionError("a cache hit must not load or run a model")
    monkeypatch.setattr(models, "load", refuse)
    monkeypatch.setattr(models, "load_from_profile", refuse)
    monkeypatch.setattr(models.LoadedModel, "encode", refuse)
    b = extract.activations("t-vit-a", "imagenet", P)
    assert b.manifest == a.manifest
    for k in ("h", "logits", "labels"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    # The head comes from the head cache too: no model is built for it.
    head = extract.head("t-vit-a", P)
    np.testing.assert_array_equal(head.W, model.head.detach().numpy())
    np.testing.assert_array_equal(head.b, model.bias.detach().numpy())
    assert head.normalize is False


def test_changed_checkpoint_is_a_miss(world, tmp_path):
    P = profile(world, tmp_path)
    ckpt = Path(P.entry("t-ckpt").checkpoint)
    saved = ckpt.read_bytes()
    try:
        a = extract.activations("t-ckpt", "imagenet", P)
        h_before = np.array(a.h)
        model = models.load_from_profile(P, "t-ckpt")
        with torch.no_grad():
            model.encoder.proj.mul_(2.0)
        models.save_classifier(model, ckpt, entry="t-ckpt")
        b = extract.activations("t-ckpt", "imagenet", P)
        assert b.manifest["material"]["weights_digest"] != a.manifest["material"]["weights_digest"]
        assert b.manifest["key"] != a.manifest["key"]
        np.testing.assert_allclose(np.asarray(b.h), 2 * h_before, rtol=1e-4, atol=1e-5)
    finally:
        ckpt.write_bytes(saved)


def test_a_changed_limit_or_force_recomputes(world, tmp_path):
    P = profile(world, tmp_path)
    a = extract.activations("t-vit-a", "imagenet", P)
    forced = extract.activations("t-vit-a", "imagenet", P, force=True)
    assert forced.manifest["run"] != a.manifest["run"] and forced.manifest["key"] == a.manifest["key"]
    np.testing.assert_array_equal(forced.h, a.h)
    small = extract.activations("t-vit-a", "imagenet", profile(world, tmp_path, **{"limits.default": 4}))
    assert small.h.shape == (4, 64) and small.manifest["key"] != a.manifest["key"]


def test_two_models_decode_the_dataset_once(world, tmp_path, monkeypatch):
    P = profile(world, tmp_path)
    count = CountDecodes(monkeypatch)
    out = extract.extract_many(["t-vit-a", "t-vit-b"], "imagenet", P, models_per_pass=1)
    assert count.n == N
    extract.activations("t-rn", "imagenet", P)  # a third model with the same geometry
    assert count.n == N
    assert len(list((P.cache_dir / "stores").glob("imagenet-*"))) == 1
    assert not np.array_equal(out["t-vit-a"].h, out["t-vit-b"].h)


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from helpers.engine import extract
    from helpers.config import load_profile
    from helpers.store import ensure_store, Geometry
    from helpers.data import open_dataset
    world, cache, what, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    P = load_profile(world, overrides={"paths.cache_dir": cache})
    def hook(chunk):
        if chunk == k:
            os.kill(os.getpid(), signal.SIGKILL)
    if what == "store":
        ds = open_dataset("imagenet", P.dataset_root("imagenet"))
        ensure_store("imagenet", ds, Geometry(224), P.cache_dir, batch_size=2, chunk_images=2, on_chunk=hook)
    else:
        extract.extract_many(["t-vit-a", "t-vit-b"], "imagenet", P, chunk_images=2, on_chunk=hook,
                             force=(what == "force"))
    print("not killed")
""")


def run_killed(world: Path, cache: Path, what: str, k: int) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(world), str(cache), what, str(k)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr


def test_killed_run_resumes_and_equals_an_uninterrupted_run(world, tmp_path):
    whole = extract.extract_many(["t-vit-a", "t-vit-b"], "imagenet", profile(world, tmp_path / "a"))
    P = profile(world, tmp_path / "b")
    run_killed(world, P.cache_dir, "extract", 2)  # SIGKILL after 2 of 4 chunks (batches of 2)
    partial = next((P.cache_dir / "activations" / "t-vit-a").glob("imagenet-*/partial"))
    assert json.loads((partial / "progress.json").read_text())["done"] == 4
    assert not (partial.parent / "manifest.json").exists()  # nothing half-written is published
    chunks = []
    resumed = extract.extract_many(["t-vit-a", "t-vit-b"], "imagenet", P, chunk_images=2, on_chunk=chunks.append)
    assert chunks == [1, 2]  # only the two missing chunks ran
    for e in ("t-vit-a", "t-vit-b"):
        for k in ("h", "logits", "labels"):
            np.testing.assert_array_equal(getattr(resumed[e], k), getattr(whole[e], k))


def test_killed_store_build_resumes(world, tmp_path, monkeypatch):
    P = profile(world, tmp_path)
    run_killed(world, P.cache_dir, "store", 2)
    count = CountDecodes(monkeypatch)
    ds = open_dataset("imagenet", P.dataset_root("imagenet"))
    store = ensure_store("imagenet", ds, Geometry(224), P.cache_dir, batch_size=2, chunk_images=2)
    assert count.n == N - 4 and store.manifest["resumed_at"] == 4
    fresh = ensure_store("imagenet", ds, Geometry(224), tmp_path / "fresh", batch_size=2)
    np.testing.assert_array_equal(store.pixels, fresh.pixels)


def test_killed_forced_recompute_leaves_the_previous_result_readable(world, tmp_path):
    P = profile(world, tmp_path)
    before = extract.activations("t-vit-a", "imagenet", P)
    h = np.array(before.h)
    run_killed(world, P.cache_dir, "force", 1)
    after = extract.activations("t-vit-a", "imagenet", P)
    assert after.manifest["run"] == before.manifest["run"]
    np.testing.assert_array_equal(after.h, h)


def test_two_threads_asking_for_one_key_compute_it_once(world, tmp_path, monkeypatch):
    """Within one process (two threads); two real processes: tests/unit/test_locks.py."""
    P = profile(world, tmp_path)
    count = CountDecodes(monkeypatch)
    results, errors = [], []

    def work():
        try:
            results.append(extract.activations("t-vit-a", "imagenet", P))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results[0].manifest["run"] == results[1].manifest["run"]
    assert count.n == N
    assert len(list((P.cache_dir / "activations" / "t-vit-a").glob("imagenet-*/run-*"))) == 1


def test_corrupt_jpeg_is_named_or_skipped(world, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(load_profile(world).dataset_root("imagenet").parent.parent, data,
                    ignore=shutil.ignore_patterns("*.pt"))
    bad = sorted((data / "imagenet" / "val" / CLASSES[1]).iterdir())[1]
    bad.write_bytes(bad.read_bytes()[:300])  # a truncated download
    P = profile(world, tmp_path / "cache", **{"paths.data_root": str(data)})
    with pytest.raises(DecodeError, match=str(bad)):
        extract.activations("t-vit-a", "imagenet", P)
    a = extract.activations("t-vit-a", "imagenet", P, skip_unreadable=True)
    assert a.h.shape[0] == N - 1 and len(a.manifest["skipped"]) == 1 and str(bad) in a.manifest["skipped"][0]
    ds = open_dataset("imagenet", P.dataset_root("imagenet"))
    keep = [i for i, f in enumerate(ds.files) if f != bad]
    np.testing.assert_array_equal(a.labels, ds.labels[keep])


def test_nan_activations_name_the_model_and_batch(world, tmp_path):
    P = profile(world, tmp_path)
    with pytest.raises(extract.NonFiniteActivations, match=r"model t-nan: .* batch 0 \(images 0\.\.1\)"):
        extract.activations("t-nan", "imagenet", P)
    assert not list((P.cache_dir / "activations" / "t-nan").glob("*/manifest.json"))


def test_layer_activations_match_open_clip_intermediates(world, tmp_path):
    P = profile(world, tmp_path)
    ds = open_dataset("imagenet", P.dataset_root("imagenet"))
    for eid in ("t-vit-a", "t-coca", "t-rn", "t-tv"):
        model = models.load_from_profile(P, eid)
        layers = extract.layer_activations(eid, "imagenet", P)
        assert list(layers) == extract.layer_names(model)
        h = extract.activations(eid, "imagenet", P).h
        np.testing.assert_array_equal(layers["embedding"], h)
        with torch.inference_mode():
            x = torch.stack([model.preprocess(ds.load_image(i)) for i in range(2)])
            if model.arch_kind == "modified_resnet":
                inter = model.encoder.forward_intermediates(x)["image_intermediates"][1:]
                expect = {f"layer{i + 1}": y.mean(dim=(2, 3)) for i, y in enumerate(inter)}
            elif model.arch_kind == "torchvision_vit":  # torchvision's forward, unrolled block by block
                net = model.encoder
                y = net._process_input(x)
                y = torch.cat([net.class_token.expand(len(y), -1, -1), y], dim=1) + net.encoder.pos_embedding
                expect = {}
                for i, block in enumerate(net.encoder.layers):
                    y = block(y)
                    expect[f"block{i}.cls"], expect[f"block{i}.mean"] = y[:, 0], y[:, 1:].mean(dim=1)
            else:
                out = model.encoder.forward_intermediates(x, output_extra_tokens=True)
                expect = {}
                for i, (y, cls) in enumerate(zip(out["image_intermediates"], out["image_intermediates_prefix"])):
                    expect[f"block{i}.cls"] = cls[:, 0]
                    expect[f"block{i}.mean"] = y.mean(dim=(2, 3))
        assert set(expect) | {"embedding"} == set(layers)
        for name, v in expect.items():
            np.testing.assert_allclose(layers[name][:2], v.numpy(), rtol=1e-4, atol=1e-5, err_msg=f"{eid} {name}")
    only = extract.layer_activations("t-vit-a", "imagenet", P, layers=["block1.cls"])
    assert list(only) == ["block1.cls"]
    with pytest.raises(KeyError, match="block7.cls"):
        extract.layer_activations("t-vit-a", "imagenet", P, layers=["block7.cls"])


def test_decoding_and_store_reading_in_workers_give_the_same_arrays(world, tmp_path):
    one = extract.activations("t-vit-a", "imagenet", profile(world, tmp_path / "main"))
    P = profile(world, tmp_path / "workers", num_workers=2)
    many = extract.activations("t-vit-a", "imagenet", P)
    np.testing.assert_array_equal(many.h, one.h)
    np.testing.assert_array_equal(many.labels, one.labels)


def test_broden_images_are_extracted_in_dataset_order(world, tmp_path):
    P = profile(world, tmp_path)
    a = extract.activations("t-vit-a", "broden", P)
    assert a.h.shape == (6, 64)
    np.testing.assert_array_equal(a.labels, np.arange(6))


def test_in_memory_models_are_keyed_by_their_own_digest(world, tmp_path):
    import dataclasses

    P = profile(world, tmp_path)
    base = extract.activations("t-vit-a", "imagenet", P)
    model = models.load_from_profile(P, "t-vit-a")
    with torch.no_grad():
        model.encoder.proj.mul_(3.0)
    model.weights_digest = "tripled projection"  # as helpers.engine.mixtures names its mixtures
    e = dataclasses.replace(P.entry("t-vit-a"), id="t-vit-a.x3")
    out = extract.extract_many([e], "imagenet", P, models={e.id: model})[e.id]
    np.testing.assert_allclose(out.h, 3 * np.asarray(base.h), rtol=1e-4, atol=1e-5)
    assert out.manifest["material"]["weights_digest"] == "tripled projection"
    assert not (P.cache_dir / "models" / f"{e.id}.json").exists()  # nothing to memoise: no weights file


def test_torchvision_entries_use_torchvisions_own_transform(world, tmp_path):
    """Issue 12: torchvision ViTs are evaluated as torchvision does (resize 256 bilinear, centre crop
    224, ImageNet mean/std), from a store of their own beside open_clip's bicubic one."""
    import torchvision.transforms as T
    from torchvision.models import ViT_B_32_Weights

    P = profile(world, tmp_path)
    assert models.preprocessing(load_profile("paper").entry("ViT-B-32-supervised")).resize_size == 256
    prep = models.preprocessing(P.entry("t-tv"))
    assert (prep.image_size, prep.resize_size, prep.interpolation) == (224, 256, "bilinear")
    ds = open_dataset("imagenet", P.dataset_root("imagenet"))
    store = ensure_store("imagenet", ds, prep.geometry, tmp_path / "direct", batch_size=3)
    direct = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224), T.PILToTensor()])
    for i in range(N):  # both fixture sizes: 500 x 375 (downscaled) and 150 x 200 (upscaled)
        np.testing.assert_array_equal(store.pixels[i], direct(ds.load_image(i)).numpy(), err_msg=str(ds.files[i]))
    # the model's float preprocess is torchvision's preset of the real weights, and the engine feeds it that
    model = models.load_from_profile(P, "t-tv")
    preset = ViT_B_32_Weights.IMAGENET1K_V1.transforms()
    img = ds.load_image(0)
    torch.testing.assert_close(model.preprocess(img), preset(img), atol=1e-6, rtol=0)
    a = extract.activations("t-tv", "imagenet", P)
    with torch.inference_mode():
        h = torch.cat([model.encode(torch.stack([preset(ds.load_image(i)) for i in range(k, k + 2)]))
                       for k in range(0, N, 2)])
    np.testing.assert_allclose(a.h, h.numpy(), rtol=1e-4, atol=1e-5)
    extract.activations("t-vit-a", "imagenet", P)
    kept = {p.name.split("-", 1)[1].rsplit("-", 1)[0] for p in (P.cache_dir / "stores").glob("imagenet-*/manifest.json")
            for p in [p.parent]}
    # one store per geometry; the torchvision one (a single pool entry reads it) is removed after its pass
    assert kept == {"224-bicubic-shortest"}
    assert list((P.cache_dir / "stores").glob("imagenet-224-bilinear-shortest-from256-*"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_extraction_and_device_heads_agree_with_fp32(world, tmp_path):
    """The paper profile's path (device cuda, precision bf16): h under bf16 autocast agrees with the
    CPU's fp32 h, and a zero-shot head built on the GPU under bf16 agrees with the CPU's."""
    cpu = extract.activations("t-vit-a", "imagenet", profile(world, tmp_path / "cpu"))
    gpu = extract.activations("t-vit-a", "imagenet", profile(world, tmp_path / "gpu", device="cuda", precision="bf16"))
    assert gpu.manifest["dtype"] == "bf16" and gpu.manifest["device"].startswith("cuda")
    a, b = np.asarray(cpu.h, np.float64), np.asarray(gpu.h, np.float64)
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.999
    from helpers.config import PoolEntry
    from helpers.metrics import kurtosis

    assert abs(kurtosis(a) - kurtosis(b)) < 0.02 * kurtosis(a)
    zs = PoolEntry(id="zs", arch="ViT-B-32", family="robust_zeroshot_clip", pretraining="x", model="demo-ViT-B-32")
    few = dict(classnames=["tench", "goldfish", "great white shark", "tiger shark"], templates=["a photo of a {}.", "a {}."])
    W_cpu = models.load(zs, "cpu", tmp_path / "h-cpu", **few).head.detach().double()
    W_gpu = models.load(zs, "cuda", tmp_path / "h-gpu", precision="bf16", **few).head.detach().double().cpu()
    assert torch.nn.functional.cosine_similarity(W_cpu, W_gpu, dim=1).min() > 0.999
    assert len(list((tmp_path / "h-gpu" / "heads").glob("*.pt"))) == 1


def test_head_is_built_once_on_the_profiles_device_then_read_from_its_cache(world, tmp_path, monkeypatch):
    """chapters.common.head never builds a model on the CPU when the profile names a GPU, and a
    cached head builds none (issue 11, item 3). The build is intercepted: no GPU is needed."""
    from helpers.chapters import common

    P = profile(world, tmp_path, device="cuda:0")
    calls, real = [], models.load_from_profile

    def spy(prof, entry_id, device=None, **kwargs):
        calls.append((entry_id, str(device), kwargs.get("precision")))
        return real(prof, entry_id, device="cpu", **kwargs)
    monkeypatch.setattr(models, "load_from_profile", spy)
    extract.release_models()
    W, b, normalize = common.head(P.entry("t-vit-b"), P)
    assert calls == [("t-vit-b", "cuda:0", "fp32")]
    reference = real(P, "t-vit-b", device="cpu")
    np.testing.assert_array_equal(W, reference.head.detach().numpy())
    np.testing.assert_array_equal(b, reference.bias.detach().numpy())
    assert normalize is False
    extract.release_models()
    again, _, _ = common.head(P.entry("t-vit-b"), P)
    assert len(calls) == 1  # read from <cache_dir>/linear_heads: no model built
    np.testing.assert_array_equal(again, W)


def test_layer_activations_in_memory_write_nothing_and_equal_the_cached_ones(world, tmp_path):
    """keep=False (the forking page's one-off layer): the same arrays as the cached path, and no
    file under layers/ or activations/."""
    P = profile(world, tmp_path)
    loose = extract.layer_activations("t-vit-a", "imagenet", P, layers=["block1.cls"], keep=False)
    assert not (P.cache_dir / "layers").exists() and not (P.cache_dir / "activations").exists()
    cached = extract.layer_activations("t-vit-a", "imagenet", P, layers=["block1.cls"])
    assert list((P.cache_dir / "layers" / "t-vit-a").glob("imagenet-*/manifest.json"))
    np.testing.assert_array_equal(loose["block1.cls"], cached["block1.cls"])
