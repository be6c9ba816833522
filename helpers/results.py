"""Results tables: every notebook records its numbers through :func:`record`, one CSV per
(section, pool entry) under ``<results_dir>/tables/<section>/<entry>.csv``. Pool-level views,
the summary chapter and the tests read them back with :func:`load` instead of scraping outputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from .config import Profile
from .store import atomic_write_text


def table_path(profile: Profile, section: str, entry_id: str) -> Path:
    return profile.results_dir / "tables" / section / f"{entry_id}.csv"


def record(profile: Profile, section: str, entry_id: str,
           rows: Mapping[str, Any] | Iterable[Mapping[str, Any]] | pd.DataFrame) -> Path:
    """Store one (section, entry) table, replacing the previous one atomically.

    ``rows`` is one mapping (a single row), an iterable of mappings, or a DataFrame. The columns
    ``profile``, ``section`` and ``entry`` are added so a concatenation stays self-describing.
    """
    if isinstance(rows, pd.DataFrame):
        df = rows.copy()
    elif isinstance(rows, Mapping):
        df = pd.DataFrame([dict(rows)])
    else:
        df = pd.DataFrame([dict(r) for r in rows])
    df.insert(0, "entry", entry_id)
    df.insert(0, "section", section)
    df.insert(0, "profile", profile.name)
    path = table_path(profile, section, entry_id)
    atomic_write_text(path, df.to_csv(index=False))
    return path


def load(profile: Profile, section: str, entries: Iterable[str] | None = None) -> pd.DataFrame:
    """All recorded tables of a section (optionally only some entries), in pool order."""
    folder = profile.results_dir / "tables" / section
    wanted = None if entries is None else list(entries)
    order = {e.id: i for i, e in enumerate(profile.pool)}
    frames = []
    for csv in sorted(folder.glob("*.csv")) if folder.exists() else []:
        if wanted is not None and csv.stem not in wanted:
            continue
        frames.append(pd.read_csv(csv))
    if not frames:
        return pd.DataFrame(columns=["profile", "section", "entry"])
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values("entry", key=lambda s: s.map(order).fillna(len(order)), kind="stable").reset_index(drop=True)
