"""Section 3 and Appendices A-B: accuracies on ImageNet and its five shifts for a pool slice, the
two robustness metrics (ER of Eq. 5 and %acc), and the paper's Tables 1-2 beside this run."""
from __future__ import annotations

import pandas as pd

from .. import paper_values
from ..config import EVAL_DATASETS
from ..metrics import accuracy_ratio, effective_robustness, mean_shift_accuracy

SECTION = "robustness"


def measure(study) -> pd.DataFrame:
    """Accuracies from cached logits (extracted once per model and dataset), ER and %acc.

    Records one row per entry in the ``robustness`` results table and returns the slice's rows.
    Accuracies are fractions; ER uses the profile's beta_1 and beta_0.
    """
    from .. import extract

    P = study.profile
    slope, intercept = P.metrics["er_slope"], P.metrics["er_intercept"]
    for e in study.pool:
        accs = extract.accuracies(e, P, datasets=EVAL_DATASETS)
        acc_s = mean_shift_accuracy(accs)
        study.record(e.id, {
            "backbone": e.arch, "family": e.family, "pretraining": e.pretraining, **accs,
            "shifts_mean": acc_s,
            "er": effective_robustness(acc_s, accs["imagenet"], slope, intercept),
            "acc_ratio": accuracy_ratio(acc_s, accs["imagenet"]),
        })
    return study.table()


def paper_frame() -> pd.DataFrame:
    """Tables 1-2 (and Table 3's CoCa ER) as fractions, in the same columns as :func:`measure`."""
    df = paper_values.accuracies().rename(columns={"arch": "backbone"})
    for c in ("imagenet", "shifts_mean", "er", "acc_ratio"):
        df[c] = df[c] / 100
    return df[["entry", "backbone", "family", "pretraining", "imagenet", "shifts_mean", "er", "acc_ratio"]]


def side_by_side(run: pd.DataFrame, paper: pd.DataFrame, value: str, profile) -> pd.DataFrame:
    """One row per paper model with a counterpart in this run (its own id, or the entry that stands
    in for it): the paper's value, this run's and their difference, in points of %."""
    from ..compare import beside

    return beside(run, paper.assign(**{value: 100 * paper[value]}), value, profile, scale=100)


def wide_accuracy_table(run: pd.DataFrame, profile) -> pd.DataFrame:
    """This run's per-dataset accuracies (%), one column per dataset as in Tables 1-2, in the
    paper's model order."""
    from ..compare import in_paper_order

    cols = [c for c in (*EVAL_DATASETS, "shifts_mean", "er", "acc_ratio") if c in run]
    out = in_paper_order(run[["entry", *cols]], profile)
    out[cols] = out[cols] * 100
    return out.rename(columns={"shifts_mean": "mean of 5 shifts", "er": "ER", "acc_ratio": "%acc"})


def baseline_points(run: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Points for the logit-space plot of Figure 6: ImageNet vs mean shift accuracy, both sources."""
    a = paper.dropna(subset=["shifts_mean"]).assign(source="paper")
    b = run.assign(source="this run")
    cols = ["entry", "family", "imagenet", "shifts_mean", "source"]
    df = pd.concat([a[cols], b[cols]], ignore_index=True)
    return df[(df.imagenet > 0) & (df.imagenet < 1) & (df.shifts_mean > 0) & (df.shifts_mean < 1)]
