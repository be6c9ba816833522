"""Uncertainty for the paper's point estimates (beyond the paper, which reports none): percentile
bootstrap intervals over images, and Spearman rank correlations across the model pool with a
bootstrap interval over models."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from helpers.metrics.arrays import to_numpy

#: Elements of resampled data materialised at once by a vectorised statistic (float64: 128 MB).
_ELEMENTS_PER_CHUNK = 1 << 24

#: Above this share of undefined replicates (e.g. resamples with a constant column) the interval
#: would describe a conditional distribution, not the statistic's: refuse it.
_MAX_INVALID_SHARE = 0.1


@dataclass(frozen=True)
class BootstrapCI:
    """A point estimate with its percentile bootstrap interval at ``level``.

    Unpacks as ``estimate, low, high``. ``n_invalid`` counts replicates whose statistic was not
    finite (left out of the percentiles)."""

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n_invalid: int = 0

    def __iter__(self):
        return iter((self.estimate, self.low, self.high))


def _rows(arrays) -> tuple[list[np.ndarray], int]:
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array to resample")
    arrays = [to_numpy(a) for a in arrays]
    sizes = {a.shape[0] if a.ndim else None for a in arrays}
    if None in sizes or len(sizes) != 1:
        raise ValueError("arrays must share their first axis (one row per image or model); "
                         f"got shapes {[a.shape for a in arrays]}")
    n = sizes.pop()
    if n < 2:
        raise ValueError(f"bootstrap needs at least 2 rows; got {n}")
    return arrays, n


def _interval(estimate, replicates, level, n_boot) -> BootstrapCI:
    replicates = np.asarray(replicates, dtype=float)
    if replicates.shape != (n_boot,):
        raise ValueError(f"the statistic must return one number per resample; got replicates of "
                         f"shape {replicates.shape} for {n_boot} resamples")
    finite = np.isfinite(replicates)
    n_invalid = int(n_boot - finite.sum())
    if n_invalid > _MAX_INVALID_SHARE * n_boot:
        raise ValueError(f"the statistic is undefined on {n_invalid} of {n_boot} resamples (e.g. a "
                         "resample with a constant column): too few rows for a bootstrap interval")
    low, high = np.quantile(replicates[finite], [(1 - level) / 2, (1 + level) / 2])
    return BootstrapCI(float(estimate), float(low), float(high), level, n_boot, n_invalid)


def bootstrap_ci(statistic, *arrays, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 vectorized: bool = False) -> BootstrapCI:
    """Percentile bootstrap interval of ``statistic(*arrays)``, resampling rows (images, or models)
    with replacement, jointly across the arrays so paired rows stay paired.

    arrays: each (N, ...), the same N. ``statistic`` returns a float. With ``vectorized`` it is
    called on stacked resamples, each array (B, N, ...), and must return (B,) (e.g.
    ``lambda a: a.mean(axis=-1)``): no Python loop over resamples. Returns a :class:`BootstrapCI`
    (unpacks as estimate, low, high); the estimate is the statistic on the data as given."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive; got {n_boot}")
    arrays, n = _rows(arrays)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    if vectorized:
        estimate = np.asarray(statistic(*[a[None] for a in arrays])).reshape(-1)[0]
        per_resample = n * max(int(np.prod(a.shape[1:])) for a in arrays)
        chunk = max(1, _ELEMENTS_PER_CHUNK // per_resample)
        replicates = np.concatenate([np.asarray(statistic(*[a[idx[b:b + chunk]] for a in arrays]),
                                                dtype=float).reshape(-1)
                                     for b in range(0, n_boot, chunk)])
    else:
        estimate = statistic(*arrays)
        replicates = [statistic(*[a[i] for a in arrays]) for i in idx]
    return _interval(estimate, replicates, level, n_boot)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row pair of x, y (B, N): Pearson correlation of average ranks, the
    definition scipy.stats.spearmanr uses; NaN for a constant row."""
    from scipy.stats import rankdata

    rx = rankdata(x, axis=-1)
    ry = rankdata(y, axis=-1)
    rx -= rx.mean(axis=-1, keepdims=True)
    ry -= ry.mean(axis=-1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(axis=-1) * (ry ** 2).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=-1) / den, np.nan)


def rank_correlation(x, y, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> BootstrapCI:
    """Spearman rank correlation across a pool (one row per model, e.g. kurtosis against effective
    robustness), with a percentile bootstrap interval over models. x, y: (M,) with M >= 3.

    Resamples in which x or y is constant have no rho; they are counted in ``n_invalid`` (and
    refused above 10% of the resamples)."""
    x = np.asarray(to_numpy(x), dtype=float)
    y = np.asarray(to_numpy(y), dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D with one value per model; got shapes {x.shape}, {y.shape}")
    if x.size < 3:
        raise ValueError(f"a rank correlation needs at least 3 models; got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite (drop models with a missing value first)")
    if (x == x[0]).all() or (y == y[0]).all():
        raise ValueError("x or y is constant across models: the rank correlation is undefined")
    return bootstrap_ci(_spearman_rows, x, y, n_boot=n_boot, seed=seed, level=level, vectorized=True)
