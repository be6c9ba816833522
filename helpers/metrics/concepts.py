"""Concept probing of Section 5 (Bau et al., 2017; Suau et al., 2022).

Each right singular vector v_i of the head is a classifier of concept c through the projections
Proj_{v_i}(h) (:func:`helpers.metrics.directions.project`); AP_i^c is its average precision on the
balanced set P^c u N^c of Broden images, and a concept is encoded in v_i when AP_i^c >= 0.9.

Shapes: ``projections`` (n_images, D) with D = rank(W); ``presence`` and ``selection`` boolean
(n_images, C): whether concept c is in image n, and whether image n belongs to the balanced set of
concept c. AP matrices are (D, C).

The AP engine reproduces ``sklearn.metrics.average_precision_score`` exactly, ties included, for
every (direction, concept) pair at once. Its cost is proportional to the total size of the
balanced sets times D, not to n_images x C x D:

1. once per direction, the dense descending rank of every image's score (equal scores, equal rank);
2. per concept, the ranks of its selected images, packed with the label as ``2 * rank + label``,
   are sorted for a block of directions at a time (one integer sort per row, no argsort);
3. without ties, the j-th positive at sorted position p_j contributes precision j / (p_j + 1), so
   AP = (1/P) sum_j j / (p_j + 1); the reversed order gives AP of -v_i from the same sort;
4. tied scores (a few dozen per direction for float32 projections of ~60k images) are corrected
   group by group: precision is read at the end of each tie group, as sklearn's thresholds at
   distinct score values do.

On the CPU the engine runs in numpy, on a CUDA device in torch; both are tested against sklearn
pair by pair. ``benchmarks/concept_probing.py`` times it at Broden scale.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from helpers.metrics.arrays import as_matrix, ndim_of, to_numpy

#: Default bound on the (direction, image) elements of one block, per backend. On the CPU small
#: blocks (~20 MB at ~40 bytes per element) stay in cache and measured 2-4x faster than 10x larger
#: ones; on a GPU larger blocks mean fewer kernel launches.
DEFAULT_BATCH_SIZE = {"numpy": 1 << 19, "torch": 1 << 24}


class _NumpyOps:
    """The engine's array operations on the CPU. numpy's AVX-512 integer sort is about 20x faster
    than torch's CPU sort on these shapes (measured here), so the CPU path stays in numpy."""

    name = "numpy"

    def put(self, a):
        return a

    def get(self, a):
        return a

    def ranks(self, S):
        order = np.argsort(S, axis=1)
        return order, np.take_along_axis(S, order, axis=1)

    def scatter(self, order, values):
        out = np.empty_like(values)
        np.put_along_axis(out, order, values, axis=1)
        return out

    def cumsum(self, x, dtype=np.int32):
        return np.cumsum(x, axis=1, dtype=dtype)

    def take_cols(self, R, idx):
        return np.take(R, idx, axis=1)

    def sort_rows(self, x):
        x.sort(axis=1)
        return x

    def flatnonzero(self, b):
        return np.flatnonzero(b)

    def cummin_reversed(self, x):
        return np.minimum.accumulate(x[:, ::-1], axis=1)[:, ::-1]

    def cummax(self, x):
        return np.maximum.accumulate(x, axis=1)

    def arange(self, n, dtype=np.int64):
        return np.arange(n, dtype=dtype)

    def f64(self, x):
        return x.astype(np.float64)

    def cat(self, xs, axis):
        return np.concatenate(xs, axis=axis)

    def unique(self, x):
        return np.unique(x)

    def isin_sorted(self, x, sorted_values):
        at = np.minimum(np.searchsorted(sorted_values, x), sorted_values.size - 1)
        return sorted_values[at] == x

    def searchsorted(self, sorted_values, x, side):
        return np.searchsorted(sorted_values, x, side=side)

    def bincount(self, idx, weights, n):
        return np.bincount(idx, weights=weights, minlength=n)


