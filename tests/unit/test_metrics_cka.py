"""Appendix C CKA: the full-batch linear CKA and the unbiased minibatch CKA against formulas written
out here, their invariances, planted dependence, and the faults known from torch_cka."""
import numpy as np
import pytest
import torch

from conftest import refuses
from helpers.metrics import MinibatchCKA, cka_linear, cka_minibatch


def hsic_biased(K, L):
    """Gretton et al. (2005): tr(K H L H) / (n - 1)^2."""
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def hsic_unbiased(K, L):
    """Song et al. (2012), HSIC_1, on Gram matrices with zeroed diagonals."""
    n = K.shape[0]
    K, L = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))


def cka_from(hsic, x, y):
    K, L = x @ x.T, y @ y.T
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def related(seed, n, p=20, q=15, noise=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    y = x @ rng.normal(size=(p, q)) + noise * rng.normal(size=(n, q))
    return x, y


@pytest.mark.parametrize("n", [12, 200], ids=["gram-form", "feature-form"])
def test_cka_linear_matches_the_plain_formula(n):
    x, y = related(0, n)
    x += 3.0
    assert cka_linear(x, y) == pytest.approx(cka_from(hsic_biased, x, y), rel=1e-10)


def test_cka_linear_invariances():
    rng = np.random.default_rng(1)
    x, y = related(1, 100)
    Q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    assert cka_linear(x, x @ Q * 7.5 + 2.0) == pytest.approx(1.0, abs=1e-12)
    assert cka_linear(x @ Q, y * 0.1) == pytest.approx(cka_linear(x, y), rel=1e-10)
    # Not invariant to an anisotropic rescaling: CKA is not a CCA.
    assert cka_linear(x, x * np.r_[np.full(10, 10.0), np.ones(10)]) < 0.9
    assert cka_linear(torch.from_numpy(x).float(), torch.from_numpy(y).float()) == pytest.approx(
        cka_linear(x, y), rel=1e-5)


def test_one_minibatch_of_all_the_data_is_the_full_unbiased_cka():
    x, y = related(2, 40)
    x += 5.0
    assert cka_minibatch([x], [y]) == pytest.approx(cka_from(hsic_unbiased, x, y), rel=1e-10)
    assert cka_minibatch([x], [x @ np.eye(20) * 3]) == pytest.approx(1.0, abs=1e-12)


def test_minibatch_estimate_converges_to_the_full_unbiased_estimate():
    x, y = related(3, 1200, noise=3.0)
    full = cka_from(hsic_unbiased, x, y)
    batches = range(0, 1200, 40)
    estimate = cka_minibatch([x[i:i + 40] for i in batches], [y[i:i + 40] for i in batches])
    assert estimate == pytest.approx(full, abs=0.02)
    # Averaging biased per-batch CKAs instead stays far off: why the HSICs are averaged first.
    per_batch = np.mean([cka_linear(x[i:i + 40], y[i:i + 40]) for i in batches])
    assert per_batch - full > 0.05


def test_independent_representations_have_unbiased_cka_near_zero():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(1000, 30)), rng.normal(size=(1000, 30))
    batches = range(0, 1000, 20)
    assert abs(cka_minibatch([x[i:i + 20] for i in batches], [y[i:i + 20] for i in batches])) < 0.03
    assert cka_linear(x[:20], y[:20]) > 0.3


def test_grid_keeps_the_given_layer_order_and_matches_pairwise_cka():
    rng = np.random.default_rng(5)
    names = ["layer10", "layer2", "final"]
    batches = []
    for _ in range(4):
        base = rng.normal(size=(16, 8))
        xs = {"layer10": base, "layer2": rng.normal(size=(16, 5)), "final": base @ rng.normal(size=(8, 6))}
        ys = {"b": torch.from_numpy(base[:, :4]).float(), "a": base[:, ::-1] * 2}
        batches.append((xs, ys))
    acc = MinibatchCKA(layers_x=names)
    for xs, ys in batches:
        acc.update(xs, ys)
    grid = acc.compute()
    assert grid.shape == (3, 2) and acc.layers_y == ["b", "a"] and acc.n_batches == 4
    for i, lx in enumerate(names):
        for j, ly in enumerate(["b", "a"]):
            pair = cka_minibatch([xs[lx] for xs, _ in batches], [np.asarray(ys[ly]) for _, ys in batches])
            assert grid[i, j] == pytest.approx(pair, rel=1e-6)
    assert grid[0, 1] == pytest.approx(1.0)


@pytest.mark.parametrize("xs,ys,match", [
    ({"a": np.ones((3, 4))}, {"b": np.ones((3, 4))}, "at least 4 images"),
    ({"a": np.ones((50, 8, 16))}, {"b": np.ones((8, 4))}, "Pool or select tokens first"),
    ({"a": np.ones((8, 4))}, {"b": np.ones((7, 4))}, "has 7 images but this minibatch has 8"),
    ({"a": np.full((8, 4), np.nan)}, {"b": np.ones((8, 4))}, "NaN"),
])
def test_minibatch_refusals(xs, ys, match):
    with pytest.raises(ValueError, match=match):
        MinibatchCKA().update(xs, ys)


