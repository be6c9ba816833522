"""Section 4, privileged directions: the importance of each right singular vector of the head
(Eq. 2), the importance ratio (Eq. 3, Figure 2b) and the full distributions (Figures 9 and 10)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.metrics import importance, svd_head
from helpers.chapters.common import embeddings, head, meta

SECTION = "privileged_directions"


def measure(study, dataset: str = "imagenet") -> pd.DataFrame:
    """Record one row per singular direction i of each entry's W: sigma_i, Importance(i) (Eq. 2)
    on ``dataset``'s embeddings, and the entry's importance ratio (Eq. 3) on every row."""
    P = study.profile
    for e in study.pool:
        W, _, _ = head(e, P)
        svd = svd_head(W)
        imp = importance(W, np.asarray(embeddings(e, P, dataset).h), svd=svd)
        study.record(e.id, pd.DataFrame({
            **meta(e), "dataset": dataset, "direction": np.arange(1, imp.size + 1), "sigma": svd[1],
            "importance": imp, "importance_ratio": imp.max() / imp.mean(), "rank": imp.size,
        }))
    return study.table()


def ratios(table: pd.DataFrame) -> pd.DataFrame:
    """One row per entry: the importance ratio of Eq. (3) and the most privileged direction."""
    first = table.loc[table.groupby("entry", sort=False)["importance"].idxmax()]
    return first[["entry", "backbone", "family", "pretraining", "importance_ratio", "direction", "rank"]].rename(
        columns={"direction": "most_privileged_direction"}).reset_index(drop=True)
