"""Eq. (1), activation kurtosis: against scipy, against closed-form planted outliers, and its
refusals."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from conftest import refuses
from helpers.metrics import kurtosis, outliers, planted_kurtosis


def exact_bulk(size):
    """Bulk coordinates whose own mean, variance, third and fourth moments are exactly 0, 1, 0, 3:
    2/3 zeros and 1/6 each at +-sqrt(3)."""
    assert size % 6 == 0
    return np.concatenate([np.zeros(4 * size // 6), np.full(size // 6, np.sqrt(3)),
                           np.full(size // 6, -np.sqrt(3))])


def test_matches_scipy_row_by_row():
    rng = np.random.default_rng(0)
    h = rng.standard_t(df=5, size=(40, 96)) * rng.uniform(0.1, 10, size=(40, 1)) + 3.0
    expected = np.array([scipy.stats.kurtosis(row, fisher=False, bias=True) for row in h])
    np.testing.assert_allclose(kurtosis(h, per_image=True), expected, rtol=1e-12)
    assert kurtosis(h) == pytest.approx(expected.mean(), rel=1e-12)


def test_gaussian_vectors_give_three():
    h = np.random.default_rng(1).normal(size=(300, 1024))
    assert kurtosis(h) == pytest.approx(3.0, abs=0.05)


@pytest.mark.parametrize("k,a", [(0, 0.0), (1, 50.0), (3, 8.0), (12, -5.0), (6, 2.0)])
def test_planted_outliers_match_the_closed_form_exactly(k, a):
    d_H = 6 * 40 + k
    row = np.concatenate([exact_bulk(d_H - k), np.full(k, a)])
    h = np.stack([row, np.random.default_rng(k).permutation(row)])
    predicted = planted_kurtosis(d_H, k, a)
    np.testing.assert_allclose(kurtosis(h, per_image=True), predicted, rtol=1e-10)
    assert predicted == pytest.approx(scipy.stats.kurtosis(row, fisher=False), rel=1e-10)


def test_planted_outliers_in_gaussian_vectors_approach_the_closed_form():
    rng = np.random.default_rng(2)
    d_H, k, a = 2048, 4, 30.0
    h = rng.normal(size=(200, d_H))
    h[:, rng.choice(d_H, k, replace=False)] = a
    predicted = planted_kurtosis(d_H, k, a)
    assert predicted > 100
    assert kurtosis(h) == pytest.approx(predicted, rel=0.05)


def test_the_closed_form_limits():
    assert planted_kurtosis(512, 0, 123.0) == pytest.approx(3.0)
    assert planted_kurtosis(512, 2, 1e4) == pytest.approx(512 / 2, rel=0.01)


def test_kurtosis_is_basis_dependent_a_rotation_hides_outliers():
    # Appendix F: an outlier feature lives in a basis; rotating the space spreads it out.
    rng = np.random.default_rng(3)
    d_H = 256
    h = rng.normal(size=(200, d_H))
    h[:, :2] = 40.0
    Q, _ = np.linalg.qr(rng.normal(size=(d_H, d_H)))
    assert kurtosis(h) > 50
    assert kurtosis(h @ Q) == pytest.approx(3.0, abs=0.3)


def test_torch_and_half_precision_inputs():
    h = np.random.default_rng(4).gamma(2.0, size=(20, 64)).astype(np.float32)
    ref = kurtosis(h, per_image=True)
    np.testing.assert_allclose(kurtosis(torch.from_numpy(h), per_image=True), ref, rtol=1e-12)
    np.testing.assert_allclose(kurtosis(torch.from_numpy(h).half(), per_image=True), ref, rtol=1e-2)


def test_constant_vectors_are_nan_and_left_out_of_the_mean_with_a_warning():
    rng = np.random.default_rng(5)
    h = rng.normal(size=(5, 32))
    h[2] = 7.25
    per_image = kurtosis(h, per_image=True)
    assert np.isnan(per_image[2]) and np.isfinite(np.delete(per_image, 2)).all()
    with pytest.warns(RuntimeWarning, match="1 of 5 activation vectors are constant"):
        mean = kurtosis(h)
    assert mean == pytest.approx(np.delete(per_image, 2).mean())
    with pytest.raises(ValueError, match="every activation vector in h is constant"):
        kurtosis(np.ones((3, 8)))


@pytest.mark.parametrize("bad,match", [
    (np.zeros(10), "2-D"),
    (np.zeros((2, 3, 4)), "2-D"),
    (np.zeros((4, 1)), "at least 2 components"),
    (np.zeros((0, 8)), "no images"),
    (np.array([[1.0, np.nan, 2.0]]), "NaN"),
])
def test_refusals(bad, match):
    with pytest.raises(ValueError, match=match):
        kurtosis(bad)


def test_planted_kurtosis_refusals():
    with pytest.raises(ValueError, match="0 <= k < d_H"):
        planted_kurtosis(8, 8, 1.0)
    with pytest.raises(TypeError, match="d_H and k must be integers; got 8.0, 1"):
        planted_kurtosis(8.0, 1, 1.0)


# --------------------------------------------------------------------------------------------
# Kurtosis (issue 16.2): inputs accepted and refusals word for word


def test_kurtosis_of_two_component_vectors():
    # d_H = 2 is the smallest defined case: (h - mu) / sigma = (+1, -1), so Eq. (1) gives 1
    assert kurtosis(np.array([[1.0, -1.0], [5.0, 2.0]])) == pytest.approx(1.0)
    with refuses(ValueError, "kurtosis needs at least 2 components per activation vector; d_H = 1"):
        kurtosis(np.ones((3, 1)))


def test_kurtosis_refusals():
    with refuses(ValueError, "h must be a 2-D array (n_images x d_H); got shape (4,)"):
        kurtosis(np.ones(4))
    with refuses(ValueError, "h has no images"):
        kurtosis(np.zeros((0, 4)))
    with refuses(ValueError, "every activation vector in h is constant: kurtosis is undefined"):
        kurtosis(np.full((2, 4), 3.0))


def test_kurtosis_over_several_blocks_matches_scipy(monkeypatch):
    h = np.random.default_rng(3).standard_t(3, size=(7, 9))
    monkeypatch.setattr(outliers, "_ROWS_PER_BLOCK", 2)  # 7 images: blocks of 2, 2, 2, 1
    np.testing.assert_allclose(kurtosis(h, per_image=True), scipy.stats.kurtosis(h, axis=1, fisher=False),
                               rtol=1e-12)


def test_constant_rows_are_judged_on_their_own_scale():
    # 1e6 + 0.1 repeated: float64 rounding of the mean leaves a spread of ~1e-10, which is noise
    # on a row of magnitude 1e6; a small row next to a huge one is not constant
    small = np.array([0.0, 1e-3, -1e-3, 2e-3, 0.0, 1e-3, -2e-3])
    h = np.stack([np.full(7, 1e6 + 0.1), small, np.array([1e10, -1e10, 0, 0, 5e9, 0, 0])])
    k = kurtosis(h, per_image=True)
    assert math.isnan(k[0])
    np.testing.assert_allclose(k[1:], scipy.stats.kurtosis(h[1:], axis=1, fisher=False), rtol=1e-9)


def test_constant_rows_are_left_out_with_a_warning_at_the_callers_line():
    h = np.stack([np.full(5, 2.0), np.array([1.0, 2, 3, 4, 10]), np.array([0.0, 0, 0, 1, 0])])
    with pytest.warns(RuntimeWarning) as caught:
        value = kurtosis(h)
    assert [str(w.message) for w in caught] == [
        "kurtosis: 1 of 3 activation vectors are constant and were left out of the mean"]
    # stacklevel 2: the warning points at the line that called kurtosis, not inside the metric
    # (under `make mutate`, mutmut's trampoline is one more frame between the two)
    assert caught[0].filename == __file__ or caught[0].filename.endswith("trampoline.py"), caught[0].filename
    assert value == pytest.approx(scipy.stats.kurtosis(h[1:], axis=1, fisher=False).mean())
