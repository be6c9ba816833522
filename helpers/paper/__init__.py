"""The paper's side of every comparison: the numbers Crabbé et al. report (:mod:`.values`,
read from ``helpers/reference/``), published accuracies of the pool's weights (:mod:`.published`),
and the join of this run's results to them, with each claim checked as a count (:mod:`.compare`)."""
