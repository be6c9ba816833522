"""Outlier features of Section 4: the activation kurtosis of Eq. (1) (Elhage et al., 2023), and its
closed-form value for activation vectors with planted outlier coordinates (used to validate it)."""
from __future__ import annotations

import warnings

import numpy as np

from helpers.metrics.arrays import as_matrix
from helpers.metrics.uncertainty import BootstrapCI, bootstrap_ci

#: Images per block, so the centred copies of h stay bounded in memory.
_ROWS_PER_BLOCK = 8192

#: A row whose spread is below this fraction of its largest magnitude is constant up to float64
#: rounding of its mean; its "kurtosis" would be the kurtosis of rounding noise.
_CONSTANT_RTOL = 1e-12


def kurtosis(h, per_image: bool = False):
    """Eq. (1): Kurtosis = (1/N) sum_n (1/d_H) sum_i [(h_i^(n) - mu(h^(n))) / sigma(h^(n))]^4.

    h: (N, d_H), one activation vector per row. The moments are taken across the d_H components of
    each vector with population normalisation (1/d_H), so the value is the non-excess kurtosis:
    3 for a Gaussian vector, >> 3 when a few outlier features dominate. Returns the mean over
    images as a float, or the (N,) per-image values when ``per_image``.

    A constant vector (sigma = 0) has no kurtosis: its per-image value is NaN and the mean is taken
    over the other images, with a RuntimeWarning giving their number. All-constant input raises.
    """
    h = as_matrix(h, "h", "n_images x d_H")
    n, d = h.shape
    if n == 0:
        raise ValueError("h has no images")
    if d < 2:
        raise ValueError(f"kurtosis needs at least 2 components per activation vector; d_H = {d}")
    k = np.empty(n)
    for start in range(0, n, _ROWS_PER_BLOCK):
        block = h[start:start + _ROWS_PER_BLOCK]
        c = block - block.mean(axis=1, keepdims=True)
        m2 = np.mean(c ** 2, axis=1)
        m4 = np.mean(c ** 4, axis=1)
        scale = np.abs(block).max(axis=1)
        constant = np.sqrt(m2) <= _CONSTANT_RTOL * scale
        with np.errstate(divide="ignore", invalid="ignore"):
            k[start:start + block.shape[0]] = np.where(constant, np.nan, m4 / m2 ** 2)
    if per_image:
        return k
    n_constant = int(np.isnan(k).sum())
    if n_constant == n:
        raise ValueError("every activation vector in h is constant: kurtosis is undefined")
    if n_constant:
        warnings.warn(f"kurtosis: {n_constant} of {n} activation vectors are constant and were "
                      "left out of the mean", RuntimeWarning, stacklevel=2)
    return float(np.nanmean(k))


def kurtosis_interval(h, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[np.ndarray, BootstrapCI]:
    """Eq. (1) with its percentile bootstrap interval over images (Figure 2a).

    Returns the per-image values (N,) of :func:`kurtosis` (NaN for a constant vector) and their
    mean with its interval. The NaN rule: constant vectors have no kurtosis and are left out of the
    mean and of every resample (``n_images`` of a table is then the number left); all-constant
    input raises. With a single usable image the bounds are NaN."""
    per_image = kurtosis(h, per_image=True)
    valid = per_image[~np.isnan(per_image)]
    if valid.size == 0:
        raise ValueError("every activation vector in h is constant: kurtosis is undefined")
    if valid.size < 2:
        return per_image, BootstrapCI(float(valid[0]), np.nan, np.nan, level, n_boot)
    # the mean of each resample, all resamples at once (bit-equal to np.mean on each)
    return per_image, bootstrap_ci(lambda a: a.mean(axis=-1), valid, n_boot=n_boot, seed=seed, level=level,
                                   vectorized=True)


def planted_kurtosis(d_H: int, k: int, a: float) -> float:
    """Closed-form Eq. (1) for one vector with k outlier coordinates equal to ``a`` and d_H - k
    bulk coordinates whose own mean, variance, third and fourth moments are 0, 1, 0, 3.

    Those are the expected moments of i.i.d. N(0, 1) bulk coordinates, so this is the kurtosis that
    planted Gaussian activations approach as d_H grows (it is exact for a bulk with exactly those
    moments). With p = k / d_H and m = p a the vector's mean:
    m2 = p (a - m)^2 + (1 - p)(1 + m^2), m4 = p (a - m)^4 + (1 - p)(3 + 6 m^2 + m^4),
    Kurtosis = m4 / m2^2; it is 3 for k = 0 and about d_H / k for a >> 1."""
    if not (isinstance(d_H, (int, np.integer)) and isinstance(k, (int, np.integer))):
        raise TypeError(f"d_H and k must be integers; got {d_H!r}, {k!r}")
    if not 0 <= k < d_H:
        raise ValueError(f"need 0 <= k < d_H outlier coordinates; got k = {k}, d_H = {d_H}")
    p = k / d_H
    m = p * a
    m2 = p * (a - m) ** 2 + (1 - p) * (1 + m ** 2)
    m4 = p * (a - m) ** 4 + (1 - p) * (3 + 6 * m ** 2 + m ** 4)
    return float(m4 / m2 ** 2)
