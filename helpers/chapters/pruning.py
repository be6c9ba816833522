"""Appendix G: prune the least important singular directions of the head and re-score from cached
embeddings (Figures 11-14): ImageNet accuracy and ER as functions of the pruned fraction."""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.config import EVAL_DATASETS, SHIFTS
from helpers.metrics import effective_robustness, er_coefficients, mean_shift_accuracy, pruning_curve, svd_head
from helpers.chapters.common import embeddings_many, head, meta

SECTION = "pruning"


def measure(study, fractions=None, datasets=EVAL_DATASETS) -> pd.DataFrame:
    """Record per entry and pruned fraction p: accuracy on every dataset, the mean shift accuracy
    and ER (Eq. 5). p removes floor(p * rank(W)) of the smallest singular values."""
    P = study.profile
    fractions = fractions or P.metrics["prune_fractions"]
    for e in study.pool:
        W, b, normalize = head(e, P)
        rank = svd_head(W)[1].size
        curves = {}
        for d, a in embeddings_many(e, P, datasets).items():
            # argmax in the dataset's label space (ImageNet-R/A subsets, ObjectNet's collapse)
            curves[d] = pruning_curve(W, np.asarray(a.h), a.labels, fractions, normalize=normalize, bias=b,
                                      predict=lambda logits, ds=a.dataset: ds.collapse(logits).argmax(axis=1))
        rows = []
        for k, p in enumerate(fractions):
            row = {**meta(e), "fraction": p, **{d: float(curves[d][k]) for d in datasets}, "rank": rank}
            row["shifts_mean"] = mean_shift_accuracy(row) if all(s in row for s in SHIFTS) else np.nan
            row["er"] = effective_robustness(row["shifts_mean"], row["imagenet"],
                                             *er_coefficients(P)) if not np.isnan(row["shifts_mean"]) else np.nan
            rows.append(row)
        study.record(e.id, rows)
    return study.table()