def test_accumulator_refuses_changed_layers_empty_and_constant_input():
    acc = MinibatchCKA()
    with pytest.raises(ValueError, match="no minibatch"):
        acc.compute()
    rng = np.random.default_rng(6)
    acc.update({"a": rng.normal(size=(6, 3)), "c": np.ones((6, 3))}, {"b": rng.normal(size=(6, 2))})
    with pytest.raises(KeyError, match="missing \\['c'\\]"):
        acc.update({"a": rng.normal(size=(6, 3))}, {"b": rng.normal(size=(6, 2))})
    with pytest.raises(ValueError, match="same vector for every image"):
        acc.compute()
    with pytest.raises(ValueError, match="2 batches of x but 1 of y"):
        cka_minibatch([np.ones((5, 2))] * 2, [np.ones((5, 2))])


@pytest.mark.parametrize("x,y,match", [
    (np.ones((10, 3, 2)), np.ones((10, 3)), "Pool or select tokens first"),
    (np.ones((10, 3)), np.ones((9, 3)), "x has 10 images but y has 9"),
    (np.ones((1, 3)), np.ones((1, 3)), "at least 2 images"),
    (np.ones((10, 3)), np.random.default_rng(0).normal(size=(10, 3)), "x is the same vector"),
])
def test_cka_linear_refusals(x, y, match):
    with pytest.raises(ValueError, match=match):
        cka_linear(x, y)


def test_state_round_trip_resumes_the_same_sums():
    """A pass checkpointed after k minibatches and resumed from state() gives the same grid as one
    uninterrupted pass (helpers.engine.cka_pass stores exactly these accumulators)."""
    rng = np.random.default_rng(3)
    batches = [({"a": rng.normal(size=(8, 5)), "b": rng.normal(size=(8, 3))},
                {"c": rng.normal(size=(8, 4))}) for _ in range(4)]
    whole = MinibatchCKA()
    for xs, ys in batches:
        whole.update(xs, ys)
    first = MinibatchCKA()
    for xs, ys in batches[:2]:
        first.update(xs, ys)
    resumed = MinibatchCKA(["a", "b"], ["c"])
    resumed.load_state({k: np.array(v) for k, v in first.state().items()})
    for xs, ys in batches[2:]:
        resumed.update(xs, ys)
    assert resumed.n_batches == 4
    np.testing.assert_array_equal(resumed.compute(), whole.compute())
    # and the sums are the per-minibatch HSIC_1 terms: one layer pair against cka_minibatch
    np.testing.assert_allclose(whole.compute()[0, 0], cka_minibatch([x["a"] for x, _ in batches],
                                                                    [y["c"] for _, y in batches]), rtol=1e-12)


def test_load_state_after_one_batch_on_a_device_and_refusals():
    rng = np.random.default_rng(4)
    xs, ys = {"a": rng.normal(size=(6, 3))}, {"c": rng.normal(size=(6, 2))}
    one = MinibatchCKA()
    one.update(xs, ys)
    resumed = MinibatchCKA(["a"], ["c"])
    resumed.load_state(one.state())  # a pass killed after its first minibatch
    assert resumed.n_batches == 1
    np.testing.assert_array_equal(resumed.compute(), one.compute())
    # the accumulators go to the device asked for (the meta device: no data, only placement)
    on_meta = MinibatchCKA(["a"], ["c"])
    on_meta.load_state(one.state(), device="meta")
    assert on_meta._xy.device.type == "meta" and on_meta._xy.dtype == torch.float64
    # a state saved before any minibatch (n_batches 0) restores nothing and needs no sums
    empty = MinibatchCKA(["a"], ["c"])
    empty.load_state({"n_batches": np.array([0])})
    assert empty.n_batches == 0 and empty._xy is None
    wrong = MinibatchCKA(["a", "b"], ["c"])
    with pytest.raises(ValueError, match=r"^saved CKA state is \(1, 1\), expected \(2, 1\)$"):
        wrong.load_state(one.state())


def test_cka_linear_refusals_name_x_or_y():
    rng = np.random.default_rng(5)
    good = rng.normal(size=(6, 3))
    tokens = ("must be 2-D (images x features), one vector per image; got shape (6, 3, 2). Pool or select "
              "tokens first (e.g. the CLS token, or the mean over tokens) for transformer activations, and "
              "flatten (x.flatten(1)) or pool feature maps")
    with refuses(ValueError, "x " + tokens):
        cka_linear(np.ones((6, 3, 2)), good)
    with refuses(ValueError, "y " + tokens):
        cka_linear(good, np.ones((6, 3, 2)))
    bad = good.copy()
    bad[2, 1] = np.nan
    with refuses(ValueError, "x contains NaN or inf (first at index [2, 1])"):
        cka_linear(bad, good)
    with refuses(ValueError, "y contains NaN or inf (first at index [2, 1])"):
        cka_linear(good, bad)
    with refuses(ValueError, "y is the same vector for every image: its CKA is undefined"):
        cka_linear(good, np.ones((6, 2)))


