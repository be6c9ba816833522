"""Helpers for the executable companion to Crabbé et al., "Interpreting CLIP: Insights on the
Robustness to ImageNet Distribution Shifts" (TMLR).

One module per concern, each importable without a GPU; heavy imports live inside functions.

- :mod:`helpers.config`   study profiles (``configs/*.yml``) and the model pool
- :mod:`helpers.models`   loading any pool entry: image embedding h = f_v(x) and linear head W
- :mod:`helpers.data`     ImageNet, its five shifts and Broden over their real on-disk layouts
- :mod:`helpers.fixtures` tiny datasets written in those exact layouts (tests and demo profile)
- :mod:`helpers.extract`  decode once, run every model, cache activations, resume
- :mod:`helpers.metrics`  the paper's metrics (Eq. 1-5, CKA, AP), with uncertainty
- :mod:`helpers.results`  one results table per (section, entry)
- :mod:`helpers.runner`   papermill execution of the notebooks, locally or through submitit
"""
__version__ = "0.1.0"
