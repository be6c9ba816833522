"""The numbers Crabbé et al. report, shipped as data so every chapter can show the paper's value
beside this run's (files under ``helpers/reference/``; each CSV's first line says where it is from).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

from helpers.metrics import accuracy_ratio, effective_robustness

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "reference"


@lru_cache(maxsize=None)
def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(REFERENCE_DIR / name, comment="#")


def accuracies() -> pd.DataFrame:
    """Tables 1-3: ImageNet and mean-shift top-1 accuracy (%) per pool entry, with the paper's ER.

    ``er`` is recomputed from the printed (rounded) accuracies with Eq. (5) and the paper's
    beta_1 = 0.76, beta_0 = -1.49; for CoCa (Table 3) the printed ER is used.
    """
    df = _read("paper_accuracies.csv").copy()
    has_shift = df["shifts_mean"].notna()
    df["er"] = float("nan")
    df["acc_ratio"] = float("nan")
    df.loc[has_shift, "er"] = 100 * effective_robustness(df.loc[has_shift, "shifts_mean"].to_numpy() / 100,
                                                         df.loc[has_shift, "imagenet"].to_numpy() / 100)
    df.loc[has_shift, "acc_ratio"] = 100 * accuracy_ratio(df.loc[has_shift, "shifts_mean"].to_numpy() / 100,
                                                          df.loc[has_shift, "imagenet"].to_numpy() / 100)
    coca = coca_tables().set_index("entry")["er"]
    df.loc[~has_shift, "er"] = df.loc[~has_shift, "entry"].map(coca)
    return df


def coca_tables() -> pd.DataFrame:
    """Tables 3-5 (Appendix D): CoCa ER (%), ImageNet accuracy (%), kurtosis, unique concepts."""
    return _read("paper_coca.csv").copy()


def polysemanticity() -> pd.DataFrame:
    """Table 7 (Appendix E.4): mean number of concepts per right singular vector."""
    return _read("paper_polysemanticity.csv").copy()


def top_concepts() -> pd.DataFrame:
    """Table 6 (Appendix E.3): top-3 concepts of the most privileged direction, where legible."""
    return _read("paper_top_concepts.csv").copy()
