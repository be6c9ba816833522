"""Appendix G: prune the least important singular directions of the head and re-score from cached
embeddings (Figures 11-14): ImageNet accuracy and ER as functions of the pruned fraction."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import EVAL_DATASETS, SHIFTS
from ..data import accuracy
from ..metrics import effective_robustness, svd_head
from .common import embeddings, head, meta

SECTION = "pruning"


def _pruned_logit_fn(W: np.ndarray, b: np.ndarray | None, normalize: bool, h: np.ndarray):
    """Logits of W_p = sum_{i kept} sigma_i u_i v_i^T for any kept set, from one projection of h on
    the right singular vectors (no re-extraction, one SVD per model)."""
    U, sigma, Vt = svd_head(W)
    x = h / np.linalg.norm(h, axis=1, keepdims=True) if normalize else h
    proj = x @ Vt.T  # N x rank

    def logits(n_pruned: int) -> np.ndarray:
        keep = slice(0, sigma.size - n_pruned)  # sigma is sorted decreasing: prune from the end
        out = (proj[:, keep] * sigma[keep]) @ U[:, keep].T
        return out if b is None else out + b

    return logits, sigma.size


def measure(study, fractions=None, datasets=EVAL_DATASETS) -> pd.DataFrame:
    """Record per entry and pruned fraction p: accuracy on every dataset, the mean shift accuracy
    and ER (Eq. 5). p removes floor(p * rank(W)) of the smallest singular values."""
    P = study.profile
    fractions = fractions or P.metrics["prune_fractions"]
    for e in study.pool:
        W, b, normalize = head(e, P)
        acts = {d: embeddings(e, P, d) for d in datasets}
        fns = {d: _pruned_logit_fn(W, b, normalize, np.asarray(a.h, dtype=np.float64)) for d, a in acts.items()}
        rows = []
        for p in fractions:
            row = {**meta(e), "fraction": p}
            for d, a in acts.items():
                fn, rank = fns[d]
                row[d] = float(accuracy(d, fn(int(np.floor(p * rank))), a.labels, dataset=a.dataset))
            row["rank"] = rank
            row["shifts_mean"] = float(np.mean([row[s] for s in SHIFTS])) if all(s in row for s in SHIFTS) else np.nan
            row["er"] = effective_robustness(row["shifts_mean"], row["imagenet"], P.metrics["er_slope"],
                                             P.metrics["er_intercept"]) if not np.isnan(row["shifts_mean"]) else np.nan
            rows.append(row)
        study.record(e.id, rows)
    return study.table()


def long_form(table: pd.DataFrame) -> pd.DataFrame:
    """ImageNet accuracy and ER (in %) as one 'metric' column, for faceted curves."""
    df = table.melt(id_vars=["entry", "backbone", "family", "pretraining", "fraction"],
                    value_vars=["imagenet", "er"], var_name="metric", value_name="value")
    df["value"] = 100 * df["value"]
    df["metric"] = df["metric"].map({"imagenet": "ImageNet top-1 (%)", "er": "effective robustness (points)"})
    return df
