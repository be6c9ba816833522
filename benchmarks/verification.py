"""Benchmark: what verifying a cached array's content costs, as a ratio of the extraction it protects.

Every committed cache array carries a digest of its bytes (:func:`helpers.store.content_digest`),
checked the first time a process reads it. The largest such file is the uint8 store of a test set
(150,528 B per 224 px image), read by every model of its geometry. Measured in one run:

(a) a real 224 px uint8 store of ``--images`` images built through :class:`helpers.store.CacheEntry`
    (the commit hashes it), then a verification as a fresh process does it (the in-process memo
    cleared), page cache warm as it is right after a build; per image, on ``HASH_THREADS`` threads
    and on one thread (plain sha256 of the file, the obvious baseline).
(b) the extraction it protects on this machine: a real open_clip ViT-B-32 (random init) forward
    over ``--forward-images`` images of that store in batches of ``--batch-size``
    (:func:`timing.bare_forward`), per image; the ratio verification / extraction for one model per
    process (the worst case: a per-entry job verifies the store for one model).
(c) the same ratio on a GPU, from the per-image FLOPs of each architecture and the assumed GPU rate
    of :mod:`helpers.workflow.costs` (the rates ``clip-study plan`` uses; recalibrate with
    ``benchmarks/gpu_check.sh``), for ViT-B-32 (the cheapest 224 px encoder of the pool), ViT-B-16
    and ViT-L-14, one model per process.

Usage:  python benchmarks/verification.py [--images 2000] [--forward-images 64] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from helpers import store  # noqa: E402
from helpers.config import PoolEntry, load_profile  # noqa: E402
from helpers.workflow import costs  # noqa: E402
from timing import bare_forward  # noqa: E402  (benchmarks/timing.py)


def plain_sha256(path: Path) -> float:
    t0 = time.perf_counter()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--forward-images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n, s = args.images, 224
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        entry = store.CacheEntry(Path(tmp), "bench-store", {"kind": "bench", "n": n})
        with entry.lock():
            part = entry.partial({"pixels": ((n, 3, s, s), "uint8")}, fresh=True)
            for i in range(0, n, 256):
                part.arrays["pixels"][i:i + 256] = rng.integers(0, 256, (min(256, n - i), 3, s, s), dtype=np.uint8)
            t0 = time.perf_counter()
            m, arrays = part.commit({})
            t_commit = time.perf_counter() - t0
        path = entry.dir / m["run"] / "pixels.npy"
        size = path.stat().st_size
        t_verify, t_plain = [], []
        for _ in range(args.repeats):
            store._DIGESTS.clear()  # a fresh process: nothing verified yet
            t0 = time.perf_counter()
            assert entry.load() is not None
            t_verify.append(time.perf_counter() - t0)
            t_plain.append(plain_sha256(path))
        v, p = min(t_verify), min(t_plain)
        print(f"(a) store of {n} images at {s} px: {size / 1e9:.2f} GB; commit (flush, fsync, digest) {t_commit:.2f} s")
        print(f"    verification {v:.3f} s = {v / n * 1e6:.0f} us/img ({size / v / 1e9:.2f} GB/s on {store.HASH_THREADS} "
              f"thread(s)); plain one-thread sha256 {p:.3f} s ({size / p / 1e9:.2f} GB/s) -> x{p / v:.2f}")

        # (b) a real ViT-B-32 forward over store images on this CPU
        torch.manual_seed(0)
        P = load_profile("demo", overrides={"device": "cpu", "precision": "fp32"})
        from helpers.engine import extract

        e = PoolEntry(id="bench-vit", arch="ViT-B-32", family="supervised", pretraining="x", model="ViT-B-32", seed=0)
        model = extract.loaded_model(e, P)
        k = args.forward_images
        batches = [torch.from_numpy(np.array(arrays["pixels"][i:i + args.batch_size])) for i in range(0, k, args.batch_size)]
        fwd = min(bare_forward(model, batches, torch.device("cpu"), "fp32") for _ in range(args.repeats))
        per_img = fwd / sum(len(b) for b in batches[1:] or batches)
        per_ver = v / n
        print(f"(b) ViT-B-32 forward on this CPU ({torch.get_num_threads()} threads): {per_img * 1e3:.1f} ms/img; "
              f"verification / extraction = {per_ver / per_img:.2%} (one model per process)")

        # (c) the GPU ratio at the costs module's assumed rate
        rate = costs.GPU_TFLOPS["bf16"] * 1e12
        print(f"(c) GPU (assumed {costs.GPU_TFLOPS['bf16']:g} TFLOP/s bf16, helpers.workflow.costs), verification at "
              f"this machine's {size / v / 1e9:.2f} GB/s:")
        for arch in ("ViT-B-32", "ViT-B-16", "ViT-L-14"):
            gpu = costs.arch_cost(PoolEntry(id=arch, arch=arch, family="supervised", pretraining="x", model=arch)).image_gflops * 1e9 / rate
            print(f"    {arch}: {gpu * 1e6:.0f} us/img -> verification / extraction = {per_ver / gpu:.1%} (one model per process)")
        print("    a job that extracts K models over one store verifies it once: its ratio is the one above divided by K")

if __name__ == "__main__":
    main()
