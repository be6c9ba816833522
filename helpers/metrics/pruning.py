"""Pruning of Appendix G: set the smallest singular values of the head to zero,
sigma_i <- 0 in W = sum_{i=1}^{rank(W)} sigma_i u_i v_i^T, and measure what the logits keep.

W is (K, d_H), cached activations h are (N, d_H); logits follow Section 2,
logit(x) = W f_v(x) / ||f_v(x)|| (+ an optional bias for heads that have one)."""
from __future__ import annotations

import numpy as np

from helpers.metrics.arrays import as_matrix, to_numpy
from helpers.metrics.directions import svd_head

#: Images per block when forming logits, so N x K temporaries stay bounded.
_ROWS_PER_BLOCK = 4096


def _n_pruned(fraction: float, rank: int) -> int:
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1]; got {fraction}")
    # floor(fraction * rank), guarded against 0.3 * 10 = 2.9999999999999996.
    return int(np.floor(fraction * rank + 1e-9))


def prune_singular_directions(W, fraction: float) -> np.ndarray:
    """W with its floor(fraction * rank(W)) smallest singular values set to 0 (Appendix G).

    W: (K, d_H). Returns the pruned (K, d_H) float64 matrix sum over the kept i of
    sigma_i u_i v_i^T; fraction 0 gives W back (up to rounding), 1 gives zeros."""
    U, sigma, Vt = svd_head(W)
    keep = sigma.size - _n_pruned(fraction, sigma.size)
    return (U[:, :keep] * sigma[:keep]) @ Vt[:keep]


def _inputs(W, h, normalize: bool, bias):
    h = as_matrix(h, "h", "n_images x d_H")
    W = as_matrix(W, "W", "K classes x d_H")
    if h.shape[1] != W.shape[1]:
        raise ValueError(f"h has d_H = {h.shape[1]} but W has {W.shape[1]} columns")
    if normalize:
        norms = np.linalg.norm(h, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError("h has all-zero activation vectors: they cannot be normalised")
        h = h / norms
    if bias is not None:
        bias = as_matrix(bias, "bias", "K", ndim=1)
        if bias.shape[0] != W.shape[0]:
            raise ValueError(f"bias has {bias.shape[0]} entries but W has {W.shape[0]} classes")
    return W, h, bias


def pruned_logits(W, h, fraction: float, normalize: bool = True, bias=None) -> np.ndarray:
    """Logits of the pruned head on cached activations: (N, K) = h_hat @ W_pruned^T (+ bias).

    h: (N, d_H); h_hat = h / ||h|| (Section 2) when ``normalize``, else h as given (for heads
    trained on unnormalised features). ``bias``: optional (K,)."""
    W, h, bias = _inputs(W, h, normalize, bias)
    logits = h @ prune_singular_directions(W, fraction).T
    return logits if bias is None else logits + bias


def _argmax(logits):
    return logits.argmax(axis=1)


def pruning_curve(W, h, labels, fractions, normalize: bool = True, bias=None, predict=None) -> np.ndarray:
    """Top-1 accuracy of the head after pruning each fraction of its singular directions (Figure 13).

    W: (K, d_H); h: (N, d_H) cached activations, never re-extracted; labels: (N,) class indices;
    fractions: (F,) in [0, 1]. Returns (F,) accuracies in [0, 1]. One SVD serves every fraction:
    with z_i = h_hat . v_i, the logits keeping the q largest directions are
    sum_{i<=q} sigma_i z_i u_i, accumulated direction by direction in blocks of images.
    ``predict`` maps a (n, K) logit block to (n,) predicted labels (default argmax; e.g. restrict
    to ImageNet-R's 200 classes, or collapse ObjectNet's classes, before the argmax). Ties in the
    argmax go to the lowest class index, so fraction 1 (all logits equal) predicts class 0."""
    W, h, bias = _inputs(W, h, normalize, bias)
    labels = to_numpy(labels)
    if labels.shape != (h.shape[0],):
        raise ValueError(f"labels must be ({h.shape[0]},) class indices, one per image of h; "
                         f"got shape {labels.shape}")
    fractions = np.asarray(fractions, dtype=float)
    if fractions.ndim != 1:
        raise ValueError(f"fractions must be a 1-D sequence; got shape {fractions.shape}")
    predict = _argmax if predict is None else predict
    U, sigma, Vt = svd_head(W)
    r = sigma.size
    kept = np.array([r - _n_pruned(f, r) for f in fractions])
    steps = np.unique(kept)
    correct = dict.fromkeys(steps.tolist(), 0)
    for start in range(0, h.shape[0], _ROWS_PER_BLOCK):
        block = slice(start, start + _ROWS_PER_BLOCK)
        z = (h[block] @ Vt.T) * sigma
        logits = np.zeros((z.shape[0], W.shape[0])) if bias is None else np.tile(bias, (z.shape[0], 1))
        done = 0
        for q in steps:
            logits += z[:, done:q] @ U[:, done:q].T
            done = q
            correct[q] += int(np.sum(np.asarray(predict(logits)) == labels[block]))
    return np.array([correct[q] / h.shape[0] for q in kept])
