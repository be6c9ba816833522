"""One module per chapter: the computations a notebook calls, so notebooks stay a few lines per
step and no logic is copied between them. Each ``measure(study)`` records one results table per
pool entry and returns the slice's rows; pool-level chapters read those tables back."""
