"""Pieces several chapters share: a pool entry's head W, its cached embeddings, the pairs of
models the paper compares, and the metadata columns every results row carries."""
from __future__ import annotations

import numpy as np

from helpers.config import PoolEntry, Profile


def meta(e: PoolEntry) -> dict:
    """Columns every results row carries, so pool-level tables need no join with the profile."""
    return {"backbone": e.arch, "family": e.family, "pretraining": e.pretraining}


def head(entry: PoolEntry, profile: Profile) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(W, b, normalize_features) of an entry: K x d_H head, bias or None, and whether logits are
    W h/||h|| (CLIP, CoCa) or W h + b (supervised). Read from the extraction engine's head cache
    (no model is built when it is cached; otherwise once, on the profile's device)."""
    from helpers.engine.extract import head as cached_head

    h = cached_head(entry, profile)
    return np.asarray(h.W), None if h.b is None else np.asarray(h.b), h.normalize


def embeddings(entry: PoolEntry, profile: Profile, dataset: str = "imagenet"):
    """Cached extraction of ``entry`` on ``dataset`` (h, labels; logits derived), computed on first use."""
    from helpers.engine.extract import activations

    return activations(entry, dataset, profile)


def embeddings_many(entry: PoolEntry, profile: Profile, datasets) -> dict:
    """:func:`embeddings` over several datasets with one model build (``extract.extract_datasets``)."""
    from helpers.engine.extract import extract_datasets

    return extract_datasets(entry, list(datasets), profile)


def finetuning_pairs(pool: list[PoolEntry]) -> list[tuple[PoolEntry, PoolEntry]]:
    """(zero-shot, finetuned) pairs of the slice, linked by ``finetuned_from``."""
    by_id = {e.id: e for e in pool}
    return [(by_id[e.finetuned_from], e) for e in pool if e.finetuned_from in by_id]


def supervised_counterpart(pool: list[PoolEntry], arch: str) -> PoolEntry | None:
    for e in pool:
        if e.family == "supervised" and e.arch == arch:
            return e
    return None