class _TorchOps:
    """The same operations in torch, for a CUDA device (or any torch device)."""

    name = "torch"

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.dtypes = {np.int32: torch.int32, np.int64: torch.int64}

    def put(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def get(self, a):
        return a.cpu().numpy()

    def ranks(self, S):
        values, order = self.torch.sort(S, dim=1)
        return order, values

    def scatter(self, order, values):
        return self.torch.empty_like(values).scatter_(1, order, values)

    def cumsum(self, x, dtype=np.int32):
        return self.torch.cumsum(x, dim=1, dtype=self.dtypes[dtype])

    def take_cols(self, R, idx):
        return R.index_select(1, idx)

    def sort_rows(self, x):
        return self.torch.sort(x, dim=1).values

    def flatnonzero(self, b):
        return self.torch.nonzero(b.reshape(-1)).squeeze(1)

    def cummin_reversed(self, x):
        return self.torch.cummin(x.flip(1), dim=1).values.flip(1)

    def cummax(self, x):
        return self.torch.cummax(x, dim=1).values

    def arange(self, n, dtype=np.int64):
        return self.torch.arange(n, dtype=self.dtypes[dtype], device=self.device)

    def f64(self, x):
        return x.to(self.torch.float64)

    def cat(self, xs, axis):
        return self.torch.cat(xs, dim=axis)

    def unique(self, x):
        return self.torch.unique(x, sorted=True)

    def isin_sorted(self, x, sorted_values):
        at = self.torch.searchsorted(sorted_values, x).clamp(max=sorted_values.shape[0] - 1)
        return sorted_values[at] == x

    def searchsorted(self, sorted_values, x, side):
        return self.torch.searchsorted(sorted_values, x, right=side == "right")

    def bincount(self, idx, weights, n):
        return self.torch.bincount(idx, weights=weights, minlength=n)


def _ops_for(device, *arrays):
    """numpy for the CPU, torch for any other device; ``None`` follows the inputs' device."""
    if device is None:
        device = next((a.device for a in arrays if hasattr(a, "device") and hasattr(a, "detach")),
                      "cpu")
    if str(device).split(":")[0] == "cpu":
        return _NumpyOps()
    return _TorchOps(device)


def _as_mask(x, name: str, n: int, ndim: int = 2) -> np.ndarray:
    """A boolean (n_images, C) matrix (or (n_images,) vector); 0/1 numbers are accepted, anything
    else is refused."""
    a = to_numpy(x)
    shape = "n_images" if ndim == 1 else "n_images x C concepts"
    if a.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D boolean array ({shape}); got shape {a.shape}")
    if a.dtype != bool:
        if not np.isin(a, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1); it holds other values")
        a = a.astype(bool)
    if a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} rows but the scores have {n} images")
    return a


def _dense_ranks(ops, S_rows):
    """Dense descending ranks of each row of S (D, n): the top score gets 0, equal scores share a
    rank. Returns (2 * ranks as int32, whether each row has ties)."""
    order, values = ops.ranks(S_rows)
    new = values[:, 1:] != values[:, :-1]
    ascending = ops.cat([ops.put(np.zeros((values.shape[0], 1), np.int32)), ops.cumsum(new)], 1)
    descending = ascending[:, -1:] - ascending
    return ops.scatter(order, descending * 2), ~new.all(1)


def _ap_block(ops, keys, P: int, m: int, ties: bool, negative: bool):
    """AP of v and (optionally) -v for each row of ``keys`` (Dc, m) = 2 * rank + label.

    After one sort per row, the j-th positive at position p_j has j positives and p_j + 1 images
    at or above it, so without ties AP = (1/P) sum_j j / (p_j + 1), and reading the order
    backwards, AP(-v) = (1/P) sum_j (P + 1 - j) / (m - p_j). ``ties``: whether any of these
    directions has tied scores among all images; the few tie groups inside the selection (float32
    projections of ~60k images have a few dozen coincident values per direction) are then
    corrected by :func:`_tie_correction`."""
    keys = ops.sort_rows(keys)
    rows = keys.shape[0]
    flat = keys.reshape(-1)
    positives = ops.flatnonzero((flat & 1) == 1)
    pos = ops.f64(positives.reshape(rows, P) - (ops.arange(rows) * m)[:, None])
    j = ops.f64(ops.arange(P) + 1)
    ap = (1.0 / (pos + 1.0)) @ j
    ap_neg = (1.0 / (m - pos)) @ (P + 1 - j) if negative else None
    if ties:
        corr, corr_neg = _tie_correction(ops, keys, positives, P, m, negative)
        if corr is not None:
            ap = ap + corr
            ap_neg = ap_neg + corr_neg if negative else None
    return ap / P, (ap_neg / P if negative else None)


