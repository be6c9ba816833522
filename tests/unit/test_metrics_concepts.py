"""Section 5 concept probing: the AP engine against sklearn on every pair (ties, masks, chunking,
both backends), planted concept directions, and the set-level summaries (Eq. 4, polysemanticity,
Table 6, Figure 4, footnote 3)."""
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from helpers.metrics import (average_precision, concept_ap, concept_overlaps, concepts_per_direction,
                             encoded_concepts, polysemanticity, threshold_sweep, top_concepts,
                             unique_concepts)
from conftest import refuses
from helpers.metrics import concepts as engine


def sklearn_grid(S, Y, M, flip=False):
    """The oracle: one sklearn call per (direction, concept) pair."""
    out = np.empty((S.shape[1], Y.shape[1]))
    for i in range(S.shape[1]):
        for c in range(Y.shape[1]):
            keep = M[:, c]
            out[i, c] = average_precision_score(Y[keep, c], -S[keep, i] if flip else S[keep, i])
    return out


def random_problem(seed, n=240, D=6, C=8, ties=False):
    rng = np.random.default_rng(seed)
    S = rng.normal(size=(n, D)).astype(np.float32)
    if ties:
        # Heavy ties: a handful of distinct values per direction, and one direction all equal.
        S = np.round(S * 1.5).astype(np.float32)
        S[:, 0] = 0.5
    Y = rng.random((n, C)) < rng.uniform(0.05, 0.6, size=C)
    M = rng.random((n, C)) < 0.7
    Y[0] = M[0] = True
    return S, Y, M


#: The two backends, built inside each test (an instance built at import would hide its constructor
#: from the mutation run, which forks every test from the collected process).
BACKENDS = {"numpy": engine._NumpyOps, "torch": lambda: engine._TorchOps("cpu")}


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("batch_size", [1 << 20, 100], ids=["one-block", "chunked"])
def test_engine_equals_sklearn_on_every_pair(ties, backend, batch_size):
    ops = BACKENDS[backend]()
    S, Y, M = random_problem(int(ties), ties=ties)
    ap, ap_neg = engine._ap_matrix(S, Y, M, "both", ops, batch_size)
    np.testing.assert_allclose(ap, sklearn_grid(S, Y, M), atol=1e-12)
    np.testing.assert_allclose(ap_neg, sklearn_grid(S, Y, M, flip=True), atol=1e-12)


def test_sparse_ties_inside_and_outside_a_concepts_selection():
    # Like float32 projections of many images: every direction has a tie somewhere, but within
    # concept 1's selection only direction 2 does (between a positive and a negative).
    S, Y, M = random_problem(2)
    S[:3, :] = S[3, :]
    M[:3, 1] = False
    M[3, 1] = True
    S[5, 2] = S[6, 2]
    M[5:7, 1] = True
    Y[5:7, 1] = [True, False]
    for sign, flip in (("positive", False), ("both", True)):
        expected = sklearn_grid(S, Y, M)
        if flip:
            expected = np.maximum(expected, sklearn_grid(S, Y, M, flip=True))
        np.testing.assert_allclose(concept_ap(S, Y, M, sign=sign), expected, atol=1e-12)


def test_average_precision_shapes_and_mask():
    S, Y, M = random_problem(3)
    assert average_precision(S[:, 1], Y[:, 2]) == pytest.approx(
        average_precision_score(Y[:, 2], S[:, 1]), abs=1e-12)
    assert average_precision(S, Y[:, 2]).shape == (S.shape[1],)
    assert average_precision(S[:, 1], Y).shape == (Y.shape[1],)
    np.testing.assert_allclose(average_precision(S, Y, mask=M), sklearn_grid(S, Y, M), atol=1e-12)
    np.testing.assert_allclose(average_precision(torch.from_numpy(S), torch.from_numpy(Y)),
                               sklearn_grid(S, Y, np.ones_like(Y)), atol=1e-12)


