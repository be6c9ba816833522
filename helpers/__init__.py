"""Helpers for the executable companion to Crabbé et al., "Interpreting CLIP: Insights on the
Robustness to ImageNet Distribution Shifts" (TMLR).

One module per concern, each importable without a GPU; heavy imports live inside functions.

- :mod:`helpers.config`      study profiles (``configs/*.yml``) and the model pool
- :mod:`helpers.models`      loading any pool entry: image embedding h = f_v(x) and linear head W
- :mod:`helpers.demo_archs`  the tiny architectures of the demo profile
- :mod:`helpers.data`        ImageNet, its five shifts and Broden over their real on-disk layouts
- :mod:`helpers.fixtures`    tiny datasets written in those exact layouts (tests and demo profile)
- :mod:`helpers.store`       the shared uint8 image stores and atomic, resumable cache entries
- :mod:`helpers.extract`     decode once, run every model, cache activations, resume
- :mod:`helpers.metrics`     the paper's metrics (Eq. 1-5, CKA, AP), with uncertainty
- :mod:`helpers.chapters`    what each chapter computes, called by its notebook
- :mod:`helpers.training`, :mod:`helpers.finetune`, :mod:`helpers.supervised`, :mod:`helpers.ddp`
                             Appendix H's recipes, resumable, on one GPU or many (torchrun)
- :mod:`helpers.wiseft`      Appendix I's weight-space mixtures
- :mod:`helpers.diagnose`    the paper's indicators for a new encoder
- :mod:`helpers.forking`     ``clip-study new-notebook``: a fork from the template; layer names
- :mod:`helpers.results`     one results table per (section, entry)
- :mod:`helpers.runner`      papermill execution of the notebooks, locally or through submitit
- :mod:`helpers.book`        the book's sources: executed notebooks and the pool page
"""
__version__ = "0.1.0"
