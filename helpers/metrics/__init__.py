"""The paper's metrics, each citing its equation. Submodules:

- :mod:`.robustness`  Eq. (5) effective robustness, %acc, the logit-space baseline fit (Appendix A)
"""
from .robustness import (PAPER_INTERCEPT, PAPER_SLOPE, BaselineFit, accuracy_ratio,  # noqa: F401
                         effective_robustness, expit, fit_baseline, logit, mean_shift_accuracy)
