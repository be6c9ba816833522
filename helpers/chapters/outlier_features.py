"""Section 4, outlier features: activation kurtosis (Eq. 1) per model with a bootstrap interval
over images (Figure 2a), its distribution over images, and the largest coordinates of h."""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.metrics import kurtosis, kurtosis_interval
from helpers.chapters.common import embeddings, meta

SECTION = "outlier_features"


def measure(study, dataset: str = "imagenet") -> pd.DataFrame:
    """Record per entry: kurtosis of Eq. (1) over ``dataset`` with its 95 % bootstrap interval,
    d_H, and how far the largest mean |h_i| stands above the mean over coordinates."""
    P = study.profile
    for e in study.pool:
        h = np.asarray(embeddings(e, P, dataset).h)
        per_image, (est, low, high) = kurtosis_interval(h, n_boot=P.metrics["bootstrap"], seed=P.metrics["seed"])
        mean_abs = np.abs(h).mean(axis=0)
        study.record(e.id, {**meta(e), "dataset": dataset, "kurtosis": est, "ci_low": low, "ci_high": high,
                            "n_images": int((~np.isnan(per_image)).sum()), "d_H": h.shape[1],
                            "top_coordinate": int(mean_abs.argmax()),
                            "top_over_mean": float(mean_abs.max() / mean_abs.mean())})
    return study.table()


def per_image(study, dataset: str = "imagenet") -> pd.DataFrame:
    """Long table of per-image kurtosis values (from the cached embeddings) for distribution plots."""
    frames = []
    for e in study.pool:
        k = kurtosis(np.asarray(embeddings(e, study.profile, dataset).h), per_image=True)
        frames.append(pd.DataFrame({"entry": e.id, "family": e.family, "kurtosis": k[~np.isnan(k)]}))
    return pd.concat(frames, ignore_index=True)


def coordinate_profile(study, dataset: str = "imagenet", top: int = 20) -> pd.DataFrame:
    """Mean |h_i| over images for the ``top`` largest coordinates of each model, relative to the
    mean over all coordinates: outlier features stand orders of magnitude above 1."""
    rows = []
    for e in study.pool:
        mean_abs = np.abs(np.asarray(embeddings(e, study.profile, dataset).h)).mean(axis=0)
        ranked = np.sort(mean_abs)[::-1][:top] / mean_abs.mean()
        rows += [{"entry": e.id, "family": e.family, "rank": r + 1, "relative": v} for r, v in enumerate(ranked)]
    return pd.DataFrame(rows)
