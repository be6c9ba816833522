"""The one mixed-precision rule of the study, used by the forward pass, the zero-shot heads and
training alike (methods page, "Mixed precision")."""
from __future__ import annotations

import contextlib

import torch

#: The ``precision:`` values a profile or recipe may name, and the autocast dtype of each.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def compute_dtype(device: str | torch.device, precision: str) -> str:
    """The dtype the encoder actually runs in: ``precision`` on a CUDA device, ``"fp32"`` anywhere
    else (the CPU, and devices whose autocast this study does not test). Cache keys that depend on
    the compute dtype (the zero-shot head's) use this, not the requested ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision if torch.device(device).type == "cuda" else "fp32"


def autocast(device: str | torch.device, precision: str):
    """``torch.autocast`` to ``precision`` (bf16 or fp16) on a CUDA device; a no-op context for
    ``fp32`` and on every other device, which always computes in float32. Whatever runs inside
    (the image encoder, the text tower) is cast; the caller brings its outputs back to float32
    before normalising, averaging or applying the head, which stay exact."""
    dtype = compute_dtype(device, precision)
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=PRECISIONS[dtype])
