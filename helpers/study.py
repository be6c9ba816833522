"""What every chapter does first: load the profile with the notebook's parameters applied, pick
the slice of the pool it runs on, and say in plain words which profile produced its numbers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from . import results
from .config import PoolEntry, Profile, load_profile


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


def open_study(section: str, profile: str = "demo", entry: str | None = None, backbone: str | None = None,
               family: str | None = None, show_banner: bool = True, **overrides: Any) -> Study:
    """Load ``profile`` with notebook overrides (None values are ignored) and select the pool slice.

    Overrides use the profile's keys: ``device``, ``batch_size``, ``num_workers``, ``precision``,
    ``paths.data_root``, ``paths.cache_dir``, ``paths.results_dir``, ``limits.default``.
    """
    aliases = {"data_root": "paths.data_root", "cache_dir": "paths.cache_dir",
               "results_dir": "paths.results_dir", "limit": "limits.default"}
    ov = {aliases.get(k, k): v for k, v in overrides.items() if v is not None}
    P = load_profile(profile, overrides=ov)
    pool = P.select(entry=entry, backbone=backbone, family=family)
    if show_banner:
        display_banner(P, pool)
    return Study(P, pool, section)


def banner_text(P: Profile, pool: list[PoolEntry]) -> str:
    if P.is_demo:
        head = ("**Profile `demo`.** The numbers on this page come from small, randomly initialised, "
                "untrained models (the finetuned and supervised ones trained for a few steps) run on generated "
                "images. They only show that the pipeline runs end to end and carry no meaning about CLIP; "
                "the paper's values are shown beside them for reference. Run the `paper` profile on real "
                "weights and data to reproduce the study.")
    else:
        head = f"**Profile `{P.name}`.** {P.description}"
    return f"{head}\n\nPool slice: {len(pool)} model(s) ({', '.join(sorted({e.arch for e in pool}))})."


def display_banner(P: Profile, pool: list[PoolEntry]) -> None:
    from IPython.display import Markdown, display

    display(Markdown(f"```{{admonition}} Which run produced these numbers\n:class: {'warning' if P.is_demo else 'note'}\n"
                     f"{banner_text(P, pool)}\n```"))
