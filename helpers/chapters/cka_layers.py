"""Appendix C: where do zero-shot and finetuned models differ? Layer-by-layer CKA between a
zero-shot model and its finetuned counterpart, on ImageNet and on each shift (Figures 7 and 8)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import EVAL_DATASETS
from ..metrics import cka_minibatch
from .common import finetuning_pairs

SECTION = "cka_layers"
#: Images per minibatch of the unbiased estimator (Nguyen et al., 2021); at least 4.
CKA_BATCH = 256


def _batches(a: np.ndarray, size: int) -> list[np.ndarray]:
    # a trailing batch below 4 images has no unbiased HSIC: it is dropped (at most 3 images)
    n = (len(a) // size) * size + (len(a) % size if len(a) % size >= 4 else 0)
    return [np.asarray(a[i:min(i + size, n)], dtype=np.float64) for i in range(0, n, size)]


def measure(study, datasets=EVAL_DATASETS, batch: int | None = None) -> pd.DataFrame:
    """Record, under the finetuned entry, the minibatch CKA of every layer with the same layer of
    its zero-shot model, for each dataset. Layers come in network order from the extraction engine
    (ResNet stages averaged over space; ViT blocks' class token and mean patch token)."""
    from ..extract import layer_activations

    P = study.profile
    for zs, ft in finetuning_pairs(study.pool):
        rows = []
        for d in datasets:
            la, lb = layer_activations(zs, d, P), layer_activations(ft, d, P)
            size = batch or min(CKA_BATCH, max(4, len(next(iter(la.values()))) // 4))
            for i, name in enumerate(n for n in la if n in lb):
                value = cka_minibatch(_batches(la[name], size), _batches(lb[name], size))
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
