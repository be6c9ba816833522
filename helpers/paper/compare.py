"""The paper beside this run: join this run's results to the numbers Crabbé et al. print, and
check each of the paper's claims as a countable sentence.

A pool entry is matched to the paper's row of the same id, or to the row named by its
``stands_in_for`` (the demo profile's untrained stand-ins), so every comparison has both columns
filled in the demo too, marked as a stand-in. Claims are checked on this run's tables and, where the
paper prints the numbers (Tables 1-5, 7), on the paper's own values; where it prints none (the
figures' claims) the paper column cites where the claim is stated. The paper's figures are not
read off (the text of the paper gives no plotted values): every paper number here is printed in a
table or in the text.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from helpers.paper import values as paper_values
from helpers.study import results
from helpers.config import FAMILIES, PoolEntry, Profile, load_profile

#: Backbones in the paper's order (Table 1: ResNets first, RN50 before RN101, then ViTs, then CoCa).
BACKBONE_ORDER = ("RN50", "RN101", "ViT-B-16", "ViT-B-32", "ViT-L-14", "coca_ViT-B-32", "coca_ViT-L-14")
#: Kurtosis above which a model is said to have outlier features. Table 4 calls 12.0 and 15.5
#: outlier features and 3.6 / 4.6 their disappearance; twice the Gaussian's 3 separates the two.
OUTLIER_KURTOSIS = 6.0
#: "Without a substantial effect" (Appendix G): at least this share of the unpruned accuracy kept.
PRUNING_KEPT = 0.9
PRUNING_FRACTION = 0.8
STAND_IN = "untrained stand-in"


def paper_id(entry: PoolEntry) -> str:
    """The paper's pool entry whose published numbers this entry is compared with."""
    return entry.stands_in_for or entry.id


@lru_cache(maxsize=1)
def _paper_profile() -> Profile:
    return load_profile("paper")


def table1_order() -> list[str]:
    """Paper entry ids in Table 1's order (then the rest of the paper pool in its YAML order)."""
    order = list(paper_values.accuracies()["entry"])
    return order + [e.id for e in _paper_profile().pool if e.id not in order]


def backbone_order(values: Iterable[str]) -> list[str]:
    """The backbones present, in the paper's order (unknown names last, alphabetically)."""
    present = set(values)
    return [b for b in BACKBONE_ORDER if b in present] + sorted(present - set(BACKBONE_ORDER))


def in_paper_order(df: pd.DataFrame, profile: Profile | None = None, column: str = "entry") -> pd.DataFrame:
    """Rows sorted as the paper lists its models: by the Table 1 position of each row's paper
    counterpart (an entry's own id or its ``stands_in_for``), then by the profile's pool order."""
    if df.empty or column not in df:
        return df
    order = {e: i for i, e in enumerate(table1_order())}
    pool = list(profile.pool) if profile is not None else []
    key = {e.id: order.get(paper_id(e), len(order)) for e in pool}
    pos = {e.id: i for i, e in enumerate(pool)}
    rank = df[column].map(lambda x: (key.get(x, order.get(x, len(order))), pos.get(x, 0)))
    return df.iloc[sorted(range(len(df)), key=lambda i: rank.iloc[i])].reset_index(drop=True)


def counterparts(profile: Profile) -> pd.DataFrame:
    """One row per pool entry: its paper counterpart and whether it is an untrained stand-in."""
    return pd.DataFrame([{"entry": e.id, "paper_entry": paper_id(e), "stand_in": e.stands_in_for is not None}
                         for e in profile.pool], columns=["entry", "paper_entry", "stand_in"])


def model_label(entry_id: str, profile: Profile) -> str:
    """How a row names this run's model: the id, and for a stand-in what it stands in for."""
    try:
        e = profile.entry(entry_id)
    except (KeyError, ValueError):
        return entry_id
    return f"{e.id} ({STAND_IN})" if e.stands_in_for else e.id


