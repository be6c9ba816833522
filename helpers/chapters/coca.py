"""Appendix D: the paper's indicators on CoCa, a robust multimodal model outside the CLIP family
(Tables 3-5), read back from the robustness, outlier-feature and concept-probing results tables."""
from __future__ import annotations

import pandas as pd

from helpers.paper import values as paper_values
from helpers.paper.compare import beside
from helpers.study import results

SECTION = "coca"
COCA = ("coca_zeroshot", "coca_finetuned")


def tables(study, threshold: float = 0.9) -> pd.DataFrame:
    """One row per CoCa entry of the slice: this run's ImageNet accuracy and ER (in %), kurtosis and
    unique concepts, read from the other chapters' tables (nothing is re-extracted) and recorded."""
    P = study.profile
    ids = [e.id for e in study.pool if e.family in COCA]
    rob = results.load(P, "robustness", ids)
    out = results.load(P, "outlier_features", ids)
    con = results.load(P, "concept_probing", ids)
    run = pd.DataFrame({"entry": ids, "family": [P.entry(i).family for i in ids]})
    if not rob.empty:
        run = run.merge(rob[["entry", "imagenet", "er"]].assign(imagenet=lambda d: 100 * d.imagenet,
                                                                er=lambda d: 100 * d.er), on="entry", how="left")
    if not out.empty:
        run = run.merge(out[["entry", "kurtosis"]], on="entry", how="left")
    if not con.empty:
        con = con[(con["threshold"] - threshold).abs() < 1e-9]
        run = run.merge(con[["entry", "unique_concepts"]], on="entry", how="left")
    for c in ("imagenet", "er", "kurtosis", "unique_concepts"):
        if c not in run:  # no CoCa model in this slice, or its chapter has not run: a gap, not an error
            run[c] = float("nan")
    for row in run.to_dict("records"):
        entry_id = row.pop("entry")
        study.record(entry_id, row | {"threshold": threshold})
    return run


#: Tables 3-5's quantities: column of :func:`tables` -> caption.
QUANTITIES = {"imagenet": "Table 3: ImageNet top-1 (%)", "er": "Table 3: effective robustness (points)",
              "kurtosis": "Table 4: activation kurtosis", "unique_concepts": "Table 5: unique concepts"}


def beside_paper(run: pd.DataFrame, profile) -> dict[str, pd.DataFrame]:
    """Per quantity of Tables 3-5, the paper's CoCa value beside this run's counterpart's."""
    return {caption: beside(run, paper_values.coca_tables(), column, profile) for column, caption in QUANTITIES.items()}


def bars_frame(run: pd.DataFrame, profile) -> pd.DataFrame:
    """Tables 3-5 as one row per paper model, ``<quantity> paper`` and ``<quantity> run`` columns."""
    frames = None
    for column in QUANTITIES:
        b = beside(run, paper_values.coca_tables(), column, profile)[["paper model", "this run's model", "paper", "this run"]]
        b = b.rename(columns={"paper": f"{column} paper", "this run": f"{column} run"})
        frames = b if frames is None else frames.merge(b, on=["paper model", "this run's model"], how="outer")
    fams = paper_values.coca_tables().set_index("entry")["family"]
    return frames.assign(family=frames["paper model"].map(fams))
