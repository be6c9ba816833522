"""What the benchmark scripts share: device synchronisation, a timed call and the bare forward
that every ratio is measured against (the work a model has to do whatever feeds it)."""
from __future__ import annotations

import gc
import time
from pathlib import Path

import torch

#: The benchmarks' JPEGs: ImageNet val's typical 500 x 375, decoded and resized like the real ones.
SIZE = (500, 375)


def write_images(data_root: Path, images: int) -> int:
    """At least ``images`` fixture JPEGs in ImageNet val's layout under ``data_root/imagenet/val``
    (the demo classes, equal counts); returns how many were written."""
    from helpers.demo import fixtures

    classes = fixtures.DEMO_CLASSES
    per_class = -(-images // len(classes))
    fixtures.write_imagenet(Path(data_root) / "imagenet", "val", classes=classes, per_class=per_class, size=SIZE)
    return per_class * len(classes)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn):
    """``(fn(), seconds)``. A full collection first, as timeit does: otherwise a generation-2
    collection of everything the process has built so far (0.2 s here) lands inside whichever call
    happens to trigger it."""
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bare_forward(model, batches: list[torch.Tensor], device: torch.device, dtype: str, head: bool = False) -> float:
    """Seconds for normalise + encoder (+ the head from ``h`` in fp32 when ``head``) over uint8
    batches already on the device, after one warm-up batch; bf16/fp16 autocast on CUDA as the
    engine runs it."""
    autocast = (torch.autocast("cuda", dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[dtype])
                if device.type == "cuda" and dtype != "fp32" else torch.autocast("cpu", enabled=False))

    def run(x8):
        x = model.normalize_input(x8)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            h = model.encode(x).float()
        return model.logits_from_features(h) if head else h

    with torch.inference_mode():
        run(batches[0])
        sync(device)
        gc.collect()
        t0 = time.perf_counter()
        for x8 in batches:
            run(x8)
        sync(device)
    return time.perf_counter() - t0
