"""WiSE-FT weight-space ensembles (Appendix I; Wortsman et al., 2022b).

Given a zero-shot model f_{theta_0} and its finetuned counterpart f_{theta_1} (same architecture;
the finetuned head started from the zero-shot head, Appendix H.1), the mixture

    theta_alpha = (1 - alpha) * theta_0 + alpha * theta_1,   alpha in [0, 1],

is taken over every parameter and floating-point buffer, the classification head W included (as
in the WiSE-FT reference code); logits stay W h/||h||. Integer buffers (BatchNorm's batch counter,
unused at inference) are taken from the nearer endpoint. alpha = 0 gives the zero-shot model and
alpha = 1 the finetuned one exactly, bit for bit.

:func:`evaluate` sweeps a grid of alpha through the extraction engine (accuracies on ImageNet and
its five shifts, ER of Eq. (5), the kurtosis of Eq. (1), unique Broden concepts of Eq. (4)) with the
mixtures held in memory: no checkpoint per alpha is written unless ``save=True``, and no
activation array of a mixture is cached (only the numbers the figures read).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from helpers.config import EVAL_DATASETS, SHIFTS, PoolEntry, Profile, load_profile
from helpers.engine import extract, probing  # the modules: tests intercept their functions
from helpers.metrics import effective_robustness, er_coefficients, kurtosis
from helpers.models import save_classifier
from helpers.store import CacheEntry, atomic_save_npy, key_of, load_npy

#: The paper's grid: 0, 0.1, ..., 1.0.
DEFAULT_ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))


class WiseFTError(ValueError):
    """Two models that cannot be interpolated, or an alpha outside [0, 1]; names both models."""


def check_compatible(zeroshot, finetuned) -> None:
    """Raise :class:`WiseFTError` unless the two loaded models share architecture, head shape, logit
    rule and input normalisation, i.e. unless their weight vectors live in the same space."""
    def name(m):
        return f"{m.entry.id!r} ({m.entry.source} {m.entry.model})"

    pair = f"cannot interpolate {name(zeroshot)} with {name(finetuned)}"
    if (zeroshot.entry.source, zeroshot.entry.model) != (finetuned.entry.source, finetuned.entry.model):
        raise WiseFTError(f"{pair}: different architectures")
    if zeroshot.normalize_features != finetuned.normalize_features:
        raise WiseFTError(f"{pair}: one computes W h/||h||, the other W h + b")
    if (zeroshot.image_mean, zeroshot.image_std) != (finetuned.image_mean, finetuned.image_std):
        raise WiseFTError(f"{pair}: different input normalisation")
    s0, s1 = zeroshot.state_dict(), finetuned.state_dict()
    if s0.keys() != s1.keys():
        extra = sorted(set(s0) ^ set(s1))
        raise WiseFTError(f"{pair}: different parameters (e.g. {', '.join(extra[:3])})")
    for k in s0:
        if s0[k].shape != s1[k].shape or s0[k].dtype != s1[k].dtype:
            raise WiseFTError(f"{pair}: parameter {k} is {tuple(s0[k].shape)} {s0[k].dtype} in one and "
                              f"{tuple(s1[k].shape)} {s1[k].dtype} in the other")


def mixture_entry(finetuned: PoolEntry, alpha: float) -> PoolEntry:
    """The pool entry a mixture is reported under: the finetuned entry's, with an id naming alpha."""
    return dataclasses.replace(finetuned, id=f"{finetuned.id}.wiseft-{alpha:.2f}", checkpoint=None,
                               note=f"WiSE-FT mixture alpha={alpha:g} of {finetuned.finetuned_from} and {finetuned.id}")


