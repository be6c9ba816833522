"""Benchmark: what verifying a cached array's content costs, as a ratio of the extraction it protects.

Every committed cache array carries a digest of its bytes (:func:`helpers.store.content_digest`).
A reader trusts it only after hashing the file once, and then a verification stamp beside it
(``<name>.verified``: inode, size, mtime and ctime at the time it was hashed) spares later
processes the hash until the file changes. The largest such file is the uint8 store of a test set
(150,528 B per 224 px image), read by every model of its geometry. Measured in one run:

(a) a real 224 px uint8 store of ``--images`` images built through :class:`helpers.store.CacheEntry`
    (the commit hashes it). Then, as a fresh process reads it (the in-process memo cleared), page
    cache warm as it is right after a build:
    - the first read after the store was written or copied: the file is hashed (on
      ``HASH_THREADS`` threads), beside plain one-thread sha256 of the file (the obvious baseline);
    - every later read: the stamp is checked (a stat and a small JSON file), no hash.
(b) the extraction it protects on this machine: a real open_clip ViT-B-32 (random init) forward
    over ``--forward-images`` images of that store in batches of ``--batch-size``
    (:func:`timing.bare_forward`), per image; the ratios verification / extraction for one model
    per process (the worst case: a per-entry job reads the store for one model).
(c) the same ratios on a GPU, from the per-image FLOPs of each architecture and the assumed GPU rate
    of :mod:`helpers.workflow.costs` (the rates ``clip-study plan`` uses; recalibrate with
    ``benchmarks/gpu_check.sh``), for ViT-B-32 (the cheapest 224 px encoder of the pool), ViT-B-16
    and ViT-L-14: the hash paid once per store and file system, spread over the models that read
    it, and the stamp paid by every job.

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
        t_verify, t_plain, t_stamp = [], [], []
        store.RACY_S = 0.0  # the store was written long before it is read, as in a run
        for _ in range(args.repeats):
            path.with_name(path.name + ".verified").unlink(missing_ok=True)
            store._DIGESTS.clear()  # a fresh process: nothing verified yet, no stamp: it hashes
            t0 = time.perf_counter()
            assert entry.load() is not None
            t_verify.append(time.perf_counter() - t0)
            store._DIGESTS.clear()  # a later process: the stamp written by the first read holds
            t0 = time.perf_counter()
            assert entry.load() is not None
            t_stamp.append(time.perf_counter() - t0)
            t_plain.append(plain_sha256(path))
        v, p, st = min(t_verify), min(t_plain), min(t_stamp)
        print(f"(a) store of {n} images at {s} px: {size / 1e9:.2f} GB; commit (flush, fsync, digest) {t_commit:.2f} s")
        print(f"    first read (hashed): {v:.3f} s = {v / n * 1e6:.0f} us/img ({size / v / 1e9:.2f} GB/s on {store.HASH_THREADS} "
              f"thread(s)); plain one-thread sha256 {p:.3f} s ({size / p / 1e9:.2f} GB/s) -> x{p / v:.2f}")
        print(f"    later reads (stamp): {st * 1e3:.2f} ms for the whole store, open included -> x{v / st:.0f} faster than hashing")

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
        per_ver, per_stamp = v / n, st / n
        print(f"(b) ViT-B-32 forward on this CPU ({torch.get_num_threads()} threads): {per_img * 1e3:.1f} ms/img; "
              f"verification / extraction: first read {per_ver / per_img:.2%}, later reads {per_stamp / per_img:.4%} "
              f"(one model per process)")

        # (c) the GPU ratio at the costs module's assumed rate
        rate = costs.GPU_TFLOPS["bf16"] * 1e12
        print(f"(c) GPU (assumed {costs.GPU_TFLOPS['bf16']:g} TFLOP/s bf16, helpers.engine.flops), verification at "
              f"this machine's {size / v / 1e9:.2f} GB/s:")
        pool = len(load_profile("paper").pool)
        for arch in ("ViT-B-32", "ViT-B-16", "ViT-L-14"):
            gpu = costs.arch_cost(PoolEntry(id=arch, arch=arch, family="supervised", pretraining="x", model=arch)).image_gflops * 1e9 / rate
            print(f"    {arch}: {gpu * 1e6:.0f} us/img -> verification / extraction: every job {per_stamp / gpu:.3%} (the stamp); "
                  f"the one hash per store {per_ver / gpu:.1%} of one model's extraction, {per_ver / gpu / pool:.2%} "
                  f"spread over the paper's {pool} models")

if __name__ == "__main__":
    main()
