"""Bootstrap intervals and rank correlations: against scipy, a loop, and planted distributions."""
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from conftest import refuses
from helpers.metrics import BootstrapCI, bootstrap_ci, rank_correlation


def test_rank_correlation_estimate_is_scipys_spearman_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, size=25).astype(float)
    y = x + rng.normal(size=25) * 2
    y[:4] = y[4]
    ci = rank_correlation(x, y, n_boot=300)
    assert ci.estimate == pytest.approx(scipy.stats.spearmanr(x, y).statistic, rel=1e-12)
    assert ci.low < ci.estimate < ci.high


def test_rank_correlation_interval_matches_an_independent_scipy_bootstrap():
    # Oracle: scipy's spearmanr on resamples drawn by this test (its own generator, not the
    # function's), percentile interval by numpy. The two Monte Carlo estimates of the same bootstrap
    # distribution agree to within a few standard errors (0.011 seen here); a Pearson-based
    # interval misses by more than the tolerance (checked below).
    rng = np.random.default_rng(1)
    x = rng.normal(size=14)
    y = np.exp(2 * x) + rng.normal(size=14)  # monotone-ish, far from linear: Pearson != Spearman
    idx = np.random.default_rng(12345).integers(0, 14, size=(4000, 14))
    reps = np.array([scipy.stats.spearmanr(x[i], y[i]).statistic for i in idx])
    reps = reps[np.isfinite(reps)]
    expected = np.quantile(reps, [0.025, 0.975])
    est, low, high = rank_correlation(x, y, n_boot=4000, seed=3)
    assert est == pytest.approx(scipy.stats.spearmanr(x, y).statistic, rel=1e-12)
    assert (low, high) == pytest.approx(tuple(expected), abs=0.025)
    pearson = np.quantile([np.corrcoef(x[i], y[i])[0, 1] for i in idx], [0.025, 0.975])
    assert np.abs(pearson - expected).max() > 0.04  # the tolerance above does separate the two


def test_perfect_monotone_relation_has_a_degenerate_interval_at_one():
    x = np.arange(10.0)
    assert tuple(rank_correlation(x, np.exp(x), n_boot=200)) == (1.0, 1.0, 1.0)


def test_vectorised_and_looped_statistics_agree():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=50)
    looped = bootstrap_ci(lambda u, v: u[:, 0].mean() - v.mean(), a, b, n_boot=300, seed=7)
    vectorised = bootstrap_ci(lambda u, v: u[..., 0].mean(-1) - v.mean(-1), a, b, n_boot=300, seed=7,
                              vectorized=True)
    assert tuple(looped) == pytest.approx(tuple(vectorised), rel=1e-12)
    assert isinstance(looped, BootstrapCI) and looped.n_boot == 300 and looped.level == 0.95


def test_rows_are_resampled_jointly():
    x = np.random.default_rng(3).normal(size=40)
    # Jointly resampled, x - x.copy() is 0 in every replicate; independent resampling would not be.
    assert tuple(bootstrap_ci(lambda u, v: np.mean(u - v), x, x.copy(), n_boot=100)) == (0.0, 0.0, 0.0)


def test_interval_for_a_mean_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(4)
    hits = 0
    for trial in range(200):
        sample = rng.normal(loc=2.0, scale=3.0, size=40)
        _, low, high = bootstrap_ci(lambda a: a.mean(-1), sample, n_boot=400, seed=trial, vectorized=True)
        hits += low <= 2.0 <= high
    assert 0.88 <= hits / 200 <= 0.99


def test_interval_narrows_with_more_data():
    rng = np.random.default_rng(5)
    widths = []
    for n in (40, 400):
        _, low, high = bootstrap_ci(lambda a: a.mean(-1), rng.normal(size=n), n_boot=1000, vectorized=True)
        widths.append(high - low)
    assert 2.0 < widths[0] / widths[1] < 5.0


