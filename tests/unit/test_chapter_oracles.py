"""Chapter-level oracles (issue 16.1): each chapter module's table values against inputs with a known
answer, driven as the notebooks drive them (a Study on a tmp profile, results read back from the
results tables).

The chapters read models only through three functions: ``extract.accuracies`` (robustness),
``common.embeddings`` (cached h, logits, labels) and ``common.head`` (W, b, normalisation). The
inputs are planted at exactly that level, so no model is built and every number below is either
written out by hand or computed by an independent tool on the planted arrays:

- robustness: Eq. (5) written out with math.log/math.exp (b1 = 0.76, b0 = -1.49), and the paper's own
  ER of RN50-openai (Table 1-2 accuracies 60 / 44 give 20.528 points);
- outlier features: scipy.stats.kurtosis(fisher=False) per image on embeddings with a planted outlier;
- privileged directions: Eq. (2) from the *planted* singular vectors and values of W (no SVD of the
  code under test), numpy for the rest;
- concept probing: sklearn's average_precision_score on Broden activations with planted concepts,
  handed to the chapter in a shuffled extraction order;
- pruning: the pruned head rebuilt with numpy's SVD and scored by a plain argmax;
- CoCa and summary: planted upstream tables, scipy.stats.spearmanr and hand-computed means.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from sklearn.metrics import average_precision_score

from conftest import write_profile
from helpers.engine import extract
from helpers.engine import probing as engine_probing
from helpers.paper import values as paper_values
from helpers.study import results
from helpers.chapters import (coca, concept_probing, outlier_features, privileged_directions, pruning,
                              robustness, summary)
from helpers.chapters.common import meta as row_meta
from helpers.config import EVAL_DATASETS, SHIFTS, PoolEntry, Profile, load_profile
from helpers.engine.extract import Activations, Head
from helpers.metrics import bootstrap_ci
from helpers.study import Study
from test_metrics_concepts import TIED_ROW  # 53 APs, seven tied at 1.0 (columns 8, 10, 13, ...)

POOL = [
    {"id": "RN50-openai", "arch": "RN50", "family": "robust_zeroshot_clip", "pretraining": "OpenAI",
     "model": "demo-RN50"},
    {"id": "RN50-openai-ft", "arch": "RN50", "family": "finetuned_clip", "pretraining": "OpenAI",
     "model": "demo-RN50", "finetuned_from": "RN50-openai"},
    {"id": "RN50-supervised", "arch": "RN50", "family": "supervised", "pretraining": "ImageNet",
     "model": "demo-RN50"},
    {"id": "coca-ViT-B-32-laion2b", "arch": "coca_ViT-B-32", "family": "coca_zeroshot", "pretraining": "LAION-2B",
     "model": "demo-coca_ViT-B-32"},
    {"id": "coca-ViT-B-32-laion2b-ft", "arch": "coca_ViT-B-32", "family": "coca_finetuned",
     "pretraining": "LAION-2B", "model": "demo-coca_ViT-B-32", "finetuned_from": "coca-ViT-B-32-laion2b"},
]
IDS = [e["id"] for e in POOL]


def make_study(tmp_path, section: str, ids=None, **metrics) -> Study:
    P = load_profile(write_profile(tmp_path, pool=POOL, metrics={"bootstrap": 200, "seed": 7, **metrics}))
    pool = [e for e in P.pool if ids is None or e.id in ids]
    return Study(P, pool, section)


def orthonormal(n: int, k: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, k)))
    return q


class IdentitySpace:
    """A dataset whose label space is the head's own classes (collapse = identity)."""

    name = "planted"

    @staticmethod
    def collapse(logits):
        return logits


def acts(entry_id: str, dataset: str, h, labels=None, ds=None) -> Activations:
    """Planted activations; their head is a 2 x d_H zero matrix (the chapters these tests drive read
    their own head through ``common.head``, never these logits)."""
    h = np.asarray(h)
    labels = np.arange(len(h)) if labels is None else np.asarray(labels)
    head = Head(np.zeros((2, h.shape[1]), np.float32), None, False, "planted")
    return Activations(entry_id, dataset, h, labels, {"key": f"planted-{entry_id}-{dataset}"}, head=head,
                       dataset=ds or IdentitySpace())


def _check_call(e, P):
    # the chapter must pass the pool entry and the study's profile (a planted input is no excuse to
    # let a chapter drop them)
    assert isinstance(e, PoolEntry) and isinstance(P, Profile) and P.name == "tmp", (e, P)


def plant_embeddings(monkeypatch, module, table: dict):
    """``table[(entry_id, dataset)]`` -> Activations, served where ``module`` reads embeddings."""
    def embeddings(e, P, dataset):
        _check_call(e, P)
        return table[(e.id, dataset)]

    def embeddings_many(e, P, datasets):  # one model build for several datasets (pruning)
        return {d: embeddings(e, P, d) for d in datasets}

    readers = [name for name in ("embeddings", "embeddings_many") if hasattr(module, name)]
    assert readers, f"{module.__name__} reads no embeddings through helpers.chapters.common"
    for name in readers:
        monkeypatch.setattr(module, name, {"embeddings": embeddings, "embeddings_many": embeddings_many}[name])


def plant_heads(monkeypatch, module, heads: dict):
    def head(e, P):
        _check_call(e, P)
        return heads[e.id]
    monkeypatch.setattr(module, "head", head)


def plant_engine(monkeypatch, heads: dict, table: dict):
    """``heads`` and ``table`` (as for :func:`plant_heads` and :func:`plant_embeddings`) served where
    the engine reads cached activations and heads (``extract.activations``, ``extract.head``)."""
    def activations(e, dataset, P, **_):
        _check_call(e, P)
        return table[(e.id, dataset)]

    def head(e, P, device=None):
        _check_call(e, P)
        W, b, normalize = heads[e.id]
        return Head(np.asarray(W), b, normalize, f"planted-{e.id}")
    monkeypatch.setattr(extract, "activations", activations)
    monkeypatch.setattr(extract, "head", head)


def er_by_hand(acc_shift: float, acc_in: float) -> float:
    """Eq. (5) with the paper's b1 = 0.76, b0 = -1.49, written out."""
    z = 0.76 * math.log(acc_in / (1 - acc_in)) - 1.49
    return acc_shift - 1 / (1 + math.exp(-z))


# --------------------------------------------------------------------------------------------
# Robustness (Section 3, Appendices A-B)
# --------------------------------------------------------------------------------------------

#: ImageNet and the five shifts (paper order: V2, R, Sketch, ObjectNet, A); RN50-openai's mean of the
#: shifts is 0.44 and its ImageNet accuracy 0.60, the paper's Tables 1-2 values for that model.
ACCS = {
    "RN50-openai": (0.60, [0.52, 0.60, 0.40, 0.38, 0.30]),
    "RN50-openai-ft": (0.76, [0.65, 0.45, 0.40, 0.35, 0.30]),
    "RN50-supervised": (0.70, [0.58, 0.25, 0.22, 0.25, 0.20]),
    "coca-ViT-B-32-laion2b": (0.64, [0.60, 0.70, 0.50, 0.50, 0.40]),
    "coca-ViT-B-32-laion2b-ft": (0.76, [0.68, 0.60, 0.45, 0.50, 0.37]),
}


def test_robustness_tables_hold_eq5_computed_by_hand(tmp_path, monkeypatch):
    asked = []

    def accuracies(e, P, datasets):
        _check_call(e, P)
        asked.append(tuple(datasets))
        imagenet, shifts = ACCS[e.id]
        return {"imagenet": imagenet, **dict(zip(SHIFTS, shifts))}
    monkeypatch.setattr(extract, "accuracies", accuracies)
    study = make_study(tmp_path, robustness.SECTION)
    run = robustness.measure(study)
    assert asked == [EVAL_DATASETS] * len(POOL)
    assert run["entry"].tolist() == IDS
    for _, row in run.iterrows():
        imagenet, shifts = ACCS[row.entry]
        mean = sum(shifts) / 5
        assert row.shifts_mean == pytest.approx(mean, abs=1e-12)
        assert row.er == pytest.approx(er_by_hand(mean, imagenet), abs=1e-12)
        assert row.acc_ratio == pytest.approx(mean / imagenet, abs=1e-12)
        assert [row[s] for s in SHIFTS] == pytest.approx(shifts) and row.imagenet == imagenet
    # the paper's own number: 60 % on ImageNet, 44 % on the shifts is ER = 20.528 points (Table 1-2)
    zs = run.set_index("entry").loc["RN50-openai"]
    assert zs.er == pytest.approx(0.205280, abs=2e-6)
    assert run.set_index("entry").loc["RN50-supervised", "er"] == pytest.approx(-0.000261, abs=2e-6)

    wide = robustness.wide_accuracy_table(run, study.profile)
    # the paper's model order (Table 1), one row per entry of the run
    assert wide["entry"].tolist() == ["RN50-openai", "RN50-openai-ft", "RN50-supervised", "coca-ViT-B-32-laion2b",
                                      "coca-ViT-B-32-laion2b-ft"]
    wide = wide.set_index("entry")
    assert wide.loc["RN50-openai", "ER"] == pytest.approx(20.5280, abs=2e-4)
    assert wide.loc["RN50-openai-ft", "mean of 5 shifts"] == pytest.approx(43.0)
    assert wide.loc["RN50-openai-ft", "%acc"] == pytest.approx(100 * 0.43 / 0.76)
    assert wide.loc["coca-ViT-B-32-laion2b", "imagenet-sketch"] == pytest.approx(50.0)

    paper = robustness.paper_frame()
    er = robustness.side_by_side(run, paper, "er", study.profile).set_index("paper model")
    # same accuracies, same formula: this run's ER equals the paper's for that model
    assert er.loc["RN50-openai", "this run"] == pytest.approx(er.loc["RN50-openai", "paper"], abs=1e-3)
    assert er.loc["RN50-openai", "paper"] == pytest.approx(100 * er_by_hand(0.44, 0.60), abs=1e-3)
    assert er.loc["RN50-openai", "difference"] == pytest.approx(0.0, abs=1e-3)
    assert er.loc["RN50-openai", "this run's model"] == "RN50-openai"
    top1 = robustness.side_by_side(run, paper, "imagenet", study.profile).set_index("paper model")
    assert top1.loc["RN50-openai-ft", ["paper", "this run", "difference"]].tolist() == pytest.approx([76, 76, 0])
    points = robustness.baseline_points(run, paper)
    mine = points[points.source == "this run"].set_index("entry")
    assert mine.loc["RN50-supervised", ["imagenet", "shifts_mean"]].tolist() == pytest.approx([0.70, 0.30])


