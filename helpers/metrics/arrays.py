"""The array conversions every metric shares: numpy arrays, torch tensors on any device and nested
sequences arrive alike, and a refusal names the argument and its expected shape."""
from __future__ import annotations

import numpy as np


def to_numpy(x) -> np.ndarray:
    """A numpy view of ``x`` (numpy array, torch tensor on any device, or nested sequence);
    half-precision floats are widened to float32, which numpy handles natively."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:
            x = x.float()
        x = x.numpy()
    a = np.asarray(x)
    if a.dtype.kind == "f" and a.itemsize < 4:
        a = a.astype(np.float32)
    return a


def ndim_of(x) -> int:
    """Number of dimensions of an array, tensor or nested sequence, without converting it."""
    return x.ndim if hasattr(x, "ndim") else np.ndim(x)


def as_matrix(x, name: str, shape: str = "n_images x d_H", ndim: int = 2, dtype=np.float64,
              finite: bool = True) -> np.ndarray:
    """``x`` as a numpy array with ``ndim`` dims, refusing other shapes and NaN/inf by name.

    The one conversion every metric uses, so that a GPU tensor, a half-precision tensor and a list
    arrive alike and each refusal names the argument and its expected shape. ``dtype=None`` keeps
    a floating dtype (anything else becomes float64)."""
    a = to_numpy(x)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array ({shape}); got shape {a.shape}")
    if dtype is not None:
        a = a.astype(dtype, copy=False)
    elif a.dtype.kind != "f":
        a = a.astype(np.float64)
    if finite and not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0].tolist()
        raise ValueError(f"{name} contains NaN or inf (first at index {bad})")
    return a
