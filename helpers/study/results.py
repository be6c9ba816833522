"""Results tables: every notebook records its numbers through :func:`record`, one CSV per
(section, pool entry) under ``<results_dir>/tables/<section>/<entry>.csv``. Pool-level views,
the summary chapter and the tests read them back with :func:`load` instead of scraping outputs.

Each table is vouched for by the provenance record of the job that wrote it
(:mod:`helpers.study.provenance`), which holds the table's sha256. :func:`load` returns only trusted
tables: a table claimed by a job that failed or never finished, or claimed by no readable complete
record for its exact bytes (the record deleted, truncated or naming other content), is left out
(and reported by :func:`status`), so stale numbers never reach an aggregate. Every query is recorded, so a job that reads tables is out of
date when they change.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import pandas as pd

from helpers.study import provenance
from helpers.store import atomic_write_text

if TYPE_CHECKING:  # annotations only: reading and writing tables runs no profile code
    from helpers.config import Profile


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
    text = df.to_csv(index=False)
    atomic_write_text(path, text)
    provenance.note("table_written", str(path.resolve()), hashlib.sha256(text.encode()).hexdigest())
    return path


def load(profile: Profile, section: str, entries: Iterable[str] | None = None) -> pd.DataFrame:
    """The trusted recorded tables of a section (optionally only some entries), in pool order."""
    wanted = None if entries is None else sorted(entries)
    provenance.note("table_query", f"{section}:{','.join(wanted) if wanted is not None else '*'}",
                    {"section": section, "entries": wanted, "results_dir": str(profile.results_dir)})
    order = {e.id: i for i, e in enumerate(profile.pool)}
    frames = [pd.read_csv(r["path"]) for r in provenance.scan_tables(profile.results_dir, section, wanted) if r["status"] == "ok"]
    if not frames:
        return pd.DataFrame(columns=["profile", "section", "entry"])
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values("entry", key=lambda s: s.map(order).fillna(len(order)), kind="stable").reset_index(drop=True)


def status(profile: Profile, section: str, entries: Iterable[str]) -> pd.DataFrame:
    """For each wanted entry without a trusted table of ``section``: ``failed`` (its job failed or
    did not finish; the job is named), ``unvouched`` (no sound record of its job claims it) or
    ``missing`` (no table)."""
    found = {r["entry"]: r for r in provenance.scan_tables(profile.results_dir, section, entries)}
    rows = []
    for e in entries:
        r = found.get(e)
        if r is None:
            rows.append({"section": section, "entry": e, "status": "missing", "job": ""})
        elif r["status"] != "ok":
            rows.append({"section": section, "entry": e, "status": r["status"], "job": r["job"]})
    return pd.DataFrame(rows, columns=["section", "entry", "status", "job"])