def test_refusals():
    with pytest.raises(ValueError, match="share their first axis"):
        bootstrap_ci(np.mean, np.ones(5), np.ones(6))
    with pytest.raises(ValueError, match="one number per resample"):
        bootstrap_ci(lambda a: a, np.arange(5.0), n_boot=10)
    with pytest.raises(ValueError, match="level must be"):
        bootstrap_ci(np.mean, np.arange(5.0), level=95)
    with pytest.raises(ValueError, match="undefined on"):
        rank_correlation([0, 0, 1], [1, 2, 3], n_boot=100)
    with pytest.raises(ValueError, match="constant across models"):
        rank_correlation([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 3 models"):
        rank_correlation([1, 2], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        rank_correlation([1, np.nan, 2], [1, 2, 3])


def scipy_interval(x, y, n_boot, seed, level):
    """The documented recipe with scipy: resample models with numpy's generator at ``seed`` (the
    draw every bootstrap here uses), Spearman's rho by scipy, percentiles by numpy."""
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant resamples: scipy warns and returns NaN
        reps = np.array([scipy.stats.spearmanr(x[i], y[i]).statistic for i in idx])
    return np.quantile(reps[np.isfinite(reps)], [(1 - level) / 2, (1 + level) / 2])


def test_rank_correlation_uses_the_given_count_seed_and_level_without_warnings():
    rng = np.random.default_rng(6)
    x = rng.normal(size=12)
    y = x + rng.normal(size=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no floating-point warning for resamples without a rho
        ci = rank_correlation(x, y, n_boot=300, seed=5, level=0.9)
    assert (ci.low, ci.high) == pytest.approx(tuple(scipy_interval(x, y, 300, 5, 0.9)), abs=1e-12)
    assert (ci.n_boot, ci.level) == (300, 0.9)
    # object columns (a merged results table) are numbers too
    same = rank_correlation(pd.Series(x, dtype=object), pd.Series(y, dtype=object), n_boot=300, seed=5, level=0.9)
    assert tuple(same) == tuple(ci)


def test_rank_correlation_refusals_word_for_word():
    with refuses(ValueError, "x and y must be 1-D with one value per model; got shapes (3, 2), (3, 2)"):
        rank_correlation(np.ones((3, 2)), np.ones((3, 2)))
    with refuses(ValueError, "x and y must be finite (drop models with a missing value first)"):
        rank_correlation([1, 2, 3], [1, np.inf, 3])
    with refuses(ValueError, "x or y is constant across models: the rank correlation is undefined"):
        rank_correlation([1, 2, 3], [5, 5, 5])


def test_bootstrap_refusals_and_boundaries():
    with refuses(ValueError, "bootstrap_ci needs at least one array to resample"):
        bootstrap_ci(np.mean)
    with refuses(ValueError, "arrays must share their first axis (one row per image or model); got shapes [(5,), (6,)]"):
        bootstrap_ci(np.mean, np.ones(5), np.ones(6))
    with refuses(ValueError, "arrays must share their first axis (one row per image or model); got shapes [()]"):
        bootstrap_ci(np.mean, np.float64(3.0))
    with refuses(ValueError, "bootstrap needs at least 2 rows; got 1"):
        bootstrap_ci(np.mean, np.ones(1))
    for level in (0.0, 1.0, 1.5):
        with refuses(ValueError, f"level must be in (0, 1); got {level}"):
            bootstrap_ci(np.mean, np.arange(5.0), level=level)
    with refuses(ValueError, "n_boot must be positive; got 0"):
        bootstrap_ci(np.mean, np.arange(5.0), n_boot=0)
    # the smallest accepted cases: two rows, one resample
    two = bootstrap_ci(np.mean, np.array([1.0, 3.0]), n_boot=50)
    assert two.estimate == 2.0 and 1.0 <= two.low <= two.high <= 3.0
    one = bootstrap_ci(np.mean, np.arange(5.0), n_boot=1, seed=2)
    drawn = np.random.default_rng(2).integers(0, 5, size=(1, 5))[0]
    assert one.low == one.high == np.arange(5.0)[drawn].mean()


def test_undefined_replicates_are_counted_and_refused_above_ten_percent():
    def nan_for_first(k):
        calls = iter(range(10 ** 6))

        def statistic(a):  # the first call is the estimate, then one call per resample
            i = next(calls)
            return float("nan") if 1 <= i <= k else float(a.mean())
        return statistic
    ok = bootstrap_ci(nan_for_first(10), np.arange(6.0), n_boot=100)  # exactly 10 %: kept
    assert ok.n_invalid == 10 and ok.estimate == 2.5
    with refuses(ValueError, "the statistic is undefined on 11 of 100 resamples (e.g. a resample with a constant "
                             "column): too few rows for a bootstrap interval"):
        bootstrap_ci(nan_for_first(11), np.arange(6.0), n_boot=100)



def test_defaults_are_a_thousand_resamples_at_seed_zero():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=15), rng.normal(size=15)
    default = rank_correlation(x, y)
    assert default.n_boot == 1000 and default.level == 0.95
    assert (default.low, default.high) == pytest.approx(tuple(scipy_interval(x, y, 1000, 0, 0.95)), abs=1e-12)
    mean = bootstrap_ci(lambda a: a.mean(-1), x, vectorized=True)
    drawn = np.random.default_rng(0).integers(0, 15, size=(1000, 15))
    assert mean.n_boot == 1000
    assert (mean.low, mean.high) == pytest.approx(tuple(np.quantile(x[drawn].mean(-1), [0.025, 0.975])), abs=1e-12)
