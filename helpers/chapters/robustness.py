"""Section 3 and Appendices A-B: accuracies on ImageNet and its five shifts for a pool slice, the
two robustness metrics (ER of Eq. 5 and %acc), and the paper's Tables 1-2 beside this run.

Two guards against numbers that look fine and are not: the published-accuracy check (a pool entry
whose ImageNet top-1 is more than ``PUBLISHED_TOLERANCE`` points from its ``published_top1`` is a
loud warning and a flagged row) and the list of images left out as unreadable."""
from __future__ import annotations

import sys
import warnings

import pandas as pd

from helpers.paper import published
from helpers.paper import values as paper_values
from helpers.paper.compare import beside, in_paper_order
from helpers.config import EVAL_DATASETS, PUBLISHED_TOLERANCE, PoolEntry
from helpers.metrics import (PAPER_INTERCEPT, PAPER_SLOPE, accuracy_ratio, effective_robustness,  # noqa: F401
                             er_coefficients, fit_baseline_table, mean_shift_accuracy, testbed_baseline)  # the notebook calls some here

SECTION = "robustness"

#: What makes loaded weights miss their published accuracy, most frequent first (book/methods.md,
#: Facts the study relies on).
LIKELY_CAUSES = ("activation (QuickGELU weights run with plain GELU, or the reverse: check the -quickgelu "
                 "model name)", "normalisation (image_mean / image_std, e.g. 0.5 for ViT-L-14 LAION-2B)",
                 "preprocessing (resize, crop, interpolation of the entry's evaluation transform)",
                 "wrong checkpoint or tag (another epoch, run or file than the published one)")


class PublishedAccuracyWarning(UserWarning):
    """A pool entry's measured ImageNet top-1 is far from the accuracy published for its weights."""


def published_check(entry: PoolEntry, imagenet_accuracy: float, n_images: int | None = None) -> dict:
    """Compare the measured ImageNet top-1 (fraction) with ``entry.published_top1`` (%).

    Returns the columns every robustness row carries: ``published_top1`` (%), ``top1_deviation``
    (measured - published, points of %) and ``published_flag`` (True beyond ``PUBLISHED_TOLERANCE``
    points). A flagged entry also raises a :class:`PublishedAccuracyWarning` and prints the same
    text to stderr, so that it reaches the terminal of the run and not only the notebook.
    """
    if entry.published_top1 is None:
        return {"published_top1": None, "top1_deviation": None, "published_flag": False}
    got = 100 * float(imagenet_accuracy)
    deviation = got - entry.published_top1
    flag = abs(deviation) > PUBLISHED_TOLERANCE
    if flag:
        subset = f" on a subset of {n_images} images" if n_images is not None else ""
        msg = (f"entry {entry.id!r} ({entry.weights_label}): ImageNet top-1 {got:.2f} % measured{subset}, "
               f"expected {entry.published_top1:.2f} % (published), deviation {deviation:+.2f} points "
               f"(tolerance {PUBLISHED_TOLERANCE}). Likely causes: " + "; ".join(LIKELY_CAUSES) + ".")
        print(f"WARNING: {msg}", file=sys.stderr)
        warnings.warn(msg, PublishedAccuracyWarning, stacklevel=2)
    return {"published_top1": entry.published_top1, "top1_deviation": deviation, "published_flag": flag}


