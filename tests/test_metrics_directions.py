"""SVD of the head, Eq. (2) importance and Eq. (3) importance ratio: against numpy's SVD and an
explicit loop, and on heads and activations with planted privileged directions."""
import numpy as np
import pytest
import torch

from helpers.metrics import importance, importance_ratio, project, svd_head


def orthonormal_rows(rng, k, d):
    Q, _ = np.linalg.qr(rng.normal(size=(d, k)))
    return Q.T


def test_svd_head_reconstructs_w_and_fixes_signs():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(12, 8))
    U, sigma, Vt = svd_head(W)
    np.testing.assert_allclose(sigma, np.linalg.svd(W, compute_uv=False), rtol=1e-12)
    np.testing.assert_allclose((U * sigma) @ Vt, W, atol=1e-12)
    np.testing.assert_allclose(Vt @ Vt.T, np.eye(8), atol=1e-12)
    assert (Vt[np.arange(8), np.abs(Vt).argmax(axis=1)] > 0).all()
    _, _, Vt_flipped = svd_head(-W)
    np.testing.assert_allclose(np.abs(Vt_flipped), np.abs(Vt), atol=1e-12)


def test_svd_head_truncates_to_the_numerical_rank():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(10, 3)) @ rng.normal(size=(3, 7))
    U, sigma, Vt = svd_head(W)
    assert U.shape == (10, 3) and sigma.shape == (3,) and Vt.shape == (3, 7)
    np.testing.assert_allclose((U * sigma) @ Vt, W, atol=1e-12)
    # float32 precision sets a higher noise floor than float64.
    W32 = (W + 1e-9 * rng.normal(size=W.shape)).astype(np.float32)
    assert svd_head(W32)[1].size == 3
    assert svd_head(W + 1e-9 * rng.normal(size=W.shape))[1].size == 7


def importance_by_loop(W, h):
    """Eq. (2) written out: numpy's SVD, then one cosine at a time."""
    _, s, Vt = np.linalg.svd(W, full_matrices=False)
    r = int((s > max(W.shape) * np.finfo(float).eps * s[0]).sum())
    out = []
    for i in range(r):
        cosines = [abs(v @ Vt[i]) / (np.linalg.norm(v) * np.linalg.norm(Vt[i])) for v in h]
        out.append(s[i] / s[:r].sum() * sum(cosines) / len(h))
    return np.array(out)


def test_importance_matches_an_explicit_loop():
    rng = np.random.default_rng(2)
    W = rng.normal(size=(9, 6)) * rng.uniform(0.1, 5, size=6)
    h = rng.standard_t(3, size=(25, 6))
    imp = importance(W, h)
    np.testing.assert_allclose(imp, importance_by_loop(W, h), rtol=1e-12)
    assert ((imp > 0) & (imp < 1)).all() and imp.sum() <= 1
    assert importance_ratio(W, h) == pytest.approx(imp.max() / imp.mean())
    np.testing.assert_allclose(importance(torch.from_numpy(W), torch.from_numpy(h)), imp, rtol=1e-12)
    np.testing.assert_allclose(importance(W, h, svd=svd_head(W)), imp)


def planted_head(rng, d_H=64, dominant=10.0):
    """A head whose first singular direction v_1 has sigma_1 = dominant, the others sigma = 1."""
    V = orthonormal_rows(rng, d_H, d_H)
    U = orthonormal_rows(rng, d_H, d_H).T
    sigma = np.ones(d_H)
    sigma[0] = dominant
    return (U * sigma) @ V, V[0]


def test_outlier_direction_aligned_with_the_dominant_singular_vector_is_privileged():
    rng = np.random.default_rng(3)
    W, v1 = planted_head(rng)
    h = rng.normal(size=(500, 64)) + 20.0 * v1
    imp = importance(W, h)
    assert imp.argmax() == 0
    assert importance_ratio(W, h) > 30


def test_isotropic_head_and_activations_give_a_ratio_near_one():
    rng = np.random.default_rng(4)
    W = orthonormal_rows(rng, 64, 64) * 3.0
    h = rng.normal(size=(2000, 64))
    assert 1.0 <= importance_ratio(W, h) < 1.2


def test_outlier_feature_in_the_null_space_of_the_head_is_ignored():
    # Section 4: an outlier feature in ker W never reaches the logits, so no direction of W is
    # privileged by it.
    rng = np.random.default_rng(5)
    V = orthonormal_rows(rng, 64, 64)
    # Distinct singular values, so the right singular vectors are V's first 32 rows.
    W = (orthonormal_rows(rng, 32, 32).T * np.linspace(1.2, 1.0, 32)) @ V[:32]
    h = rng.normal(size=(2000, 64))
    h_outlier = h + 50.0 * V[40]
    assert importance_ratio(W, h_outlier) < 1.3
    assert importance_ratio(W, h + 50.0 * V[3]) > 10


def test_project_is_h_times_v():
    rng = np.random.default_rng(6)
    h = rng.normal(size=(7, 5)).astype(np.float32)
    Vt = svd_head(rng.normal(size=(4, 5)))[2]
    P = project(h, Vt)
    assert P.shape == (7, 4) and P.dtype == np.float32
    np.testing.assert_allclose(P, h.astype(float) @ Vt.T, rtol=1e-5)


@pytest.mark.parametrize("call,match", [
    (lambda: importance(np.ones((3, 4)), np.ones((5, 3))), "d_H = 3 but W has 4"),
    (lambda: importance(np.eye(4), np.zeros((2, 4))), "all-zero activation vectors"),
    (lambda: importance(np.eye(4), np.zeros((0, 4))), "no images"),
    (lambda: svd_head(np.zeros((3, 4))), "W is zero"),
    (lambda: svd_head(np.ones(4)), "2-D"),
    (lambda: project(np.ones((2, 3)), np.ones((2, 4))), "d_H = 3 but Vt has 4"),
    (lambda: importance(np.eye(3), np.full((2, 3), np.inf)), "NaN or inf"),
])
def test_refusals(call, match):
    with pytest.raises(ValueError, match=match):
        call()