def interpolate(zeroshot, finetuned, alpha: float, out=None):
    """theta_alpha = (1 - alpha) theta_0 + alpha theta_1 as a :class:`~helpers.models.loading.LoadedModel`
    (Appendix I). ``out``: a mixture returned before for the same pair, overwritten in place instead
    of copying the model again (one extra model in memory for a whole sweep)."""
    if not 0.0 <= alpha <= 1.0:
        raise WiseFTError(f"alpha must be in [0, 1], found {alpha}")
    check_compatible(zeroshot, finetuned)
    import torch

    s0, s1 = zeroshot.state_dict(), finetuned.state_dict()
    with torch.no_grad():
        mixed = {k: ((1.0 - alpha) * s0[k] + alpha * s1[k].to(s0[k].device)) if s0[k].is_floating_point()
                 else (s1[k] if alpha >= 0.5 else s0[k]).clone()
                 for k in s0}
    model = out if out is not None else copy.deepcopy(zeroshot)
    model.load_state_dict(mixed)
    model.entry = mixture_entry(finetuned.entry, alpha)
    model.weights_digest = key_of({"kind": "wiseft", "zeroshot": zeroshot.weights_digest,
                                   "finetuned": finetuned.weights_digest, "alpha": float(alpha)})
    model.weights_source = (f"WiSE-FT alpha={alpha:g}: (1 - alpha) x {zeroshot.entry.id} "
                            f"[{zeroshot.weights_source}] + alpha x {finetuned.entry.id} [{finetuned.weights_source}]")
    model.head_source = model.weights_source
    return model.eval()


def mixture_path(profile: Profile, finetuned: PoolEntry, alpha: float) -> Path:
    """Where ``save=True`` writes a mixture: ``<checkpoints_dir>/<finetuned id>/wiseft/alpha_<a>.pt``."""
    return profile.paths["checkpoints_dir"] / finetuned.id / "wiseft" / f"alpha_{alpha:.2f}.pt"


def broden_available(profile: Profile) -> bool:
    """Whether the profile names a Broden folder that exists (unique concepts need it)."""
    return "broden" in profile.datasets and Path(profile.dataset_root("broden")).is_dir()


#: What :func:`summaries` keeps per (model, dataset); bump when the computation changes.
SUMMARY_VERSION = 1


def summaries(profile: Profile, model, dataset: str) -> dict[str, float]:
    """Top-1 ``accuracy`` and ``kurtosis`` (Eq. 1) of an in-memory model (a WiSE-FT mixture, an
    epoch checkpoint) on ``dataset``, from activations computed in memory and never written: only
    these two numbers are cached, under ``<cache_dir>/summaries/<id>/``, keyed by the key the
    activations would have (weights digest, head, store, dtype, ...)."""
    e = model.entry
    key = extract.activation_keys([e], dataset, profile, models={e.id: model})[e.id]
    cache = CacheEntry(profile.cache_dir / "summaries" / e.id, dataset,
                       {"kind": "summary", "version": SUMMARY_VERSION, "activations": key})
    loaded = cache.load()
    if loaded is None:
        acts = extract.extract_many([e], dataset, profile, models={e.id: model}, keep=False)[e.id]
        with cache.lock():
            part = cache.partial({"accuracy": ((1,), "float64"), "kurtosis": ((1,), "float64")}, fresh=True)
            part.arrays["accuracy"][0] = acts.accuracy
            part.arrays["kurtosis"][0] = kurtosis(np.asarray(acts.h))
            loaded = part.commit({"entry": e.id, "dataset": dataset, "n": int(len(acts.h))})
    return {k: float(v[0]) for k, v in loaded[1].items()}


def transient_ap(profile: Profile, model, sets=None) -> np.ndarray:
    """AP matrix (directions x concepts, Section 5) of an in-memory model on Broden, from
    activations computed in memory and never written; the matrix is cached where
    :func:`helpers.engine.probing.ap_matrix` caches a pool entry's (same key material:
    the activations' key, the balanced sets, the sign rule)."""
    sets = sets or probing.broden_sets(profile)
    e, sign = model.entry, profile.metrics["concept_sign"]
    key = extract.activation_keys([e], "broden", profile, models={e.id: model})[e.id]
    path = probing.ap_path(profile, e.id, key, sets, sign)
    if (cached := load_npy(path)) is not None:
        return cached
    acts = extract.extract_many([e], "broden", profile, models={e.id: model}, keep=False)[e.id]
    ap = probing.probe_activations(acts, model.head.detach().float().cpu().numpy(), sets, sign)
    atomic_save_npy(path, ap)
    return ap