def flagged(run: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`measure` whose ImageNet top-1 misses the published one (points of %)."""
    if "published_flag" not in run:
        return run.iloc[:0]
    rows = run[run["published_flag"].astype(str).str.lower() == "true"].copy()
    rows["measured"] = 100 * rows["imagenet"]
    return rows[["entry", "backbone", "family", "published_top1", "measured", "top1_deviation"]]


def skipped_files(study, datasets=EVAL_DATASETS) -> pd.DataFrame:
    """Every image left out as unreadable (``skip_unreadable``), read from the manifests of the
    slice's cached activations: one row per (dataset, file), with the entries whose numbers lack it."""
    # the engine is imported where it runs: the zoo chapter imports this module for paper_frame and
    # must not record the extraction code in its provenance (nor load torch)
    from helpers.engine import extract

    rows: dict[tuple[str, str], dict] = {}
    for e in study.pool:
        for d in datasets:
            for reason in extract.activations(e, d, study.profile).manifest.get("skipped", []):
                file, _, why = str(reason).partition(": ")
                row = rows.setdefault((d, file), {"dataset": d, "file": file, "reason": why, "entries": []})
                row["entries"].append(e.id)
    out = pd.DataFrame(list(rows.values()), columns=["dataset", "file", "reason", "entries"])
    out["entries"] = out["entries"].map(", ".join)
    return out


def measure(study) -> pd.DataFrame:
    """Accuracies from cached logits (extracted once per model and dataset), ER and %acc.

    Records one row per entry in the ``robustness`` results table and returns the slice's rows.
    Accuracies are fractions; ER uses the beta_1 and beta_0 of :func:`er_coefficients`. Each row also carries the
    published-accuracy check of :func:`published_check`.
    """
    from helpers.engine import extract

    P = study.profile
    slope, intercept = er_coefficients(P)
    for e in study.pool:
        accs = extract.accuracies(e, P, datasets=EVAL_DATASETS)
        acc_s = mean_shift_accuracy(accs)
        study.record(e.id, {
            "backbone": e.arch, "family": e.family, "pretraining": e.pretraining, **accs,
            "shifts_mean": acc_s,
            "er": effective_robustness(acc_s, accs["imagenet"], slope, intercept),
            "acc_ratio": accuracy_ratio(acc_s, accs["imagenet"]),
            **published_check(e, accs["imagenet"], P.limit("imagenet")),
        })
    return study.table()


def testbed_refit_line(fit) -> str:
    """The line the robustness chapter prints beside the paper's coefficients."""
    return (f"baseline refit on {fit.n} testbed models: slope {fit.slope:.2f}, intercept {fit.intercept:.2f}, "
            f"r {fit.r:.3f}   (paper, Appendix A: slope {PAPER_SLOPE:.2f}, intercept {PAPER_INTERCEPT:.2f}, r 0.99)")


def testbed_subset_fits() -> pd.DataFrame:
    """The refit on nested subsets of the testbed's ImageNet-only models, to show what the slope
    depends on: the low-accuracy checkpoints (early epochs, subsampled ImageNet) anchor the line's
    lower end; the standard-training models alone span 57-87 % ImageNet top-1 only."""
    tb = published.testbed_accuracies()
    subsets = {
        "all trained on ImageNet alone (the refit)": tb["imagenet_only"],
        "  without the low-accuracy checkpoints": tb["imagenet_only"] & (tb["type"] != "LOW_ACCURACY_CNN"),
        "  standard training only": tb["type"] == "STANDARD",
        "  standard training and low-accuracy checkpoints": tb["type"].isin(["STANDARD", "LOW_ACCURACY_CNN"]),
        "trained with more data (excluded)": ~tb["imagenet_only"],
    }
    rows = []
    for label, mask in subsets.items():
        fit = fit_baseline_table(tb[mask])
        rows.append({"testbed models": label, "n": fit.n, "ImageNet top-1 range (%)":
                     f"{100 * tb[mask].imagenet.min():.0f}-{100 * tb[mask].imagenet.max():.0f}",
                     "slope": fit.slope, "intercept": fit.intercept, "r": fit.r})
    return pd.DataFrame(rows)


def paper_frame() -> pd.DataFrame:
    """Tables 1-2 (and Table 3's CoCa ER) as fractions, in the same columns as :func:`measure`."""
    df = paper_values.accuracies().rename(columns={"arch": "backbone"})
    for c in ("imagenet", "shifts_mean", "er", "acc_ratio"):
        df[c] = df[c] / 100
    return df[["entry", "backbone", "family", "pretraining", "imagenet", "shifts_mean", "er", "acc_ratio"]]


def side_by_side(run: pd.DataFrame, paper: pd.DataFrame, value: str, profile) -> pd.DataFrame:
    """One row per paper model with a counterpart in this run (its own id, or the entry that stands
    in for it): the paper's value, this run's and their difference, in points of %."""
    return beside(run, paper.assign(**{value: 100 * paper[value]}), value, profile, scale=100)


def wide_accuracy_table(run: pd.DataFrame, profile) -> pd.DataFrame:
    """This run's per-dataset accuracies (%), one column per dataset as in Tables 1-2, in the
    paper's model order."""
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
