"""The workflow around the notebooks; no chapter imports it.

- :mod:`.cli`        the one command line, ``clip-study``
- :mod:`.sections`   the sections in paper order and what each reads: tables, datasets
- :mod:`.runner`     papermill execution of the chapters: slices, skipping, logs, GPUs, Slurm
- :mod:`.preflight`  ``clip-study plan``: every check a run can fail on, before any job
- :mod:`.costs`      the plan's cache bytes and GPU-hours per stage
- :mod:`.book`       the book's sources: executed notebooks and the pool page
- :mod:`.forking`    ``clip-study new-notebook``: a fork from the template; layer names
"""