def beside(run: pd.DataFrame, paper: pd.DataFrame, value: str, profile: Profile, paper_value: str | None = None,
           scale: float = 1.0, matched_only: bool = True) -> pd.DataFrame:
    """The paper's ``paper_value`` (default ``value``) and this run's ``value`` per model.

    ``run`` and ``paper`` each have an ``entry`` column (paper ids in ``paper``). ``scale``
    multiplies this run's values (fractions to % with 100). Rows follow Table 1's order; with
    ``matched_only`` only the paper's models that have a counterpart in this run are kept.
    Columns: paper model, paper, this run, difference, this run's model, backbone, family (the
    numbers first: a narrow page shows them without scrolling).
    """
    paper_value = paper_value or value
    p = paper[["entry", paper_value]].rename(columns={"entry": "paper model", paper_value: "paper"})
    links = counterparts(profile)
    r = run[["entry", value]].merge(links, on="entry", how="left")
    r["paper_entry"] = r["paper_entry"].fillna(r["entry"])
    r = r.rename(columns={"paper_entry": "paper model", value: "this run"})
    r["this run"] = scale * r["this run"].astype(float)
    r["this run's model"] = [model_label(x, profile) for x in r["entry"]]
    df = p.merge(r[["paper model", "this run's model", "this run"]], on="paper model",
                 how="inner" if matched_only else "outer")
    meta = {e.id: e for e in _paper_profile().pool}
    df["backbone"] = df["paper model"].map(lambda x: meta[x].arch if x in meta else "")
    df["family"] = df["paper model"].map(lambda x: FAMILIES[meta[x].family] if x in meta else "")
    df["difference"] = df["this run"] - df["paper"]
    df = in_paper_order(df, None, column="paper model")
    return df[["paper model", "paper", "this run", "difference", "this run's model", "backbone", "family"]]


# ------------------------------------------------------------------------------------------------
# Claims


@dataclass
class Claim:
    """One of the paper's claims as a countable statement: ``holds`` of ``of`` cases in this run."""

    item: str  # the paper's figure or table
    statement: str
    holds: int
    of: int
    paper: str  # the same count on the paper's printed values, or where the paper states it

    @property
    def sentence(self) -> str:
        run = f"this run {self.holds} of {self.of}" if self.of else "this run: no case in this slice"
        return f"{self.statement}: paper {self.paper}; {run}"

    def as_row(self) -> dict:
        return {"paper item": self.item, "this run": f"{self.holds} of {self.of}" if self.of else "–",
                "paper": self.paper, "claim": self.statement}


def _count(cases: list[bool]) -> tuple[int, int]:
    return int(sum(bool(c) for c in cases)), len(cases)


def pairs(profile: Profile) -> list[tuple[PoolEntry, PoolEntry]]:
    """(zero-shot, finetuned) pairs of a profile's pool, linked by ``finetuned_from``."""
    by_id = {e.id: e for e in profile.pool}
    return [(by_id[e.finetuned_from], e) for e in profile.pool if e.finetuned_from in by_id]


def _values(df: pd.DataFrame, value: str) -> dict[str, float]:
    if df.empty or value not in df:
        return {}
    return {k: float(v) for k, v in df.groupby("entry", sort=False)[value].first().items() if pd.notna(v)}


def pair_cases(profile: Profile, values: dict[str, float], families=None) -> list[bool]:
    """Per pair with both values: does the zero-shot model's value exceed its finetuned model's?"""
    out = []
    for zs, ft in pairs(profile):
        if families and zs.family not in families:
            continue
        if zs.id in values and ft.id in values:
            out.append(values[zs.id] > values[ft.id])
    return out


def _paper_count(cases: list[bool]) -> str:
    h, n = _count(cases)
    return f"{h} of {n}" if n else "–"


def _paper_values(column: str) -> dict[str, float]:
    acc = paper_values.accuracies()
    if column in acc:
        return _values(acc, column)
    return _values(paper_values.coca_tables(), column)