def test_cka_linear_of_two_images_is_one():
    # two images: each centred side is one vector and its negative, so the grams are proportional
    rng = np.random.default_rng(6)
    assert cka_linear(rng.normal(size=(2, 3)), rng.normal(size=(2, 5))) == pytest.approx(1.0)


def test_minibatch_refusals_name_the_side_and_layer():
    rng = np.random.default_rng(7)
    a, c = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    with refuses(ValueError, "xs['a'] must be 2-D (images x features), one vector per image; got shape (8, 3, 1). "
                             "Pool or select tokens first (e.g. the CLS token, or the mean over tokens) for "
                             "transformer activations, and flatten (x.flatten(1)) or pool feature maps"):
        MinibatchCKA().update({"a": a[:, :, None]}, {"c": c})
    with refuses(ValueError, "ys['c'] has 7 images but this minibatch has 8: every layer must see the same images"):
        MinibatchCKA().update({"a": a}, {"c": c[:7]})
    with refuses(ValueError, "xs['a'] has 5 images but this minibatch has 8: every layer must see the same images"):
        MinibatchCKA().update({"b": a, "a": a[:5]}, {"c": c})
    with refuses(ValueError, "minibatch CKA needs at least 4 images per batch (the unbiased HSIC divides by "
                             "n (n - 3)); got 3"):
        MinibatchCKA().update({"a": a[:3]}, {"c": c[:3]})
    nan = a.copy()
    nan[0, 0] = np.nan
    with refuses(ValueError, "ys['d'] contains NaN or inf (first at index [0, 0])"):  # numpy input
        MinibatchCKA().update({"a": a}, {"c": c, "d": nan})
    # a torch tensor is checked on its own device, one sync per side: the first bad layer is named
    t = {"a": torch.from_numpy(a), "b": torch.from_numpy(nan), "e": torch.from_numpy(nan)}
    with refuses(ValueError, "xs['b'] contains NaN or inf"):
        MinibatchCKA().update(t, {"c": c})
    with refuses(ValueError, "MinibatchCKA.state: no minibatch was added"):
        MinibatchCKA().state()
    with refuses(ValueError, "MinibatchCKA.compute: no minibatch was added"):
        MinibatchCKA().compute()


def test_minibatch_of_four_images_and_float32_tensors_in_float64():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    exact = cka_minibatch([x.astype(np.float64)], [y.astype(np.float64)])  # the smallest batch allowed
    acc = MinibatchCKA()
    acc.update({"x": torch.from_numpy(x)}, {"y": torch.from_numpy(y)})
    # float32 activations are promoted before the Gram: the same value as float64 input, to rounding
    assert acc._xy.dtype == torch.float64
    assert acc.compute()[0, 0] == pytest.approx(exact, rel=1e-12)


def test_minibatches_of_unequal_size_average_their_unbiased_hsics():
    """Nguyen et al.: CKA = mean_k HSIC_1(K_k, L_k) / sqrt(mean_k HSIC_1(K_k, K_k) mean_k HSIC_1(L_k, L_k)),
    each HSIC_1 normalised by its own batch's n (n - 3); a layer constant in one batch only is fine."""
    rng = np.random.default_rng(9)
    xs = [rng.normal(size=(5, 3)), rng.normal(size=(9, 3))]
    ys = [rng.normal(size=(5, 4)) + xs[0] @ rng.normal(size=(3, 4)), rng.normal(size=(9, 4))]
    xs[0] = np.ones((5, 3))  # constant in the first batch, varied in the second
    ys[1] = np.full((9, 4), 2.0)  # and y the other way round
    grams = [(x @ x.T, y @ y.T) for x, y in zip(xs, ys)]
    xy = np.mean([hsic_unbiased(K, L) for K, L in grams])
    xx = np.mean([hsic_unbiased(K, K) for K, _ in grams])
    yy = np.mean([hsic_unbiased(L, L) for _, L in grams])
    assert cka_minibatch(xs, ys) == pytest.approx(xy / np.sqrt(xx * yy), rel=1e-9)


def test_nested_lists_are_arrays_too():
    x, y = related(10, 12)
    assert cka_linear(x.tolist(), y.tolist()) == pytest.approx(cka_linear(x, y), rel=1e-12)
    with pytest.raises(ValueError, match=r"^x must be 2-D \(images x features\), one vector per image; got shape "
                                         r"\(2, 1, 3\)\. "):
        cka_linear([[[1.0, 2.0, 3.0]], [[4.0, 5.0, 6.0]]], y[:2])

