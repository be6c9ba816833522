"""Appendix G pruning: against numpy's SVD reconstruction and per-fraction logits, and on a planted
low-rank head."""
import numpy as np
import pytest

from conftest import refuses
from helpers.metrics import prune_singular_directions, pruned_logits, pruning, pruning_curve


def reconstruct(W, n_pruned):
    """Oracle: numpy's SVD, keeping all but the n_pruned smallest singular values."""
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    keep = len(s) - n_pruned
    return sum(s[i] * np.outer(U[:, i], Vt[i]) for i in range(keep)) if keep else np.zeros_like(W)


@pytest.mark.parametrize("fraction,n_pruned", [(0.0, 0), (0.3, 3), (0.35, 3), (0.8, 8), (1.0, 10)])
def test_prune_matches_svd_reconstruction(fraction, n_pruned):
    W = np.random.default_rng(0).normal(size=(15, 10))
    np.testing.assert_allclose(prune_singular_directions(W, fraction), reconstruct(W, n_pruned),
                               atol=1e-12)


def test_pruned_logits_normalise_and_add_the_bias():
    rng = np.random.default_rng(1)
    W, h, bias = rng.normal(size=(6, 4)), rng.normal(size=(9, 4)) * 5, rng.normal(size=6)
    h_hat = h / np.linalg.norm(h, axis=1, keepdims=True)
    np.testing.assert_allclose(pruned_logits(W, h, 0.5, bias=bias),
                               h_hat @ reconstruct(W, 2).T + bias, atol=1e-12)
    np.testing.assert_allclose(pruned_logits(W, h, 0.0, normalize=False), h @ W.T, atol=1e-12)


def test_pruning_curve_equals_per_fraction_logits():
    rng = np.random.default_rng(2)
    W, h = rng.normal(size=(8, 12)), rng.normal(size=(300, 12))
    labels = rng.integers(0, 8, size=300)
    bias = rng.normal(size=8) * 0.1
    fractions = [0.0, 0.25, 0.5, 0.5, 0.9, 1.0, 0.1]
    expected = [np.mean(pruned_logits(W, h, f, bias=bias).argmax(axis=1) == labels) for f in fractions]
    np.testing.assert_allclose(pruning_curve(W, h, labels, fractions, bias=bias), expected)
    subset = np.array([1, 4, 6])
    sub_labels = rng.choice(subset, size=300)
    expected_sub = [np.mean(subset[pruned_logits(W, h, f)[:, subset].argmax(axis=1)] == sub_labels)
                    for f in fractions]
    got = pruning_curve(W, h, sub_labels, fractions, predict=lambda z: subset[z[:, subset].argmax(axis=1)])
    np.testing.assert_allclose(got, expected_sub)


def test_planted_low_rank_head_is_flat_until_its_rank_is_reached():
    rng = np.random.default_rng(3)
    K, d_H, rank = 50, 30, 6  # K >= d_H: rank(W) = d_H, so fraction k / d_H prunes k directions
    Q, _ = np.linalg.qr(rng.normal(size=(d_H, d_H)))
    signal = rng.normal(size=(K, rank)) @ Q[:, :rank].T * 10
    noise = rng.normal(size=(K, d_H - rank)) @ Q[:, rank:].T * 0.01
    h = rng.normal(size=(1000, d_H))
    labels = (h @ signal.T).argmax(axis=1)
    n_pruned = np.arange(d_H + 1)
    acc = pruning_curve(signal + noise, h, labels, n_pruned / d_H)
    # Pruning the d_H - rank noise directions leaves the predictions intact ...
    assert (acc[: d_H - rank + 1] > 0.99).all()
    # ... pruning any planted direction costs accuracy, and all of them leaves chance level.
    assert acc[d_H - rank + 1] < 0.95 and acc[d_H - rank + 4] < 0.7
    assert acc[-1] == np.mean(labels == 0)


@pytest.mark.parametrize("call,match", [
    (lambda W, h: prune_singular_directions(W, 1.5), r"\[0, 1\]"),
    (lambda W, h: pruned_logits(W, h[:, :3], 0.5), "d_H = 3 but W has 4"),
    (lambda W, h: pruned_logits(W, np.zeros_like(h), 0.5), "cannot be normalised"),
    (lambda W, h: pruned_logits(W, h, 0.5, bias=np.zeros(2)), "bias has 2 entries"),
    (lambda W, h: pruning_curve(W, h, np.zeros(3, int), [0.5]), "labels must be"),
    (lambda W, h: pruning_curve(W, h, np.zeros(5, int), [[0.5]]), "1-D"),
])
def test_refusals(call, match):
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match=match):
        call(rng.normal(size=(6, 4)), rng.normal(size=(5, 4)))


def test_pruning_curve_over_several_row_blocks(monkeypatch):
    # more images than one block: every block is scored and added up (oracle: numpy SVD, one pass)
    import helpers.metrics.pruning as mod

    rng = np.random.default_rng(12)
    W, h = rng.normal(size=(7, 5)), rng.normal(size=(23, 5))
    labels = rng.integers(0, 7, size=23)
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    x = h / np.linalg.norm(h, axis=1, keepdims=True)
    expected = [np.mean((x @ ((U[:, :k] * s[:k]) @ Vt[:k]).T).argmax(1) == labels) for k in (5, 3, 1)]
    monkeypatch.setattr(mod, "_ROWS_PER_BLOCK", 6)
    np.testing.assert_allclose(pruning_curve(W, h, labels, [0.0, 0.4, 0.8]), expected)
    with pytest.raises(ValueError, match=r"labels must be \(23,\) class indices, one per image of h; got shape \(22,\)"):
        pruning_curve(W, h, labels[:-1], [0.0])


# --------------------------------------------------------------------------------------------
# Pruning (issue 16.2): inputs accepted and refusals word for word


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
