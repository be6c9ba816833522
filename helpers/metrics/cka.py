"""Centred kernel alignment of Appendix C: CKA(a, b) = HSIC(a, b) / sqrt(HSIC(a, a) HSIC(b, b)).

Two estimators, both with the linear kernel K = X X^T on one vector per image:

- :func:`cka_linear`, Kornblith et al. (2019): the full-batch (biased) HSIC = tr(K H L H) / (n-1)^2
  with H the centring matrix, computed in feature space as ||Y_c^T X_c||_F^2 when that is cheaper.
- :func:`cka_minibatch` and :class:`MinibatchCKA`, Nguyen et al. (2021): the unbiased HSIC_1 of
  Song et al. (2012) on each minibatch (Gram matrices with zeroed diagonals), averaged over
  minibatches *before* the ratio, so the estimate converges as batches accumulate instead of
  carrying the small-batch bias of a per-batch CKA.

HSIC_1(K, L) is computed as <U(K), U(L)>_F / (n (n - 3)) with U the U-centring of Szekely and
Rizzo (2014): the same unbiased statistic, in a form where a grid of layers is one matrix product.
Inputs must be 2-D (images x features): a token-major (tokens, batch, width) or (batch, tokens,
width) tensor would give a Gram over the wrong axis, so those are refused (pool tokens first),
and so are feature maps (flatten or pool them).
"""
from __future__ import annotations

import numpy as np

from helpers.metrics.arrays import as_matrix, ndim_of

#: The unbiased HSIC_1 divides by n (n - 3).
MIN_BATCH = 4


def _check_2d(x, name: str):
    if ndim_of(x) != 2:
        shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
        raise ValueError(
            f"{name} must be 2-D (images x features), one vector per image; got shape {shape}. "
            "Pool or select tokens first (e.g. the CLS token, or the mean over tokens) for "
            "transformer activations, and flatten (x.flatten(1)) or pool feature maps")


def cka_linear(x, y) -> float:
    """Linear CKA (Kornblith et al., 2019) on a full batch. x: (n, p), y: (n, q), row n of both
    from image n. Returns a float in [0, 1]; invariant to orthogonal transforms and isotropic
    scaling of either side, 1 for identical inputs."""
    _check_2d(x, "x")
    _check_2d(y, "y")
    x = as_matrix(x, "x", "n_images x features")
    y = as_matrix(y, "y", "n_images x features")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} images but y has {y.shape[0]}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"cka_linear needs at least 2 images; got {n}")
    for name, a in (("x", x), ("y", y)):
        if (a == a[0]).all():
            raise ValueError(f"{name} is the same vector for every image: its CKA is undefined")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    p, q = x.shape[1], y.shape[1]
    # tr(K_c L_c) = ||Y_c^T X_c||_F^2: take whichever side, features or images, is smaller.
    if n * (p * q + p * p + q * q) <= n * n * (p + q + 1):
        xy = np.sum((y.T @ x) ** 2)
        xx = np.linalg.norm(x.T @ x)
        yy = np.linalg.norm(y.T @ y)
    else:
        K, L = x @ x.T, y @ y.T
        xy, xx, yy = np.sum(K * L), np.linalg.norm(K), np.linalg.norm(L)
    return float(xy / (xx * yy))


def _u_centred_gram(x):
    """U(K) for K = x x^T, flattened: (n * n,). x: 2-D float64 torch tensor (n, features)."""
    n = x.shape[0]
    K = x @ x.T
    K.fill_diagonal_(0)
    rows = K.sum(dim=1)
    U = K - rows[:, None] / (n - 2) - rows[None, :] / (n - 2) + rows.sum() / ((n - 1) * (n - 2))
    U.fill_diagonal_(0)
    return U.reshape(-1)