def robustness_claims(profile: Profile, run: pd.DataFrame | None = None) -> list[Claim]:
    """Figure 1 and Tables 1-2: zero-shot CLIP is robust, finetuning lowers its robustness."""
    run = results.load(profile, "robustness") if run is None else run
    P = _paper_profile()
    er, paper_er = _values(run, "er"), _paper_values("er")
    ratio, paper_ratio = _values(run, "acc_ratio"), _paper_values("acc_ratio")
    zs = [e for e in profile.pool if e.family == "robust_zeroshot_clip"]
    paper_zs = [e for e in P.pool if e.family == "robust_zeroshot_clip"]
    sup = {e.arch: e.id for e in profile.pool if e.family == "supervised"}
    paper_sup = {e.arch: e.id for e in P.pool if e.family == "supervised"}

    def above_sup(pool, values, sups):
        return [values[e.id] > values[sups[e.arch]] for e in pool
                if e.id in values and sups.get(e.arch) in values]

    return [
        Claim("Figure 1a", "every robust zero-shot CLIP model has a positive effective robustness",
              *_count([er[e.id] > 0 for e in zs if e.id in er]),
              _paper_count([paper_er[e.id] > 0 for e in paper_zs if e.id in paper_er])),
        Claim("Figure 1a", "finetuning on ImageNet lowers effective robustness (zero-shot ER > finetuned ER, per pair)",
              *_count(pair_cases(profile, er)), _paper_count(pair_cases(P, paper_er))),
        Claim("Figure 1a", "every robust zero-shot CLIP model has a higher ER than the supervised model of its backbone",
              *_count(above_sup(zs, er, sup)), _paper_count(above_sup(paper_zs, paper_er, paper_sup))),
        Claim("Figure 1b", "finetuning lowers the accuracy ratio %acc (per pair)",
              *_count(pair_cases(profile, ratio)), _paper_count(pair_cases(P, paper_ratio))),
    ]


def outlier_claims(profile: Profile, run: pd.DataFrame | None = None) -> list[Claim]:
    """Figure 2a and Table 4: outlier features (kurtosis > OUTLIER_KURTOSIS) only in robust models."""
    run = results.load(profile, "outlier_features") if run is None else run
    k, paper_k = _values(run, "kurtosis"), _paper_values("kurtosis")
    P = _paper_profile()
    nonrobust = [e for e in profile.pool if e.family in ("supervised", "imagenet_captions_clip")]
    archs = sorted({e.arch for e in profile.pool if e.family in ("robust_zeroshot_clip", "coca_zeroshot")})
    has_outliers = [any(k.get(e.id, 0) > OUTLIER_KURTOSIS for e in profile.pool
                        if e.arch == a and e.family in ("robust_zeroshot_clip", "coca_zeroshot"))
                    for a in archs if any(e.id in k for e in profile.pool if e.arch == a)]
    paper_coca = [paper_k[e.id] > OUTLIER_KURTOSIS for e in P.pool if e.family == "coca_zeroshot" and e.id in paper_k]
    return [
        Claim("Figure 2a, Table 4", "zero-shot kurtosis exceeds finetuned kurtosis (per pair)",
              *_count(pair_cases(profile, k)), f"stated for every pair (Section 4); Table 4: {_paper_count(pair_cases(P, paper_k))}"),
        Claim("Figure 2a, Table 4", f"every backbone has a zero-shot model with outlier features (kurtosis > {OUTLIER_KURTOSIS:g})",
              *_count(has_outliers), f"stated for every backbone (Section 4); Table 4 CoCa: {_paper_count(paper_coca)}"),
        Claim("Figure 2a", f"no supervised or ImageNet-Captions model has outlier features (kurtosis ≤ {OUTLIER_KURTOSIS:g})",
              *_count([k[e.id] <= OUTLIER_KURTOSIS for e in nonrobust if e.id in k]), "stated: kurtosis ≈ 3 (Section 4)"),
    ]


def privileged_claims(profile: Profile, run: pd.DataFrame | None = None) -> list[Claim]:
    """Figure 2b and Figures 9-10: privileged directions, weaker after finetuning, none when supervised."""
    run = results.load(profile, "privileged_directions") if run is None else run
    r = _values(run, "importance_ratio")
    sup = {e.arch: e.id for e in profile.pool if e.family == "supervised"}
    zs = [e for e in profile.pool if e.family == "robust_zeroshot_clip"]
    return [
        Claim("Figure 2b", "finetuning weakens the privileged direction (zero-shot importance ratio > finetuned, per pair)",
              *_count(pair_cases(profile, r)), "stated for every pair (Section 4)"),
        Claim("Figures 2b, 9-10", "every robust zero-shot CLIP model has a higher importance ratio than the supervised model of its backbone",
              *_count([r[e.id] > r[sup[e.arch]] for e in zs if e.id in r and sup.get(e.arch) in r]),
              "stated: supervised models have no privileged direction (Appendix E.1)"),
    ]


