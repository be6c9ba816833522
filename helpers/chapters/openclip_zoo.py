"""Effective robustness across the OpenCLIP zoo: Figure 1 (Section 3, Eq. 5) for every model of
OpenCLIP's published zero-shot results, against the ImageNet testbed's models trained on ImageNet
alone. Every number comes from the two published tables vendored under ``helpers/reference/``
(:mod:`helpers.paper.published`); nothing is run, so the chapter is real in every profile.

:func:`diagnose` places a new model's six accuracies in the zoo (its ER, rank and percentile);
:func:`placement` adds its nearest zoo models and the counts above it (``clip-study diagnose
--accuracies``)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from helpers.config import EVAL_DATASETS, SHIFTS, load_profile
from helpers.metrics import accuracy_ratio, effective_robustness
from helpers.paper import published
from helpers.paper.compare import paper_id
from helpers.study.provenance import slice_label

SECTION = "openclip_zoo"


def _metrics(df: pd.DataFrame, slope: float, intercept: float) -> pd.DataFrame:
    """ACC(S) (mean of the five shifts, before any logit), ER (Eq. 5) and %acc, as fractions."""
    df = df.copy()
    df["shifts_mean"] = df[list(SHIFTS)].mean(axis=1)
    df["er"] = effective_robustness(df["shifts_mean"].to_numpy(), df["imagenet"].to_numpy(), slope, intercept)
    df["acc_ratio"] = accuracy_ratio(df["shifts_mean"].to_numpy(), df["imagenet"].to_numpy())
    return df


def pool_matches(pool) -> dict[tuple[str, str], str]:
    """(model without ``-quickgelu``, pretrained tag) -> pool entry id, for the pool's entries that
    load published OpenCLIP weights (OpenCLIP lists OpenAI's QuickGELU weights under the plain name)."""
    return {(e.model.removesuffix(published.QUICKGELU), e.pretrained): e.id for e in pool if e.pretrained}


def zoo_frame(slope: float, intercept: float, pool=()) -> pd.DataFrame:
    """One row per OpenCLIP model (:func:`helpers.paper.published.openclip_accuracies`) with
    ``shifts_mean``, ``er`` and ``acc_ratio`` (fractions) and ``paper_entry``: the id of the ``pool``
    entry loading the same weights, or None."""
    df = _metrics(published.openclip_accuracies(), slope, intercept)
    match = pool_matches(pool)
    df["paper_entry"] = [match.get((b, t)) for b, t in zip(df["base"], df["pretrained"])]
    df["label"] = df["name"] + " " + df["pretrained"]
    return df


def testbed_frame(slope: float, intercept: float) -> pd.DataFrame:
    """The testbed's models trained on ImageNet alone (the reference cloud) with ER and %acc."""
    tb = published.testbed_accuracies()
    return _metrics(tb[tb["imagenet_only"]], slope, intercept).reset_index(drop=True)


def takeaway_counts(zoo: pd.DataFrame, testbed: pd.DataFrame) -> pd.DataFrame:
    """Take-away 1 as counts: zoo models with ER > 0, and above the most robust (highest-ER)
    ImageNet-trained testbed model; per training-data family and in total."""
    best = best_testbed(testbed)
    rows = []
    for fam, g in [*zoo.groupby("family", sort=False), ("all", zoo)]:
        rows.append({"family": fam, "models": len(g), "ER > 0": int((g["er"] > 0).sum()),
                     f"ER > {best['model']} ({100 * best['er']:.1f})": int((g["er"] > best["er"]).sum()),
                     "median ER (points)": 100 * float(g["er"].median())})
    out = pd.DataFrame(rows)
    head, tail = out.iloc[:-1].sort_values("median ER (points)", ascending=False), out.iloc[-1:]
    return pd.concat([head, tail], ignore_index=True)


def best_testbed(testbed: pd.DataFrame) -> pd.Series:
    """The most robust (highest-ER) model of the testbed trained on ImageNet alone."""
    return testbed.loc[testbed["er"].idxmax()]


def ranked(zoo: pd.DataFrame, n: int = 10, most: bool = True) -> pd.DataFrame:
    """The ``n`` most (or least) robust zoo models by ER, accuracies in %."""
    df = zoo.sort_values("er", ascending=not most).head(n)
    return pct_table(df)


def pct_table(df: pd.DataFrame, per_dataset: bool = False) -> pd.DataFrame:
    """Zoo rows as the book shows them: model and tag, family, ImageNet and mean shift accuracy, ER
    and %acc in %; ``per_dataset`` adds the five shifts' own columns (too wide for the page)."""
    cols = [*(EVAL_DATASETS if per_dataset else ("imagenet",)), "shifts_mean", "er", "acc_ratio"]
    out = df[["family", *cols]].copy()
    out.insert(0, "model", df["name"] + " " + df["pretrained"])
    out[cols] = 100 * out[cols]
    return out.rename(columns={"imagenet": "ImageNet", "shifts_mean": "mean of 5 shifts", "er": "ER",
                               "acc_ratio": "%acc"})


def pool_beside_zoo(zoo: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Every pool entry found in OpenCLIP's table: OpenCLIP's published ImageNet and mean-shift
    accuracy (%) beside the paper's Tables 1-2 (rounded to 1 %), and both ERs (points). For
    QuickGELU weights OpenCLIP also lists the same weights run with plain GELU: its ImageNet
    accuracy is shown too (the activation mismatch the published-accuracy guard looks for).

    ``paper`` is :func:`helpers.chapters.robustness.paper_frame` (fractions)."""
    hit = zoo[zoo["paper_entry"].notna()].set_index("paper_entry")
    p = paper.set_index("entry")
    rows = []
    for entry, z in hit.iterrows():
        q = p.loc[entry] if entry in p.index else None
        get = (lambda c: 100 * float(q[c]) if q is not None and pd.notna(q[c]) else np.nan)
        rows.append({"entry": entry, "OpenCLIP model": f"{z['name']} {z['pretrained']}",
                     "ImageNet: OpenCLIP": 100 * z["imagenet"], "ImageNet: paper": get("imagenet"),
                     "ImageNet: OpenCLIP, plain GELU": 100 * z["imagenet_plain_gelu"],
                     "shifts: OpenCLIP": 100 * z["shifts_mean"], "shifts: paper": get("shifts_mean"),
                     "ER: OpenCLIP": 100 * z["er"], "ER: paper": get("er")})
    return pd.DataFrame(rows)


def diagnose(accuracies: Mapping[str, float], zoo: pd.DataFrame, slope: float, intercept: float) -> dict:
    """Place a new model in the zoo from its six accuracies (fractions, keys of
    :data:`helpers.config.EVAL_DATASETS`): its ER (Eq. 5, ACC(S) the mean of the five shifts), %acc,
    its rank by ER among the zoo's models (1: more robust than all) and its percentile (the share
    of zoo models with a lower ER, in %). ``zoo`` is :func:`zoo_frame` under the same coefficients.
    """
    missing = [d for d in EVAL_DATASETS if d not in accuracies or accuracies[d] is None]
    if missing:
        raise KeyError(f"diagnose: no accuracy for {', '.join(missing)} (need {', '.join(EVAL_DATASETS)})")
    acc_s = float(np.mean([accuracies[s] for s in SHIFTS]))
    er = effective_robustness(acc_s, accuracies["imagenet"], slope, intercept)
    below = int((zoo["er"] < er).sum())
    return {"shifts_mean": acc_s, "er": er, "acc_ratio": accuracy_ratio(acc_s, accuracies["imagenet"]),
            "rank": int((zoo["er"] > er).sum()) + 1, "of": len(zoo), "percentile": 100 * below / len(zoo)}


#: How many zoo models :func:`placement` lists as the nearest by ER.
ZOO_NEAREST = 5


def placement(accuracies: Mapping[str, float], zoo: pd.DataFrame, testbed: pd.DataFrame, slope: float,
              intercept: float, nearest: int = ZOO_NEAREST) -> dict:
    """:func:`diagnose` and what a report says around it: the ``nearest`` zoo models by ER (name,
    pretrained tag, family, ER; closest first), how many zoo models and how many ImageNet-trained
    testbed models (:func:`testbed_frame`) have a higher ER (Eq. 5), and the six accuracies used.
    All accuracies and ERs are fractions; ``zoo`` and ``testbed`` are under the same coefficients."""
    d = diagnose(accuracies, zoo, slope, intercept)
    near = zoo.assign(distance=(zoo["er"] - d["er"]).abs()).nsmallest(nearest, "distance")
    return {**d, "imagenet": float(accuracies["imagenet"]),
            "accuracies": {k: float(accuracies[k]) for k in EVAL_DATASETS},
            "zoo_above": int((zoo["er"] > d["er"]).sum()),
            "testbed_above": int((testbed["er"] > d["er"]).sum()), "testbed": len(testbed),
            "nearest": [{"name": r.name, "pretrained": r.pretrained, "family": r.family, "er": float(r.er)}
                        for r in near.itertuples()]}


def family_table() -> pd.DataFrame:
    """The prefix -> training-data family mapping of :data:`helpers.paper.published.DATA_FAMILIES`
    (longest matching tag prefix; then the model-name rules), with how many zoo models each covers."""
    zoo = published.openclip_accuracies()
    rows = []
    for on, rules, col in (("pretrained tag", published.DATA_FAMILIES, "pretrained"),
                           ("model name", published.DATA_FAMILIES_BY_MODEL, "name")):
        for prefix, fam in rules:
            n = int((zoo[col].str.startswith(prefix) & (zoo["family"] == fam)).sum())
            rows.append({"matched on": on, "prefix": prefix, "family": fam, "zoo models": n})
    return pd.DataFrame(rows)


def paper_pool(study, entry: str | None = None, backbone: str | None = None) -> list:
    """The paper profile's pool entries to mark in the zoo: all of them, or those of the slice's
    ``backbone``, or the one ``entry`` is (or, in the demo, stands in for)."""
    pool = load_profile("paper").pool
    if entry is not None:
        ids = {paper_id(e) for e in study.pool}
        return [e for e in pool if e.id in ids]
    if backbone is not None:
        return [e for e in pool if e.arch == backbone]
    return list(pool)


def activation_matches(table: pd.DataFrame) -> list[str]:
    """Entries of :func:`pool_beside_zoo` whose paper ImageNet value (rounded to 1 %) equals the
    plain-GELU row rounded and not the QuickGELU row: weights likely evaluated with the wrong
    activation."""
    t = table.dropna(subset=["ImageNet: paper", "ImageNet: OpenCLIP, plain GELU"])
    hit = (t["ImageNet: OpenCLIP, plain GELU"].round() == t["ImageNet: paper"]) & \
          (t["ImageNet: OpenCLIP"].round() != t["ImageNet: paper"])
    return list(t.loc[hit, "entry"])


def below(zoo: pd.DataFrame, er: float) -> pd.DataFrame:
    """Zoo models with an ER at or below ``er`` (a fraction), counted per training-data family."""
    low = zoo[zoo["er"] <= er]
    return (low.groupby("family").agg(models=("name", "size"), **{"best ImageNet top-1 (%)": ("imagenet", "max")})
            .assign(**{"best ImageNet top-1 (%)": lambda d: 100 * d["best ImageNet top-1 (%)"]})
            .sort_values("models", ascending=False).reset_index())


def banner(profile, slope: float, intercept: float, n_zoo: int, n_testbed: int) -> str:
    """The page's "Which run produced these numbers" note: published numbers, whatever the profile."""
    return ("```{admonition} Which run produced these numbers\n:class: note\n"
            f"**Published accuracies, in every profile.** {n_zoo} OpenCLIP models (OpenCLIP's "
            f"`docs/openclip_results.csv`) and {n_testbed} ImageNet testbed models trained on ImageNet alone "
            "(`robustness_top1s.csv`), vendored under `helpers/reference/`: nothing on this page comes from "
            f"the demo's stand-ins. Profile `{profile.name}` only sets the ER line (`metrics.baseline: "
            f"{profile.metrics['baseline']}`: beta_1 {slope:.2f}, beta_0 {intercept:.2f}) and which pool models "
            "are ringed.\n```")


def table_id(kind: str, entry: str | None = None, backbone: str | None = None) -> str:
    """The results-table id of this chapter's ``kind`` table for a slice (the rings differ per
    slice, so each slice writes its own table: ``zoo-all``, ``zoo-backbone-RN50``, ...)."""
    return f"{kind}-{slice_label(entry, backbone)}"
