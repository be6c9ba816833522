"""Chapter 06: WiSE-FT mixtures between each zero-shot model and its finetuned counterpart
(Appendix I, Figures 15-22) and the concepts of a finetuning run epoch by epoch (Section 5,
Figure 5). The computations live in :mod:`helpers.engine.mixtures`, :mod:`helpers.training.loop` and
:mod:`.concept_probing`; this module pairs the pool entries, records the tables and draws the
figures."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from helpers.study import results
from helpers.config import REPO_ROOT, PoolEntry, Profile
from helpers.chapters.common import meta, supervised_counterpart
from helpers.plots import TRAJECTORY_REGIONS

SECTION = "wiseft"
#: Figure 5's table (one per finetuned entry) lives beside the sweep's, under its own section.
TRAJECTORY_SECTION = "finetuning_concepts"

#: Figure 16 of the paper holds the pretraining sets whose zero-shot models are weak.
LOW_ACCURACY_PRETRAINING = ("YFCC-15M", "CC-12M")

#: Figure 5's regions of the Venn diagram of Figure 4, as fractions of C_fine, in the paper's order
#: (their colours are the figure's: :data:`helpers.plots.TRAJECTORY_REGIONS`)
REGIONS = tuple(TRAJECTORY_REGIONS)


def pairs(study) -> list[tuple[PoolEntry, PoolEntry]]:
    """(zero-shot, finetuned) pairs linked by ``finetuned_from`` with either member in the slice."""
    P = study.profile
    ids = {e.id for e in study.pool}
    return [(P.entry(e.finetuned_from), e) for e in P.pool
            if e.finetuned_from and (e.id in ids or e.finetuned_from in ids)]


def _label(zs: PoolEntry, ft: PoolEntry) -> str:
    return f"{ft.arch} / {zs.pretraining}"


def _shown_path(path) -> str:
    """A checkpoint path as the book prints it: relative to the repository (never a machine's
    absolute path), or just its last three parts when it lives elsewhere."""
    from pathlib import Path

    path = Path(path)
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(Path(*path.parts[-3:]))


def training_summary(study) -> pd.DataFrame:
    """One row per pair: where the finetuned checkpoint is and the recipe and loss it recorded."""
    from helpers.training.loop import output_path, read_checkpoint

    rows = []
    for zs, ft in pairs(study):
        path = output_path(study.profile, ft)
        row = {"pair": _label(zs, ft), "zero-shot": zs.id, "finetuned": ft.id, "checkpoint": _shown_path(path)}
        if path.exists():
            state = read_checkpoint(path, required=())
            recipe = state.get("identity", {}).get("recipe", {})
            history = state.get("history", [])
            row.update({"epochs": recipe.get("epochs"), "batch": recipe.get("batch_size"), "lr": recipe.get("lr"),
                        "images": state.get("identity", {}).get("images"),
                        "loss, first epoch": history[0]["loss"] if history else None,
                        "loss, last epoch": history[-1]["loss"] if history else None})
        rows.append(row)
    return pd.DataFrame(rows)


def measure(study, alphas) -> pd.DataFrame:
    """The WiSE-FT sweep (:func:`helpers.engine.mixtures.evaluate`) for every pair, recorded per finetuned
    entry; returns the slice's table with a ``pair`` label and the paper's figure group."""
    from helpers.engine.mixtures import evaluate

    for zs, ft in pairs(study):
        table = evaluate(study.profile, zs.id, ft.id, alphas)
        group = "Figure 16" if zs.pretraining in LOW_ACCURACY_PRETRAINING else "Figure 15"
        study.record(ft.id, table.assign(**meta(ft), zeroshot=zs.id, pair=_label(zs, ft), figure=group))
    return study.table(entries=[ft.id for _, ft in pairs(study)])


def sweep_table(table: pd.DataFrame) -> pd.DataFrame:
    """The sweep's headline columns (those present: ER needs the five shifts, concepts Broden)."""
    wanted = ["pair", "alpha", "imagenet", "shifts_mean", "er", "kurtosis", "kurtosis_shifts", "unique_concepts"]
    return table[[c for c in wanted if c in table.columns]]


# --------------------------------------------------------------------------------------------
# Figure 5: the finetuned model's concepts, epoch by epoch