class MinibatchCKA:
    """Streaming minibatch CKA (Nguyen et al., 2021) between every layer of model X and every layer
    of model Y, e.g. a zero-shot encoder and its finetuned counterpart (Figures 7-8).

    ``update(xs, ys)`` takes one minibatch: dicts {layer name: (b, features) tensor or array}, the
    same b images in every entry, b >= 4. ``compute()`` returns the (len(layers_x), len(layers_y))
    grid, rows and columns in the order of ``layers_x`` / ``layers_y`` (given here, or the key order
    of the first update). Gram matrices are formed on the tensors' own device in float64 and the
    HSIC sums stay there (no copy to the host per minibatch). ``state()`` / ``load_state()`` give
    the accumulators as numpy arrays, so a long pass can checkpoint and resume them."""

    def __init__(self, layers_x=None, layers_y=None):
        self.layers_x = None if layers_x is None else list(layers_x)
        self.layers_y = None if layers_y is None else list(layers_y)
        self.n_batches = 0
        self._xy = self._xx = self._yy = None
        # U(K) of a layer whose vectors are all equal is 0 only up to rounding; track it exactly.
        self._varied_x = self._varied_y = None

    def _grams(self, batch: dict, order: list, side: str, b: int | None):
        import torch

        if set(batch) != set(order):
            missing, extra = sorted(set(order) - set(batch)), sorted(set(batch) - set(order))
            raise KeyError(f"layers of {side} differ from the expected ones: missing {missing}, "
                           f"unexpected {extra}")
        grams, varied, finite = [], [], []
        for layer in order:
            x = batch[layer]
            _check_2d(x, f"{side}[{layer!r}]")
            x = x.detach().to(torch.float64) if isinstance(x, torch.Tensor) else \
                torch.from_numpy(as_matrix(x, f"{side}[{layer!r}]", "images x features"))
            if b is None:
                b = x.shape[0]
            if x.shape[0] != b:
                raise ValueError(f"{side}[{layer!r}] has {x.shape[0]} images but this minibatch "
                                 f"has {b}: every layer must see the same images")
            if b < MIN_BATCH:
                raise ValueError(f"minibatch CKA needs at least {MIN_BATCH} images per batch (the "
                                 f"unbiased HSIC divides by n (n - 3)); got {b}")
            finite.append(torch.isfinite(x).all())
            varied.append(~(x == x[0]).all())
            grams.append(_u_centred_gram(x))
        ok = torch.stack(finite)
        if not bool(ok.all()):  # one host sync per side and minibatch
            bad = order[int((~ok).nonzero()[0, 0])]
            raise ValueError(f"{side}[{bad!r}] contains NaN or inf")
        return torch.stack(grams), b, torch.stack(varied)

    def update(self, xs: dict, ys: dict) -> None:
        """Add one minibatch: ``xs``/``ys`` map layer names to (b, features) activations."""
        if self.layers_x is None:
            self.layers_x = list(xs)
        if self.layers_y is None:
            self.layers_y = list(ys)
        gx, b, varied_x = self._grams(xs, self.layers_x, "xs", None)
        gy, _, varied_y = self._grams(ys, self.layers_y, "ys", b)
        gy, varied_y = gy.to(gx.device), varied_y.to(gx.device)
        scale = b * (b - 3)
        xy = (gx @ gy.T) / scale
        xx = (gx * gx).sum(dim=1) / scale
        yy = (gy * gy).sum(dim=1) / scale
        if self._xy is None:
            self._xy, self._xx, self._yy = xy, xx, yy
            self._varied_x, self._varied_y = varied_x, varied_y
        else:
            self._xy = self._xy + xy.to(self._xy.device)
            self._xx = self._xx + xx.to(self._xx.device)
            self._yy = self._yy + yy.to(self._yy.device)
            self._varied_x = self._varied_x | varied_x.to(self._xy.device)
            self._varied_y = self._varied_y | varied_y.to(self._xy.device)
        self.n_batches += 1

    def state(self) -> dict[str, np.ndarray]:
        """The accumulators on the host: sums of HSIC_1 terms ``xy`` (Lx, Ly), ``xx`` (Lx), ``yy``
        (Ly) over the minibatches, ``varied_x`` / ``varied_y`` and ``n_batches`` (1,)."""
        if self._xy is None:
            raise ValueError("MinibatchCKA.state: no minibatch was added")
        return {"xy": self._xy.cpu().numpy(), "xx": self._xx.cpu().numpy(), "yy": self._yy.cpu().numpy(),
                "varied_x": self._varied_x.cpu().numpy(), "varied_y": self._varied_y.cpu().numpy(),
                "n_batches": np.array([self.n_batches], dtype=np.int64)}

    def load_state(self, state, device=None) -> None:
        """Restore what :meth:`state` returned (resume a pass), on ``device`` (default CPU)."""
        import torch

        n = int(np.asarray(state["n_batches"]).reshape(-1)[0])
        if n == 0:
            return
        t = {k: torch.as_tensor(np.array(state[k]), device=device) for k in ("xy", "xx", "yy", "varied_x", "varied_y")}
        if t["xy"].shape != (len(self.layers_x), len(self.layers_y)):
            raise ValueError(f"saved CKA state is {tuple(t['xy'].shape)}, expected "
                             f"({len(self.layers_x)}, {len(self.layers_y)})")
        self._xy, self._xx, self._yy = t["xy"].double(), t["xx"].double(), t["yy"].double()
        self._varied_x, self._varied_y = t["varied_x"].bool(), t["varied_y"].bool()
        self.n_batches = n

    @staticmethod
    def ratio(xy, xx, yy) -> np.ndarray:
        """CKA grid from summed (or averaged) HSIC terms: xy / sqrt(xx yy^T)."""
        return np.asarray(xy) / np.sqrt(np.outer(xx, yy))

    def compute(self) -> np.ndarray:
        """CKA = mean HSIC_1(K, L) / sqrt(mean HSIC_1(K, K) * mean HSIC_1(L, L)), means over the
        minibatches seen. Returns (len(layers_x), len(layers_y)) float64."""
        if self.n_batches == 0:
            raise ValueError("MinibatchCKA.compute: no minibatch was added")
        flat = [f"xs[{layer!r}]" for layer, v in zip(self.layers_x, self._varied_x.tolist()) if not v] + \
               [f"ys[{layer!r}]" for layer, v in zip(self.layers_y, self._varied_y.tolist()) if not v]
        if flat:
            raise ValueError(f"layers {flat} give the same vector for every image: CKA is undefined")
        s = self.state()
        return self.ratio(s["xy"], s["xx"], s["yy"])


def cka_minibatch(batches_x, batches_y) -> float:
    """Minibatch CKA (Nguyen et al., 2021) of one layer pair: ``batches_x`` and ``batches_y`` are
    sequences of (b_k, p) and (b_k, q) arrays for the same images, b_k >= 4. The unbiased HSIC_1
    terms are averaged over batches before the ratio. With a single batch holding all the data
    this is the full-data unbiased CKA."""
    acc = MinibatchCKA(["x"], ["y"])
    batches_x, batches_y = list(batches_x), list(batches_y)
    if len(batches_x) != len(batches_y):
        raise ValueError(f"{len(batches_x)} batches of x but {len(batches_y)} of y")
    for bx, by in zip(batches_x, batches_y):
        acc.update({"x": bx}, {"y": by})
    return float(acc.compute()[0, 0])
