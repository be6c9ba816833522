"""Robustness metrics of Section 3 and Appendix A: effective robustness (Eq. 5), the accuracy
ratio %acc, and the baseline fit in logit space that ER is measured against."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from helpers.config import SHIFTS

#: beta_1 and beta_0 of Eq. (5): the line Crabbé et al. fit on Taori et al.'s ImageNet-trained testbed.
PAPER_SLOPE = 0.76
PAPER_INTERCEPT = -1.49


def logit(p):
    """logit(x) = ln(x) - ln(1 - x), elementwise on accuracies in (0, 1)."""
    p = np.asarray(p, dtype=float)
    return np.log(p) - np.log1p(-p)


def expit(z):
    """logit^{-1}, the logistic sigmoid."""
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def _as_fraction(name: str, a) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if np.any(~np.isfinite(a)) or np.any(a < 0) or np.any(a > 1):
        raise ValueError(f"{name} must be accuracies as fractions in [0, 1] (got {a!r}); "
                         "divide percentages by 100")
    return a


def effective_robustness(acc_shift, acc_in, slope: float = PAPER_SLOPE, intercept: float = PAPER_INTERCEPT):
    """Eq. (5): ER = ACC(S) - logit^{-1}[beta_1 logit(ACC(I)) + beta_0].

    ``acc_shift`` is ACC(S), the mean of the five shift accuracies (average the accuracies first,
    then apply the logit: ImageNet-A can be 0 for weak models); ``acc_in`` is ImageNet top-1.
    Both are fractions in [0, 1]; arrays broadcast. Returns a fraction (x100 for points of %).
    """
    acc_shift = _as_fraction("acc_shift", acc_shift)
    acc_in = _as_fraction("acc_in", acc_in)
    with np.errstate(divide="ignore"):
        baseline = expit(slope * logit(acc_in) + intercept)
    er = acc_shift - baseline
    return float(er) if np.ndim(er) == 0 else er


def accuracy_ratio(acc_shift, acc_in):
    """%acc of Figure 1b: the mean shift accuracy as a fraction of the ImageNet accuracy.

    Undefined (NaN) where the ImageNet accuracy is 0, as for an untrained demo model.
    """
    acc_shift = _as_fraction("acc_shift", acc_shift)
    acc_in = _as_fraction("acc_in", acc_in)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(acc_in > 0, acc_shift / np.where(acc_in > 0, acc_in, 1.0), np.nan)
    return float(r) if np.ndim(r) == 0 else r


@dataclass(frozen=True)
class BaselineFit:
    """A line logit(ACC(S)) = slope * logit(ACC(I)) + intercept with its Pearson r (in logit space)."""

    slope: float
    intercept: float
    r: float
    n: int

    def __iter__(self):
        return iter((self.slope, self.intercept, self.r))


def fit_baseline(acc_in, acc_shift) -> BaselineFit:
    """Refit the ER baseline (Appendix A) from a table of ImageNet-trained models.

    Least squares of logit(mean shift accuracy) on logit(ImageNet accuracy); returns slope,
    intercept and Pearson r. Unpacks as ``slope, intercept, r = fit_baseline(...)``. Accuracies of
    exactly 0 or 1 have no logit and are refused with the offending index.
    """
    x = _as_fraction("acc_in", acc_in).ravel()
    y = _as_fraction("acc_shift", acc_shift).ravel()
    if x.shape != y.shape:
        raise ValueError(f"fit_baseline: {x.size} ImageNet accuracies but {y.size} shift accuracies")
    if x.size < 3:
        raise ValueError(f"fit_baseline: need at least 3 models to fit a line, got {x.size}")
    bad = np.flatnonzero((x <= 0) | (x >= 1) | (y <= 0) | (y >= 1))
    if bad.size:
        raise ValueError(f"fit_baseline: accuracies must lie strictly inside (0, 1) for the logit; "
                         f"rows {bad.tolist()} do not")
    lx, ly = logit(x), logit(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    r = float(np.corrcoef(lx, ly)[0, 1])
    return BaselineFit(float(slope), float(intercept), r, int(x.size))


def fit_baseline_table(table, imagenet: str = "imagenet", shifts=None) -> BaselineFit:
    """Eq. (5)'s baseline fitted on a table of models (one row each, accuracies as fractions):
    ACC(S) is the plain mean of the five shift columns, taken *before* the logit (a weak model's
    ImageNet-A accuracy can be 0, whose logit is -inf), then :func:`fit_baseline` on
    (ACC(I), ACC(S)). Appendix A fits it on the testbed's models trained on ImageNet alone.
    """
    shifts = list(SHIFTS if shifts is None else shifts)
    missing = [c for c in [imagenet, *shifts] if c not in table]
    if missing:
        raise KeyError(f"fit_baseline_table: no column {', '.join(missing)}")
    acc_s = np.asarray(table[shifts], dtype=float).mean(axis=1)
    return fit_baseline(np.asarray(table[imagenet], dtype=float), acc_s)


def testbed_baseline() -> BaselineFit:
    """Eq. (5)'s baseline refitted (Appendix A) on the ImageNet testbed's published accuracies:
    every model trained on ImageNet alone (the testbed's type is not "trained with more data"),
    ACC(S) the mean of the five shifts before the logit (:func:`fit_baseline_table`)."""
    # imported here: every chapter imports metrics, and only the jobs that refit should record (and
    # be re-run for) the published tables' reader in their provenance
    from helpers.paper import published

    tb = published.testbed_accuracies()
    return fit_baseline_table(tb[tb["imagenet_only"]])


def er_coefficients(profile) -> tuple[float, float]:
    """(beta_1, beta_0) of Eq. (5) as the profile chooses (``metrics.baseline``): ``paper`` takes
    ``metrics.er_slope`` / ``metrics.er_intercept`` (0.76 / -1.49), ``refit`` :func:`testbed_baseline`.
    Every ER of the study goes through here."""
    if profile.metrics.get("baseline", "paper") == "refit":
        fit = testbed_baseline()
        return fit.slope, fit.intercept
    return profile.metrics["er_slope"], profile.metrics["er_intercept"]


def mean_shift_accuracy(accs: dict[str, float], shifts=None) -> float:
    """ACC(S): the plain mean of the five shift accuracies (Section 3), refusing a missing shift."""
    shifts = SHIFTS if shifts is None else shifts
    missing = [s for s in shifts if s not in accs or accs[s] is None or np.isnan(accs[s])]
    if missing:
        raise KeyError(f"mean_shift_accuracy: no accuracy for {', '.join(missing)}")
    return float(np.mean([accs[s] for s in shifts]))
