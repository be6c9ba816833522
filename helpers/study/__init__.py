"""What every chapter does first: load the profile with the notebook's parameters applied, pick
the slice of the pool it runs on, start recording the job's provenance, and say in plain words
which profile produced its numbers. Its last cell, ``S.finish()``, completes the record."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.study import provenance
from helpers.study import results
from helpers.config import ConfigError, PoolEntry, Profile, load_profile

#: Notebook parameters that override a profile key, and the key (``open_study`` applies them;
#: the runner applies the same to find the job's results folder).
PROFILE_PARAMETERS = {"device": "device", "batch_size": "batch_size", "num_workers": "num_workers",
                      "precision": "precision", "data_root": "paths.data_root", "cache_dir": "paths.cache_dir",
                      "results_dir": "paths.results_dir", "limit": "limits.default",
                      "skip_unreadable": "skip_unreadable"}


class ParameterError(ConfigError):
    """A notebook parameter that the notebook does not declare, or a value it cannot take; the
    message names the parameter and lists those the notebook declares."""


def check_parameters(given: dict[str, Any], declared: dict[str, dict[str, Any]]) -> None:
    """The one parameter rule of every way of running a chapter (``clip-study run -p``, papermill,
    a fork): every given name must be a parameter of at least one of the ``declared`` notebooks
    (notebook name -> its parameters), and a number must be finite."""
    known = sorted(set().union(*declared.values())) if declared else []
    unknown = [k for k in given if not any(k in d for d in declared.values())]
    if unknown:
        where = next(iter(declared)) if len(declared) == 1 else f"the {len(declared)} selected notebooks"
        raise ParameterError(f"unknown notebook parameter(s) {', '.join(map(repr, unknown))}; "
                             f"parameters of {where}: {', '.join(known)}")
    for k, v in given.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ParameterError(f"parameter {k!r}: expected a finite number, got {v!r}")


def _injected_parameters() -> dict[str, Any]:
    """The parameters papermill injected into this kernel (its ``# Parameters`` cell), if any."""
    sources = provenance.kernel_sources() or []
    return {k: v for s in sources if provenance.is_injected(s) for k, v in provenance.parse_assignments(s).items()}


def _check_injected(section: str) -> dict[str, Any]:
    """Refuse a parameter papermill passed that the notebook does not declare, before any work
    (papermill itself only warns and runs on); returns the injected parameters."""
    md = provenance.find_notebook(section)
    injected = _injected_parameters()
    if md is not None and injected:
        check_parameters(injected, {md.name: provenance.declared_parameters(md)})
    return injected


def profile_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """Dotted profile overrides from notebook parameters (None values keep the profile's)."""
    return {PROFILE_PARAMETERS[k]: v for k, v in params.items() if k in PROFILE_PARAMETERS and v is not None}


@dataclass
class Study:
    profile: Profile
    pool: list[PoolEntry]
    section: str

    def record(self, entry_id: str, rows) -> None:
        results.record(self.profile, self.section, entry_id, rows)

    def table(self, section: str | None = None, entries=None) -> pd.DataFrame:
        """Recorded results of a section (this one by default), restricted to this slice."""
        ids = [e.id for e in self.pool] if entries is None else entries
        return results.load(self.profile, section or self.section, ids)

    def pool_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "entry": e.id, "backbone": e.arch, "family": e.family, "family_label": e.family_label,
            "pretraining": e.pretraining, "weights": e.weights_label,
        } for e in self.pool])

    def finish(self) -> Path | None:
        """Complete this job's provenance record (the notebook's last cell): from now on the
        runner treats the job as up to date until one of its inputs changes."""
        return provenance.finish()


def _namespace_parameters(section: str) -> dict[str, Any]:
    """Profile-key parameters the notebook declares, read from the kernel (so ``-p num_workers=8``
    reaches every chapter that declares it, whether or not it passes it on)."""
    md = provenance.find_notebook(section)
    ns = provenance.kernel_namespace()
    if md is None or ns is None:
        return {}
    return {k: ns[k] for k in provenance.declared_parameters(md) if k in PROFILE_PARAMETERS and k in ns}


def open_study(section: str, profile: str = "demo", entry: str | None = None, backbone: str | None = None,
               family: str | None = None, show_banner: bool = True, **overrides: Any) -> Study:
    """Load ``profile`` with notebook overrides (None values are ignored) and select the pool slice.

    Overrides use the parameter names of :data:`PROFILE_PARAMETERS` (``device``, ``batch_size``,
    ``num_workers``, ``precision``, ``data_root``, ``cache_dir``, ``results_dir``, ``limit``,
    ``skip_unreadable``) or dotted profile keys. Starts the job's provenance record
    (:func:`helpers.study.provenance.begin`) for the slice ``entry`` / ``backbone`` / all.
    """
    injected = _check_injected(section)
    params = {**_namespace_parameters(section), **overrides}
    ov = profile_overrides(params) | {k: v for k, v in params.items() if "." in k and v is not None}
    # a bad value is blamed on the parameter that gave it, not on the profile file
    blame = {PROFILE_PARAMETERS[k]: f"parameter {k}" for k in injected if k in PROFILE_PARAMETERS}
    P = load_profile(profile, overrides=ov, blame=blame)
    pool = P.select(entry=entry, backbone=backbone, family=family)
    provenance.begin(section, P, {"profile": profile, "entry": entry, "backbone": backbone, **params},
                     {"name": profile, "overrides": ov}, provenance.slice_label(entry, backbone))
    ids = {e.id for e in pool} | {e.finetuned_from for e in pool if e.finetuned_from}
    for e in P.pool:  # weights files of the slice and its zero-shot parents, by content
        if e.id in ids and e.checkpoint:
            provenance.note_file("checkpoint", e.checkpoint)
    if show_banner:
        display_banner(P, pool)
    return Study(P, pool, section)


def profile_kind(P: Profile) -> str:
    """``demo`` | ``smoke`` | ``paper``: what the profile declares (``kind``); a profile that
    declares none is the demo only if it is the demo."""
    kind = getattr(P, "kind", None) or (P.raw.get("kind") if isinstance(P.raw, dict) else None)
    return kind or ("demo" if P.name == "demo" else "paper")


def banner_text(P: Profile, pool: list[PoolEntry]) -> str:
    kind = profile_kind(P)
    if kind == "demo":
        head = ("**Profile `demo`.** The numbers on this page come from small, randomly initialised, "
                "untrained models (the finetuned and supervised ones trained for a few steps) run on generated "
                "images. They only show that the pipeline runs end to end and carry no meaning about CLIP; "
                "the paper's values are shown beside them for reference. Run the `paper` profile on real "
                "weights and data to reproduce the study.")
    elif kind == "smoke":
        head = (f"**Profile `{P.name}` (smoke test).** {P.description} These numbers check that the real "
                "architectures run; they are not the paper's measurements.")
    else:
        head = f"**Profile `{P.name}`.** {P.description}"
    return f"{head}\n\nPool slice: {len(pool)} model(s) ({', '.join(sorted({e.arch for e in pool}))})."


def display_banner(P: Profile, pool: list[PoolEntry]) -> None:
    from IPython.display import Markdown, display

    warn = profile_kind(P) != "paper"
    display(Markdown(f"```{{admonition}} Which run produced these numbers\n:class: {'warning' if warn else 'note'}\n"
                     f"{banner_text(P, pool)}\n```"))
