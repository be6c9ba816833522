"""Appendix D: the paper's indicators on CoCa, a robust multimodal model outside the CLIP family
(Tables 3-5), read back from the robustness, outlier-feature and concept-probing results tables."""
from __future__ import annotations

import pandas as pd

from .. import paper_values, results

SECTION = "coca"
COCA = ("coca_zeroshot", "coca_finetuned")


def tables(study, threshold: float = 0.9) -> pd.DataFrame:
    """One row per CoCa entry of the slice: ImageNet accuracy, ER, kurtosis and unique concepts,
    this run's beside the paper's (nothing is re-extracted: the other chapters' tables are read)."""
    P = study.profile
    ids = [e.id for e in study.pool if e.family in COCA]
    rob = results.load(P, "robustness", ids)
    out = results.load(P, "outlier_features", ids)
    con = results.load(P, "concept_probing", ids)
    run = pd.DataFrame({"entry": ids})
    if not rob.empty:
        run = run.merge(rob[["entry", "family", "imagenet", "er"]].assign(imagenet=lambda d: 100 * d.imagenet,
                                                                           er=lambda d: 100 * d.er), on="entry", how="left")
    if not out.empty:
        run = run.merge(out[["entry", "kurtosis"]], on="entry", how="left")
    if not con.empty:
        con = con[(con["threshold"] - threshold).abs() < 1e-9]
        run = run.merge(con[["entry", "unique_concepts"]], on="entry", how="left")
    for c in ("imagenet", "er", "kurtosis", "unique_concepts"):
        if c not in run:  # no CoCa model in this slice, or its chapter has not run: a gap, not an error
            run[c] = float("nan")
    paper = paper_values.coca_tables().rename(columns={"imagenet": "paper imagenet", "er": "paper er",
                                                       "kurtosis": "paper kurtosis", "unique_concepts": "paper unique_concepts"})
    run = run.rename(columns={c: f"this run {c}" for c in ("imagenet", "er", "kurtosis", "unique_concepts")})
    for row in run.to_dict("records"):
        entry_id = row.pop("entry")
        study.record(entry_id, row | {"threshold": threshold})
    return paper.drop(columns=["arch"]).merge(run, on=["entry"] + (["family"] if "family" in run else []), how="outer")