def test_degenerate_columns_follow_sklearn():
    S = np.array([[0.3], [0.1], [0.3], [0.9]])
    all_positive = np.ones((4, 1), bool)
    assert average_precision(S, all_positive)[0, 0] == 1.0
    labels = np.array([[True], [False], [False], [False]])
    assert average_precision(np.zeros((4, 1)), labels)[0, 0] == pytest.approx(0.25)


def planted_concepts(seed=0, n=600, d_H=16, C=10):
    """Activations where direction v_i encodes concept c = i for i < 4 (i = 2 by LOW projections),
    and every other concept is noise. Returns h, Vt, presence, selection, planted pairs."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d_H, d_H)))
    Vt = Q.T
    presence = rng.random((n, C)) < 0.3
    z = rng.normal(size=(n, d_H))
    for i, shift in zip(range(4), (6.0, 6.0, -6.0, 6.0)):
        z[:, i] += shift * presence[:, i]
    h = z @ Vt
    selection = np.zeros_like(presence)
    for c in range(C):
        pos = np.flatnonzero(presence[:, c])
        neg = rng.choice(np.flatnonzero(~presence[:, c]), pos.size, replace=False)
        selection[np.r_[pos, neg], c] = True
    return h, Vt, presence, selection, {(i, i) for i in range(4)}


def test_planted_concept_directions_are_found_and_only_they():
    h, Vt, presence, selection, planted = planted_concepts()
    ap, signs = concept_ap(h @ Vt.T, presence, selection, return_sign=True)
    found = {tuple(x) for x in np.argwhere(ap >= 0.9)}
    assert found == planted
    assert signs[2, 2] == -1 and signs[0, 0] == 1
    # With sign="positive" the low-projection concept is missed: AP of v_2 is far below 0.9.
    ap_pos = concept_ap(h @ Vt.T, presence, selection, sign="positive")
    assert {tuple(x) for x in np.argwhere(ap_pos >= 0.9)} == planted - {(2, 2)}
    assert unique_concepts(ap) == 4
    np.testing.assert_array_equal(encoded_concepts(ap), [0, 1, 2, 3])
    np.testing.assert_array_equal(concepts_per_direction(ap), [1, 1, 1, 1] + [0] * 12)
    assert polysemanticity(ap) == pytest.approx(4 / 16)
    assert polysemanticity(ap[:8], d_H=16) == pytest.approx(4 / 16)
    assert polysemanticity(ap[:8]) == pytest.approx(4 / 8)


def test_top_concepts_orders_by_ap_and_keeps_column_order_on_ties():
    ap = np.array([[0.2, 0.95, 0.5, 0.95, 0.1],
                   [0.9, 0.1, 0.2, 0.3, 0.4]])
    assert top_concepts(ap, 0) == [(1, 0.95), (3, 0.95), (2, 0.5)]
    names = ["meshed", "flecked", "perforated", "knitted", "chequered"]
    assert top_concepts(ap, 1, k=2, names=names) == [("meshed", 0.9), ("chequered", 0.4)]
    with pytest.raises(IndexError, match="direction 2 out of range for 2 directions"):
        top_concepts(ap, 2)
    with pytest.raises(ValueError, match="2 names for 5 concepts"):
        top_concepts(ap, 0, names=names[:2])


def venn_by_membership(sets):
    """Oracle: classify each element by the exact tuple of sets holding it."""
    counts = {}
    for x in set().union(*sets.values()):
        key = tuple(name for name in sets if x in sets[name])
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_concept_overlaps_three_and_two_sets():
    rng = np.random.default_rng(7)
    sets = {name: set(rng.choice(60, size, replace=False).tolist())
            for name, size in (("zero-shot", 35), ("finetuned", 25), ("supervised", 20))}
    regions = concept_overlaps(sets)
    assert len(regions) == 7 and list(regions)[:3] == [("zero-shot",), ("finetuned",), ("supervised",)]
    oracle = venn_by_membership(sets)
    assert {k: v for k, v in regions.items() if v} == oracle
    assert sum(regions.values()) == len(set().union(*sets.values()))
    two = concept_overlaps({"a": {1, 2, 3}, "b": {3, 4}})
    assert two == {("a",): 2, ("b",): 1, ("a", "b"): 1}
    with pytest.raises(ValueError, match="2 or 3 sets"):
        concept_overlaps({"a": {1}})


def test_threshold_sweep_counts_unique_concepts_at_each_threshold():
    # planted: column c's best AP is best[c]; every other entry stays below 0.5, so the count at
    # threshold t is the number of planted maxima >= t, written out by hand below
    rng = np.random.default_rng(8)
    ap = rng.uniform(0.0, 0.5, size=(12, 8))
    best = np.array([0.99, 0.96, 0.95, 0.93, 0.9, 0.87, 0.82, 0.6])
    ap[rng.integers(0, 12, size=8), np.arange(8)] = best
    thresholds = [0.8, 0.85, 0.9, 0.95]
    #          >=0.8: 7 of 8   >=0.85: 6   >=0.9: 5 (0.9 itself counts)   >=0.95: 3
    np.testing.assert_array_equal(threshold_sweep(ap, thresholds), [7, 6, 5, 3])
    assert [unique_concepts(ap, t) for t in thresholds] == [7, 6, 5, 3]
    assert unique_concepts(np.array([[0.9, 0.8999999]])) == 1


@pytest.mark.parametrize("call,match", [
    (lambda S, Y, M: concept_ap(S, Y[:-1], M), "presence has 239 rows"),
    (lambda S, Y, M: concept_ap(S, Y, M[:, :-1]), "selection has shape"),
    (lambda S, Y, M: concept_ap(S, Y * 2.0, M), "boolean"),
    (lambda S, Y, M: concept_ap(S[:, 0], Y, M), "2-D"),
    (lambda S, Y, M: concept_ap(S, Y, M, sign="negative"), "sign must be"),
    (lambda S, Y, M: concept_ap(np.where(S > 2, np.nan, S), Y, M), "NaN"),
    (lambda S, Y, M: concept_ap(S, np.zeros_like(Y), M), "no positive image"),
    (lambda S, Y, M: polysemanticity(np.zeros((4, 3)), d_H=2), "smaller than the 4"),
    (lambda S, Y, M: unique_concepts(np.full((2, 2), 1.5)), r"\[0, 1\]"),
])
def test_refusals(call, match):
    S, Y, M = random_problem(9)
    with pytest.raises(ValueError, match=match):
        call(S, Y, M)


def test_device_choice():
    assert isinstance(engine._ops_for(None, np.zeros(2)), engine._NumpyOps)
    assert isinstance(engine._ops_for("cpu"), engine._NumpyOps)
    assert isinstance(engine._ops_for(torch.device("cpu")), engine._NumpyOps)
    cuda = engine._ops_for("cuda:0")  # built without touching the device
    assert isinstance(cuda, engine._TorchOps) and cuda.device == torch.device("cuda:0") and cuda.torch is torch
    assert cuda.dtypes == {np.int32: torch.int32, np.int64: torch.int64}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_engine_equals_sklearn():
    S, Y, M = random_problem(10, ties=True)
    np.testing.assert_allclose(concept_ap(S, Y, M, device="cuda"), concept_ap(S, Y, M), atol=1e-12)
    np.testing.assert_allclose(concept_ap(S, Y, M, sign="positive", device="cuda"),
                               sklearn_grid(S, Y, M), atol=1e-12)
    # with no device given, a CUDA tensor's own device runs the engine
    np.testing.assert_allclose(average_precision(torch.from_numpy(S).cuda(), Y, mask=M), sklearn_grid(S, Y, M),
                               atol=1e-12)


#: 53 APs with seven tied at the top (columns 8, 10, 13, 18, 20, 24, 27, ...): on rows longer than 16,
#: numpy's default (introsort) argsort returns tied entries out of column order.
TIED_ROW = [0.95, 0.95, 0.5, 0.5, 0.2, 0.2, 0.2, 0.2, 1.0, 0.95, 1.0, 0.95, 0.95, 1.0, 0.95, 0.95, 0.95, 0.95,
            1.0, 0.5, 1.0, 0.95, 0.2, 0.5, 1.0, 0.95, 0.2, 1.0, 0.95, 1.0, 0.2, 0.2, 1.0, 0.2, 0.95, 0.2, 0.5, 0.5,
            0.5, 0.5, 0.2, 0.2, 0.2, 0.2, 0.95, 0.95, 0.95, 0.5, 0.95, 1.0, 0.5, 0.5, 1.0]


def test_top_concepts_of_a_long_row_with_ties_and_negative_directions():
    ap = np.stack([np.full(len(TIED_ROW), 0.1), TIED_ROW])
    assert top_concepts(ap, 1) == [(8, 1.0), (10, 1.0), (13, 1.0)]  # column order among the tied
    # a direction counts from the end as a Python index does: -1 is the last, -2 the first of two
    assert top_concepts(ap, -1) == top_concepts(ap, 1) and top_concepts(ap, -2) == [(0, 0.1), (1, 0.1), (2, 0.1)]
    with pytest.raises(IndexError, match=r"^direction -3 out of range for 2 directions$"):
        top_concepts(ap, -3)


def test_threshold_sweep_refuses_a_grid():
    with pytest.raises(ValueError, match=r"^thresholds must be a 1-D sequence; got shape \(1, 2\)$"):
        threshold_sweep(np.full((2, 3), 0.5), [[0.8, 0.9]])


def test_average_precision_refusals_name_the_argument():
    S, Y, M = random_problem(11, n=12, D=2, C=3)
    with refuses(ValueError, "scores must be a 2-D array (n_images or n_images x D); got shape (12, 2, 1)"):
        average_precision(S[:, :, None], Y)
    with refuses(ValueError, "labels must be a 2-D boolean array (n_images x C concepts); got shape (12, 3, 1)"):
        average_precision(S, Y[:, :, None])
    with refuses(ValueError, "labels has 11 rows but the scores have 12 images"):
        average_precision(S, Y[:-1])
    with refuses(ValueError, "mask must be a 2-D boolean array (n_images x C concepts); got shape (12,)"):
        average_precision(S, Y, mask=M[:, 0])
    with refuses(ValueError, "mask must be boolean (or 0/1); it holds other values"):
        average_precision(S, Y, mask=M * 2)
    with refuses(ValueError, "mask has shape (12, 2) but labels have (12, 3)"):
        average_precision(S, Y, mask=M[:, :2])


def test_average_precision_of_one_masked_column_is_a_float():
    S, Y, M = random_problem(12, n=40, D=2, C=2)
    ap = average_precision(S[:, 0], Y[:, 1], mask=M[:, 1])  # 1-D scores, labels and mask
    assert type(ap) is float
    assert ap == pytest.approx(average_precision_score(Y[M[:, 1], 1], S[M[:, 1], 0]), abs=1e-12)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_average_precision_runs_on_the_device_it_is_given():
    # asking for a GPU that is not there fails; it does not quietly compute on the CPU instead
    S, Y, _ = random_problem(13, n=20, D=1, C=1)
    with pytest.raises((RuntimeError, AssertionError), match="(?i)cuda|nvidia"):
        average_precision(S, Y, device="cuda:0")


def test_torch_backend_with_ties_in_the_first_direction_only():
    # the tie correction then has entries for direction 0 alone: its per-direction sums must still
    # cover every direction (bincount's minlength)
    rng = np.random.default_rng(14)
    S = rng.normal(size=(60, 3))
    S[:, 0] = np.round(S[:, 0])
    Y = rng.random((60, 2)) < 0.4
    M = np.ones_like(Y)
    ap, ap_neg = engine._ap_matrix(S, Y, M, "both", engine._TorchOps("cpu"), None)
    np.testing.assert_allclose(ap, sklearn_grid(S, Y, M), atol=1e-12)
    np.testing.assert_allclose(ap_neg, sklearn_grid(S, Y, M, flip=True), atol=1e-12)


def test_set_summaries_refuse_by_name_and_count_at_the_threshold():
    with refuses(ValueError, "ap must be a 2-D array (D directions x C concepts); got shape (3,)"):
        unique_concepts(np.full(3, 0.5))
    with refuses(ValueError, "ap must hold average precisions in [0, 1]"):
        concepts_per_direction(np.array([[0.5, -0.1]]))
    with refuses(ValueError, "ap contains NaN or inf (first at index [0, 1])"):
        polysemanticity(np.array([[0.5, np.nan]]))
    ap = np.array([[0.9, 0.85, 0.5], [0.95, 0.1, 0.8]])
    # Eq. (4)'s threshold is inclusive: AP = 0.9 counts
    assert concepts_per_direction(ap).tolist() == [1, 1]
    assert concepts_per_direction(ap, 0.8).tolist() == [2, 2]
    assert polysemanticity(ap, 0.8) == 2.0 and polysemanticity(ap) == 1.0
    # the paper's d_H may equal the number of directions (a full-rank head with K >= d_H)
    assert polysemanticity(ap, 0.8, d_H=2) == 2.0 and polysemanticity(ap, 0.8, d_H=4) == 1.0
    with refuses(ValueError, "d_H = 1 is smaller than the 2 directions in ap"):
        polysemanticity(ap, d_H=1)


def test_concept_ap_inputs_refusals_and_signs():
    S, Y, M = random_problem(15, n=30, D=3, C=2)
    # 0/1 integers are masks too, and no selection means every image for every concept
    np.testing.assert_array_equal(concept_ap(S, Y.astype(np.int64), M.astype(np.int8)), concept_ap(S, Y, M))
    np.testing.assert_allclose(concept_ap(S, Y, sign="positive"), sklearn_grid(S, Y, np.ones_like(Y)), atol=1e-12)
    with refuses(ValueError, "projections must be a 2-D array (n_images x D directions); got shape (30,)"):
        concept_ap(S[:, 0], Y, M)
    with refuses(ValueError, "selection has 29 rows but the scores have 30 images"):
        concept_ap(S, Y, M[:-1])
    with refuses(ValueError, "presence must be boolean (or 0/1); it holds other values"):
        concept_ap(S, Y * 2, M)
    with refuses(ValueError, "mask must be a 1-D boolean array (n_images); got shape (30, 1)"):
        average_precision(S[:, 0], Y[:, 0], mask=M[:, :1])
    # which of v and -v won, as int8
    ap, signs = concept_ap(S, Y, M, return_sign=True)
    assert signs.dtype == np.int8 and set(np.unique(signs)) <= {-1, 1}
    flipped = sklearn_grid(S, Y, M, flip=True) > sklearn_grid(S, Y, M)
    assert 0 < flipped.sum() < flipped.size
    np.testing.assert_array_equal(signs == -1, flipped)


def test_concepts_without_positives_are_named_ten_at_most():
    S = np.random.default_rng(16).normal(size=(8, 2))
    Y = np.zeros((8, 12), bool)
    Y[0, :] = True
    for empty, listed in ((10, "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"), (11, "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]...")):
        Yk = Y.copy()
        Yk[:, :empty] = False
        with refuses(ValueError, f"{empty} concepts have no positive image in their selection (columns {listed}): "
                                 "their AP is undefined; drop them or fix the selection"):
            concept_ap(S, Yk)