def evaluate(profile: Profile, zeroshot_id: str, finetuned_id: str, alphas: Sequence[float] = DEFAULT_ALPHAS,
             datasets: Sequence[str] = EVAL_DATASETS, concepts: bool | None = None, save: bool = False):
    """One row per alpha for the WiSE-FT sweep between two pool entries (Figures 15-22): top-1 per
    dataset (fractions), ``shifts_mean``, ``er`` (Eq. 5 with the profile's beta), ``kurtosis`` on
    ImageNet and ``kurtosis_shifts`` (mean over the shifts, Eq. 1), and ``unique_concepts`` (Eq. 4
    at the profile's threshold) when ``concepts`` (default: when Broden is on disk).

    alpha = 0 and 1 are the two pool entries themselves (their cached activations are reused);
    the mixtures in between exist only in memory unless ``save`` writes them to
    :func:`mixture_path`, and so do their activations: per (alpha, dataset) only the accuracy and
    the kurtosis (:func:`summaries`) and the Broden AP matrix (:func:`transient_ap`) are cached.
    Both models are built once, on the profile's device. Returns a DataFrame.
    """
    import pandas as pd
    from tqdm import tqdm  # plain bars: notebook widgets need ipywidgets and would warn

    zs_entry, ft_entry = profile.entry(zeroshot_id), profile.entry(finetuned_id)
    zs, ft = extract.loaded_model(zs_entry, profile), extract.loaded_model(ft_entry, profile)
    check_compatible(zs, ft)
    concepts = broden_available(profile) if concepts is None else concepts
    er_line = er_coefficients(profile)
    if concepts:
        sets = probing.broden_sets(profile)
    shifts = [d for d in datasets if d in SHIFTS]
    rows, mixture = [], None
    for alpha in tqdm(list(alphas), desc=f"WiSE-FT {zs_entry.id} -> {ft_entry.id}", unit="alpha"):
        alpha = float(alpha)
        if alpha in (0.0, 1.0):
            # The endpoints equal the pool entries bit for bit (tests/unit/test_wiseft.py): reuse their caches.
            model = zs if alpha == 0.0 else ft
            acts = extract.extract_datasets(model.entry, datasets, profile)
            stats = {d: {"accuracy": acts[d].accuracy, "kurtosis": kurtosis(np.asarray(acts[d].h))} for d in datasets}
        else:
            model = mixture = interpolate(zs, ft, alpha, out=mixture)
            if save:
                save_classifier(model, mixture_path(profile, ft_entry, alpha), entry=model.entry.id,
                                wiseft={"alpha": alpha, "zeroshot": zs_entry.id, "finetuned": ft_entry.id})
            stats = {d: summaries(profile, model, d) for d in datasets}
        row = {"alpha": alpha, **{d: stats[d]["accuracy"] for d in datasets}}
        if "imagenet" in stats:
            row["kurtosis"] = stats["imagenet"]["kurtosis"]
        if shifts:
            row["shifts_mean"] = float(np.mean([row[d] for d in shifts]))
            row["kurtosis_shifts"] = float(np.mean([stats[d]["kurtosis"] for d in shifts]))
        if "imagenet" in stats and len(shifts) == len(SHIFTS):
            row["er"] = effective_robustness(row["shifts_mean"], row["imagenet"], *er_line)
        if concepts:
            ap = probing.ap_matrix(model.entry, profile, sets) if alpha in (0.0, 1.0) else transient_ap(profile, model, sets)
            row["unique_concepts"] = probing.unique_concepts_at(ap, profile.metrics["concept_threshold"])
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Command line: `clip-study wiseft` (helpers.workflow.cli)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--profile", default="demo", help="profile name (demo, paper) or YAML path")
    ap.add_argument("--entry", required=True, help="finetuned pool entry (its finetuned_from is the zero-shot end)")
    ap.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS),
                    help="interpolation weights of the finetuned model (default 0, 0.1, ..., 1)")
    ap.add_argument("--no-concepts", action="store_true", help="skip the unique-concept count (Broden)")
    ap.add_argument("--save", action="store_true", help="also write each mixture as a classifier checkpoint")


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    entry = profile.entry(args.entry)
    if not entry.finetuned_from:
        raise WiseFTError(f"entry {entry.id!r} has no finetuned_from: name a finetuned entry")
    table = evaluate(profile, entry.finetuned_from, entry.id, args.alphas,
                     concepts=False if args.no_concepts else None, save=args.save)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0
