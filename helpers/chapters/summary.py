"""The reproduction report: every table and figure of the paper with the paper's value beside this
run's and their difference, and the four take-aways restated with this run's evidence, including
how strongly each indicator tracks effective robustness across the pool (with an interval)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.paper import compare
from helpers.paper import values as paper_values
from helpers.study import results
from helpers.config import FAMILIES
from helpers.metrics import rank_correlation

SECTION = "summary"

#: Every numbered table and figure of the paper, the chapter that reproduces it, and what the
#: paper reports (a number where the paper prints one; its claim where the figure has no numbers).
CATALOGUE = [
    ("Figure 1a", "robustness", "ER per model", "zero-shot CLIP > finetuned > ImageNet-Captions ≈ supervised ≈ 0"),
    ("Figure 1b", "robustness", "%acc per model", "same ordering; non-robust models below 50 %"),
    ("Table 1", "robustness", "ImageNet top-1", "per model (%)"),
    ("Table 2", "robustness", "mean top-1 over 5 shifts", "per model (%)"),
    ("Figure 2a", "outlier_features", "activation kurtosis, Eq. (1)", "robust zero-shot ≫ 3; supervised, ImageNet-Captions ≈ 3"),
    ("Figure 2b", "privileged_directions", "importance ratio, Eq. (3)", "zero-shot > finetuned > 1; supervised ≈ 1; ImageNet-Captions > 1"),
    ("Figure 3", "concept_probing", "unique concepts, Eq. (4)", "zero-shot > finetuned, supervised; ImageNet-Captions-t/td high"),
    ("Figure 4", "concept_probing", "concept-set overlaps", "shared by all three: 237 (RN101) to 516 (ViT-B/16); zero-shot only: 77 to 105"),
    ("Figure 5", "wiseft", "finetuned concepts' overlap during finetuning", "zero-shot-only share falls, shared-by-all share rises"),
    ("Figure 6", "robustness", "ER baseline in logit space", "slope 0.76, intercept -1.49, r = 0.99"),
    ("Figures 7-8", "cka_layers", "layer-wise CKA zero-shot vs finetuned", "largest drop at the last layer"),
    ("Figures 9-10", "privileged_directions", "importance distributions", "one direction orders of magnitude above the bulk for CLIP"),
    ("Figures 11-14", "pruning", "accuracy and ER vs pruned fraction", "80 % of directions prunable without substantial loss"),
    ("Figures 15-22", "wiseft", "WiSE-FT accuracies, ER, kurtosis, concepts vs alpha", "ER, kurtosis and concepts fall from zero-shot to finetuned"),
    ("Table 3", "coca", "CoCa ER and ImageNet top-1", "zero-shot 24 / 34 points, finetuned 14 / 21"),
    ("Table 4", "coca", "CoCa kurtosis", "zero-shot 12.0 / 15.5, finetuned 3.6 / 4.6"),
    ("Table 5", "coca", "CoCa unique concepts", "zero-shot 674 / 747, finetuned 530 / 629"),
    ("Table 6", "concept_probing", "top-3 concepts of the most privileged direction", "textures for zero-shot, concrete concepts after finetuning"),
    ("Table 7", "concept_probing", "polysemanticity", "3.0 (RN50 OpenAI) to 16.0 (ViT-B-16 LAION-2B)"),
]


def catalogue(study) -> pd.DataFrame:
    """The paper's tables and figures, the chapter reproducing each, and whether this run has
    results for it (the number of models recorded)."""
    P = study.profile
    rows = []
    for item, section, quantity, paper in CATALOGUE:
        n = _load(study, section)["entry"].nunique()
        bad = results.status(P, section, _ids(study))
        failed = bad[bad.status != "missing"]  # failed jobs and tables no sound record vouches for
        rows.append({"paper item": item, "models in this run": n, "chapter": section, "quantity": quantity,
                     "paper reports": paper,
                     "failed (stale table ignored)": ", ".join(f"{r.entry} ({r.job})" for r in failed.itertuples())})
    return pd.DataFrame(rows)


def _ids(study) -> list[str]:
    """The entries of this slice (a section without a row for some of them, such as CoCa's, simply
    has no table for those)."""
    return [e.id for e in study.pool]


def _load(study, section: str) -> pd.DataFrame:
    """This slice's trusted tables of a section: a slice summary reads only its slice, and tables
    of failed or unfinished jobs never enter an aggregate (:func:`helpers.study.results.load`)."""
    return results.load(study.profile, section, _ids(study))


def jobs_without_results(study, sections=None) -> pd.DataFrame:
    """Per section the entries of this slice whose table is missing or belongs to a failed job
    (section, entry, status, job): what the numbers on this page do not include."""
    sections = sections or list(dict.fromkeys(s for _, s, _, _ in CATALOGUE))
    frames = [results.status(study.profile, s, _ids(study)) for s in sections]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["section", "entry", "status", "job"])


def numeric_comparison(study) -> pd.DataFrame:
    """Every number the paper prints per model beside this run's counterpart (:func:`compare.numbers`),
    from this slice's trusted tables."""
    return compare.numbers(study.profile, load=lambda section: _load(study, section))