def concept_claims(profile: Profile, run: pd.DataFrame | None = None) -> list[Claim]:
    """Figure 3, Table 5 and Table 7: zero-shot models encode more unique concepts."""
    run = results.load(profile, "concept_probing") if run is None else run
    if not run.empty:
        run = run[np.isclose(run["threshold"], profile.metrics["concept_threshold"])]
    u, paper_u = _values(run, "unique_concepts"), _paper_values("unique_concepts")
    P = _paper_profile()
    sup = {e.arch: e.id for e in profile.pool if e.family == "supervised"}
    zs = [e for e in profile.pool if e.family == "robust_zeroshot_clip"]
    return [
        Claim("Figure 3, Table 5", "zero-shot models encode more unique concepts than their finetuned counterparts (per pair)",
              *_count(pair_cases(profile, u)), f"stated (Section 5); Table 5: {_paper_count(pair_cases(P, paper_u))}"),
        Claim("Figure 3", "every robust zero-shot CLIP model encodes more unique concepts than the supervised model of its backbone",
              *_count([u[e.id] > u[sup[e.arch]] for e in zs if e.id in u and sup.get(e.arch) in u]), "stated (Section 5)"),
    ]


def venn_claims(regions: dict[str, dict[str, int]]) -> list[Claim]:
    """Figure 4: the concepts shared by all three models form the largest region of each diagram.
    ``regions`` maps a backbone to its region sizes (keys as in :func:`venn_regions`)."""
    return [Claim("Figure 4", "the concepts shared by the zero-shot, finetuned and supervised models form the largest region",
                  *_count([r["all three"] == max(r.values()) for r in regions.values()]),
                  "4 of 4 (text: 237 for RN101 to 516 for ViT-B/16)")]


def venn_regions(sets_by_role: dict[str, set]) -> dict[str, int]:
    """Region sizes of Figure 4's diagram for the roles zero-shot, finetuned, supervised."""
    z, f, s = (sets_by_role[k] for k in ("zero-shot", "finetuned", "supervised"))
    return {"zero-shot only": len(z - f - s), "finetuned only": len(f - z - s), "supervised only": len(s - z - f),
            "zero-shot and finetuned": len((z & f) - s), "zero-shot and supervised": len((z & s) - f),
            "finetuned and supervised": len((f & s) - z), "all three": len(z & f & s)}


#: Figure 4's numbers printed in the text (Section 5): the region shared by all three models and
#: the zero-shot-only region, at their smallest and largest over the four OpenAI backbones.
PAPER_VENN_TEXT = pd.DataFrame([
    {"region": "all three", "paper smallest": "237 (RN101)", "paper largest": "516 (ViT-B-16)"},
    {"region": "zero-shot only", "paper smallest": "77 (ViT-B-16)", "paper largest": "105 (RN50)"},
])


def pruning_claims(profile: Profile, run: pd.DataFrame | None = None) -> list[Claim]:
    """Appendix G: pruning the 80 % least important directions costs little, for every model."""
    run = results.load(profile, "pruning") if run is None else run
    cases = []
    if not run.empty:
        for _, sub in run.groupby("entry", sort=False):
            base = sub.loc[np.isclose(sub["fraction"], 0.0), "imagenet"]
            at = sub.loc[np.isclose(sub["fraction"], PRUNING_FRACTION), "imagenet"]
            if len(base) and len(at) and base.iloc[0] > 0:
                cases.append(at.iloc[0] >= PRUNING_KEPT * base.iloc[0])
    return [Claim("Figures 11-14", f"pruning the {100 * PRUNING_FRACTION:.0f} % least important singular directions keeps "
                  f"at least {100 * PRUNING_KEPT:.0f} % of the unpruned ImageNet accuracy", *_count(cases),
                  "stated for every model (Appendix G)")]