def _tie_correction(ops, keys, positives, P: int, m: int, negative: bool):
    """P * (exact AP - tie-free formula) per row, from the tied elements only.

    sklearn puts one threshold at each distinct score, so a positive in a tie group gets the
    precision at the group's end, TP(e) / (e + 1), not at its own position; scoring -v, the group
    ends at its first element s, with precision (P - #positives before s) / (m - s). TP(x), the
    number of positives at flat positions <= x, is a search in the sorted ``positives``."""
    rows = keys.shape[0]
    rank = keys >> 1
    tied_right = ops.flatnonzero((rank[:, 1:] == rank[:, :-1]).reshape(-1))
    if tied_right.shape[0] == 0:
        return None, None
    # Flat positions u = row * m + p of elements tied with their right neighbour, then the
    # sorted set of every tied element.
    left = tied_right + tied_right // (m - 1)
    members = ops.unique(ops.cat([left[None, :], left[None, :] + 1], 1)[0])
    count = members.shape[0]
    order = ops.arange(count)[None, :]
    continues = ops.isin_sorted(members, left)[None, :]
    end = members[ops.cummin_reversed(order * ~continues + count * continues)[0]]
    is_positive = (keys.reshape(-1)[members] & 1) == 1
    u, end = members[is_positive], end[is_positive]
    row = u // m
    before_row = row * P
    j = ops.f64(ops.searchsorted(positives, u, "right") - before_row)
    tp_end = ops.f64(ops.searchsorted(positives, end, "right") - before_row)
    p, e = ops.f64(u - row * m), ops.f64(end - row * m)
    corr = ops.bincount(row, tp_end / (e + 1) - j / (p + 1), rows)
    corr_neg = None
    if negative:
        starts_group = ~ops.isin_sorted(members - 1, left)[None, :]
        start = members[ops.cummax(order * starts_group)[0]][is_positive]
        above = ops.f64(ops.searchsorted(positives, start, "left") - before_row)
        s = ops.f64(start - row * m)
        corr_neg = ops.bincount(row, (P - above) / (m - s) - (P + 1 - j) / (m - p), rows)
    return corr, corr_neg


