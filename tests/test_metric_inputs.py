"""What the metrics accept and how they refuse (issue 16.2: the mutation run's survivors).

Every refusal is checked word for word, because the message is what a user sees when a notebook
stops: it must name the argument, its expected shape and the offending value or index. The
accepted inputs are the ones the chapters really hand over: torch tensors (bf16, fp16, with
grad), numpy half precision, object-dtype pandas columns, integer lists. Numerical edge cases are
the rank rule of ``svd_head`` at its boundary, block processing across more images than one
block, d_H = 2, and rows that are constant up to float64 rounding.
"""
from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from helpers.metrics import (accuracy_ratio, effective_robustness, expit, importance, importance_ratio, kurtosis,
                             logit, project, pruned_logits, pruning_curve, svd_head)
from helpers.metrics import directions, outliers, pruning
from helpers.metrics.directions import _as_matrix


def refuses(exc, message: str):
    """pytest.raises matching the whole message, not a part of it."""
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


# --------------------------------------------------------------------------------------------
# Robustness (Eq. 5, %acc)


@pytest.mark.parametrize("fn", [effective_robustness, accuracy_ratio])
def test_accuracies_are_refused_by_name_with_the_value(fn):
    with refuses(ValueError, "acc_shift must be accuracies as fractions in [0, 1] (got array(44.)); "
                             "divide percentages by 100"):
        fn(44, 0.6)
    with refuses(ValueError, "acc_in must be accuracies as fractions in [0, 1] (got array(60.)); "
                             "divide percentages by 100"):
        fn(0.44, 60)
    # each bound on its own: NaN, below 0, just above 1
    for bad in (float("nan"), -0.01, 1.01, float("inf")):
        with pytest.raises(ValueError, match=r"^acc_in must be accuracies as fractions in \[0, 1\]"):
            fn(0.44, bad)
    # the closed bounds 0 and 1 are accepted: a perfect model sits on the baseline (ER 0, %acc 1)
    assert fn(1.0, 1.0) == {effective_robustness: 0.0, accuracy_ratio: 1.0}[fn]
    assert fn(0.0, 0.5) == {effective_robustness: -1 / (1 + math.exp(1.49)), accuracy_ratio: 0.0}[fn]


def test_scalars_come_back_as_python_floats_and_arrays_as_arrays():
    for fn in (effective_robustness, accuracy_ratio):
        assert type(fn(0.44, 0.6)) is float
        out = fn(np.array([0.44, 0.43]), np.array([0.6, 0.76]))
        assert isinstance(out, np.ndarray) and out.shape == (2,)


def test_object_columns_are_read_as_numbers():
    # a results-table column that went through a merge with missing rows is object dtype
    acc_s = pd.Series([0.44, 0.43], dtype=object)
    acc_i = pd.Series([0.60, 0.76], dtype=object)
    np.testing.assert_allclose(effective_robustness(acc_s, acc_i), [0.205280, 0.078844], atol=1e-6)
    np.testing.assert_allclose(accuracy_ratio(acc_s, acc_i), [0.44 / 0.60, 0.43 / 0.76])
    np.testing.assert_allclose(logit(pd.Series([0.25, 0.5], dtype=object)), [-math.log(3), 0.0])
    np.testing.assert_allclose(expit(pd.Series([0.0, math.log(3)], dtype=object)), [0.5, 0.75])


def test_an_untrained_model_raises_no_floating_point_warning():
    # ACC(I) = 0: logit(0) = -inf is the intended limit (baseline 0), not a warning in the notebook
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert effective_robustness(0.01, 0.0) == pytest.approx(0.01)
        assert math.isnan(accuracy_ratio(0.01, 0.0))
        np.testing.assert_allclose(effective_robustness(np.array([0.01, 0.44]), np.array([0.0, 0.6])),
                                   [0.01, 0.205280], atol=1e-6)


# --------------------------------------------------------------------------------------------
# The shared array conversion (directions._as_matrix)


def test_torch_tensors_of_every_kind_become_numpy():
    h = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]])
    for t in (h.to(torch.bfloat16), h.half(), h.clone().requires_grad_(True)):
        a = _as_matrix(t, "h", dtype=None)
        assert isinstance(a, np.ndarray) and a.dtype == np.float32
        np.testing.assert_array_equal(a, h.numpy())
    assert _as_matrix(h.double(), "h", dtype=None).dtype == np.float64
    # numpy half precision is widened to float32, not to float64; float32 stays float32
    assert _as_matrix(np.ones((2, 2), np.float16), "h", dtype=None).dtype == np.float32
    assert _as_matrix(np.ones((2, 2), np.float32), "h", dtype=None).dtype == np.float32
    # integers become float64 when the caller keeps the input's precision
    i = _as_matrix([[1, 2], [3, 4]], "h", dtype=None)
    assert i.dtype == np.float64 and i.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert _as_matrix(np.ones((2, 2), np.int8), "h", dtype=None).dtype == np.float64