def wiseft_claims(table: pd.DataFrame) -> list[Claim]:
    """Figures 17-22: ER, kurtosis and unique concepts fall from alpha = 0 to alpha = 1."""
    out = []
    for column, item, what in (("er", "Figures 17-18", "effective robustness"), ("kurtosis", "Figures 19-20", "kurtosis"),
                               ("unique_concepts", "Figures 21-22", "unique concepts")):
        cases = []
        if not table.empty and column in table:
            for _, sub in table.groupby("pair", sort=False):
                a0 = sub.loc[np.isclose(sub["alpha"], 0.0), column]
                a1 = sub.loc[np.isclose(sub["alpha"], 1.0), column]
                if len(a0) and len(a1) and pd.notna(a0.iloc[0]) and pd.notna(a1.iloc[0]):
                    cases.append(a0.iloc[0] > a1.iloc[0])
        out.append(Claim(item, f"{what} of the zero-shot end (α = 0) exceeds the finetuned end (α = 1), per pair",
                         *_count(cases), "stated (Appendix I)"))
    return out


def cka_claims(table: pd.DataFrame) -> list[Claim]:
    """Figures 7-8: the largest drop of CKA between consecutive layers is at the last layer."""
    cases = []
    if not table.empty:
        t = table[~table["layer"].astype(str).str.endswith(".mean")]
        for _, sub in t.groupby(["entry", "dataset"], sort=False):
            c = sub.sort_values("depth")["cka"].to_numpy(float)
            if c.size >= 2 and np.isfinite(c).all():
                drops = np.concatenate([[1.0 - c[0]], c[:-1] - c[1:]])
                cases.append(int(np.argmax(drops)) == c.size - 1)
    return [Claim("Figures 7-8", "the largest drop of CKA between consecutive layers is at the last layer, per pair and dataset",
                  *_count(cases), "stated: \"typically\" (Appendix C)")]


def coca_claims(run: pd.DataFrame, profile: Profile) -> list[Claim]:
    """Tables 3-5: finetuning lowers CoCa's ER, kurtosis and unique concepts. ``run`` has an
    ``entry`` column and the columns er, kurtosis, unique_concepts (as :func:`..chapters.coca.tables`)."""
    P = _paper_profile()
    out = []
    for column, item, what in (("er", "Table 3", "effective robustness"), ("kurtosis", "Table 4", "kurtosis"),
                               ("unique_concepts", "Table 5", "unique concepts")):
        cases = pair_cases(profile, _values(run, column), families=("coca_zeroshot",))
        paper_cases = pair_cases(P, _values(paper_values.coca_tables(), column), families=("coca_zeroshot",))
        out.append(Claim(item, f"finetuning lowers CoCa's {what} (per pair)", *_count(cases), _paper_count(paper_cases)))
    return out


def numbers(profile: Profile, load: Callable[[str], pd.DataFrame] | None = None) -> pd.DataFrame:
    """Every number the paper prints per model (Tables 1-5 and 7, and the ER and %acc that Tables
    1-2 imply) beside this run's value for its counterpart: one row per paper number, in the
    paper's order; ``this run`` is NaN where the run has no counterpart. ``load(section)``: the
    run's table of a section (default: every recorded entry; the summary passes its slice's)."""
    load = load or (lambda section: results.load(profile, section))
    acc = paper_values.accuracies()
    coca = paper_values.coca_tables()
    poly = paper_values.polysemanticity()
    rob = load("robustness")
    out = load("outlier_features")
    con = load("concept_probing")
    if not con.empty:
        con = con[np.isclose(con["threshold"], profile.metrics["concept_threshold"])]
    clip = acc[acc["table"] != "3"]
    specs = [  # (paper item, paper table, paper column, run table, run column, scale)
        ("Table 1", clip, "imagenet", rob, "imagenet", 100), ("Table 2", clip, "shifts_mean", rob, "shifts_mean", 100),
        ("Figure 1a (ER from Tables 1-2)", clip, "er", rob, "er", 100),
        ("Figure 1b (%acc from Tables 1-2)", clip, "acc_ratio", rob, "acc_ratio", 100),
        ("Table 3 (ImageNet)", coca, "imagenet", rob, "imagenet", 100), ("Table 3 (ER)", coca, "er", rob, "er", 100),
        ("Table 4", coca, "kurtosis", out, "kurtosis", 1), ("Table 5", coca, "unique_concepts", con, "unique_concepts", 1),
        ("Table 7", poly, "polysemanticity", con, "polysemanticity", 1),
    ]
    frames = []
    for item, paper, column, run, run_column, scale in specs:
        run = run if not run.empty and run_column in run else pd.DataFrame({"entry": [], run_column: []})
        b = beside(run.groupby("entry", as_index=False, sort=False)[run_column].first(), paper, run_column, profile,
                   paper_value=column, scale=scale, matched_only=False)
        frames.append(b.dropna(subset=["paper"]).assign(**{"paper item": item}))
    df = pd.concat(frames, ignore_index=True)
    return df[["paper item", "paper model", "paper", "this run", "difference", "this run's model"]]


