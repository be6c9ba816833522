"""Privileged directions of Section 4: the SVD of the linear head W, the importance of each right
singular vector (Eq. 2) and the importance ratio (Eq. 3).

Shapes follow the paper: W is K x d_H (classes x representation dimensions), activations h are
N x d_H (one row h^(n) = f_v(x^(n)) per image). rank(W) is the numerical rank, written r below.
Inputs may be numpy arrays or torch tensors; results are numpy float64.
"""
from __future__ import annotations

import numpy as np

from helpers.metrics.arrays import as_matrix

#: Images per block when projecting activations, so N x r temporaries stay bounded.
_ROWS_PER_BLOCK = 8192


def svd_head(W, rtol: float | None = None):
    """SVD of the head, W = sum_{i=1}^{rank(W)} sigma_i u_i v_i^T (Section 4), truncated to rank(W).

    W: (K, d_H). Returns ``(U, sigma, Vt)`` with U (K, r) left singular vectors as columns, sigma
    (r,) in decreasing order, Vt (r, d_H) the right singular vectors v_i as rows, where r = rank(W)
    counts the sigma_i > rtol * sigma_1 (default rtol = max(K, d_H) * eps of W's dtype, numpy's
    matrix_rank rule); the SVD itself runs in float64. Singular vectors are defined up to a joint
    sign flip of (u_i, v_i); we fix it so that the largest-magnitude entry of each v_i is positive
    (sklearn's ``svd_flip`` rule), which makes results reproducible across LAPACK builds without
    changing W."""
    W = as_matrix(W, "W", "K classes x d_H", dtype=None)
    if min(W.shape) == 0:
        raise ValueError(f"W must be a non-empty K x d_H matrix; got shape {W.shape}")
    if rtol is None:
        # The input's own precision sets the noise floor: a float32 head is rank-deficient at 1e-7.
        rtol = max(W.shape) * np.finfo(W.dtype).eps
    U, sigma, Vt = np.linalg.svd(W.astype(np.float64), full_matrices=False)
    r = int(np.count_nonzero(sigma > rtol * sigma[0])) if sigma[0] > 0 else 0
    if r == 0:
        raise ValueError("W is zero: it has no singular directions")
    U, sigma, Vt = U[:, :r], sigma[:r], Vt[:r]
    flip = np.sign(Vt[np.arange(r), np.argmax(np.abs(Vt), axis=1)])
    return U * flip, sigma, Vt * flip[:, None]


def project(h, Vt) -> np.ndarray:
    """Proj_{v_i}(h^(n)) = h^(n) . v_i for every image and right singular vector (Section 5).

    h: (N, d_H); Vt: (D, d_H) with unit rows (from :func:`svd_head`). Returns (N, D) in h's
    floating precision (float32 activations stay float32, halving the memory of the probing)."""
    h = as_matrix(h, "h", "n_images x d_H", dtype=None)
    Vt = as_matrix(Vt, "Vt", "directions x d_H", dtype=h.dtype)
    if h.shape[1] != Vt.shape[1]:
        raise ValueError(f"h has d_H = {h.shape[1]} but Vt has {Vt.shape[1]} columns")
    return h @ Vt.T


def _encoder_importance(h: np.ndarray, Vt: np.ndarray) -> np.ndarray:
    """mean_n |cos(v_i, h^(n))| for each row v_i of Vt, in blocks of images."""
    norms = np.linalg.norm(h, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(f"h has {zero.size} all-zero activation vectors (rows {zero[:5].tolist()}): "
                         "their cosine with any direction is undefined")
    total = np.zeros(Vt.shape[0])
    for start in range(0, h.shape[0], _ROWS_PER_BLOCK):
        block = slice(start, start + _ROWS_PER_BLOCK)
        total += np.abs(h[block] @ Vt.T / norms[block, None]).sum(axis=0)
    return total / h.shape[0]


def importance(W, h, svd=None) -> np.ndarray:
    """Eq. (2): Importance(i) = sigma_i / sum_j sigma_j * (1/N) sum_n |cos(v_i, h^(n))|.

    W: (K, d_H) head; h: (N, d_H) activations. Returns (rank(W),) ordered like the singular values
    (decreasing sigma_i), each in (0, 1). ``svd`` reuses a ``(U, sigma, Vt)`` from
    :func:`svd_head` (e.g. across bootstrap resamples of h)."""
    h = as_matrix(h, "h", "n_images x d_H")
    _, sigma, Vt = svd_head(W) if svd is None else svd
    if h.shape[1] != Vt.shape[1]:
        raise ValueError(f"h has d_H = {h.shape[1]} but W has {Vt.shape[1]} columns")
    if h.shape[0] == 0:
        raise ValueError("h has no images")
    return sigma / sigma.sum() * _encoder_importance(h, Vt)


def importance_ratio(W, h, svd=None) -> float:
    """Eq. (3): max_i Importance(i) / (rank(W)^-1 sum_j Importance(j)), over i, j <= rank(W).

    1 when every direction matters equally; >> 1 when one privileged direction dominates. Same
    arguments as :func:`importance`."""
    imp = importance(W, h, svd=svd)
    return float(imp.max() / imp.mean())
