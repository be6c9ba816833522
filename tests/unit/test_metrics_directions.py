"""SVD of the head, Eq. (2) importance and Eq. (3) importance ratio: against numpy's SVD and an
explicit loop, and on heads and activations with planted privileged directions."""
import numpy as np
import pytest
import torch

from conftest import refuses
from helpers.metrics import directions, importance, importance_ratio, kurtosis, project, svd_head
from helpers.metrics.arrays import as_matrix


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


# --------------------------------------------------------------------------------------------
# The shared array conversion and privileged directions (issue 16.2): inputs accepted and refusals word for word


def test_torch_tensors_of_every_kind_become_numpy():
    h = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]])
    for t in (h.to(torch.bfloat16), h.half(), h.clone().requires_grad_(True)):
        a = as_matrix(t, "h", dtype=None)
        assert isinstance(a, np.ndarray) and a.dtype == np.float32
        np.testing.assert_array_equal(a, h.numpy())
    assert as_matrix(h.double(), "h", dtype=None).dtype == np.float64
    # numpy half precision is widened to float32, not to float64; float32 stays float32
    assert as_matrix(np.ones((2, 2), np.float16), "h", dtype=None).dtype == np.float32
    assert as_matrix(np.ones((2, 2), np.float32), "h", dtype=None).dtype == np.float32
    # integers become float64 when the caller keeps the input's precision
    i = as_matrix([[1, 2], [3, 4]], "h", dtype=None)
    assert i.dtype == np.float64 and i.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert as_matrix(np.ones((2, 2), np.int8), "h", dtype=None).dtype == np.float64


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