def claims_frame(claims: list[Claim]) -> pd.DataFrame:
    """The claims as a table, the claim first (a narrow column still shows what is counted)."""
    return pd.DataFrame([c.as_row() for c in claims], columns=["claim", "paper item", "paper", "this run"])


#: The claims each chapter checks, computed from its recorded results table (the summary chapter
#: passes each section's table of its slice).
SECTION_CLAIMS: dict[str, Callable[[Profile, pd.DataFrame], list[Claim]]] = {
    "robustness": robustness_claims, "outlier_features": outlier_claims,
    "privileged_directions": privileged_claims, "concept_probing": concept_claims, "pruning": pruning_claims,
    "wiseft": lambda P, run: wiseft_claims(run),
    "cka_layers": lambda P, run: cka_claims(run),
}


def paper_model_values() -> pd.DataFrame:
    """Every per-model number the paper prints, one row per paper entry: ImageNet and mean shift
    accuracy, ER and %acc as fractions (Tables 1-3), kurtosis (Table 4), unique concepts (Table 5)
    and polysemanticity (Table 7); NaN where the paper prints none for that model."""
    acc = paper_values.accuracies()
    df = acc[["entry", "arch", "family", "pretraining"]].rename(columns={"arch": "backbone"})
    for c in ("imagenet", "shifts_mean", "er", "acc_ratio"):
        df[c] = acc[c] / 100
    df = df.merge(paper_values.coca_tables()[["entry", "kurtosis", "unique_concepts"]], on="entry", how="left")
    return df.merge(paper_values.polysemanticity()[["entry", "polysemanticity"]], on="entry", how="left")


# ------------------------------------------------------------------------------------------------
# The verdict that closes each chapter

VERDICT_TITLE = "What this run shows"


def profile_caveat(profile: Profile) -> str:
    """What the counts of a run can say, by profile: a demo's untrained stand-ins test the pipeline,
    not CLIP; a slice of the paper pool checks the claims on the models it holds."""
    if profile.is_demo:
        return (f"These counts come from the `{profile.name}` profile's untrained stand-in models: they show that "
                "the pipeline runs end to end and counts each claim, not whether the claim holds for CLIP.")
    if profile.kind == "smoke":
        return (f"These counts come from the `{profile.name}` smoke profile (a few images per dataset): they show "
                "that the pipeline runs on the real models, not whether the claim holds.")
    return (f"These counts come from the `{profile.name}` profile's {len(profile.pool)} models; a claim that holds in "
            "fewer cases than the paper's count is a disagreement worth reading the chapter's figures for.")


def _paper_sentence(claim: Claim) -> str:
    where = f"{claim.paper} on its printed values" if claim.paper[:1].isdigit() else claim.paper
    return f"The paper finds that {claim.statement}: {where}."


def _run_sentence(claim: Claim) -> str:
    if not claim.of:
        return "This run: no case to check it on in this slice."
    cases = "case" if claim.of == 1 else "cases"
    return f"This run: it holds in {claim.holds} of {claim.of} {cases}."


def verdict(claims: list[Claim], profile: Profile) -> str:
    """The closing box of a chapter, as MyST Markdown: for each claim the chapter checks, the
    paper's finding and this run's count in one sentence each, then the profile's caveat."""
    lines = [f"```{{admonition}} {VERDICT_TITLE}", ":class: tip verdict", ""]
    if not claims:
        lines.append("This chapter checks no countable claim of the paper.")
    for c in claims:
        lines.append(f"- **{c.item}.** {_paper_sentence(c)} {_run_sentence(c)}")
    lines += ["", profile_caveat(profile), "```"]
    return "\n".join(lines)


def show_verdict(claims: list[Claim], profile: Profile) -> None:
    """Display :func:`verdict` in a notebook (rendered as an admonition by the book)."""
    from IPython.display import Markdown, display

    display(Markdown(verdict(claims, profile)))
