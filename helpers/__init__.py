"""Helpers for the executable companion to Crabbé et al., "Interpreting CLIP: Insights on the
Robustness to ImageNet Distribution Shifts" (TMLR).

A notebook needs two names, ``from helpers import load_profile, open_study``, then its chapter
module, ``metrics``, ``plots`` and ``paper``. The package is grouped by role:

Notebook-facing (what a chapter or a fork imports)
  - :mod:`helpers.config`    profiles (``configs/*.yml``) and the model pool: loading, validation
  - :mod:`helpers.study`     ``open_study``; results tables (:mod:`~helpers.study.results`) and
                             provenance records (:mod:`~helpers.study.provenance`)
  - :mod:`helpers.chapters`  one module per notebook: what each chapter computes (diagnose included)
  - :mod:`helpers.metrics`   the paper's metrics, each citing its equation, with uncertainty
  - :mod:`helpers.plots`     every figure
  - :mod:`helpers.paper`     the paper's own values and claims, set beside this run's
The engine (what computes; no chapter logic)
  - :mod:`helpers.engine`    extraction (the one forward pass), Broden probing, the CKA pass,
                             WiSE-FT mixtures
  - :mod:`helpers.models`    pool entries to modules: catalogue and traps, weights, heads, loading
  - :mod:`helpers.data`      ImageNet, its five shifts and Broden over their real on-disk layouts
  - :mod:`helpers.store`     the shared uint8 image stores and atomic, resumable cache entries
The workflow (no chapter imports it)
  - :mod:`helpers.workflow`  runner, preflight and costs (``plan``), book rendering, forking, CLI
Training and the demo
  - :mod:`helpers.training`  Appendix H's recipes: the loop, finetuning, supervised, DDP, demo runs
  - :mod:`helpers.demo`      tiny fixtures in the real layouts and the demo's stand-in architectures
  - ``helpers/reference/``   vendored data: class lists, the paper's tables, demo model configs

Paper quantity -> function

=========================================  ====================================================
top-1 on ImageNet and each shift (Sec. 3)  :func:`helpers.data.scoring.accuracy` (label spaces:
                                           :func:`helpers.data.scoring.label_space`)
zero-shot head W (Sec. 2)                  :func:`helpers.models.heads.zero_shot_head`
logits W h / ||h|| or W h + b (Sec. 2)     :meth:`helpers.models.loading.LoadedModel.logits_from_features`
image embedding h = f_v(x)                 :func:`helpers.engine.extract.activations`
Eq. (1) kurtosis                           :func:`helpers.metrics.outliers.kurtosis`
Eq. (2) importance                         :func:`helpers.metrics.directions.importance`
Eq. (3) importance ratio                   :func:`helpers.metrics.directions.importance_ratio`
AP of a direction for a concept (Sec. 5)   :func:`helpers.metrics.concepts.concept_ap`
AP matrix of a model on Broden (Sec. 5)    :func:`helpers.engine.probing.ap_matrix`
Eq. (4) unique concepts                    :func:`helpers.metrics.concepts.unique_concepts`
Eq. (5) effective robustness               :func:`helpers.metrics.robustness.effective_robustness`
CKA per layer (App. C)                     :class:`helpers.metrics.cka.MinibatchCKA`,
                                           :func:`helpers.engine.cka_pass.pair_cka`
pruning singular directions (App. G)       :func:`helpers.metrics.pruning.pruning_curve`
WiSE-FT mixture (App. I)                   :func:`helpers.engine.mixtures.interpolate`
Eq. (5)'s baseline refitted (App. A)       :func:`helpers.metrics.robustness.testbed_baseline`
=========================================  ====================================================
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load_profile", "open_study", "quantity_map"]


def quantity_map():
    """The table "paper quantity -> function" of this docstring as a DataFrame (the forking chapter
    shows it), one row per function, so the map is written once."""
    import re

    import pandas as pd

    table = __doc__.split("Paper quantity -> function", 1)[1].split("=" * 41)[2]
    rows, quantity = [], ""
    for line in table.splitlines():
        left, right = line[:43].strip(), line[43:]
        quantity = left or quantity
        for kind, target in re.findall(r":(func|class|meth):`([\w.]+)`", right):
            rows.append({"quantity": quantity, "function": target})
    return pd.DataFrame(rows)


def __getattr__(name: str):
    # lazy, so that ``import helpers.config`` stays light (no torch, no pandas)
    if name == "load_profile":
        from helpers.config import load_profile

        return load_profile
    if name == "open_study":
        from helpers.study import open_study

        return open_study
    raise AttributeError(f"module 'helpers' has no attribute {name!r}")
