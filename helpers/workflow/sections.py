"""The sections (one chapter notebook each) and what each reads: the notebooks in paper order, the
other sections' tables a section reads (:data:`READS`), and the datasets whose images its jobs
decode (:data:`SECTION_DATASETS`, :func:`store_reads`). The runner orders and skips jobs by these,
the decode stage and ``clip-study plan`` count stores and bytes by them; one table for all three."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Sequence

from helpers.chapters.common import finetuning_pairs, supervised_counterpart
from helpers.chapters.wiseft import pairs
from helpers.config import EVAL_DATASETS, REPO_ROOT, PoolEntry, Profile

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
#: Sections that read other sections' tables, and which: the lists their chapters load
#: (``coca``'s three ``results.load`` calls, ``summary.CATALOGUE``'s chapters,
#: ``diagnose.POOL_SECTIONS``; a test holds them equal). With ``gpus`` these run after every other
#: job, in paper order; on Slurm each is submitted with ``--dependency=afterok:`` on exactly the jobs
#: of the sections it reads (:func:`helpers.workflow.runner.reads`).
READS: dict[str, tuple[str, ...]] = {
    "coca": ("robustness", "outlier_features", "concept_probing"),
    "summary": ("robustness", "outlier_features", "privileged_directions", "concept_probing", "pruning",
                "wiseft", "coca", "cka_layers"),
    "diagnose": ("robustness", "outlier_features", "privileged_directions", "concept_probing"),
}


def notebooks(folder: Path = NOTEBOOK_DIR) -> dict[str, Path]:
    """Section name → MyST notebook, in paper order (``01_robustness.md`` → ``robustness``)."""
    out = {}
    for p in sorted(folder.glob("[0-9][0-9]_*.md")):
        out[p.stem.split("_", 1)[1]] = p
    return out


def close_sections(unknown: Iterable[str], available: Iterable[str]) -> str:
    """"; did you mean ..." for misspelt section names (difflib's close matches), as for models."""
    avail = list(available)
    hints = [f"{u!r} -> {', '.join(m)}" for u in unknown if (m := difflib.get_close_matches(u, avail, n=3, cutoff=0.6))]
    return f" (did you mean: {'; '.join(hints)})" if hints else ""


#: Datasets whose h each section reads, per pool entry of its slice (the chapter modules).
SECTION_DATASETS = {
    "robustness": EVAL_DATASETS, "outlier_features": ("imagenet",), "privileged_directions": ("imagenet",),
    "concept_probing": ("imagenet", "broden"), "pruning": EVAL_DATASETS, "forking": ("imagenet",),
}
#: Sections over (zero-shot, finetuned) pairs: their forwards are in-memory (no h cached).
PAIR_SECTIONS = ("wiseft", "cka_layers")


@dataclass(frozen=True)
class StoreReads:
    """Datasets whose uint8 stores a section's job reads through the input geometries of
    ``entries``; ``skip_unreadable`` None: as the profile sets it."""

    entries: tuple[PoolEntry, ...]
    datasets: tuple[str, ...]
    skip_unreadable: bool | None = None


def store_reads(section: str, pool: Sequence[PoolEntry], profile: Profile) -> list[StoreReads]:
    """What the job of ``section`` over the pool slice ``pool`` decodes, by the chapters' own rules:
    the datasets of :data:`SECTION_DATASETS` for every entry of the slice; ``cka_layers``: both
    models of each pair within the slice (``chapters.common.finetuning_pairs``) over the evaluation
    sets (``engine.cka_pass``, the extraction's own stores); ``wiseft``: both models of each
    pair with either member in the slice (``chapters.wiseft.pairs``; a mixture reads its finetuned
    model's images) over the evaluation sets, and on Broden with the supervised model of the backbone
    (Figure 5). Other sections decode nothing from the profile's datasets."""
    if section in SECTION_DATASETS:
        return [StoreReads(tuple(pool), tuple(SECTION_DATASETS[section]))]
    if section == "cka_layers":
        members = tuple(dict.fromkeys(x for pair in finetuning_pairs(list(pool)) for x in pair))
        return [StoreReads(members, tuple(EVAL_DATASETS))] if members else []
    if section == "wiseft":
        found = pairs(SimpleNamespace(profile=profile, pool=list(pool)))
        members = tuple(dict.fromkeys(x for pair in found for x in pair))
        sup = tuple(s for s in dict.fromkeys(supervised_counterpart(list(profile.pool), zs.arch) for zs, _ in found)
                    if s is not None)
        return [StoreReads(members, tuple(EVAL_DATASETS)), StoreReads(members + sup, ("broden",))] if members else []
    return []
