"""Section 5, concept probing: AP of every (right singular vector, Broden concept) pair on balanced
concept sets, unique concepts (Eq. 4, Figure 3), polysemanticity (Table 7), the top concepts of the
most privileged direction (Table 6), concept-set overlaps (Figure 4) and the threshold sweep of
footnote 3. AP matrices are cached: forks and later chapters (WiSE-FT, diagnose) reuse them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.paper import values as paper_values
from helpers.config import PoolEntry, Profile
from helpers.metrics import concept_ap, importance, polysemanticity, project, svd_head, unique_concepts
from helpers.store import atomic_save_npy, atomic_write_json, key_of, load_npy
from helpers.chapters.common import embeddings, head, meta

SECTION = "concept_probing"


class BrodenSets:
    """Broden's concepts and, per concept, the presence of each image and its balanced set."""

    def __init__(self, concepts: pd.DataFrame, presence: np.ndarray, selection: np.ndarray, report: pd.DataFrame,
                 key: str):
        self.concepts, self.presence, self.selection, self.report, self.key = concepts, presence, selection, report, key

    @property
    def probed(self) -> np.ndarray:
        """Indices of the concepts with a balanced set (the others are reported, not probed)."""
        return np.flatnonzero(self.selection.any(axis=0))


def broden_sets(profile: Profile) -> BrodenSets:
    """Balanced positive/negative sets for every concept (Section 5), decoded from Broden's masks
    once and cached under ``cache_dir/broden``, keyed by the dataset digest, the sample limit and
    the balancing parameters (``metrics.broden_min_positives``, ``metrics.seed``)."""
    from helpers.data import open_broden

    ds = open_broden(profile.dataset_root("broden"), limit=profile.limit("broden"))
    material = {"digest": ds.digest(), "limit": profile.limit("broden"),
                "min_positives": profile.metrics["broden_min_positives"], "seed": profile.metrics["seed"]}
    key = key_of(material)[:20]
    folder = profile.cache_dir / "broden" / key
    arrays = None
    if (folder / "manifest.json").exists():
        arrays = [load_npy(folder / "presence.npy"), load_npy(folder / "selection.npy")]
    if arrays is None or any(a is None for a in arrays):  # absent, unfinished or damaged
        (folder / "manifest.json").unlink(missing_ok=True)
        selection, report = ds.balanced_sets(min_positives=material["min_positives"], seed=material["seed"])
        atomic_save_npy(folder / "presence.npy", ds.presence)
        atomic_save_npy(folder / "selection.npy", selection)
        report.to_csv(folder / "report.csv", index=False)
        ds.concepts.to_csv(folder / "concepts.csv", index=False)
        atomic_write_json(folder / "manifest.json", material)  # written last: the folder is complete
        arrays = [ds.presence, selection]
    return BrodenSets(pd.read_csv(folder / "concepts.csv"), *arrays, pd.read_csv(folder / "report.csv"), key)


def ap_path(profile: Profile, entry_id: str, activations_key: str, sets: BrodenSets, sign: str) -> Path:
    """Where an AP matrix is cached: ``<cache_dir>/concepts/<entry id>/<key>.npy``, keyed by the
    Broden activations' key, the balanced sets and the sign rule (pool entries and in-memory
    mixtures alike)."""
    key = key_of({"activations": activations_key, "broden": sets.key, "sign": sign})[:20]
    return profile.cache_dir / "concepts" / entry_id / f"{key}.npy"


def ap_matrix(entry: PoolEntry, profile: Profile, sets: BrodenSets | None = None) -> np.ndarray:
    """AP_i^c for every right singular vector i of W (rows, by decreasing sigma) and every Broden
    concept c (columns; NaN for concepts without a balanced set), cached per entry."""
    sets = sets or broden_sets(profile)
    acts = embeddings(entry, profile, "broden")
    sign = profile.metrics["concept_sign"]
    path = ap_path(profile, entry.id, acts.manifest.get("key", json.dumps(acts.manifest, sort_keys=True, default=str)),
                   sets, sign)
    if (cached := load_npy(path)) is not None:
        return cached
    ap = probe_activations(acts, head(entry, profile)[0], sets, sign)
    atomic_save_npy(path, ap)
    return ap


def probe(h: np.ndarray, Vt: np.ndarray, sets: BrodenSets, sign: str) -> np.ndarray:
    """AP_i^c of Section 5 for Broden embeddings ``h`` (rows in Broden's image order) projected on
    the right singular vectors ``Vt``: directions x concepts, NaN for concepts without a balanced set."""
    probed = sets.probed
    ap = np.full((Vt.shape[0], len(sets.concepts)), np.nan)
    if probed.size:
        ap[:, probed] = concept_ap(project(h, Vt), sets.presence[:, probed], sets.selection[:, probed], sign=sign)
    return ap


def probe_activations(acts, W: np.ndarray, sets: BrodenSets, sign: str) -> np.ndarray:
    """:func:`probe` for cached Broden activations of a model with head ``W`` (a pool entry or a
    WiSE-FT mixture). W is taken in float32, as heads are stored: svd_head's rank tolerance depends
    on the dtype, so every caller gets the same directions."""
    _, _, Vt = svd_head(np.asarray(W, dtype=np.float32))
    # h[argsort(labels)] puts the embeddings in Broden's image order whatever order extraction used
    return probe(np.asarray(acts.h)[np.argsort(np.asarray(acts.labels))], Vt, sets, sign)


def unique_concepts_at(ap: np.ndarray, threshold: float) -> int:
    """Eq. (4), |C|, of an AP matrix (directions x concepts) at ``threshold``: what the chapter,
    the WiSE-FT sweep and ``diagnose`` report. A concept without a balanced set (a NaN column) never
    counts as encoded."""
    return int(unique_concepts(np.nan_to_num(ap, nan=0.0), threshold))


def concept_set(ap: np.ndarray, sets: BrodenSets, threshold: float) -> set[str]:
    """Names of the concepts encoded by some direction (Eq. 4's set C)."""
    hit = np.flatnonzero(np.nan_to_num(ap, nan=0.0).max(axis=0) >= threshold)
    return set(sets.concepts["name"].iloc[hit])


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
    from helpers.paper import compare

    regions = {arch: compare.venn_regions(s) for arch, s in venns.items()}
    view = compare.PAPER_VENN_TEXT.assign(**{f"this run {a}": [r[k] for k in compare.PAPER_VENN_TEXT["region"]]
                                             for a, r in regions.items()})
    return view, compare.venn_claims(regions)


def paper_comparison(table: pd.DataFrame, threshold: float = 0.9, profile: Profile | None = None
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Table 7 beside this run's polysemanticity, Table 6 beside this run's top-3 concepts), one
    row per paper model with a counterpart in this run (its id or the entry standing in for it);
    Table 6 in long form, one row per (model, rank), each concept with its AP)."""
    from helpers.paper.compare import beside, counterparts, in_paper_order, model_label

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