def test_metrics_take_a_bf16_tensor_with_grad_like_its_float32_values():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(6, 4)).astype(np.float32)
    W = rng.normal(size=(3, 4)).astype(np.float32)
    hb = torch.from_numpy(h).to(torch.bfloat16)
    exact = hb.float().numpy()  # the bf16 values themselves, widened
    t = hb.clone().requires_grad_(True)
    assert kurtosis(t) == pytest.approx(kurtosis(exact), rel=1e-12)
    np.testing.assert_allclose(importance(W, t), importance(W, exact), rtol=1e-12)
    np.testing.assert_allclose(project(t, svd_head(W)[2]), project(exact, svd_head(W)[2]), rtol=1e-6)


def test_non_finite_values_are_located():
    h = np.ones((3, 4))
    h[1, 2] = np.nan
    with refuses(ValueError, "h contains NaN or inf (first at index [1, 2])"):
        kurtosis(h)
    h[1, 2] = np.inf
    with refuses(ValueError, "h contains NaN or inf (first at index [1, 2])"):
        importance(np.eye(4), h)


# --------------------------------------------------------------------------------------------
# Privileged directions (Eq. 2, Eq. 3)


def test_svd_head_rank_rule_at_its_boundary():
    # sigma = (2, 1): 1 > 0.5 * 2 is false, so rank 1 at rtol = 0.5 and rank 2 just below it
    assert svd_head(np.diag([2.0, 1.0]), rtol=0.5)[1].tolist() == [2.0]
    assert svd_head(np.diag([2.0, 1.0]), rtol=0.4999)[1].tolist() == [2.0, 1.0]
    # an exactly rank-1 head (sigma_2 = 0) keeps its one direction
    U, sigma, Vt = svd_head(np.array([[3.0, 0.0], [0.0, 0.0]]))
    assert sigma.tolist() == [3.0] and Vt.tolist() == [[1.0, 0.0]] and U.tolist() == [[1.0], [0.0]]
    # a single-class head (K = 1) is a valid rank-1 head
    U, sigma, Vt = svd_head(np.array([[0.0, -3.0, 4.0]]))
    assert sigma == pytest.approx([5.0]) and Vt == pytest.approx(np.array([[0.0, -0.6, 0.8]]))
    assert U == pytest.approx(np.array([[1.0]]))


def test_svd_head_sign_rule_flips_u_and_v_together():
    # v's largest-magnitude entry is made positive; W = U diag(sigma) Vt still holds
    W = np.array([[0.0, -2.0], [-1.0, 0.0]])
    U, sigma, Vt = svd_head(W)
    assert sigma.tolist() == [2.0, 1.0]
    assert Vt.tolist() == [[0.0, 1.0], [1.0, 0.0]] and U.tolist() == [[-1.0, 0.0], [0.0, -1.0]]
    np.testing.assert_allclose((U * sigma) @ Vt, W)


def test_svd_head_refusals():
    with refuses(ValueError, "W must be a non-empty K x d_H matrix; got shape (0, 3)"):
        svd_head(np.zeros((0, 3)))
    with refuses(ValueError, "W is zero: it has no singular directions"):
        svd_head(np.zeros((2, 3)))
    with refuses(ValueError, "W must be a 2-D array (K classes x d_H); got shape (3,)"):
        svd_head(np.ones(3))


def test_project_keeps_precision_and_refuses_by_name():
    Vt = np.eye(3)[:2]
    assert project(np.ones((2, 3), np.float32), Vt).dtype == np.float32
    out = project([[1, 2, 3]], Vt)  # integer activations: float64, values h . v_i
    assert out.dtype == np.float64 and out.tolist() == [[1.0, 2.0]]
    with refuses(ValueError, "h must be a 2-D array (n_images x d_H); got shape (3,)"):
        project(np.ones(3), Vt)
    with refuses(ValueError, "Vt must be a 2-D array (directions x d_H); got shape (3,)"):
        project(np.ones((2, 3)), np.ones(3))
    with refuses(ValueError, "Vt contains NaN or inf (first at index [0, 1])"):
        project(np.ones((2, 3)), np.array([[1.0, np.nan, 0.0]]))
    with refuses(ValueError, "h has d_H = 3 but Vt has 2 columns"):
        project(np.ones((2, 3)), np.eye(2))


