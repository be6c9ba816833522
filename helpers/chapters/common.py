"""Pieces several chapters share: a pool entry's head W, its cached embeddings, the pairs of
models the paper compares, and the metadata columns every results row carries."""
from __future__ import annotations

import numpy as np

from ..config import PoolEntry, Profile

ZEROSHOT = ("robust_zeroshot_clip", "coca_zeroshot")
FINETUNED = ("finetuned_clip", "coca_finetuned")


def meta(e: PoolEntry) -> dict:
    """Columns every results row carries, so pool-level tables need no join with the profile."""
    return {"backbone": e.arch, "family": e.family, "pretraining": e.pretraining}


_HEADS: dict[tuple[str, str], tuple] = {}


def head(entry: PoolEntry, profile: Profile) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(W, b, normalize_features) of an entry: K x d_H head, bias or None, and whether logits are
    W h/||h|| (CLIP, CoCa) or W h + b (supervised). Loaded once per process."""
    key = (profile.digest(), entry.id)
    if key not in _HEADS:
        from ..models import load_from_profile

        m = load_from_profile(profile, entry.id, device="cpu")
        W = m.head.detach().float().cpu().numpy()
        b = None if m.bias is None else m.bias.detach().float().cpu().numpy()
        _HEADS[key] = (W, b, bool(m.normalize_features))
    return _HEADS[key]


def embeddings(entry: PoolEntry, profile: Profile, dataset: str = "imagenet"):
    """Cached extraction of ``entry`` on ``dataset`` (h, logits, labels), computed on first use."""
    from ..extract import activations

    return activations(entry, dataset, profile)


def finetuning_pairs(pool: list[PoolEntry]) -> list[tuple[PoolEntry, PoolEntry]]:
    """(zero-shot, finetuned) pairs of the slice, linked by ``finetuned_from``."""
    by_id = {e.id: e for e in pool}
    return [(by_id[e.finetuned_from], e) for e in pool if e.finetuned_from in by_id]


def supervised_counterpart(pool: list[PoolEntry], arch: str) -> PoolEntry | None:
    for e in pool:
        if e.family == "supervised" and e.arch == arch:
            return e
    return None
