"""Section 5, concept probing: AP of every (right singular vector, Broden concept) pair on balanced
concept sets, unique concepts (Eq. 4, Figure 3), polysemanticity (Table 7), the top concepts of the
most privileged direction (Table 6), concept-set overlaps (Figure 4) and the threshold sweep of
footnote 3. AP matrices are cached: forks and later chapters (WiSE-FT, diagnose) reuse them."""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.paper import compare
from helpers.paper import values as paper_values
from helpers.paper.compare import beside, counterparts, in_paper_order, model_label
from helpers.config import Profile
from helpers.metrics import importance, polysemanticity
from helpers.chapters.common import embeddings, head, meta
# Broden probing is engine work (helpers.engine.probing); the chapter reads it under these names
from helpers.engine.probing import ap_matrix, broden_sets, concept_set, unique_concepts_at

SECTION = "concept_probing"


def measure(study, thresholds=None) -> pd.DataFrame:
    """Record per entry and threshold: unique concepts (Eq. 4), polysemanticity averaged over d_H
    as the paper writes it and over rank(W), and the top-3 concepts of the most privileged
    direction (largest Importance on the ImageNet embeddings, Eq. 2)."""
    P = study.profile
    thresholds = thresholds or P.metrics["concept_thresholds"]
    sets = broden_sets(P)
    names = sets.concepts["name"].to_numpy()
    for e in study.pool:
        ap = ap_matrix(e, P, sets)
        W, _, _ = head(e, P)
        imp = importance(W, np.asarray(embeddings(e, P, "imagenet").h))
        top_dir = int(np.argmax(imp))
        row_ap = np.nan_to_num(ap[top_dir], nan=-1.0)
        top = np.argsort(-row_ap, kind="stable")[:3]
        a = np.nan_to_num(ap, nan=0.0)  # concepts without a balanced set never count as encoded
        rows = []
        for t in thresholds:
            rows.append({**meta(e), "threshold": t, "unique_concepts": unique_concepts_at(ap, t),
                         "polysemanticity": polysemanticity(a, t, d_H=W.shape[1]),
                         "polysemanticity_rank": polysemanticity(a, t),
                         "probed_concepts": int(sets.probed.size), "directions": ap.shape[0],
                         "privileged_direction": top_dir + 1,
                         **{f"top{k + 1}": names[c] for k, c in enumerate(top)},
                         **{f"top{k + 1}_ap": float(ap[top_dir, c]) for k, c in enumerate(top)}})
        study.record(e.id, rows)
    return study.table()


def at_threshold(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    return table[np.isclose(table["threshold"], threshold)].reset_index(drop=True)


def venn_sets(study, threshold: float) -> dict[str, dict[str, set[str]]]:
    """Per backbone, the concept sets of its zero-shot, finetuned and supervised models (Figure 4;
    ImageNet-Captions models left out as in the paper). Only backbones with all three."""
    P = study.profile
    sets = broden_sets(P)
    by_arch: dict[str, dict[str, set[str]]] = {}
    roles = {"robust_zeroshot_clip": "zero-shot", "finetuned_clip": "finetuned", "supervised": "supervised"}
    for e in study.pool:
        role = roles.get(e.family)
        # the first model of each role per backbone (the paper's Figure 4 uses the OpenAI ones)
        if role and role not in by_arch.get(e.arch, {}):
            by_arch.setdefault(e.arch, {})[role] = concept_set(ap_matrix(e, P, sets), sets, threshold)
    return {a: s for a, s in by_arch.items() if len(s) == 3}


def venn_comparison(venns: dict[str, dict[str, set[str]]]) -> tuple[pd.DataFrame, list]:
    """Figure 4's region sizes: the two the paper prints in its text (smallest and largest over
    its four backbones) beside this run's, one column per backbone of ``venns`` (as from
    :func:`venn_sets`), and the claim that the region shared by all three is the largest."""
    regions = {arch: compare.venn_regions(s) for arch, s in venns.items()}
    view = compare.PAPER_VENN_TEXT.assign(**{f"this run {a}": [r[k] for k in compare.PAPER_VENN_TEXT["region"]]
                                             for a, r in regions.items()})
    return view, compare.venn_claims(regions)


def paper_comparison(table: pd.DataFrame, threshold: float = 0.9, profile: Profile | None = None
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Table 7 beside this run's polysemanticity, Table 6 beside this run's top-3 concepts), one
    row per paper model with a counterpart in this run (its id or the entry standing in for it);
    Table 6 in long form, one row per (model, rank), each concept with its AP)."""
    run = at_threshold(table, threshold)
    poly = beside(run, paper_values.polysemanticity(), "polysemanticity", profile)
    links = counterparts(profile).set_index("entry")["paper_entry"]
    rows = []
    for r in run.drop_duplicates("entry").itertuples():
        key = links.get(r.entry, r.entry)
        paper_top = paper_values.top_concepts().query("entry == @key").set_index("rank")
        if paper_top.empty:
            continue
        for k in (1, 2, 3):
            p = paper_top.loc[k] if k in paper_top.index else None
            rows.append({"paper model": key, "rank": k,
                         "paper": f"{p.concept} ({p.ap:.2f})" if p is not None else None,
                         "this run": f"{getattr(r, f'top{k}')} ({getattr(r, f'top{k}_ap'):.2f})",
                         "this run's model": model_label(r.entry, profile)})
    top = pd.DataFrame(rows, columns=["paper model", "rank", "paper", "this run", "this run's model"])
    return poly, in_paper_order(top, None, column="paper model")