def test_importance_refusals():
    W = np.eye(3)
    with refuses(ValueError, "h must be a 2-D array (n_images x d_H); got shape (3,)"):
        importance(W, np.ones(3))
    with refuses(ValueError, "h has d_H = 2 but W has 3 columns"):
        importance(W, np.ones((4, 2)))
    with refuses(ValueError, "h has no images"):
        importance(W, np.zeros((0, 3)))
    h = np.ones((9, 3))
    h[[0, 2, 3, 5, 6, 8]] = 0  # six zero rows: the first five are named
    with refuses(ValueError, "h has 6 all-zero activation vectors (rows [0, 2, 3, 5, 6]): "
                             "their cosine with any direction is undefined"):
        importance(W, h)


def test_importance_uses_the_svd_it_is_given():
    rng = np.random.default_rng(1)
    W, h = rng.normal(size=(4, 3)), rng.normal(size=(10, 3))
    svd = svd_head(W)
    # W is not read at all when its SVD is passed (bootstrap resamples reuse one SVD)
    np.testing.assert_array_equal(importance(None, h, svd=svd), importance(W, h))
    assert importance_ratio(None, h, svd=svd) == importance_ratio(W, h)
    # a different SVD gives that SVD's importances: Eq. (2) with sigma = (1, 1, 1) and V = I
    flat = (np.eye(3), np.ones(3), np.eye(3))
    by_hand = np.abs(h / np.linalg.norm(h, axis=1, keepdims=True)).mean(axis=0) / 3
    np.testing.assert_allclose(importance(W, h, svd=flat), by_hand)


def test_importance_over_several_blocks_of_images(monkeypatch):
    rng = np.random.default_rng(2)
    W, h = rng.normal(size=(5, 4)), rng.normal(size=(11, 4))
    _, sigma, Vt = svd_head(W)
    cos = np.abs(h @ Vt.T) / np.linalg.norm(h, axis=1, keepdims=True)
    by_hand = sigma / sigma.sum() * cos.mean(axis=0)
    monkeypatch.setattr(directions, "_ROWS_PER_BLOCK", 3)  # 11 images: blocks of 3, 3, 3, 2
    np.testing.assert_allclose(importance(W, h), by_hand, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Kurtosis (Eq. 1)


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
    assert caught[0].filename == __file__  # stacklevel 2: the notebook line that called kurtosis
    assert value == pytest.approx(scipy.stats.kurtosis(h[1:], axis=1, fisher=False).mean())


# --------------------------------------------------------------------------------------------
# Pruning (Appendix G)


def test_pruning_refusals():
    W, h = np.eye(2, 3), np.ones((4, 3))
    with refuses(ValueError, "h must be a 2-D array (n_images x d_H); got shape (3,)"):
        pruned_logits(W, np.ones(3), 0.5)
    with refuses(ValueError, "W must be a 2-D array (K classes x d_H); got shape (3,)"):
        pruned_logits(np.ones(3), h, 0.5)
    with refuses(ValueError, "h has d_H = 3 but W has 2 columns"):
        pruned_logits(np.eye(2), h, 0.5)
    with refuses(ValueError, "h has all-zero activation vectors: they cannot be normalised"):
        pruned_logits(W, np.zeros((1, 3)), 0.5)
    with refuses(ValueError, "bias must be a 1-D array (K); got shape (2, 1)"):
        pruned_logits(W, h, 0.5, bias=np.ones((2, 1)))
    with refuses(ValueError, "bias has 3 entries but W has 2 classes"):
        pruned_logits(W, h, 0.5, bias=np.ones(3))
    with refuses(ValueError, "fraction must be in [0, 1]; got 1.5"):
        pruned_logits(W, h, 1.5)
    with refuses(ValueError, "labels must be (4,) class indices, one per image of h; got shape (3,)"):
        pruning_curve(W, h, [0, 1, 0], [0.0])
    with refuses(ValueError, "fractions must be a 1-D sequence; got shape (1, 2)"):
        pruning_curve(W, h, [0, 1, 0, 1], [[0.0, 0.5]])


def test_pruning_curve_over_several_blocks_and_steps(monkeypatch):
    rng = np.random.default_rng(4)
    W, h = rng.normal(size=(4, 6)), rng.normal(size=(9, 6))
    labels = rng.integers(0, 4, 9)
    fractions = [0.0, 0.25, 0.5, 0.75, 1.0]
    U, sigma, Vt = np.linalg.svd(W, full_matrices=False)
    hn = h / np.linalg.norm(h, axis=1, keepdims=True)
    by_hand = [np.mean(((hn @ ((U[:, :q] * sigma[:q]) @ Vt[:q]).T)).argmax(axis=1) == labels)
               for q in (4, 3, 2, 1, 0)]
    monkeypatch.setattr(pruning, "_ROWS_PER_BLOCK", 4)  # 9 images: blocks of 4, 4, 1
    np.testing.assert_allclose(pruning_curve(W, h, labels, fractions), by_hand)