def counterparts_line(numbers: pd.DataFrame, profile) -> str:
    """``counterparts: <n> of <m> paper numbers``: how many printed numbers this run sets a value beside."""
    n = int(numbers["this run"].notna().sum())
    note = "\n(this run's models are untrained stand-ins: their values carry no meaning)" if any(
        e.stands_in_for for e in profile.pool) else ""
    return f"counterparts: {n} of {len(numbers)} paper numbers{note}"


def claims(study) -> list[compare.Claim]:
    """Every claim the chapters check, counted on this run's recorded tables (the summary's verdict)."""
    P = study.profile
    out = [c for section, fn in compare.SECTION_CLAIMS.items() for c in fn(P, _load(study, section))]
    coca = _load(study, "coca")
    if not coca.empty:
        out += compare.coca_claims(coca, P)
    return out


def all_claims(study) -> pd.DataFrame:
    """Every claim the chapters check, counted on this run's recorded tables, as a table."""
    return compare.claims_frame(claims(study))


#: The chapters as the book titles them (the catalogue names them so, not by section id).
CHAPTER_TITLES = {"robustness": "Robustness", "outlier_features": "Outlier features",
                  "privileged_directions": "Privileged directions", "concept_probing": "Concept probing",
                  "pruning": "Pruning", "wiseft": "WiSE-FT", "coca": "CoCa", "cka_layers": "Layer-wise CKA"}


def catalogue_view(study) -> pd.DataFrame:
    """:func:`catalogue` as the page shows it: the paper's item and what it reports first, the
    chapter by its title, the tables of failed jobs under a plain heading (dropped when none)."""
    cat = catalogue(study)
    cat["chapter"] = cat["chapter"].map(lambda s: CHAPTER_TITLES.get(s, s))
    cat = cat.rename(columns={"failed (stale table ignored)": "left out (tables of failed jobs)"})
    return cat[["paper item", "quantity", "paper reports", "models in this run", "chapter",
                "left out (tables of failed jobs)"]]


def pool_indicators(study) -> pd.DataFrame:
    """One row per model of this run: ER, %acc, kurtosis, importance ratio, unique concepts."""
    P = study.profile
    rob = _load(study, "robustness")
    if rob.empty:
        return pd.DataFrame()
    df = rob[["entry", "backbone", "family", "er", "acc_ratio"]].copy()
    out = _load(study, "outlier_features")
    if not out.empty:
        df = df.merge(out[["entry", "kurtosis"]], on="entry", how="left")
    pri = _load(study, "privileged_directions")
    if not pri.empty:
        df = df.merge(pri.groupby("entry", as_index=False)["importance_ratio"].first(), on="entry", how="left")
    con = _load(study, "concept_probing")
    if not con.empty:
        con = con[np.isclose(con.threshold, P.metrics["concept_threshold"])]
        df = df.merge(con[["entry", "unique_concepts"]], on="entry", how="left")
    return df


def indicator_correlations(study, indicators=("kurtosis", "importance_ratio", "unique_concepts")) -> pd.DataFrame:
    """Spearman rank correlation of each indicator with ER across this run's pool, with a bootstrap
    interval over models: how much the indicator can say about robustness (beyond the paper)."""
    P = study.profile
    df = pool_indicators(study)
    rows = []
    for name in indicators:
        if df.empty or name not in df:
            continue
        sub = df[["er", name]].dropna()
        if len(sub) < 3 or sub[name].nunique() < 2 or sub["er"].nunique() < 2:
            rows.append({"indicator": name, "models": len(sub), "spearman": np.nan, "low": np.nan, "high": np.nan})
            continue
        try:
            ci = rank_correlation(sub[name].to_numpy(), sub["er"].to_numpy(), n_boot=P.metrics["bootstrap"],
                                  seed=P.metrics["seed"])
            rows.append({"indicator": name, "models": len(sub), "spearman": ci.estimate, "low": ci.low, "high": ci.high})
        except ValueError as exc:  # too few distinct models for a bootstrap interval
            rows.append({"indicator": name, "models": len(sub), "spearman": np.nan, "low": np.nan, "high": np.nan,
                         "note": str(exc)})
    return pd.DataFrame(rows)


def by_family(study) -> pd.DataFrame:
    """Mean of each indicator per family: the take-aways compare families."""
    df = pool_indicators(study)
    if df.empty:
        return df
    cols = [c for c in ("er", "acc_ratio", "kurtosis", "importance_ratio", "unique_concepts") if c in df]
    out = df.groupby("family")[cols].mean()
    out = out.reindex([f for f in FAMILIES if f in out.index])  # the paper's family order
    for c in ("er", "acc_ratio"):
        if c in out:
            out[c] = 100 * out[c]
    out.index = out.index.map(FAMILIES)
    return out


def paper_by_family() -> pd.DataFrame:
    """The paper's mean ER and %acc per family (from Tables 1-3)."""
    df = paper_values.accuracies()
    out = df.groupby("family")[["er", "acc_ratio"]].mean()
    out = out.reindex([f for f in FAMILIES if f in out.index])
    out.index = out.index.map(FAMILIES)
    return out
