"""Bootstrap intervals and rank correlations: against scipy, a loop, and planted distributions."""
import numpy as np
import pytest
import scipy.stats

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