def _ap_matrix(S, Y, M, sign: str, ops, batch_size: int | None):
    """AP (D, C) of the columns of S (n, D) for labels Y restricted to M, both (n, C) boolean."""
    n, D = S.shape
    C = Y.shape[1]
    if n >= 1 << 30:
        raise ValueError(f"{n} images exceed the engine's int32 rank keys")
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE[ops.name]
    positives = (Y & M).sum(0)
    empty = np.flatnonzero(positives == 0)
    if empty.size:
        raise ValueError(f"{empty.size} concepts have no positive image in their selection "
                         f"(columns {empty[:10].tolist()}{'...' if empty.size > 10 else ''}): "
                         "their AP is undefined; drop them or fix the selection")
    keys, ties = [], []
    rows_per_chunk = max(1, batch_size // n)
    for d0 in range(0, D, rows_per_chunk):
        k, t = _dense_ranks(ops, ops.put(np.ascontiguousarray(S[:, d0:d0 + rows_per_chunk].T)))
        keys.append(k)
        ties.append(ops.get(t))
    R2 = ops.cat(keys, 0)
    ties = np.concatenate(ties)
    negative = sign == "both"
    ap = np.empty((D, C))
    ap_neg = np.empty((D, C)) if negative else None
    MT, YT = np.ascontiguousarray(M.T), np.ascontiguousarray(Y.T)
    for c in range(C):
        sel = np.flatnonzero(MT[c])
        m, P = sel.size, int(positives[c])
        labels = ops.put(YT[c, sel].astype(np.int32))
        sel = ops.put(sel)
        rows = max(1, batch_size // m)
        for d0 in range(0, D, rows):
            block = slice(d0, d0 + rows)
            packed = ops.take_cols(R2[block], sel)
            packed += labels[None, :]
            a, an = _ap_block(ops, packed, P, m, bool(ties[block].any()), negative)
            ap[block, c] = ops.get(a)
            if negative:
                ap_neg[block, c] = ops.get(an)
    return ap, ap_neg


def average_precision(scores, labels, mask=None, device=None, batch_size: int | None = None):
    """Non-interpolated average precision, exactly ``sklearn.metrics.average_precision_score``
    (thresholds at the distinct score values, so ties are handled as sklearn does), for every
    column of ``scores`` against every column of ``labels`` at once.

    scores: (n,) or (n, D), higher means "positive"; labels: (n,) or (n, C) boolean; mask: optional,
    shaped like labels, image n counts for column c only where ``mask[n, c]``. Returns (D, C), with
    the axis of a 1-D input dropped (a float for 1-D scores and labels). ``device``: None or "cpu"
    runs the numpy engine, a torch device (e.g. "cuda") the same algorithm in torch; ``batch_size``
    bounds the (direction, image) elements held at once (None: :data:`DEFAULT_BATCH_SIZE` of the
    backend; memory is about 40 bytes per element). A label column with no positive is
    refused (its AP is undefined)."""
    scores_1d, labels_1d = ndim_of(scores) == 1, ndim_of(labels) == 1
    S = as_matrix(scores, "scores", "n_images or n_images x D", ndim=1 if scores_1d else 2,
                   dtype=None)
    n = S.shape[0]
    Y = _as_mask(labels, "labels", n, ndim=1 if labels_1d else 2).reshape(n, -1)
    M = np.ones_like(Y) if mask is None else \
        _as_mask(mask, "mask", n, ndim=1 if labels_1d else 2).reshape(n, -1)
    if M.shape != Y.shape:
        raise ValueError(f"mask has shape {M.shape} but labels have {Y.shape}")
    ap, _ = _ap_matrix(S.reshape(n, -1), Y, M, "positive", _ops_for(device, scores), batch_size)
    if scores_1d:
        ap = ap[0]
    if labels_1d:
        ap = ap[..., 0]
    return float(ap) if np.ndim(ap) == 0 else ap


def concept_ap(projections, presence, selection=None, sign: str = "both", device=None,
               batch_size: int | None = None, return_sign: bool = False):
    """AP_i^c of Section 5 for every right singular vector v_i and Broden concept c.

    projections: (n_images, D) from :func:`helpers.metrics.directions.project`; presence:
    (n_images, C) boolean, concept c in image n; selection: (n_images, C) boolean, image n in the
    balanced set P^c u N^c of concept c (None: every image, for every concept). Returns the AP
    matrix (D, C) in [0, 1].

    ``sign``: a singular vector is defined up to its sign, and the paper does not say which one
    it scores. "both" (our default) scores v_i and -v_i and keeps the larger AP, so a direction
    that separates a concept by low projections counts as encoding it; "positive" scores v_i as
    :func:`svd_head` returns it. With ``return_sign`` also returns (D, C) int8: +1 where v_i won,
    -1 where -v_i did. ``device`` and ``batch_size`` as in :func:`average_precision`."""
    if sign not in ("both", "positive"):
        raise ValueError(f"sign must be 'both' or 'positive'; got {sign!r}")
    S = as_matrix(projections, "projections", "n_images x D directions", dtype=None)
    Y = _as_mask(presence, "presence", S.shape[0])
    M = np.ones_like(Y) if selection is None else _as_mask(selection, "selection", S.shape[0])
    if M.shape != Y.shape:
        raise ValueError(f"selection has shape {M.shape} but presence has {Y.shape}")
    ap, ap_neg = _ap_matrix(S, Y, M, sign, _ops_for(device, projections), batch_size)
    signs = np.ones(ap.shape, np.int8)
    if sign == "both":
        signs[ap_neg > ap] = -1
        ap = np.maximum(ap, ap_neg)
    return (ap, signs) if return_sign else ap


def _as_ap(ap) -> np.ndarray:
    ap = as_matrix(ap, "ap", "D directions x C concepts")
    if ((ap < 0) | (ap > 1)).any():
        raise ValueError("ap must hold average precisions in [0, 1]")
    return ap


def encoded_concepts(ap, threshold: float = 0.9) -> np.ndarray:
    """Eq. (4), the set C = {c : AP_i^c >= threshold for some direction i}, as sorted column
    indices of ``ap`` (D, C)."""
    return np.flatnonzero((_as_ap(ap) >= threshold).any(axis=0))


def unique_concepts(ap, threshold: float = 0.9) -> int:
    """Eq. (4), N_unique = |C|: the number of concepts encoded in at least one direction."""
    return int(encoded_concepts(ap, threshold).size)


def concepts_per_direction(ap, threshold: float = 0.9) -> np.ndarray:
    """N_concept(i) = |{c : AP_i^c >= threshold}| for each direction, (D,) integers."""
    return (_as_ap(ap) >= threshold).sum(axis=1)


def polysemanticity(ap, threshold: float = 0.9, d_H: int | None = None) -> float:
    """Section 5: polysemanticity = d_H^-1 sum_i N_concept(i), the mean number of concepts per
    direction.

    The paper divides by d_H while summing over the rank(W) right singular vectors (they coincide
    when W has full column rank, K >= d_H). Passing ``d_H`` applies the paper's formula; the
    default divides by D, the number of directions in ``ap``, i.e. the mean over directions."""
    counts = concepts_per_direction(ap, threshold)
    if d_H is not None and d_H < counts.size:
        raise ValueError(f"d_H = {d_H} is smaller than the {counts.size} directions in ap")
    return float(counts.sum() / (counts.size if d_H is None else d_H))


def top_concepts(ap, direction: int, k: int = 3, names=None) -> list[tuple]:
    """Table 6: the k concepts with the highest AP in one direction, best first, as
    (concept, AP) pairs; concept is a column index, or ``names[index]`` when names are given.
    Equal APs keep column order."""
    ap = _as_ap(ap)
    if not -ap.shape[0] <= direction < ap.shape[0]:
        raise IndexError(f"direction {direction} out of range for {ap.shape[0]} directions")
    if names is not None and len(names) != ap.shape[1]:
        raise ValueError(f"{len(names)} names for {ap.shape[1]} concepts")
    row = ap[direction]
    best = np.argsort(-row, kind="stable")[:k]
    return [(int(c) if names is None else names[c], float(row[c])) for c in best]


def concept_overlaps(sets: dict) -> dict[tuple[str, ...], int]:
    """Figure 4: sizes of every region of the Venn diagram of 2 or 3 concept sets.

    ``sets`` maps a model name to its set of encoded concepts (e.g. {"zero-shot": ..., "finetuned":
    ..., "supervised": ...}). Returns {names of the sets an element is in: count} for every
    non-empty combination, singletons first; e.g. ("zero-shot",) counts concepts only the zero-shot
    model encodes, ("zero-shot", "finetuned", "supervised") those all three encode."""
    if len(sets) not in (2, 3):
        raise ValueError(f"concept_overlaps draws 2 or 3 sets; got {len(sets)}")
    names = list(sets)
    members = {name: set(s) for name, s in sets.items()}
    everything = set().union(*members.values())
    regions = {}
    for size in range(1, len(names) + 1):
        for combo in combinations(names, size):
            inside = set.intersection(*(members[x] for x in combo))
            outside = set().union(*(members[x] for x in names if x not in combo))
            regions[combo] = len((inside & everything) - outside)
    return regions


def threshold_sweep(ap, thresholds) -> np.ndarray:
    """Footnote 3: N_unique (Eq. 4) at each AP threshold, as an integer array aligned with
    ``thresholds``."""
    best = _as_ap(ap).max(axis=0)
    t = np.asarray(thresholds, dtype=float)
    if t.ndim != 1:
        raise ValueError(f"thresholds must be a 1-D sequence; got shape {t.shape}")
    return (best[None, :] >= t[:, None]).sum(axis=1)
