"""The paper's metrics, each citing its equation. Submodules:

- :mod:`.robustness`   Eq. (5) effective robustness, %acc, the logit-space baseline fit (Appendix A)
- :mod:`.outliers`     Eq. (1) activation kurtosis (with its bootstrap interval), and its closed form for
  planted outliers
- :mod:`.directions`   SVD of the head, Eq. (2) importance, Eq. (3) importance ratio, projections
- :mod:`.concepts`     Section 5 concept probing: exact vectorised AP, Eq. (4) unique concepts,
  polysemanticity, top concepts (Table 6), Venn regions (Figure 4), threshold sweep (footnote 3)
- :mod:`.pruning`      Appendix G: pruning singular directions, logits and accuracy curves
- :mod:`.cka`          Appendix C: linear CKA and the unbiased minibatch CKA of Nguyen et al.
- :mod:`.uncertainty`  bootstrap intervals over images, rank correlations across the pool
"""
from helpers.metrics.cka import MinibatchCKA, cka_linear, cka_minibatch  # noqa: F401
from helpers.metrics.concepts import (average_precision, concept_ap, concept_overlaps,  # noqa: F401
                       concepts_per_direction, encoded_concepts, polysemanticity, threshold_sweep,
                       top_concepts, unique_concepts)
from helpers.metrics.directions import importance, importance_ratio, project, svd_head  # noqa: F401
from helpers.metrics.outliers import kurtosis, kurtosis_interval, planted_kurtosis  # noqa: F401
from helpers.metrics.pruning import prune_singular_directions, pruned_logits, pruning_curve  # noqa: F401
from helpers.metrics.robustness import (PAPER_INTERCEPT, PAPER_SLOPE, BaselineFit, accuracy_ratio,  # noqa: F401
                         effective_robustness, er_coefficients, expit, fit_baseline, fit_baseline_table,
                         logit, mean_shift_accuracy, testbed_baseline)
from helpers.metrics.uncertainty import BootstrapCI, bootstrap_ci, rank_correlation  # noqa: F401
