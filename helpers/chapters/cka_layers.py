"""Appendix C: where do zero-shot and finetuned models differ? Layer-by-layer CKA between a
zero-shot model and its finetuned counterpart, on ImageNet and on each shift (Figures 7 and 8).

The pair runs over each dataset in one pass and only the minibatch HSIC accumulators are cached
(:func:`helpers.engine.cka_pass.pair_cka`); no layer activations are written to disk."""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.engine.cka_pass import CKA_BATCH, default_batch, pair_cka  # noqa: F401 - CKA_BATCH re-exported for forks
from helpers.config import EVAL_DATASETS
from helpers.chapters.common import finetuning_pairs

SECTION = "cka_layers"


def measure(study, datasets=EVAL_DATASETS, batch: int | None = None) -> pd.DataFrame:
    """Record, under the finetuned entry, the minibatch CKA of every layer with the same layer of
    its zero-shot model, for each dataset (minibatches of ``batch`` images, default
    :func:`helpers.engine.cka_pass.default_batch`). Layers come in network order from the extraction
    engine (ResNet stages averaged over space; ViT blocks' class token and mean patch token)."""
    P = study.profile
    for zs, ft in finetuning_pairs(study.pool):
        rows = []
        for d in datasets:
            values = pair_cka(zs, ft, d, P, batch=batch).same_layer()
            for i, (name, value) in enumerate(values.items()):
                rows.append({"backbone": ft.arch, "family": ft.family, "pretraining": ft.pretraining,
                             "zero_shot": zs.id, "dataset": d, "layer": name, "depth": i, "cka": float(value)})
        study.record(ft.id, rows)
    return study.table()


def for_plot(table: pd.DataFrame) -> pd.DataFrame:
    """ImageNet and the mean ± std over the five shifts per layer, one pooling per layer kind
    (ViT: class token; the '.mean' rows stay in the table for forks)."""
    t = table[~table["layer"].str.endswith(".mean")].copy()
    t["where"] = np.where(t["dataset"] == "imagenet", "ImageNet", "shifts")
    return t
