"""Broden probing (Section 5): the balanced concept sets, and the AP of every (right singular
vector of W, Broden concept) pair for a model's cached Broden activations, cached per activations'
key, balanced sets and sign rule. The concept-probing chapter, the WiSE-FT sweep and its Figure 5
trajectory, and ``diagnose`` all probe through these functions, so one model gets one AP matrix.

The metric itself (AP on a balanced set, Eq. 4's unique concepts) lives in
:mod:`helpers.metrics.concepts`; this module decodes Broden's masks, reads the engine's
activations and heads, and caches."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.config import PoolEntry, Profile
from helpers.data import open_broden
from helpers.engine import extract  # the module: tests intercept its functions
from helpers.metrics import concept_ap, project, svd_head, unique_concepts
from helpers.store import atomic_save_npy, atomic_write_json, key_of, load_npy


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
    acts = extract.activations(entry, "broden", profile)
    sign = profile.metrics["concept_sign"]
    path = ap_path(profile, entry.id, acts.manifest.get("key", json.dumps(acts.manifest, sort_keys=True, default=str)),
                   sets, sign)
    if (cached := load_npy(path)) is not None:
        return cached
    ap = probe_activations(acts, np.asarray(extract.head(entry, profile).W), sets, sign)
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
