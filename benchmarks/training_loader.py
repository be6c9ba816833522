"""The training loader (helpers.training.loop.training_loader: DataLoader, workers, persistent, with a
prefetch depth) against the bare decode of the same images in one process (open the JPEG, the
recipe's RandomResizedCrop and flip, to a uint8 tensor: the work any loader has to do).

    python benchmarks/training_loader.py --images 512 --workers 8 --batch-size 64

Prints img/s of both and their ratio: about the number of workers when decoding is the bottleneck
and nothing else is; the first epoch includes the workers' start, the second (persistent workers)
does not, so both are shown.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from helpers.data import open_dataset
from helpers.demo import fixtures
from helpers.training import ddp
from helpers.training.loop import SeededAugment, train_transform, training_loader
from helpers.training.supervised import SupervisedRecipe
from timing import SIZE


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--prefetch", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=224)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        classes = fixtures.DEMO_CLASSES
        per_class = -(-args.images // len(classes))
        root = fixtures.write_imagenet(Path(tmp), "train", classes=classes, per_class=per_class, size=SIZE)
        dataset = open_dataset("imagenet-train", root)
        n = len(dataset) - len(dataset) % args.batch_size
        recipe = SupervisedRecipe().replace(batch_size=args.batch_size)
        train_set = SeededAugment(dataset, train_transform(args.image_size, recipe), recipe.seed)

        t0 = time.perf_counter()
        for i in range(n):
            train_set[i]
        bare = n / (time.perf_counter() - t0)
        print(f"bare decode, one process: {bare:,.0f} img/s ({n} images, {SIZE[0]}x{SIZE[1]} JPEG -> "
              f"{args.image_size} px crop)")

        ctx = ddp.Context(0, 1, 0, torch.device("cpu"))
        _, loader = training_loader(train_set, recipe, ctx, args.workers, True, args.prefetch)
        for epoch in (1, 2):
            train_set.set_epoch(epoch)
            loader.sampler.set_epoch(epoch)
            t0, seen = time.perf_counter(), 0
            for x8, _ in loader:
                seen += len(x8)
            rate = seen / (time.perf_counter() - t0)
            print(f"training loader, {args.workers} persistent workers, prefetch {args.prefetch}, epoch {epoch}"
                  f"{' (workers start)' if epoch == 1 else ''}: {rate:,.0f} img/s; ratio to the bare decode "
                  f"{rate / bare:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
