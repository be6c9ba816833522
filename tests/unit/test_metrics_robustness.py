"""Effective robustness (Eq. 5) against values computed by hand from Tables 1 and 2."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import refuses
from helpers.paper import values as paper_values
from helpers.metrics import accuracy_ratio, effective_robustness, expit, fit_baseline, logit, mean_shift_accuracy


def _by_hand(acc_s, acc_i, b1=0.76, b0=-1.49):
    z = b1 * (math.log(acc_i) - math.log(1 - acc_i)) + b0
    return acc_s - 1 / (1 + math.exp(-z))


@pytest.mark.parametrize("acc_i, acc_s, expected", [
    # RN50 OpenAI zero-shot (Tables 1-2: 60 %, 44 %): logit(.6) = .405465,
    # .76 * .405465 - 1.49 = -1.181847, sigmoid = .234720, ER = .44 - .234720
    (0.60, 0.44, 0.205280),
    # RN50 OpenAI finetuned (76 %, 43 %): logit(.76) = 1.152680 -> -.613964 -> .351156
    (0.76, 0.43, 0.078844),
    # ViT-L-14 DataComp zero-shot (79 %, 76 %): logit(.79) = 1.324925 -> -.483057 -> .381531
    (0.79, 0.76, 0.378469),
    # RN50 supervised (70 %, 30 %): logit(.7) = .847298 -> -.846054 -> .300261
    (0.70, 0.30, -0.000261),
])
def test_effective_robustness_matches_hand_computation(acc_i, acc_s, expected):
    assert effective_robustness(acc_s, acc_i) == pytest.approx(expected, abs=1e-6)
    assert effective_robustness(acc_s, acc_i) == pytest.approx(_by_hand(acc_s, acc_i), abs=1e-12)


def test_effective_robustness_vectorised_and_custom_line():
    acc_i = np.array([0.6, 0.76, 0.7])
    acc_s = np.array([0.44, 0.43, 0.30])
    er = effective_robustness(acc_s, acc_i, slope=1.0, intercept=0.0)
    np.testing.assert_allclose(er, acc_s - acc_i)  # identity line: ER = ACC(S) - ACC(I)
    assert er.shape == (3,)


def test_effective_robustness_refuses_percentages():
    with pytest.raises(ValueError, match="fractions"):
        effective_robustness(44, 60)


def test_zero_imagenet_accuracy_is_defined():
    # an untrained model: ACC(I) = 0 gives a baseline of 0 and ER = ACC(S)
    assert effective_robustness(0.01, 0.0) == pytest.approx(0.01)
    assert math.isnan(accuracy_ratio(0.01, 0.0))
    assert accuracy_ratio(0.44, 0.60) == pytest.approx(0.44 / 0.60)


def test_fit_baseline_recovers_a_known_line():
    rng = np.random.default_rng(0)
    acc_in = rng.uniform(0.3, 0.9, 20)
    z = 0.76 * np.log(acc_in / (1 - acc_in)) - 1.49
    acc_shift = 1 / (1 + np.exp(-z))
    fit = fit_baseline(acc_in, acc_shift)
    assert fit.slope == pytest.approx(0.76, abs=1e-9)
    assert fit.intercept == pytest.approx(-1.49, abs=1e-9)
    assert fit.r == pytest.approx(1.0, abs=1e-12)
    slope, intercept, r = fit
    assert (slope, intercept) == (fit.slope, fit.intercept)
    # points on the line have zero ER against it
    np.testing.assert_allclose(effective_robustness(acc_shift, acc_in, slope, intercept), 0, atol=1e-12)


def test_fit_baseline_with_noise_has_r_below_one():
    rng = np.random.default_rng(1)
    acc_in = rng.uniform(0.3, 0.9, 50)
    z = 0.5 * np.log(acc_in / (1 - acc_in)) - 1 + rng.normal(0, 0.2, 50)
    fit = fit_baseline(acc_in, 1 / (1 + np.exp(-z)))
    assert 0.5 < fit.r < 1 and abs(fit.slope - 0.5) < 0.2


def test_fit_baseline_bad_input():
    with pytest.raises(ValueError, match="rows \\[1\\]"):
        fit_baseline([0.5, 1.0, 0.6], [0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="at least 3"):
        fit_baseline([0.5, 0.6], [0.2, 0.3])
    with pytest.raises(ValueError, match="3 ImageNet accuracies but 2"):
        fit_baseline([0.5, 0.6, 0.7], [0.2, 0.3])


def test_mean_shift_accuracy_needs_all_five():
    accs = {"imagenet-v2": 0.5, "imagenet-r": 0.6, "imagenet-sketch": 0.4, "objectnet": 0.3, "imagenet-a": 0.0}
    assert mean_shift_accuracy(accs) == pytest.approx(0.36)
    del accs["objectnet"]
    with pytest.raises(KeyError, match="objectnet"):
        mean_shift_accuracy(accs)


def test_paper_tables_give_the_papers_er():
    df = paper_values.accuracies().set_index("entry")
    assert len(df) == 43
    assert df.loc["RN50-openai", "er"] == pytest.approx(100 * 0.205280, abs=1e-3)
    # Figure 1a's claim: every robust zero-shot CLIP model has clearly positive ER, every
    # ImageNet-Captions and supervised model about none
    assert (df[df.family == "robust_zeroshot_clip"].er > 5).all()
    assert (df[df.family.isin(["imagenet_captions_clip", "supervised"])].er.abs() < 3).all()
    # CoCa (Table 3) keeps the printed ER
    assert df.loc["coca-ViT-L-14-laion2b", "er"] == 34


@pytest.mark.parametrize("where,acc_in,acc_shift", [
    ("x = 0", [0.5, 0.0, 0.7], [0.3, 0.2, 0.5]),
    ("x = 1", [0.5, 1.0, 0.7], [0.3, 0.2, 0.5]),
    ("y = 0", [0.5, 0.6, 0.7], [0.3, 0.0, 0.5]),
    ("y = 1", [0.5, 0.6, 0.7], [0.3, 1.0, 0.5]),
])
def test_fit_baseline_refuses_each_boundary_accuracy(where, acc_in, acc_shift):
    with pytest.raises(ValueError, match=r"strictly inside \(0, 1\) for the logit; rows \[1\] do not"):
        fit_baseline(acc_in, acc_shift)


def test_fit_baseline_names_the_bad_argument_and_counts_models():
    with pytest.raises(ValueError, match=r"^acc_in must be accuracies as fractions in \[0, 1\]"):
        fit_baseline([0.5, 60, 0.7], [0.3, 0.4, 0.5])
    with pytest.raises(ValueError, match=r"^acc_shift must be accuracies as fractions in \[0, 1\]"):
        fit_baseline([0.5, 0.6, 0.7], [0.3, 40, 0.5])
    assert fit_baseline([0.5, 0.6, 0.7, 0.8], [0.3, 0.4, 0.5, 0.6]).n == 4


def test_mean_shift_accuracy_of_given_shifts_and_each_kind_of_gap():
    assert mean_shift_accuracy({"a": 0.2, "b": 0.4, "imagenet-v2": 0.9}, shifts=["a", "b"]) == pytest.approx(0.3)
    full = {"imagenet-v2": 0.5, "imagenet-r": 0.4, "imagenet-sketch": 0.3, "objectnet": 0.2, "imagenet-a": 0.1}
    for gap in ({k: v for k, v in full.items() if k != "imagenet-a"}, {**full, "imagenet-a": None},
                {**full, "imagenet-a": float("nan")}):
        with pytest.raises(KeyError, match="^'mean_shift_accuracy: no accuracy for imagenet-a'$"):
            mean_shift_accuracy(gap)


# --------------------------------------------------------------------------------------------
# Robustness (issue 16.2): inputs accepted and refusals word for word


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


def test_mean_shift_accuracy_names_every_missing_shift():
    with refuses(KeyError, "'mean_shift_accuracy: no accuracy for objectnet, imagenet-a'"):
        mean_shift_accuracy({"imagenet-v2": 0.5, "imagenet-r": 0.4, "imagenet-sketch": 0.3})

