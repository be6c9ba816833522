"""Pool entries to modules: the open_clip / torchvision catalogue and its traps (QuickGELU, image
normalisation), weights from the hub or a checkpoint file, zero-shot heads, and the
:class:`~.loading.LoadedModel` (image embedding h = f_v(x) and linear head W) every chapter uses.

- :mod:`.loading`   see its docstring
"""
