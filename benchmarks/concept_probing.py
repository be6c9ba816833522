"""Benchmark of the concept-probing AP engine (Section 5) at Broden scale.

Computes AP_i^c for every (direction, concept) pair with :func:`helpers.metrics.concept_ap` and,
in the same run, with one ``sklearn.metrics.average_precision_score`` call per pair on a random
sample of pairs; prints the engine's time for the full grid, the per-pair speed-up, and the
largest |engine - sklearn| on the sampled pairs.

The data are synthetic but Broden-shaped: float32 projections of n images on D directions (drawn
i.i.d. N(0, 1): timing and ties depend on the number of distinct float32 values, not on their
structure), and C concepts whose image counts follow a Zipf law within each of Broden's six
categories (sizes and largest frequencies below are our rough guesses, not Broden's label.csv).
Each concept's selection is the balanced set of the paper: all its positives and as many random
negatives (or, for a concept in more than half the images, all negatives and as many positives).

Defaults are the paper's scale (63,305 images, 1,197 concepts, 512 directions, a ViT-B's d_H).
Measured on 2 CPU cores shared with other jobs (load ~5): the engine's full grid in 14-19 s
(sklearn would need 45-80 min), 140-270x faster per pair, identical to sklearn to 2e-16; the
whole script takes about 30 s and peaks below 1 GB of memory. The sampled pairs are uniform over
(direction, concept), like the grid, so the per-pair ratio compares like with like. Usage:

    python benchmarks/concept_probing.py [--device cuda] [--n-images 63305] [--directions 512]
                                         [--concepts 1197] [--sample-pairs 300] [--sign both]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

#: (category, share of the concepts, images of its most frequent concept at 63,305 images, Zipf
#: exponent). Colours and materials are dense, scenes and textures are one label per image.
CATEGORIES = (
    ("color", 11, 40000, 1.0),
    ("object", 584, 30000, 1.0),
    ("part", 234, 8000, 1.0),
    ("material", 32, 12000, 1.0),
    ("scene", 468, 2000, 1.0),
    ("texture", 47, 120, 0.0),
)
BRODEN_IMAGES = 63305
MIN_POSITIVES = 10  # NetDissect keeps labels with at least 10 images


def concept_frequencies(n_concepts: int, n_images: int) -> np.ndarray:
    """Positive-image counts per concept, Zipf within each category, scaled to n_images."""
    shares = np.array([c[1] for c in CATEGORIES], dtype=float)
    counts = np.floor(shares / shares.sum() * n_concepts).astype(int)
    counts[np.argsort(-(shares / shares.sum() * n_concepts - counts))[: n_concepts - counts.sum()]] += 1
    scale = n_images / BRODEN_IMAGES
    freqs = []
    for (_, _, top, exponent), count in zip(CATEGORIES, counts):
        rank = np.arange(1, count + 1)
        freqs.append(np.maximum(top * scale / rank ** exponent, max(2, MIN_POSITIVES * scale)))
    return np.minimum(np.concatenate(freqs).round().astype(int), n_images - 1)


def balanced_problem(n_images: int, n_concepts: int, rng):
    """presence and selection (n_images, C) boolean, balanced as in Section 5."""
    presence = np.zeros((n_images, n_concepts), bool)
    selection = np.zeros((n_images, n_concepts), bool)
    for c, p in enumerate(concept_frequencies(n_concepts, n_images)):
        positives = rng.choice(n_images, p, replace=False)
        presence[positives, c] = True
        negatives = np.flatnonzero(~presence[:, c])
        k = min(p, negatives.size)
        selection[rng.choice(positives, k, replace=False), c] = True
        selection[rng.choice(negatives, k, replace=False), c] = True
    return presence, selection


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (numpy engine) or a torch device, e.g. cuda")
    parser.add_argument("--n-images", type=int, default=BRODEN_IMAGES)
    parser.add_argument("--directions", type=int, default=512, help="D = rank(W)")
    parser.add_argument("--concepts", type=int, default=1197)
    parser.add_argument("--sample-pairs", type=int, default=300, help="pairs scored by sklearn")
    parser.add_argument("--sign", choices=("both", "positive"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from sklearn.metrics import average_precision_score

    from helpers.metrics import concept_ap

    rng = np.random.default_rng(args.seed)
    projections = rng.standard_normal((args.n_images, args.directions), dtype=np.float32)
    presence, selection = balanced_problem(args.n_images, args.concepts, rng)
    sizes = selection.sum(0)
    print(f"{args.n_images} images, {args.directions} directions, {args.concepts} concepts, "
          f"sign={args.sign}, device={args.device}")
    print(f"balanced sets: total {sizes.sum():,} (image, concept) pairs; per concept median "
          f"{int(np.median(sizes))}, mean {sizes.mean():.0f}, max {sizes.max()}")
    distinct = np.mean([np.unique(projections[:, i]).size for i in range(min(8, args.directions))])
    print(f"float32 projections: {args.n_images - distinct:.1f} tied values per direction on average")

    if args.device.startswith("cuda"):
        concept_ap(projections[:, :2], presence[:, :2], selection[:, :2], device=args.device)
    start = time.perf_counter()
    ap = concept_ap(projections, presence, selection, sign=args.sign, device=args.device)
    engine_s = time.perf_counter() - start
    n_pairs = args.directions * args.concepts

    pairs = [(int(rng.integers(args.directions)), int(rng.integers(args.concepts)))
             for _ in range(args.sample_pairs)]
    reference = np.empty(len(pairs))
    start = time.perf_counter()
    for k, (i, c) in enumerate(pairs):
        keep = selection[:, c]
        y, s = presence[keep, c], projections[keep, i]
        reference[k] = average_precision_score(y, s)
        if args.sign == "both":
            reference[k] = max(reference[k], average_precision_score(y, -s))
    sklearn_s = time.perf_counter() - start
    diff = np.abs(np.array([ap[i, c] for i, c in pairs]) - reference).max()

    per_pair_engine = engine_s / n_pairs
    per_pair_sklearn = sklearn_s / len(pairs)
    print(f"engine: full grid of {n_pairs:,} pairs in {engine_s:.1f} s "
          f"({per_pair_engine * 1e6:.1f} us per pair)")
    print(f"sklearn: {len(pairs)} sampled pairs in {sklearn_s:.2f} s ({per_pair_sklearn * 1e3:.2f} ms "
          f"per pair; the full grid would take ~{per_pair_sklearn * n_pairs / 60:.0f} min)")
    print(f"speed-up per pair: {per_pair_sklearn / per_pair_engine:.0f}x")
    print(f"max |engine - sklearn| over the sampled pairs: {diff:.2e}")


if __name__ == "__main__":
    main()