# --------------------------------------------------------------------------------------------
# Outlier features (Section 4, Eq. 1)
# --------------------------------------------------------------------------------------------

OUTLIER = 5  # the planted outlier coordinate of the zero-shot model


def outlier_world(n=30, d=24):
    rng = np.random.default_rng(11)
    table = {}
    for k, e in enumerate(IDS):
        h = rng.normal(size=(n, d))
        if e == "RN50-openai":
            h[:, OUTLIER] += rng.uniform(15, 30, size=n)  # a few outlier features dominate
        if e == "RN50-supervised":
            h[0] = 1.5  # a constant vector has no kurtosis: left out of the mean
        table[(e, "imagenet")] = acts(e, "imagenet", h.astype(np.float32))
    return table


def test_outlier_features_kurtosis_is_scipys_on_planted_outliers(tmp_path, monkeypatch):
    table = outlier_world()
    plant_embeddings(monkeypatch, outlier_features, table)
    study = make_study(tmp_path, outlier_features.SECTION)
    run = outlier_features.measure(study).set_index("entry")
    for e in IDS:
        h = np.asarray(table[(e, "imagenet")].h, dtype=np.float64)
        valid = h[1:] if e == "RN50-supervised" else h
        k = scipy.stats.kurtosis(valid, axis=1, fisher=False)
        row = run.loc[e]
        assert row["kurtosis"] == pytest.approx(k.mean(), rel=1e-6)
        # the interval: the metrics' bootstrap (tested against scipy there) on the scipy values, with
        # the profile's resample count and seed
        ci = bootstrap_ci(np.mean, k, n_boot=200, seed=7)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-6)
        assert row["ci_low"] < row["kurtosis"] < row["ci_high"]
        assert row["n_images"] == len(valid) and row["d_H"] == 24
        mean_abs = np.abs(h).mean(axis=0)
        assert row["top_over_mean"] == pytest.approx(mean_abs.max() / mean_abs.mean(), rel=1e-6)
        assert row["top_coordinate"] == mean_abs.argmax()
    assert run.loc["RN50-openai", "top_coordinate"] == OUTLIER and (run["dataset"] == "imagenet").all()
    assert run.loc["RN50-openai", "kurtosis"] > 8 > run.loc["RN50-openai-ft", "kurtosis"]

    per = outlier_features.per_image(study)
    assert list(per.columns) == ["entry", "family", "kurtosis"] and per.index.tolist() == list(range(len(per)))
    assert per.groupby("entry", sort=False)["family"].first().tolist() == [e["family"] for e in POOL]
    for e in IDS:
        h = np.asarray(table[(e, "imagenet")].h, dtype=np.float64)
        valid = h[1:] if e == "RN50-supervised" else h
        np.testing.assert_allclose(per[per.entry == e]["kurtosis"], scipy.stats.kurtosis(valid, axis=1, fisher=False),
                                   rtol=1e-6)
    prof = outlier_features.coordinate_profile(study, top=3)
    h = np.asarray(table[("RN50-openai", "imagenet")].h, dtype=np.float64)
    mean_abs = np.abs(h).mean(axis=0)
    expected = np.sort(mean_abs)[::-1][:3] / mean_abs.mean()
    assert list(prof.columns) == ["entry", "family", "rank", "relative"] and set(prof.family) == {e["family"] for e in POOL}
    assert (outlier_features.coordinate_profile(study).groupby("entry")["rank"].max() == 20).all()  # default: top 20
    got = prof[prof.entry == "RN50-openai"].sort_values("rank")
    assert got["rank"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(got.relative, expected, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Privileged directions (Section 4, Eqs. 2-3)
# --------------------------------------------------------------------------------------------

def planted_head(K: int, sigma, seed: int, d: int | None = None):
    """W = U diag(sigma) V^T with planted orthonormal U (K x r) and V (d x r), r = len(sigma)."""
    sigma = np.asarray(sigma, dtype=float)
    U, V = orthonormal(K, sigma.size, seed), orthonormal(d or sigma.size, sigma.size, seed + 1)
    return (U * sigma) @ V.T, U, V


def importance_by_hand(sigma, V, h):
    """Eq. (2) from the planted factors: sigma_i / sum_j sigma_j * mean_n |cos(v_i, h_n)|."""
    cos = np.abs(h @ V) / np.linalg.norm(h, axis=1, keepdims=True)
    return np.asarray(sigma) / np.sum(sigma) * cos.mean(axis=0)


#: per entry: singular values of W and the coordinate (in the planted V basis) that h lives along
DIRECTIONS = {
    "RN50-openai": ([10, 4, 3, 2, 1.5, 1], 0),           # one dominant, used direction
    "RN50-openai-ft": ([5, 4, 3, 2.5, 2, 1], 0),
    "RN50-supervised": ([1.2, 1.1, 1.0, 0.9, 0.8, 0.7], 2),  # flat spectrum, h along v_3
    "coca-ViT-B-32-laion2b": ([8, 3, 2, 1.5, 1, 0.5], 1),
    "coca-ViT-B-32-laion2b-ft": ([3, 2.9, 2.8, 2.7, 2.6, 2.5], 4),
}


def direction_world(n=25):
    rng = np.random.default_rng(5)
    heads, table, planted = {}, {}, {}
    for k, (e, (sigma, along)) in enumerate(DIRECTIONS.items()):
        W, U, V = planted_head(10, sigma, seed=10 * k)
        z = rng.normal(scale=0.3, size=(n, len(sigma)))
        z[:, along] += 3.0
        h = z @ V.T
        heads[e] = (W.astype(np.float32), None, True)
        table[(e, "imagenet")] = acts(e, "imagenet", h.astype(np.float32))
        planted[e] = (np.asarray(sigma, float), V, h.astype(np.float32).astype(np.float64))
    return heads, table, planted


def test_privileged_directions_importance_from_the_planted_svd(tmp_path, monkeypatch):
    heads, table, planted = direction_world()
    plant_heads(monkeypatch, privileged_directions, heads)
    plant_embeddings(monkeypatch, privileged_directions, table)
    study = make_study(tmp_path, privileged_directions.SECTION)
    run = privileged_directions.measure(study)
    for e, (sigma, V, h) in planted.items():
        rows = run[run.entry == e].sort_values("direction")
        expected = importance_by_hand(sigma, V, h)
        assert rows.direction.tolist() == [1, 2, 3, 4, 5, 6] and (rows["rank"] == 6).all()
        np.testing.assert_allclose(rows.sigma, sigma, rtol=1e-5)
        np.testing.assert_allclose(rows.importance, expected, rtol=1e-5)
        assert rows.importance_ratio.iloc[0] == pytest.approx(expected.max() / expected.mean(), rel=1e-5)
        # also against numpy's own SVD of W (the oracle the issue names)
        s = np.linalg.svd(heads[e][0].astype(np.float64), compute_uv=False)
        np.testing.assert_allclose(rows.sigma, s, rtol=1e-6)
    assert (run["dataset"] == "imagenet").all()
    table = privileged_directions.ratios(run)
    assert list(table.columns) == ["entry", "backbone", "family", "pretraining", "importance_ratio",
                                   "most_privileged_direction", "rank"] and table.index.tolist() == [0, 1, 2, 3, 4]
    # one row per entry in the order the table lists them (pool order), not sorted by name
    assert privileged_directions.ratios(run.iloc[::-1].reset_index(drop=True))["entry"].tolist() == IDS[::-1]
    ratios = table.set_index("entry")
    expected_dir = {e: 1 + int(np.argmax(importance_by_hand(*planted[e]))) for e in planted}
    assert expected_dir == {"RN50-openai": 1, "RN50-openai-ft": 1, "RN50-supervised": 3,
                            "coca-ViT-B-32-laion2b": 2, "coca-ViT-B-32-laion2b-ft": 5}
    assert ratios.most_privileged_direction.to_dict() == expected_dir
    assert ratios.loc["RN50-openai", "importance_ratio"] > ratios.loc["RN50-supervised", "importance_ratio"]


# --------------------------------------------------------------------------------------------
# Concept probing (Section 5)
# --------------------------------------------------------------------------------------------

CONCEPTS = ["striped", "red", "sky", "wood", "rare"]
N_BRODEN = 48
D = 6  # d_H
RANK = 5


def broden_world():
    """Planted Broden presence and balanced sets: concepts 0-3 probed (every positive and as many
    negatives), concept 4 without a balanced set (NaN column)."""
    rng = np.random.default_rng(21)
    presence = rng.random((N_BRODEN, len(CONCEPTS))) < 0.4
    selection = np.zeros_like(presence)
    for c in range(4):
        pos, neg = np.flatnonzero(presence[:, c]), np.flatnonzero(~presence[:, c])
        selection[pos, c] = True
        selection[rng.choice(neg, size=min(len(pos), len(neg)), replace=False), c] = True
    concepts = pd.DataFrame({"number": np.arange(1, 6), "name": CONCEPTS,
                             "category": ["texture", "color", "scene", "material", "object"]})
    return engine_probing.BrodenSets(concepts, presence, selection, pd.DataFrame(), key="planted-broden")


#: per entry, {direction index: (concept, strength)}: a projection = strength * presence + noise;
#: a negative strength separates the concept by *low* projections (the sign of v_i is arbitrary).
ENCODES = {
    "RN50-openai": {0: (0, 3.0), 1: (1, -3.0), 2: (2, 0.6)},
    "RN50-openai-ft": {0: (0, 3.0), 3: (2, 0.6)},
    "RN50-supervised": {2: (2, 3.0), 4: (3, 0.8)},
}
SIGMA = [3, 2.5, 2, 1.5, 1]  # rank 5 < d_H = 6: polysemanticity over d_H and over rank(W) differ
#: the direction each entry's ImageNet embeddings live along (its most privileged direction)
IMAGENET_ALONG = {"RN50-openai": 1, "RN50-openai-ft": 0, "RN50-supervised": 2}


def concept_world(sets):
    rng = np.random.default_rng(3)
    heads, table, planted = {}, {}, {}
    for k, (e, plan) in enumerate(ENCODES.items()):
        W, _, V = planted_head(12, SIGMA, seed=100 + k, d=D)
        Z = rng.normal(scale=0.2, size=(N_BRODEN, RANK))
        for i, (c, strength) in plan.items():
            Z[:, i] += strength * sets.presence[:, c]
        h = (Z @ V.T).astype(np.float32)  # rows in Broden's image order
        # the extraction may store the images in any order: labels give each row's Broden index
        perm = rng.permutation(N_BRODEN)
        table[(e, "broden")] = acts(e, "broden", h[perm], labels=perm)
        zi = rng.normal(scale=0.3, size=(20, RANK))
        zi[:, IMAGENET_ALONG[e]] += 10.0
        table[(e, "imagenet")] = acts(e, "imagenet", (zi @ V.T).astype(np.float32))
        heads[e] = (W.astype(np.float32), None, True)
        planted[e] = h.astype(np.float64) @ V  # projections on the planted v_i, Broden order
    return heads, table, planted


def sklearn_ap(Z, sets):
    """AP_i^c by sklearn on each balanced set, the better of v_i and -v_i (concept_sign: both)."""
    ap = np.full((Z.shape[1], len(CONCEPTS)), np.nan)
    for c in range(len(CONCEPTS)):
        sel = sets.selection[:, c]
        if not sel.any():
            continue
        y = sets.presence[sel, c]
        for i in range(Z.shape[1]):
            ap[i, c] = max(average_precision_score(y, Z[sel, i]), average_precision_score(y, -Z[sel, i]))
    return ap


@pytest.fixture
def probing(tmp_path, monkeypatch):
    sets = broden_world()
    heads, table, planted = concept_world(sets)
    calls = []

    def broden_sets(P):
        assert isinstance(P, Profile) and P.name == "tmp"
        calls.append(P)
        return sets
    monkeypatch.setattr(concept_probing, "broden_sets", broden_sets)
    monkeypatch.setattr(engine_probing, "broden_sets", broden_sets)  # ap_matrix without sets reads them here
    monkeypatch.setattr(concept_probing, "_test_broden_calls", calls, raising=False)
    plant_heads(monkeypatch, concept_probing, heads)
    plant_embeddings(monkeypatch, concept_probing, table)
    plant_engine(monkeypatch, heads, table)  # the AP matrix reads the engine's activations and heads
    study = make_study(tmp_path, concept_probing.SECTION, ids=list(ENCODES))
    return study, sets, heads, table, planted


def test_probe_activations_is_sklearn_ap_in_brodens_order(probing):
    study, sets, heads, table, planted = probing
    for e in ENCODES:
        expected = sklearn_ap(planted[e], sets)
        got = engine_probing.probe_activations(table[(e, "broden")], heads[e][0], sets, "both")
        np.testing.assert_allclose(got, expected, atol=1e-9, equal_nan=True)
        # the chapter's cached path gives the same matrix, and reads it back from the cache
        np.testing.assert_allclose(engine_probing.ap_matrix(study.profile.entry(e), study.profile, sets), expected,
                                   atol=1e-9, equal_nan=True)
    entry = study.profile.entry("RN50-openai")
    ap = engine_probing.ap_matrix(entry, study.profile, sets)
    assert ap[0, 0] == ap[1, 1] == 1.0 and np.isnan(ap[:, 4]).all()
    (cached,) = (study.profile.cache_dir / "concepts" / entry.id).glob("*.npy")  # the matrix itself is cached
    np.testing.assert_array_equal(np.load(cached), ap)
    # without sets it reads the profile's; the cache is keyed by the activations and the sign rule
    np.testing.assert_array_equal(engine_probing.ap_matrix(entry, study.profile), ap)
    positive = replace(study.profile, metrics={**study.profile.metrics, "concept_sign": "positive"})
    ap_pos = engine_probing.ap_matrix(entry, positive, sets)
    assert (ap_pos[~np.isnan(ap)] <= ap[~np.isnan(ap)]).all() and not np.array_equal(ap_pos, ap, equal_nan=True)
    assert len(list((study.profile.cache_dir / "concepts" / entry.id).glob("*.npy"))) == 2
    # new activations for the entry (re-extracted weights): a new AP matrix, not the cached one
    other = table[("RN50-openai-ft", "broden")]
    table[("RN50-openai", "broden")] = Activations("RN50-openai", "broden", other.h, other.labels,
                                                   {"key": "re-extracted"}, head=other.head, dataset=other.dataset)
    fresh = engine_probing.ap_matrix(entry, study.profile, sets)
    expected = engine_probing.probe_activations(other, heads["RN50-openai"][0], sets, "both")
    np.testing.assert_allclose(fresh, expected, equal_nan=True)
    assert not np.allclose(fresh, ap, equal_nan=True)


def test_concept_probing_tables_from_planted_concepts(probing):
    study, sets, heads, table, planted = probing
    run = concept_probing.measure(study)
    assert len(concept_probing._test_broden_calls) == 1  # the sets are read once for the whole slice
    thresholds = [0.8, 0.85, 0.9, 0.95]
    for e in ENCODES:
        ap = np.nan_to_num(sklearn_ap(planted[e], sets), nan=0.0)
        rows = run[run.entry == e].set_index("threshold")
        assert rows.index.tolist() == thresholds
        for t in thresholds:
            hits = ap >= t
            assert rows.loc[t, "unique_concepts"] == hits.any(axis=0).sum()
            assert rows.loc[t, "polysemanticity"] == pytest.approx(hits.sum() / D)  # the paper's d_H
            assert rows.loc[t, "polysemanticity_rank"] == pytest.approx(hits.sum() / RANK)
        top_dir = IMAGENET_ALONG[e]
        order = np.argsort(-np.nan_to_num(sklearn_ap(planted[e], sets)[top_dir], nan=-1.0), kind="stable")[:3]
        row = rows.loc[0.9]
        assert row.privileged_direction == top_dir + 1 and row.probed_concepts == 4 and row.directions == RANK
        assert [row.top1, row.top2, row.top3] == [CONCEPTS[c] for c in order]
        assert [row.top1_ap, row.top2_ap, row.top3_ap] == pytest.approx(ap[top_dir, order], abs=1e-9)
    assert not [c for c in run.columns if c.startswith("top4")]  # the top three, no more
    at = concept_probing.at_threshold(run, 0.9)
    assert list(at.columns) == list(run.columns) and at.index.tolist() == [0, 1, 2]
    at = at.set_index("entry")
    # the planted strong encodings, counted by hand: zero-shot encodes striped (v_1) and red (-v_2)
    assert at.loc["RN50-openai", "top1"] == "red" and at.loc["RN50-openai", "top1_ap"] == 1.0
    assert at.loc["RN50-openai-ft", "top1"] == "striped" and at.loc["RN50-supervised", "top1"] == "sky"

    # the whole pool: entries without a Figure 4 role (CoCa) are skipped, not probed
    venn = concept_probing.venn_sets(Study(study.profile, list(study.profile.pool), study.section), 0.9)
    assert len(concept_probing._test_broden_calls) == 2  # once more for the Venn sets, not once per entry
    expected = {role: {CONCEPTS[c] for c in np.flatnonzero((np.nan_to_num(sklearn_ap(planted[e], sets), nan=0) >= 0.9)
                                                              .any(axis=0))}
                for role, e in (("zero-shot", "RN50-openai"), ("finetuned", "RN50-openai-ft"),
                                ("supervised", "RN50-supervised"))}
    assert venn == {"RN50": expected}
    assert {"striped", "red"} <= expected["zero-shot"] and "striped" in expected["finetuned"]
    assert "sky" in expected["supervised"]
    # Eq. (4)'s threshold is inclusive, and a concept without a balanced set (NaN) is never encoded
    edge = np.array([[0.9, 0.5, np.nan, 0.2, np.nan], [0.1, 0.8999, np.nan, 0.95, np.nan]])
    assert engine_probing.concept_set(edge, sets, 0.9) == {"striped", "wood"}

    poly, top = concept_probing.paper_comparison(run, profile=study.profile)  # the paper's threshold, 0.9, by default
    poly = poly.set_index("paper model")
    # only the paper's models with a counterpart in this run (RN101-openai, printed in Table 7, is not in it)
    assert "RN101-openai" not in poly.index and (paper_values.polysemanticity()
                                                 .set_index("entry").loc["RN101-openai", "polysemanticity"] > 0)
    assert poly.loc["RN50-openai", "paper"] == 3.0 and poly.loc["RN50-openai", "this run's model"] == "RN50-openai"
    hand = (np.nan_to_num(sklearn_ap(planted["RN50-openai"], sets), nan=0.0) >= 0.9).sum() / D
    assert poly.loc["RN50-openai", "this run"] == pytest.approx(at.loc["RN50-openai", "polysemanticity"])
    assert poly.loc["RN50-openai", "this run"] == pytest.approx(hand)
    assert poly.loc["RN50-openai", "difference"] == pytest.approx(at.loc["RN50-openai", "polysemanticity"] - 3.0)
    assert poly.loc["RN50-openai", "difference"] == pytest.approx(hand - 3.0)
    assert list(top.columns) == ["paper model", "rank", "paper", "this run", "this run's model"]
    top = top.set_index(["paper model", "rank"])
    ap0 = sklearn_ap(planted["RN50-openai"], sets)[IMAGENET_ALONG["RN50-openai"]]
    order0 = np.argsort(-np.nan_to_num(ap0, nan=-1.0), kind="stable")[:3]
    for k in (1, 2, 3):  # Table 6 beside this run's top three, each "concept (AP)"
        assert top.loc[("RN50-openai", k), "this run"] == f"{CONCEPTS[order0[k - 1]]} ({ap0[order0[k - 1]]:.2f})"
    assert top.loc[("RN50-openai", 1), "this run"] == "red (1.00)"
    assert top.loc[("RN50-openai", 1), "paper"].startswith("knitted (")
    assert top.loc[("RN50-openai", 1), "this run's model"] == "RN50-openai"
    # Table 6 lists models the paper prints: a model of this run without a paper counterpart has no row
    extra = pd.concat([at.reset_index(), at.reset_index().iloc[:1].assign(entry="demo-only")], ignore_index=True)
    _, top2 = concept_probing.paper_comparison(extra, 0.9, study.profile)
    assert "demo-only" not in set(top2["paper model"]) and "demo-only" not in set(top2["this run's model"])
    assert top2.set_index(["paper model", "rank"]).loc[("RN50-openai", 1), "this run"] == "red (1.00)"


def test_top_concepts_keep_column_order_among_tied_aps(probing, monkeypatch):
    study, _, _, _, _ = probing
    n = len(TIED_ROW)
    names = [f"concept{c}" for c in range(n)]
    many = engine_probing.BrodenSets(pd.DataFrame({"number": np.arange(1, n + 1), "name": names,
                                                    "category": ["object"] * n}),
                                      np.ones((N_BRODEN, n), bool), np.ones((N_BRODEN, n), bool),
                                      pd.DataFrame(), key="tied")
    ap = np.full((RANK, n), 0.1)
    ap[IMAGENET_ALONG["RN50-openai"]] = TIED_ROW  # the entry's most privileged direction
    monkeypatch.setattr(concept_probing, "broden_sets", lambda P: many)
    monkeypatch.setattr(concept_probing, "ap_matrix", lambda e, P, sets: ap)
    study = Study(study.profile, [study.profile.entry("RN50-openai")], study.section)
    row = concept_probing.at_threshold(concept_probing.measure(study), 0.9).iloc[0]
    # the first three columns holding the top AP 1.0, read off TIED_ROW by hand
    assert [row.top1, row.top2, row.top3] == ["concept8", "concept10", "concept13"]
    assert [row.top1_ap, row.top2_ap, row.top3_ap] == [1.0, 1.0, 1.0]
    assert row.unique_concepts == sum(v >= 0.9 for v in TIED_ROW) and row.probed_concepts == n


def test_concept_counts_at_each_threshold_from_a_planted_ap(probing, monkeypatch):
    study, sets, _, _, _ = probing
    n = 7  # more concepts than directions (RANK = 5), so the two axes cannot be confused
    planted = engine_probing.BrodenSets(pd.DataFrame({"number": np.arange(1, n + 1), "name": [f"c{c}" for c in range(n)],
                                                       "category": ["object"] * n}),
                                         np.ones((N_BRODEN, n), bool), np.ones((N_BRODEN, n), bool), pd.DataFrame(),
                                         key="planted-ap")
    ap = np.full((RANK, n), 0.5)
    ap[:, 6] = np.nan  # a concept without a balanced set
    ap[0, 0], ap[1, 1], ap[0, 2], ap[2, 3], ap[3, 3] = 0.97, 0.92, 0.87, 0.82, 0.83
    monkeypatch.setattr(concept_probing, "broden_sets", lambda P: planted)
    monkeypatch.setattr(concept_probing, "ap_matrix", lambda e, P, sets_: ap)
    one = Study(study.profile, [study.profile.entry("RN50-openai")], study.section)
    rows = concept_probing.measure(one).set_index("threshold")
    # by hand: APs >= t, per concept (unique) and in total (polysemanticity over d_H = 6 and rank 5)
    by_hand = {0.8: (4, 5), 0.85: (3, 3), 0.9: (2, 2), 0.95: (1, 1)}
    for t, (unique, hits) in by_hand.items():
        assert rows.loc[t, "unique_concepts"] == unique, t
        assert rows.loc[t, "polysemanticity"] == pytest.approx(hits / D), t
        assert rows.loc[t, "polysemanticity_rank"] == pytest.approx(hits / RANK), t
    assert (rows["directions"] == RANK).all() and (rows["probed_concepts"] == n).all()


def test_table6_beside_this_run_in_table1_order_with_stand_ins(tmp_path):
    from helpers.paper.compare import STAND_IN

    pool = POOL + [{"id": "demo-vit", "arch": "RN50", "family": "robust_zeroshot_clip", "pretraining": "OpenAI",
                    "model": "demo-RN50", "stands_in_for": "ViT-B-16-openai"}]
    P = load_profile(write_profile(tmp_path, pool=pool))
    # the run's rows in an order unlike Table 1's, a model without a Table 6 row first
    entries = ["coca-ViT-B-32-laion2b", "demo-vit", "RN50-openai-ft", "RN50-openai"]
    table = pd.DataFrame([{"entry": e, "threshold": t, "polysemanticity": 1.0 + i,
                           **{f"top{k}": f"{e}-concept{k}" for k in (1, 2, 3)},
                           **{f"top{k}_ap": 0.9 + k / 100 for k in (1, 2, 3)}}
                          for i, e in enumerate(entries) for t in (0.8, 0.9)])
    _, top = concept_probing.paper_comparison(table, 0.9, P)
    assert list(top.columns) == ["paper model", "rank", "paper", "this run", "this run's model"]
    assert top["paper model"].tolist() == ["RN50-openai"] * 3 + ["RN50-openai-ft"] * 3 + ["ViT-B-16-openai"] * 3
    assert top["rank"].tolist() == [1, 2, 3] * 3
    paper = paper_values.top_concepts().set_index(["entry", "rank"])
    for row in top.itertuples():
        p = paper.loc[(row[1], row.rank)]
        assert row.paper == f"{p.concept} ({p.ap:.2f})"
    vit = top[top["paper model"] == "ViT-B-16-openai"]
    assert vit["this run"].tolist() == [f"demo-vit-concept{k} ({0.9 + k / 100:.2f})" for k in (1, 2, 3)]
    assert set(vit["this run's model"]) == {f"demo-vit ({STAND_IN})"}
    # no model of the run in Table 6: an empty table that still has its columns
    _, none = concept_probing.paper_comparison(table[table.entry == "coca-ViT-B-32-laion2b"], 0.9, P)
    assert none.empty and list(none.columns) == ["paper model", "rank", "paper", "this run", "this run's model"]


def test_venn_sets_take_the_first_model_of_each_role_per_backbone(tmp_path, monkeypatch):
    # two zero-shot RN50 models: Figure 4 compares the first one (the paper's OpenAI model)
    pool = POOL + [{"id": "RN50-yfcc", "arch": "RN50", "family": "robust_zeroshot_clip", "pretraining": "YFCC-15M",
                    "model": "demo-RN50"}]
    P = load_profile(write_profile(tmp_path, pool=pool, metrics={"seed": 7}))
    sets = broden_world()
    encoded = {"RN50-openai": [0, 1], "RN50-yfcc": [3], "RN50-openai-ft": [0], "RN50-supervised": [2]}

    def ap_matrix(e, P_, sets_):
        assert e.family in ("robust_zeroshot_clip", "finetuned_clip", "supervised"), e.id  # CoCa is not probed
        ap = np.full((RANK, len(CONCEPTS)), 0.5)
        ap[0, encoded[e.id]] = 0.95
        return ap
    monkeypatch.setattr(concept_probing, "broden_sets", lambda P_: sets)
    monkeypatch.setattr(concept_probing, "ap_matrix", ap_matrix)
    venn = concept_probing.venn_sets(Study(P, list(P.pool), concept_probing.SECTION), 0.9)
    assert venn == {"RN50": {"zero-shot": {"striped", "red"}, "finetuned": {"striped"}, "supervised": {"sky"}}}


# --------------------------------------------------------------------------------------------
# Pruning (Appendix G)
# --------------------------------------------------------------------------------------------

class PairsToOne:
    """ObjectNet-like collapse: classes {0, 1, 2} -> 0 and {3, 4, 5} -> 1 by the max of their logits."""

    name = "planted-objectnet"

    @staticmethod
    def collapse(logits):
        return np.stack([logits[:, :3].max(axis=1), logits[:, 3:].max(axis=1)], axis=1)


def pruned_accuracy(W, h, labels, kept, bias=None, normalize=True, collapse=None):
    """Top-1 of the head rebuilt from its kept largest singular directions (numpy SVD)."""
    U, s, Vt = np.linalg.svd(W.astype(np.float64), full_matrices=False)
    Wq = (U[:, :kept] * s[:kept]) @ Vt[:kept]
    x = h / np.linalg.norm(h, axis=1, keepdims=True) if normalize else h
    logits = x @ Wq.T + (0 if bias is None else bias)
    if collapse is not None:
        logits = collapse(logits)
    return float(np.mean(logits.argmax(axis=1) == labels))


def er_with(acc_shift, acc_in, slope, intercept):
    z = slope * math.log(acc_in / (1 - acc_in)) + intercept
    return acc_shift - 1 / (1 + math.exp(-z))


def test_pruning_curves_against_numpy_svd(tmp_path, monkeypatch):
    rng = np.random.default_rng(8)
    W, _, _ = planted_head(6, [5, 4, 3, 2, 1], seed=40)
    W = W.astype(np.float32)
    b = rng.normal(scale=0.5, size=6).astype(np.float32)
    # a zero-shot-style head (W h / ||h||, here with a bias so the normalisation matters) and a
    # supervised one (W h + b): both read from the chapter's head()
    heads = {IDS[0]: (W, b, True), IDS[1]: (W, b, False)}
    table, expected = {}, {}
    fractions = [0.0, 0.4, 0.8]  # floor(p * 5) = 0, 2, 4 directions removed: 5, 3, 1 kept
    for e in IDS[:2]:
        normalize = heads[e][2]
        for d in EVAL_DATASETS:
            h = (3 * rng.normal(size=(40, 5))).astype(np.float32)
            space = PairsToOne() if d == "objectnet" else IdentitySpace()
            x = h.astype(np.float64)
            x = x / np.linalg.norm(x, axis=1, keepdims=True) if normalize else x
            full = space.collapse(x @ W.T.astype(np.float64) + b).argmax(axis=1)
            noisy = rng.random(40) < 0.3
            labels = np.where(noisy, rng.integers(0, 2 if d == "objectnet" else 6, size=40), full)
            table[(e, d)] = acts(e, d, h, labels=labels, ds=space)
            expected[(e, d)] = [pruned_accuracy(W, h.astype(np.float64), labels, k, bias=b, normalize=normalize,
                                                collapse=space.collapse if d == "objectnet" else None)
                                for k in (5, 3, 1)]
    plant_heads(monkeypatch, pruning, heads)
    plant_embeddings(monkeypatch, pruning, table)
    # the fractions and the ER baseline come from the profile
    study = make_study(tmp_path, pruning.SECTION, ids=IDS[:2], prune_fractions=fractions, er_slope=0.9,
                       er_intercept=-1.2)
    run = pruning.measure(study)
    for e in IDS[:2]:
        rows = run[run.entry == e].set_index("fraction")
        assert rows.index.tolist() == fractions and (rows["rank"] == 5).all()
        for k, p in enumerate(fractions):
            accs = {d: expected[(e, d)][k] for d in EVAL_DATASETS}
            assert [rows.loc[p, d] for d in EVAL_DATASETS] == pytest.approx([accs[d] for d in EVAL_DATASETS])
            mean = sum(accs[s] for s in SHIFTS) / 5
            assert rows.loc[p, "shifts_mean"] == pytest.approx(mean)
            if 0 < accs["imagenet"] < 1:
                assert rows.loc[p, "er"] == pytest.approx(er_with(mean, accs["imagenet"], 0.9, -1.2), abs=1e-12)
        # the unpruned head scores the planted labels: 1 - (noisy labels that differ), at least 70 %
        assert rows.loc[0.0, "imagenet"] >= 0.7
    # the normalisation and the bias do change the answer on these inputs (so the test sees them)
    h, labels = np.asarray(table[(IDS[0], "imagenet")].h, np.float64), table[(IDS[0], "imagenet")].labels
    assert pruned_accuracy(W, h, labels, 5, bias=b) != pruned_accuracy(W, h, labels, 5, bias=b, normalize=False)
    assert pruned_accuracy(W, h, labels, 5, bias=b) != pruned_accuracy(W, h, labels, 5)
    # Figures 11-14 (plots.pruning_grid, which replaced the long-form table): the plotted lines are
    # ImageNet top-1 and ER in % against the pruned fraction in %, one line per entry, one row of
    # panels per backbone (both entries are RN50), the paper's unpruned values hollow at 0
    import matplotlib.pyplot as plt
    from helpers import plots

    fig = plots.pruning_grid(run, study.profile, paper=robustness.paper_frame())
    try:
        axes = np.asarray(fig.axes[:2])
        assert [ax.get_title() for ax in axes] == ["RN50: ImageNet top-1 (%)", "RN50: effective robustness (points)"]
        for j, m in enumerate(("imagenet", "er")):
            lines = {ln.get_label(): ln for ln in axes[j].get_lines() if not ln.get_label().startswith("_")}
            assert set(lines) == set(IDS[:2])
            for e in IDS[:2]:
                x, y = lines[e].get_data()
                np.testing.assert_allclose(x, [100 * p for p in fractions])
                if m == "imagenet":
                    want = [100 * expected[(e, "imagenet")][k] for k in range(len(fractions))]
                else:
                    want = []
                    for k in range(len(fractions)):
                        acc_in = expected[(e, "imagenet")][k]
                        mean = sum(expected[(e, s)][k] for s in SHIFTS) / 5
                        want.append(100 * er_with(mean, acc_in, 0.9, -1.2) if 0 < acc_in < 1 else np.nan)
                    np.testing.assert_allclose(y, 100 * run[run.entry == e].sort_values("fraction")["er"].to_numpy(),
                                               equal_nan=True)
                np.testing.assert_allclose(y, want, rtol=1e-9, atol=1e-9, equal_nan=True)
            # the paper's unpruned RN50-openai (Tables 1-2: 60 % top-1, ER 20.528 points) and RN50-openai-ft
            hollow = sorted(float(ln.get_ydata()[0]) for ln in axes[j].get_lines()
                            if ln.get_label().startswith("_") and ln.get_linestyle() == "None")
            assert all(float(ln.get_xdata()[0]) == 0.0 for ln in axes[j].get_lines()
                       if ln.get_label().startswith("_") and ln.get_linestyle() == "None")
            paper = robustness.paper_frame().set_index("entry")
            assert hollow == pytest.approx(sorted(100 * paper.loc[IDS[:2], m]))
    finally:
        plt.close(fig)


def test_pruning_imagenet_only_leaves_er_undefined(tmp_path, monkeypatch):
    W, _, _ = planted_head(4, [3, 2, 1], seed=2)
    h = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    labels = (h @ W.T).argmax(axis=1)
    plant_heads(monkeypatch, pruning, {IDS[0]: (W.astype(np.float32), None, True)})
    plant_embeddings(monkeypatch, pruning, {(IDS[0], "imagenet"): acts(IDS[0], "imagenet", h, labels=labels)})
    run = pruning.measure(make_study(tmp_path, pruning.SECTION, ids=IDS[:1]), fractions=[0.0], datasets=("imagenet",))
    assert run.imagenet.tolist() == [1.0] and run.shifts_mean.isna().all() and run.er.isna().all()


# --------------------------------------------------------------------------------------------
# CoCa (Appendix D) and the summary: planted upstream tables
# --------------------------------------------------------------------------------------------

#: entry: (ImageNet, ER, kurtosis, unique concepts at 0.9, importance ratio)
UPSTREAM = {
    "RN50-openai": (0.60, 0.205, 9.0, 40, 6.0),
    "RN50-openai-ft": (0.76, 0.079, 4.5, 31, 2.5),
    "RN50-supervised": (0.70, -0.001, 3.1, 25, 1.2),
    "coca-ViT-B-32-laion2b": (0.64, 0.24, 12.5, 37, 4.0),
    "coca-ViT-B-32-laion2b-ft": (0.76, 0.14, 3.5, 33, 1.9),
}


def plant_upstream(P):
    for e in P.pool:
        imagenet, er, kurt, unique, ratio = UPSTREAM[e.id]
        meta = {"backbone": e.arch, "family": e.family, "pretraining": e.pretraining}
        results.record(P, "robustness", e.id, {**meta, "imagenet": imagenet, "er": er, "acc_ratio": er + 0.5,
                                               "shifts_mean": imagenet / 2})
        results.record(P, "outlier_features", e.id, {**meta, "kurtosis": kurt})
        # two directions: the entry's ratio is on every row, the chapter keeps the first
        results.record(P, "privileged_directions", e.id, [{**meta, "direction": 1, "importance_ratio": ratio},
                                                          {**meta, "direction": 2, "importance_ratio": ratio}])
        results.record(P, "concept_probing", e.id, [{**meta, "threshold": 0.8, "unique_concepts": unique + 7,
                                                     "polysemanticity": 9.0},
                                                    {**meta, "threshold": 0.9, "unique_concepts": unique,
                                                     "polysemanticity": unique / 10}])


def test_coca_tables_read_the_other_chapters_results(tmp_path):
    study = make_study(tmp_path, coca.SECTION)
    plant_upstream(study.profile)
    run = coca.tables(study)
    assert list(run.columns) == ["entry", "family", "imagenet", "er", "kurtosis", "unique_concepts"]
    out = run.set_index("entry")
    # the paper's Tables 3-5 for the two CoCa models of this run (imagenet, ER, kurtosis, unique concepts)
    paper = {"coca-ViT-B-32-laion2b": [64, 24, 12.0, 674], "coca-ViT-B-32-laion2b-ft": [76, 14, 3.6, 530]}
    quantities = ["imagenet", "er", "kurtosis", "unique_concepts"]
    for e in ("coca-ViT-B-32-laion2b", "coca-ViT-B-32-laion2b-ft"):
        imagenet, er, kurt, unique, _ = UPSTREAM[e]
        assert out.loc[e, quantities].tolist() == pytest.approx([100 * imagenet, 100 * er, kurt, unique])
    side = coca.beside_paper(run, study.profile)
    assert list(side) == ["Table 3: ImageNet top-1 (%)", "Table 3: effective robustness (points)",
                          "Table 4: activation kurtosis", "Table 5: unique concepts"]
    bars = coca.bars_frame(run, study.profile).set_index("paper model")
    for k, (caption, df) in enumerate(side.items()):
        # only the paper's CoCa models with a counterpart in this run: the ViT-L-14 ones are not in its pool
        assert df["paper model"].tolist() == ["coca-ViT-B-32-laion2b", "coca-ViT-B-32-laion2b-ft"], caption
        assert "coca-ViT-L-14-laion2b" not in bars.index
        df = df.set_index("paper model")
        for e in paper:
            mine = [100 * UPSTREAM[e][0], 100 * UPSTREAM[e][1], UPSTREAM[e][2], UPSTREAM[e][3]][k]
            assert df.loc[e, "paper"] == paper[e][k], caption
            assert df.loc[e, "this run"] == pytest.approx(mine) and df.loc[e, "this run's model"] == e
            assert df.loc[e, "difference"] == pytest.approx(mine - df.loc[e, "paper"])
            assert bars.loc[e, f"{quantities[k]} paper"] == df.loc[e, "paper"]
            assert bars.loc[e, f"{quantities[k]} run"] == pytest.approx(mine)
    assert bars.loc["coca-ViT-B-32-laion2b", ["imagenet paper", "er paper", "kurtosis paper", "unique_concepts paper"]
                    ].tolist() == [64, 24, 12.0, 674]
    assert bars.family.to_dict() == {"coca-ViT-B-32-laion2b": "coca_zeroshot", "coca-ViT-B-32-laion2b-ft": "coca_finetuned"}
    recorded = results.load(study.profile, "coca").set_index("entry")
    assert recorded.loc["coca-ViT-B-32-laion2b-ft", "kurtosis"] == 3.5
    assert recorded.loc["coca-ViT-B-32-laion2b", ["imagenet", "er", "unique_concepts"]].tolist() == \
        pytest.approx([64.0, 24.0, 37])
    assert (recorded.threshold == 0.9).all() and set(recorded.index) == {"coca-ViT-B-32-laion2b",
                                                                          "coca-ViT-B-32-laion2b-ft"}


def test_coca_tables_keep_models_whose_chapters_have_not_run(tmp_path):
    study = make_study(tmp_path, coca.SECTION)
    P = study.profile
    zs, ft = "coca-ViT-B-32-laion2b", "coca-ViT-B-32-laion2b-ft"
    meta = {"backbone": "coca_ViT-B-32", "pretraining": "LAION-2B"}
    # robustness for both CoCa models (and a CLIP model, which the chapter ignores), kurtosis for one
    for e, acc in ((zs, 0.6), (ft, 0.7), ("RN50-openai", 0.5)):
        results.record(P, "robustness", e, {**meta, "family": P.entry(e).family, "imagenet": acc, "er": 0.1})
    results.record(P, "outlier_features", zs, {**meta, "family": "coca_zeroshot", "kurtosis": 8.0})
    run = coca.tables(study).set_index("entry")
    assert run.index.tolist() == [zs, ft]
    assert run.loc[ft, "imagenet"] == pytest.approx(70.0) and math.isnan(run.loc[ft, "kurtosis"])
    assert run.loc[zs, "kurtosis"] == 8.0
    # concept probing has not run at all: a float NaN column, not missing values of another type
    assert run["unique_concepts"].dtype == np.float64 and run["unique_concepts"].isna().all()
    recorded = results.load(P, "coca").set_index("entry")
    assert recorded.index.tolist() == [zs, ft] and recorded["unique_concepts"].isna().all()
    # the finetuned model not yet measured anywhere: kept, with NaN, beside the zero-shot one's values
    (tmp_path / "later").mkdir()
    P2 = load_profile(write_profile(tmp_path / "later", pool=POOL))
    results.record(P2, "robustness", zs, {**meta, "family": "coca_zeroshot", "imagenet": 0.6, "er": 0.1})
    results.record(P2, "concept_probing", zs, {**meta, "family": "coca_zeroshot", "threshold": 0.9, "unique_concepts": 12})
    later = coca.tables(Study(P2, [P2.entry(zs), P2.entry(ft)], coca.SECTION)).set_index("entry")
    assert later.index.tolist() == [zs, ft] and later.loc[zs, ["imagenet", "unique_concepts"]].tolist() == [60.0, 12]
    assert later.loc[ft, ["imagenet", "er", "unique_concepts"]].isna().all()


def test_summary_indicators_correlations_and_comparisons(tmp_path):
    study = make_study(tmp_path, summary.SECTION)
    plant_upstream(study.profile)
    ind = summary.pool_indicators(study).set_index("entry")
    for e, (imagenet, er, kurt, unique, ratio) in UPSTREAM.items():
        assert ind.loc[e, ["er", "acc_ratio", "kurtosis", "importance_ratio", "unique_concepts"]].tolist() == \
            pytest.approx([er, er + 0.5, kurt, ratio, unique])
    corr = summary.indicator_correlations(study).set_index("indicator")
    er = [v[1] for v in UPSTREAM.values()]
    for name, col in (("kurtosis", 2), ("unique_concepts", 3), ("importance_ratio", 4)):
        rho = scipy.stats.spearmanr([v[col] for v in UPSTREAM.values()], er).statistic
        assert corr.loc[name, "spearman"] == pytest.approx(rho, abs=1e-12) and corr.loc[name, "models"] == 5
        assert corr.loc[name, "low"] <= rho <= corr.loc[name, "high"]
        # the interval is the pool bootstrap at the profile's resample count and seed (200 and 7 here)
        ci = bootstrap_ci(lambda a, b: scipy.stats.spearmanr(a, b).statistic,
                          np.array([v[col] for v in UPSTREAM.values()], float), np.array(er, float),
                          n_boot=200, seed=7)
        assert (corr.loc[name, "low"], corr.loc[name, "high"]) == pytest.approx((ci.low, ci.high), abs=1e-12)
    # kurtosis ranks 4, 3, 1, 5, 2 against ER ranks 4, 2, 1, 5, 3: rho = 1 - 6 * 2 / (5 * 24) = 0.9
    assert corr.loc["kurtosis", "spearman"] == pytest.approx(0.9)

    fam = summary.by_family(study)
    assert list(fam.columns) == ["er", "acc_ratio", "kurtosis", "importance_ratio", "unique_concepts"]
    assert fam.index.tolist() == ["Robust zero-shot CLIP", "Fine-tuned CLIP", "Supervised", "CoCa zero-shot",
                                  "CoCa fine-tuned"]  # the paper's family order, not the alphabet's
    assert fam.loc["Robust zero-shot CLIP", "er"] == pytest.approx(20.5)
    assert fam.loc["Supervised", ["importance_ratio", "unique_concepts"]].tolist() == pytest.approx(
        [UPSTREAM["RN50-supervised"][4], UPSTREAM["RN50-supervised"][3]])
    assert fam.loc["CoCa fine-tuned", "kurtosis"] == pytest.approx(3.5)
    assert fam.loc["Supervised", "acc_ratio"] == pytest.approx(100 * 0.499)

    num = summary.numeric_comparison(study)
    assert list(num.columns) == ["paper item", "paper model", "paper", "this run", "difference", "this run's model"]
    one = num[(num["paper item"] == "Table 1") & (num["paper model"] == "RN50-openai")].iloc[0]
    assert (one.paper, one["this run"], one.difference) == pytest.approx((60, 60.0, 0.0))
    assert one["this run's model"] == "RN50-openai"
    er_row = num[(num["paper item"] == "Figure 1a (ER from Tables 1-2)") & (num["paper model"] == "RN50-openai-ft")
                 ].iloc[0]
    assert er_row["this run"] == pytest.approx(7.9) and er_row.difference == pytest.approx(7.9 - 7.884442, abs=1e-6)
    poly = num[(num["paper item"] == "Table 7") & (num["paper model"] == "RN50-openai")].iloc[0]
    assert poly["this run"] == pytest.approx(4.0) and poly.paper == 3.0
    absent = num[(num["paper item"] == "Table 1") & (num["paper model"] == "RN101-openai")]
    assert len(absent) == 1 and absent["this run"].isna().all() and absent["this run's model"].isna().all()
    # a CoCa model of the paper outside this run's pool: its Table 4 number stays, without a value beside it
    coca_l = num[(num["paper item"] == "Table 4") & (num["paper model"] == "coca-ViT-L-14-laion2b")]
    assert coca_l.paper.tolist() == [15.5] and coca_l["this run"].isna().all()
    kurt = num[(num["paper item"] == "Table 4") & (num["paper model"] == "coca-ViT-B-32-laion2b-ft")].iloc[0]
    assert (kurt.paper, kurt["this run"], kurt.difference) == pytest.approx((3.6, 3.5, -0.1))
    # every paper number with a counterpart among the five models, counted by hand from the paper's tables
    acc = paper_values.accuracies()
    clip = acc[acc["table"] != "3"]
    by_hand = (4 * int(clip.entry.isin(IDS).sum())  # Tables 1, 2 and the ER and %acc they imply
               + 4 * int(paper_values.coca_tables().entry.isin(IDS).sum())  # Tables 3 (x2), 4, 5
               + int(paper_values.polysemanticity().entry.isin(IDS).sum()))  # Table 7
    assert int(num["this run"].notna().sum()) == by_hand
    assert summary.counterparts_line(num, study.profile) == f"counterparts: {by_hand} of {len(num)} paper numbers"

    claims = summary.all_claims(study).set_index("claim")
    # per (zero-shot, finetuned) pair, by hand from UPSTREAM: ER 0.205 > 0.079 and 0.24 > 0.14
    er_claim = "finetuning on ImageNet lowers effective robustness (zero-shot ER > finetuned ER, per pair)"
    assert claims.loc[er_claim, "this run"] == "2 of 2"
    assert claims.loc["every robust zero-shot CLIP model has a positive effective robustness", "this run"] == "1 of 1"
    # kurtosis 9.0 > 4.5 and 12.5 > 3.5
    assert claims.loc["zero-shot kurtosis exceeds finetuned kurtosis (per pair)", "this run"] == "2 of 2"

    cat = summary.catalogue(study).set_index("paper item")
    assert cat.loc["Table 1", "models in this run"] == 5 and cat.loc["Figure 5", "models in this run"] == 0


def test_summary_of_a_slice_reads_only_its_models(tmp_path):
    study = make_study(tmp_path, summary.SECTION)
    plant_upstream(study.profile)  # all five models have every upstream table
    P = study.profile
    part = Study(P, [P.entry("RN50-openai"), P.entry("coca-ViT-B-32-laion2b")], summary.SECTION)
    ind = summary.pool_indicators(part)
    assert ind["entry"].tolist() == ["RN50-openai", "coca-ViT-B-32-laion2b"]
    num = summary.numeric_comparison(part)
    assert set(num["this run's model"].dropna()) == {"RN50-openai", "coca-ViT-B-32-laion2b"}
    cat = summary.catalogue(part).set_index("paper item")
    assert cat.loc["Table 1", "models in this run"] == 2 and cat.loc["Table 7", "models in this run"] == 2
    corr = summary.indicator_correlations(part)  # two models: no correlation to speak of
    assert corr["models"].tolist() == [2, 2, 2] and corr["spearman"].isna().all()


def test_summary_counts_coca_claims_and_flags_stand_ins(tmp_path):
    study = make_study(tmp_path, summary.SECTION)
    plant_upstream(study.profile)
    coca.tables(Study(study.profile, list(study.profile.pool), coca.SECTION))
    claims = summary.all_claims(study).set_index("claim")
    # Tables 3-5 per CoCa pair, by hand from UPSTREAM: ER 0.24 > 0.14, kurtosis 12.5 > 3.5, concepts 37 > 30
    for what in ("effective robustness", "kurtosis", "unique concepts"):
        assert claims.loc[f"finetuning lowers CoCa's {what} (per pair)", "this run"] == "1 of 1", what
    assert claims.loc["zero-shot kurtosis exceeds finetuned kurtosis (per pair)", "this run"] == "2 of 2"  # not replaced
    num = summary.numeric_comparison(study)
    line = summary.counterparts_line(num, study.profile)
    assert line == f"counterparts: {int(num['this run'].notna().sum())} of {len(num)} paper numbers"
    standing = replace(study.profile, pool=tuple(replace(e, stands_in_for="RN50-openai") if e.id == "RN50-openai"
                                                 else e for e in study.profile.pool))
    assert summary.counterparts_line(num, standing) == line + (
        "\n(this run's models are untrained stand-ins: their values carry no meaning)")


def test_indicator_correlations_need_three_models_and_two_values_of_each(tmp_path):
    study = make_study(tmp_path, summary.SECTION, ids=IDS[:3])
    P = study.profile
    ers = {"RN50-openai": 0.2, "RN50-openai-ft": 0.1, "RN50-supervised": 0.0}
    kurt = {"RN50-openai": 9.0, "RN50-openai-ft": 5.0, "RN50-supervised": 3.0}     # three values
    ratio = {"RN50-openai": 2.0, "RN50-openai-ft": 2.0, "RN50-supervised": 1.0}    # two values
    unique = {"RN50-openai": 7, "RN50-openai-ft": 7, "RN50-supervised": 7}         # one value
    for e in ers:
        meta = row_meta(P.entry(e))
        results.record(P, "robustness", e, {**meta, "er": ers[e], "acc_ratio": 0.5, "imagenet": 0.6})
        results.record(P, "outlier_features", e, {**meta, "kurtosis": kurt[e]})
        results.record(P, "privileged_directions", e, {**meta, "importance_ratio": ratio[e]})
        results.record(P, "concept_probing", e, {**meta, "threshold": 0.9, "unique_concepts": unique[e]})
    corr = summary.indicator_correlations(study).set_index("indicator")
    assert corr["models"].tolist() == [3, 3, 3] and corr[["spearman", "low", "high"]].isna().all().all()
    # three models and two distinct values pass the chapter's own checks and reach the bootstrap,
    # which refuses: 3 of 27 resamples of three models repeat one model (11 % > 10 %); the reader
    # sees why there is no interval
    refused = corr.loc[["kurtosis", "importance_ratio"], "note"]
    assert refused.str.startswith("the statistic is undefined on ").all(), refused
    # a constant indicator is caught before the bootstrap: no rank correlation, nothing to explain
    assert pd.isna(corr.loc["unique_concepts", "note"])
    # and a constant ER likewise, for every indicator
    for e in ers:
        meta = row_meta(P.entry(e))
        results.record(P, "robustness", e, {**meta, "er": 0.1, "acc_ratio": 0.5, "imagenet": 0.6})
    flat = summary.indicator_correlations(study)
    assert flat["spearman"].isna().all() and flat["models"].tolist() == [3, 3, 3] and "note" not in flat
    # two distinct ER values are enough to reach the bootstrap (which then explains its refusal)
    for e, er in zip(ers, (0.2, 0.2, 0.0)):
        meta = row_meta(P.entry(e))
        results.record(P, "robustness", e, {**meta, "er": er, "acc_ratio": 0.5, "imagenet": 0.6})
    two = summary.indicator_correlations(study, indicators=("kurtosis",))
    assert list(two.columns) == ["indicator", "models", "spearman", "low", "high", "note"]
    assert two["note"].str.startswith("the statistic is undefined on ").all()
    one = summary.indicator_correlations(study, indicators=("unique_concepts",))
    assert list(one.columns) == ["indicator", "models", "spearman", "low", "high"]


def test_indicator_correlations_skip_a_chapter_that_has_not_run(tmp_path):
    study = make_study(tmp_path, summary.SECTION, ids=IDS[:3])
    P = study.profile
    for i, e in enumerate(IDS[:3]):
        meta = row_meta(P.entry(e))
        results.record(P, "robustness", e, {**meta, "er": 0.1 * i, "acc_ratio": 0.5, "imagenet": 0.6})
        results.record(P, "outlier_features", e, {**meta, "kurtosis": 3.0 + i})
    corr = summary.indicator_correlations(study)  # no privileged-directions or concept tables yet
    assert corr["indicator"].tolist() == ["kurtosis"]
    # an indicator that is missing does not hide the ones after it
    assert summary.indicator_correlations(study, ("importance_ratio", "kurtosis"))["indicator"].tolist() == ["kurtosis"]


def test_pool_indicators_keep_models_without_an_upstream_row(tmp_path):
    study = make_study(tmp_path, summary.SECTION, ids=IDS[:3])
    P = study.profile
    for e in IDS[:3]:
        meta = row_meta(P.entry(e))
        results.record(P, "robustness", e, {**meta, "er": 0.1, "acc_ratio": 0.5, "imagenet": 0.6})
        if e != "RN50-supervised":  # the other chapters have not run for the supervised model yet
            results.record(P, "outlier_features", e, {**meta, "kurtosis": 4.0})
            results.record(P, "privileged_directions", e, [{**meta, "direction": 1, "importance_ratio": 2.0}])
            results.record(P, "concept_probing", e, {**meta, "threshold": 0.9, "unique_concepts": 5})
    ind = summary.pool_indicators(study).set_index("entry")
    assert ind.index.tolist() == IDS[:3]
    assert ind.loc["RN50-supervised", ["kurtosis", "importance_ratio", "unique_concepts"]].isna().all()
    assert ind.loc["RN50-openai", ["kurtosis", "importance_ratio", "unique_concepts"]].tolist() == [4.0, 2.0, 5]


def test_broden_sets_are_the_planted_concepts_balanced_and_cached(tmp_path, monkeypatch):
    from helpers.demo import fixtures
    from helpers.data import BrodenDataset, open_broden

    root, truth = fixtures.write_broden(tmp_path / "broden", n_images=24)
    P = load_profile(write_profile(tmp_path, pool=POOL, datasets={"broden": str(root)},
                                   metrics={"broden_min_positives": 3, "seed": 5}))
    sets = engine_probing.broden_sets(P)
    files = open_broden(root).files
    numbers = sets.concepts["number"].tolist()
    # presence: the concepts written into each image, in Broden's image order
    expected = np.array([[n in truth[f.relative_to(root / "images").as_posix()] for n in numbers] for f in files])
    np.testing.assert_array_equal(sets.presence, expected)
    counts = expected.sum(axis=0)
    for c in range(len(numbers)):
        pos, neg = counts[c], len(files) - counts[c]
        sel = sets.selection[:, c]
        if pos < 3 or neg < 3:
            assert not sel.any(), numbers[c]
        else:  # every positive (or as many as there are negatives), as many negatives
            k = min(pos, neg)
            assert (sel & expected[:, c]).sum() == (sel & ~expected[:, c]).sum() == k, numbers[c]
    assert sets.probed.tolist() == [c for c in range(len(numbers)) if min(counts[c], len(files) - counts[c]) >= 3]
    # the draw of negatives is the data helper's, with the profile's seed and minimum (not the defaults)
    selection, report = open_broden(root).balanced_sets(min_positives=3, seed=5)
    np.testing.assert_array_equal(sets.selection, selection)
    pd.testing.assert_frame_equal(sets.report, report.reset_index(drop=True), check_dtype=False)
    assert list(sets.concepts.columns) == ["number", "name", "category"]
    report = sets.report.set_index("number")
    assert (report.loc[report.per_side == 0].index.map(lambda n: counts[numbers.index(n)]) < 3).all()
    folder = P.cache_dir / "broden" / sets.key
    assert json_of(folder / "manifest.json") == {"digest": open_broden(root).digest(), "limit": None,
                                                  "min_positives": 3, "seed": 5}
    # read back from the cache: the masks are not decoded again
    monkeypatch.setattr(BrodenDataset, "balanced_sets", lambda *a, **k: pytest.fail("recomputed a cached set"))
    again = engine_probing.broden_sets(P)
    assert again.key == sets.key and list(again.concepts.columns) == list(sets.concepts.columns)
    np.testing.assert_array_equal(again.selection, sets.selection)
    np.testing.assert_array_equal(again.presence, sets.presence)
    pd.testing.assert_frame_equal(again.report, sets.report)
    monkeypatch.undo()
    # other balancing parameters: another key
    P2 = load_profile(write_profile(tmp_path, pool=POOL, datasets={"broden": str(root)},
                                    metrics={"broden_min_positives": 4, "seed": 5}))
    assert engine_probing.broden_sets(P2).key != sets.key
    # the profile's image limit for Broden applies (and is part of the key)
    P3 = load_profile(write_profile(tmp_path, pool=POOL, datasets={"broden": str(root)}, limits={"broden": 12},
                                    metrics={"broden_min_positives": 3, "seed": 5}))
    limited = engine_probing.broden_sets(P3)
    assert limited.presence.shape[0] == 12 and limited.key != sets.key
    assert json_of(P3.cache_dir / "broden" / limited.key / "manifest.json")["limit"] == 12


def json_of(path):
    import json

    return json.loads(path.read_text())


def test_published_check_rows_message_and_tolerance(tmp_path, monkeypatch, capsys):
    P = load_profile(write_profile(tmp_path, pool=POOL, limits={"imagenet": 50}))
    plain = P.entry("RN50-openai")
    assert robustness.published_check(plain, 0.6) == {"published_top1": None, "top1_deviation": None,
                                                      "published_flag": False}
    e = replace(plain, published_top1=76.5)
    # exactly the 1.5-point tolerance is within it (75.0 and 76.5 are exact in binary)
    assert robustness.published_check(e, 0.75) == {"published_top1": 76.5, "top1_deviation": -1.5,
                                                   "published_flag": False}
    with pytest.warns(robustness.PublishedAccuracyWarning) as caught:
        row = robustness.published_check(e, 0.7, n_images=50)
    assert row == {"published_top1": 76.5, "top1_deviation": pytest.approx(-6.5), "published_flag": True}
    msg = ("entry 'RN50-openai' (demo-RN50 / random init (seed 0)): ImageNet top-1 70.00 % measured on a subset "
           "of 50 images, expected 76.50 % (published), deviation -6.50 points (tolerance 1.5). Likely causes: "
           + "; ".join(robustness.LIKELY_CAUSES) + ".")
    assert [str(w.message) for w in caught] == [msg]
    assert caught[0].filename == __file__ or caught[0].filename.endswith("trampoline.py"), caught[0].filename
    assert capsys.readouterr().err == f"WARNING: {msg}\n"  # the terminal of the run sees it too
    with pytest.warns(robustness.PublishedAccuracyWarning) as caught:
        robustness.published_check(e, 0.7)
    assert " measured, expected 76.50 %" in str(caught[0].message)  # all images: no subset clause
    capsys.readouterr()

    # the chapter passes the profile's ImageNet limit and records the check's columns per row
    pool = [dict(x, published_top1=76.5) if x["id"] == "RN50-openai" else x for x in POOL]
    (tmp_path / "run").mkdir()
    P = load_profile(write_profile(tmp_path / "run", pool=pool, limits={"imagenet": 50}))
    monkeypatch.setattr(extract, "accuracies", lambda e, P_, datasets: {"imagenet": 0.7, **dict.fromkeys(SHIFTS, 0.3)})
    with pytest.warns(robustness.PublishedAccuracyWarning, match="on a subset of 50 images"):
        run = robustness.measure(Study(P, [P.entry("RN50-openai"), P.entry("RN50-supervised")], robustness.SECTION))
    capsys.readouterr()
    rows = run.set_index("entry")
    assert rows.loc["RN50-openai", "pretraining"] == "OpenAI" and rows.loc["RN50-supervised", "pretraining"] == "ImageNet"
    assert rows.loc["RN50-openai", ["published_top1", "top1_deviation"]].tolist() == pytest.approx([76.5, -6.5])
    assert bool(rows.loc["RN50-openai", "published_flag"]) and not bool(rows.loc["RN50-supervised", "published_flag"])
    assert pd.isna(rows.loc["RN50-supervised", "published_top1"]) and pd.isna(rows.loc["RN50-supervised", "top1_deviation"])


def test_wide_accuracy_table_places_a_stand_in_at_its_paper_model(tmp_path):
    pool = POOL + [{"id": "demo-vit", "arch": "RN50", "family": "robust_zeroshot_clip", "pretraining": "OpenAI",
                    "model": "demo-RN50", "stands_in_for": "RN50-openai-ft"}]
    P = load_profile(write_profile(tmp_path, pool=pool))
    run = pd.DataFrame([{"entry": e, "imagenet": 0.5, **dict.fromkeys(SHIFTS, 0.25), "shifts_mean": 0.25, "er": 0.1,
                         "acc_ratio": 0.5} for e in ("demo-vit", "RN50-supervised", "RN50-openai")])
    wide = robustness.wide_accuracy_table(run, P)
    # Table 1 order: RN50-openai, then RN50-openai-ft (the stand-in's place), then RN50-supervised
    assert wide["entry"].tolist() == ["RN50-openai", "demo-vit", "RN50-supervised"]
    assert wide["imagenet"].tolist() == [50.0, 50.0, 50.0] and wide["ER"].tolist() == pytest.approx([10.0] * 3)


def test_robustness_uses_the_profiles_baseline(tmp_path, monkeypatch):
    # a refitted baseline (Appendix A: slope 1.04 on the high-accuracy models) replaces b1 and b0
    monkeypatch.setattr(extract, "accuracies", lambda e, P, datasets: {"imagenet": ACCS[e.id][0],
                                                                       **dict(zip(SHIFTS, ACCS[e.id][1]))})
    study = make_study(tmp_path, robustness.SECTION, ids=IDS[:1], er_slope=1.04, er_intercept=-0.3)
    (er,) = robustness.measure(study)["er"]
    z = 1.04 * math.log(0.60 / 0.40) - 0.3
    assert er == pytest.approx(0.44 - 1 / (1 + math.exp(-z)), abs=1e-12)


def test_side_by_side_keeps_models_of_either_side_and_baseline_points_drop_degenerate_ones(tmp_path):
    from helpers.paper import compare

    P = load_profile(write_profile(tmp_path, pool=POOL))
    paper = robustness.paper_frame()
    run = pd.DataFrame([
        {"entry": "RN50-openai", "backbone": "RN50", "family": "robust_zeroshot_clip", "pretraining": "OpenAI",
         "imagenet": 0.5, "shifts_mean": 0.25, "er": 0.1, "acc_ratio": 0.5},
        {"entry": "demo-only", "backbone": "RN50", "family": "supervised", "pretraining": "demo",
         "imagenet": 0.0, "shifts_mean": 0.0, "er": 0.0, "acc_ratio": np.nan},
        {"entry": "perfect", "backbone": "RN50", "family": "supervised", "pretraining": "demo",
         "imagenet": 1.0, "shifts_mean": 0.5, "er": 0.0, "acc_ratio": 0.5},
        {"entry": "never-right", "backbone": "RN50", "family": "supervised", "pretraining": "demo",
         "imagenet": 0.0, "shifts_mean": 0.3, "er": 0.3, "acc_ratio": np.nan},
        {"entry": "no-shift", "backbone": "RN50", "family": "supervised", "pretraining": "demo",
         "imagenet": 0.5, "shifts_mean": 0.0, "er": 0.0, "acc_ratio": 0.0},
        {"entry": "all-shift", "backbone": "RN50", "family": "supervised", "pretraining": "demo",
         "imagenet": 0.5, "shifts_mean": 1.0, "er": 0.0, "acc_ratio": 2.0},
    ])
    # the chapter's table: the paper's models that have a counterpart in this run, nothing else
    df = robustness.side_by_side(run, paper, "imagenet", P).set_index("paper model")
    assert df.index.tolist() == ["RN50-openai"]
    assert df.loc["RN50-openai", ["paper", "this run", "difference"]].tolist() == pytest.approx([60, 50, -10])
    # the full join that keeps models of either side (what the summary's comparison uses), on the same inputs
    full = compare.beside(run, paper.assign(imagenet=100 * paper.imagenet), "imagenet", P, scale=100,
                          matched_only=False).set_index("paper model")
    assert full.index.is_unique and len(full) == len(paper) + 5  # paper-only and run-only models both stay
    assert np.isnan(full.loc["RN101-openai", "this run"]) and full.loc["RN101-openai", "paper"] == 62
    assert np.isnan(full.loc["demo-only", "paper"]) and full.loc["demo-only", "this run"] == 0.0
    assert full.loc["RN50-openai", ["paper", "this run", "difference"]].tolist() == pytest.approx([60, 50, -10])
    pd.testing.assert_frame_equal(full.loc[["RN50-openai"]], df)

    points = robustness.baseline_points(run, paper)
    assert points.index.is_unique and list(points.columns) == ["entry", "family", "imagenet", "shifts_mean", "source"]
    mine = points[points.source == "this run"]
    assert mine["entry"].tolist() == ["RN50-openai"]  # accuracies of 0 or 1 have no logit
    theirs = points[points.source == "paper"]
    inside = paper[paper.shifts_mean.notna() & (paper.imagenet > 0) & (paper.imagenet < 1)
                   & (paper.shifts_mean > 0) & (paper.shifts_mean < 1)]
    assert theirs["entry"].tolist() == inside["entry"].tolist() and len(inside) == 39
    assert set(points.source) == {"paper", "this run"}
