"""The engine: what runs models over images. No chapter logic lives here.

- :mod:`.extract`   decode each dataset once, run every model over it, cache h and the head (Sec. 2-5)
- :mod:`.probing`   Broden's balanced concept sets and the cached AP matrix of a model (Section 5)
- :mod:`.cka_pass`  layer-by-layer CKA of a (zero-shot, finetuned) pair in one pass (Appendix C)
- :mod:`.flops`     what a forward costs: FLOPs per architecture and per zero-shot head, device rates
- :mod:`.mixtures`  WiSE-FT weight-space mixtures and their evaluation (Appendix I)
"""
