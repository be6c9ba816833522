"""Benchmark of the extraction engine (helpers.engine.extract): does decoding once pay, and what does the
engine cost over a bare forward pass?

Writes ``--images`` JPEGs of 500 x 375 px (ImageNet's typical size) in ImageNet's val layout with
helpers.demo.fixtures into a temporary folder, then measures in one run:

(a) one model with the uint8 store already built: end-to-end images/s of ``extract_many(force=True)``
    (store read, normalisation, forward, head, finite check, memmap writes, checkpoints, commit, and
    the fixed start-up: loading the model, one probe image) against the bare forward pass
    (normalise + encoder + head) over the same uint8 batches already in memory on the device.
(b) K models over a cold dataset: one ``extract_many`` call against decode-once + K x (model load +
    bare forward), and against the naive loop that decodes the dataset again for every model
    (a DataLoader over the files with the model's own open_clip preprocess, then the forward).
(c) the same call again, now a cache hit, against the cold call of (b).

Each repeat (``--repeats``) measures every quantity back to back, cold runs in fresh cache folders;
the ratios printed are medians over repeats, since other jobs may share the machine (on a busy CPU,
``--threads 1`` also steadies torch's timings).

With ``--device cuda``: bf16 against fp32 throughput of ViT-B-16 (random init, no weights needed),
bare and through the engine.

The default model is the demo profile's supervised ViT (random init, random linear head: no text
tower to run). ``--model`` takes any entry id of the demo profile or an open_clip architecture name
(built with random weights). Usage:

    python benchmarks/extraction.py [--device cpu|cuda] [--images 300] [--model demo-vit-supervised]
                                    [--k 4] [--batch-size 32] [--workers 0] [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from helpers.engine import extract  # noqa: E402
from helpers.config import PoolEntry, load_profile  # noqa: E402
from helpers.data import open_dataset  # noqa: E402
from helpers.models import load  # noqa: E402
from helpers.store import Geometry, ensure_store  # noqa: E402
from timing import SIZE, bare_forward as timing_bare_forward, sync, timed, write_images  # noqa: E402  (benchmarks/timing.py)



def entry_for(name: str, profile) -> PoolEntry:
    """A demo pool entry by id, or an open_clip architecture with random weights."""
    try:
        return profile.entry(name)
    except KeyError:
        return PoolEntry(id=f"bench-{name}", arch=name, family="supervised", pretraining="random init",
                         model=name, seed=0)


def bare_forward(entry: PoolEntry, batches: list[torch.Tensor], P, device: torch.device, dtype: str) -> float:
    """Seconds for normalise + encoder + head over uint8 batches already on the device (after one
    warm-up batch), the work a model has to do whatever feeds it."""
    model = load(entry, str(device), P.cache_dir)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return timing_bare_forward(model, batches, device, dtype, head=True)


def naive_loop(entries: list[PoolEntry], P, device: torch.device) -> float:
    """Seconds for the usual per-model loop: decode every image with the model's own preprocess in a
    DataLoader, then the forward; nothing shared between models."""
    gc.collect()
    t0 = time.perf_counter()
    for e in entries:
        model = load(e, str(device), P.cache_dir)
        ds = open_dataset("imagenet", P.dataset_root("imagenet"), transform=model.preprocess)
        loader = torch.utils.data.DataLoader(ds, batch_size=P.batch_size, num_workers=P.num_workers,
                                             pin_memory=device.type == "cuda")
        with torch.inference_mode():
            for x, _ in loader:
                model.logits_from_features(model.encode(x.to(device, non_blocking=True)))
        sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--images", type=int, default=300, help="JPEGs to generate (500 x 375 px)")
    ap.add_argument("--model", default="demo-vit-supervised",
                    help="a demo profile entry id or an open_clip architecture name (random init)")
    ap.add_argument("--k", type=int, default=4, help="models in (b), the --model architecture with seeds 0..k-1")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers for decoding and store reads")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of every measurement (medians reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-extraction-") as tmp:
        tmp = Path(tmp)
        n, t_data = timed(lambda: write_images(tmp / "data", args.images))

        def profile(cache: str, **kw):
            return load_profile("demo", overrides={
                "paths.data_root": str(tmp / "data"), "paths.cache_dir": str(tmp / cache), "device": args.device,
                "batch_size": args.batch_size, "num_workers": args.workers, **kw})

        P = profile("cache-a")
        base = entry_for(args.model, P)
        entries = [dataclasses.replace(base, id=f"{base.id}-s{i}", seed=i) for i in range(args.k)]
        dtype = "fp32" if device.type == "cpu" else P.precision
        print(f"{n} JPEGs of {SIZE[0]}x{SIZE[1]} px written in {t_data:.1f} s; model {base.model} "
              f"({base.id}), device {device}, batch {args.batch_size}, workers {args.workers}, "
              f"torch threads {torch.get_num_threads()}")

        ds = open_dataset("imagenet", P.dataset_root("imagenet"))
        probe = load(entries[0], str(device), P.cache_dir)
        geometry = Geometry.of(probe)
        del probe
        # Other jobs may share the machine: each repeat measures every quantity back to back (each
        # cold run in fresh cache folders), and the ratios reported are the medians over repeats.
        rows = []
        for r in range(args.repeats):
            m = {}
            # Decode once, alone: the "decode" term of (b)'s lower bound.
            store, m["decode"] = timed(lambda: ensure_store("imagenet", ds, geometry, tmp / f"decode-{r}",
                                                            batch_size=args.batch_size, num_workers=args.workers))
            pixels = torch.from_numpy(np.array(store.pixels))
            batches = [pixels[i:i + args.batch_size].to(device) for i in range(0, n, args.batch_size)]
            m["loads"] = sum(timed(lambda: load(e, str(device), P.cache_dir))[1] for e in entries)
            bares = [bare_forward(e, batches, P, device, dtype) for e in entries]
            m["bare"], m["bares"] = bares[0], sum(bares)
            # (b) and (c): K models, cold cache, then the same call again.
            Pr = profile(f"cache-{r}")
            m["cold"] = timed(lambda: extract.extract_many(entries, "imagenet", Pr))[1]
            m["hit"] = timed(lambda: extract.extract_many(entries, "imagenet", Pr))[1]
            m["naive"] = naive_loop(entries, Pr, device)
            # (a): one model, store warm (built by (b)), activations recomputed; its bare pass again
            # right before, so that both see the same machine load.
            m["bare"] = min(m["bare"], bare_forward(entries[0], batches, P, device, dtype))
            m["one"] = timed(lambda: extract.extract_many(entries[:1], "imagenet", Pr, force=True))[1]
            m["lower"] = m["decode"] + m["loads"] + m["bares"]
            rows.append(m)
        med = {k: float(np.median([m[k] for m in rows])) for k in rows[0]}
        ratio = {"a": np.median([m["bare"] / m["one"] for m in rows]),
                 "b": np.median([m["cold"] / m["lower"] for m in rows]),
                 "naive": np.median([m["naive"] / m["cold"] for m in rows]),
                 "c": np.median([m["cold"] / m["hit"] for m in rows])}
        print(f"\n(a) one model, store warm: engine {n / med['one']:.0f} img/s end to end (start-up included); "
              f"bare forward {n / med['bare']:.0f} img/s -> ratio {ratio['a']:.2f} (aim >= 0.9)")
        print(f"(b) {args.k} models, cold: one extract_many {med['cold']:.2f} s; decode once {med['decode']:.2f} s "
              f"({n / med['decode']:.0f} img/s) + loads {med['loads']:.2f} s + forwards {med['bares']:.2f} s "
              f"= {med['lower']:.2f} s -> ratio {ratio['b']:.2f} (aim <= 1.1); naive per-model decode loop "
              f"{med['naive']:.2f} s -> engine is {ratio['naive']:.1f}x faster")
        print(f"(c) rerun, cache hit: {med['hit'] * 1000:.0f} ms vs {med['cold']:.2f} s cold -> {ratio['c']:.0f}x faster "
              f"(aim >= 50x)")
        print(f"(medians over {args.repeats} repeats; per repeat, seconds bare / engine for (a), "
              f"lower bound / engine for (b), ratio (c): "
              + "; ".join(f"{m['bare']:.2f} / {m['one']:.2f}, {m['lower']:.2f} / {m['cold']:.2f}, {m['cold'] / m['hit']:.0f}"
                          for m in rows) + ")")

        if device.type == "cuda":
            vit = PoolEntry(id="bench-ViT-B-16", arch="ViT-B-16", family="supervised", pretraining="random init",
                            model="ViT-B-16", seed=0)
            print("\nViT-B-16, random init:")
            for prec in ("fp32", "bf16"):
                Q = profile(f"cache-{prec}", precision=prec)
                bare = n / bare_forward(vit, batches, Q, device, prec)
                extract.extract_many([vit], "imagenet", Q)  # store and model memo
                _, t = timed(lambda: extract.extract_many([vit], "imagenet", Q, force=True))
                print(f"  {prec}: bare forward {bare:.0f} img/s, engine {n / t:.0f} img/s end to end")


if __name__ == "__main__":
    main()