def epoch_entries(profile: Profile, finetuned: PoolEntry) -> list[tuple[int, PoolEntry]]:
    """The epoch checkpoints of a finetuning run as pool entries (``<id>.epoch<k>``). The last
    epoch's weights are the final checkpoint's, so that epoch is the finetuned entry itself (whose
    activations other chapters have already cached). The other epochs cache only their Broden AP
    matrices (:func:`helpers.engine.mixtures.transient_ap`), not their activations."""
    from helpers.training.loop import epoch_checkpoints, output_path, read_checkpoint, run_dir

    epochs = epoch_checkpoints(run_dir(profile, finetuned))
    final = output_path(profile, finetuned)
    # Only an entry that loads the final checkpoint (``checkpoint:`` set) can stand for an epoch.
    last = (read_checkpoint(final, required=()).get("epoch")
            if epochs and finetuned.checkpoint and final.exists() else None)
    return [(k, finetuned if k == last else
             dataclasses.replace(finetuned, id=f"{finetuned.id}.epoch{k}", checkpoint=str(path), pretrained=None))
            for k, path in epochs]


def overlap_fractions(c_fine: set, c_zero: set, c_sup: set) -> dict[str, float]:
    """Figure 5's quantities: the regions of the Venn diagram of (C_zero, C_sup) that C_fine falls
    in, each divided by |C_fine| (NaN when the finetuned model encodes no concept)."""
    sizes = {"zero-shot only": len(c_fine & (c_zero - c_sup)), "zero-shot and supervised": len(c_fine & c_zero & c_sup),
             "supervised only": len(c_fine & (c_sup - c_zero)), "finetuned only": len(c_fine - (c_zero | c_sup))}
    n = len(c_fine)
    return {k: (v / n if n else float("nan")) for k, v in sizes.items()}


def concept_trajectory(study, threshold: float | None = None) -> tuple[pd.DataFrame, list[str]]:
    """For every pair with epoch checkpoints and a supervised model of its backbone: the overlap of
    the finetuned concepts C_fine (Eq. 4 at ``threshold``, default the profile's) with the zero-shot
    and supervised concept sets at each epoch, epoch 0 being the zero-shot model (Figure 5).
    Recorded per finetuned entry under :data:`TRAJECTORY_SECTION`. Returns the long table (one row
    per pair, epoch and region) and notes on the pairs that could not be traced."""
    from helpers.engine.extract import loaded_model
    from helpers.engine.mixtures import broden_available, transient_ap
    from helpers.engine.probing import ap_matrix, broden_sets, concept_set

    P = study.profile
    threshold = P.metrics["concept_threshold"] if threshold is None else threshold
    if not broden_available(P):
        return pd.DataFrame(), ["Broden is not on disk for this profile: no concept sets to compare."]
    sets, frames = broden_sets(P), []
    notes = [] if pairs(study) else ["No (zero-shot, finetuned) pair in this slice."]
    for zs, ft in pairs(study):
        sup = supervised_counterpart(list(P.pool), zs.arch)
        epochs = epoch_entries(P, ft)
        if sup is None or not epochs:
            notes.append(f"{ft.id}: " + ("no supervised model of backbone " + zs.arch if sup is None else
                                         "no epoch checkpoints (train it with `clip-study finetune`)"))
            continue
        # Epoch checkpoints load through a profile whose pool holds them (finetuned_from checks included).
        Pe = dataclasses.replace(P, pool=P.pool + tuple(e for _, e in epochs))
        c_zero = concept_set(ap_matrix(zs, P, sets), sets, threshold)
        c_sup = concept_set(ap_matrix(sup, P, sets), sets, threshold)
        rows = []
        for k, e in [(0, zs)] + epochs:
            if e.id in {zs.id, ft.id}:
                ap = ap_matrix(e, Pe, sets)
            else:
                # An epoch checkpoint keeps only its AP matrix (Figure 5 reads nothing else): its
                # Broden activations are computed in memory and dropped.
                ap = transient_ap(Pe, loaded_model(e, Pe), sets)
            c_fine = concept_set(ap, sets, threshold)
            for region, fraction in overlap_fractions(c_fine, c_zero, c_sup).items():
                rows.append({"epoch": k, "region": region, "fraction": fraction, "n_fine": len(c_fine),
                             "n_zero": len(c_zero), "n_sup": len(c_sup), "supervised": sup.id, "threshold": threshold})
        table = pd.DataFrame(rows).assign(**meta(ft), zeroshot=zs.id, pair=_label(zs, ft))
        results.record(P, TRAJECTORY_SECTION, ft.id, table)
        frames.append(table.assign(entry=ft.id))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), notes


def trajectory_wide(table: pd.DataFrame) -> pd.DataFrame:
    """Figure 5's numbers as one row per (pair, epoch) and one column per region (in %)."""
    wide = table.pivot(index=["pair", "epoch", "n_fine"], columns="region", values="fraction")
    wide = (100 * wide[[r for r in REGIONS if r in wide.columns]]).reset_index()
    # pivot sorts the pairs by name; the figure and the sweep list them in pool order
    order = wide["pair"].map({p: i for i, p in enumerate(dict.fromkeys(table["pair"]))})
    return wide.iloc[np.lexsort((wide["epoch"].to_numpy(), order.to_numpy()))].reset_index(drop=True)

