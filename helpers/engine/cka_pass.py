"""Layer-by-layer CKA of a (zero-shot, finetuned) pair in one pass, without a layer cache
(Appendix C, Figures 7-8).

Both models run over the same batches of the dataset's uint8 store (:mod:`helpers.store`), with
forward hooks pooling every layer as :func:`helpers.engine.extract.layer_activations` does (ResNet stages
averaged over space; transformer blocks' class token and patch-token mean; ``embedding`` = h).
The pooled outputs stay on the device: forward batches are regrouped into CKA minibatches of
``batch`` images, and :class:`helpers.metrics.MinibatchCKA` adds each minibatch's unbiased HSIC_1
terms (Nguyen et al., 2021) there. The partition is the one of the layer-cache path: consecutive
minibatches of ``batch`` images from the first, and a trailing minibatch of fewer images kept
only if it has at least 4 (the unbiased HSIC divides by n (n - 3)).

Only the accumulators are stored, per (pair, dataset)::

    <cache_dir>/cka/<zero-shot id>--<finetuned id>/<dataset>-<key>/
        xy (Lx x Ly), xx (Lx), yy (Ly)   sums of HSIC_1 terms over the minibatches (float64)
        varied_x, varied_y               whether each layer ever varied across images
        n_batches (1,)                   minibatches summed

a few kilobytes instead of the 75-200 kB per image and model a layer cache takes. The key covers
both models' weights digests and normalisation, the store, the layers, the compute dtype, the
sample limit, the forward batch size and the CKA minibatch size. The pass records a checkpoint
(the accumulators and the number of images consumed) at minibatch boundaries that are also forward
batch boundaries, so an interrupted pass resumes there and gives the same numbers; a finished pass
is a cache hit that builds no model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from helpers.config import PoolEntry, Profile
from helpers.engine import extract as X
from helpers.metrics import MinibatchCKA
from helpers.models.precision import compute_dtype
from helpers.store import CHUNK_IMAGES, CacheEntry

#: Bump when the stored accumulators would change for the same models, data and settings.
CKA_VERSION = 1
#: Default images per CKA minibatch of the unbiased estimator (at least 4).
CKA_BATCH = 256


@dataclass
class PairCKA:
    """Minibatch CKA grid between every layer of model x (zero-shot) and of model y (finetuned)."""

    layers_x: list[str]
    layers_y: list[str]
    xy: np.ndarray
    xx: np.ndarray
    yy: np.ndarray
    n_batches: int
    manifest: dict

    @property
    def grid(self) -> np.ndarray:
        """(len(layers_x), len(layers_y)) CKA values: mean HSIC_1(K, L) / sqrt(mean HSIC_1(K, K) mean HSIC_1(L, L))."""
        return MinibatchCKA.ratio(self.xy, self.xx, self.yy)

    def same_layer(self) -> dict[str, float]:
        """CKA of each layer of x with the layer of the same name in y, in x's (network) order."""
        g, col = self.grid, {n: j for j, n in enumerate(self.layers_y)}
        return {n: float(g[i, col[n]]) for i, n in enumerate(self.layers_x) if n in col}


def default_batch(n_images: int) -> int:
    """The chapter's minibatch size: :data:`CKA_BATCH`, or a quarter of a small dataset (>= 4)."""
    return min(CKA_BATCH, max(4, n_images // 4))


def minibatch_bounds(n: int, batch: int) -> list[tuple[int, int]]:
    """The minibatch partition of images 0..n-1: consecutive runs of ``batch``; a trailing run of
    fewer than 4 images is dropped (at most 3 images)."""
    used = (n // batch) * batch + (n % batch if n % batch >= 4 else 0)
    return [(lo, min(lo + batch, used)) for lo in range(0, used, batch)]


def pair_cka(zeroshot: PoolEntry | str, finetuned: PoolEntry | str, dataset_name: str, profile: Profile, *,
             batch: int | None = None, layers: Sequence[str] | None = None, force: bool = False,
             device: str | None = None, chunk_images: int = CHUNK_IMAGES,
             on_chunk: Callable[[int], None] | None = None) -> PairCKA:
    """Minibatch CKA between every pooled layer of ``zeroshot`` and of ``finetuned`` on one
    dataset, accumulated in one pass over its uint8 store (see the module docstring).

    ``batch``: images per CKA minibatch (default :func:`default_batch` of the dataset's size),
    independent of the profile's forward ``batch_size``. ``layers``: names from
    :func:`helpers.engine.extract.layer_names` (None: all), the same for both models. ``force``
    recomputes. A checkpoint is recorded every ``chunk_images`` images or
    :data:`helpers.store.CHECKPOINT_S` seconds (then ``on_chunk(k)``)."""
    import torch

    zs = profile.entry(zeroshot) if isinstance(zeroshot, str) else zeroshot
    ft = profile.entry(finetuned) if isinstance(finetuned, str) else finetuned
    dev = torch.device(device or profile.device)
    dtype = compute_dtype(dev, profile.precision)
    limit = profile.limit(dataset_name)
    dataset = X.profile_dataset(dataset_name, profile)
    (ix, mx), (iy, my) = (X.describe(e, profile, dev, fresh=force) for e in (zs, ft))
    if ix.geometry != iy.geometry:
        raise ValueError(f"CKA pair {zs.id!r} / {ft.id!r}: the models read different images "
                         f"({ix.geometry.key} vs {iy.geometry.key}); a finetuned model keeps its parent's geometry")
    names_x = X.resolve_layers(zs, ix, layers or "all")
    names_y = X.resolve_layers(ft, iy, layers or "all")
    batch = batch or default_batch(len(dataset.files))
    if batch < 4:
        raise ValueError(f"CKA minibatches need at least 4 images; got batch={batch}")
    # the store every extraction of this dataset and geometry opens: the profile's skip_unreadable
    # included, so a dataset with an undecodable file is one store, read by both passes alike
    spec = X.store_spec(dataset_name, dataset, ix.geometry, limit, profile.skip_unreadable)
    material = {"kind": "pair-cka", "version": CKA_VERSION, "extract_version": X.EXTRACT_VERSION,
                "x": {"entry": zs.id, "weights_digest": ix.weights_digest, "image_mean": list(ix.image_mean),
                      "image_std": list(ix.image_std)},
                "y": {"entry": ft.id, "weights_digest": iy.weights_digest, "image_mean": list(iy.image_mean),
                      "image_std": list(iy.image_std)},
                "store": spec.key, "geometry": ix.geometry.key, "layers_x": names_x, "layers_y": names_y,
                "dtype": dtype, "limit": limit, "cka_batch": batch, "forward_batch": profile.batch_size}
    cache = CacheEntry(profile.cache_dir / "cka" / f"{zs.id}--{ft.id}", dataset_name, material)
    loaded = None if force else cache.load()
    if loaded is None:
        store = X.open_store(spec, profile)
        with cache.lock():
            loaded = None if force else cache.load()  # another process may have finished it meanwhile
            if loaded is None:
                models = {"x": mx if mx is not None else X.loaded_model(zs, profile, dev),
                          "y": my if my is not None else X.loaded_model(ft, profile, dev)}
                loaded = _run(cache, models, (zs, ft), (names_x, names_y), store, dataset_name, dev, dtype,
                              profile, batch, force, chunk_images, on_chunk)
    m, a = loaded
    return PairCKA(list(m["layers_x"]), list(m["layers_y"]), np.asarray(a["xy"]), np.asarray(a["xx"]),
                   np.asarray(a["yy"]), int(a["n_batches"][0]), m)


class _CKASink:
    """The CKA pass's sink of :func:`helpers.engine.extract.forward_loop`: the pooled layers of x
    and y stay on the device, regrouped into CKA minibatches of ``batch`` images and summed into the
    accumulators; checkpoints only where a minibatch and a forward batch end together."""

    def __init__(self, part, acc, layers: dict[str, list[str]], batch: int, bs: int, n: int):
        self.part, self.acc, self.layers, self.batch, self.bs, self.n = part, acc, layers, batch, bs, n
        self.start = part.done  # a multiple of both batch sizes (see boundary)
        self.buffers: dict[str, list[dict]] = {k: [] for k in layers}
        self.buffered, self.consumed = 0, self.start

    def initial(self, key: str) -> int:
        return self.start

    def wants(self, key: str, lo: int) -> bool:
        return True

    def take(self, key: str, outputs: dict, lo: int) -> dict:
        return {name: outputs[name] for name in self.layers[key]}

    def write(self, key: str, values: dict, lo: int, hi: int) -> None:
        self.buffers[key].append(values)

    def end_batch(self, lo: int, hi: int) -> None:
        self.buffered += hi - lo
        # Every full minibatch in the buffer; at the end, the trailing one if it has >= 4 images.
        while self.buffered >= self.batch or (hi == self.n and self.buffered >= 4):
            take = min(self.batch, self.buffered)
            xs, ys = (_take(self.buffers[k], take) for k in ("x", "y"))
            self.acc.update(xs, ys)
            self.buffered -= take
            self.consumed += take

    def boundary(self, hi: int) -> bool:
        # A resumed pass then feeds the models and the estimator exactly the same batches.
        return self.buffered == 0 and self.consumed % self.bs == 0 and hi < self.n

    def save(self, hi: int) -> None:
        _save(self.part, self.acc)
        self.part.advance(self.consumed)


def _run(cache: CacheEntry, models: dict, entries, names, store, dataset_name: str, dev, dtype: str, profile: Profile,
         batch: int, force: bool, chunk_images: int, on_chunk) -> tuple[dict, dict]:
    """The pass (called with the cache entry's lock held): :func:`helpers.engine.extract.forward_loop`
    over both models, with the minibatch CKA sink."""
    import torch

    n, bs = len(store), profile.batch_size
    names_x, names_y = names
    bounds = minibatch_bounds(n, batch)
    used = bounds[-1][1] if bounds else 0
    if not bounds:
        raise ValueError(f"CKA of {entries[0].id!r} / {entries[1].id!r} on {dataset_name}: {n} images "
                         "give no minibatch of at least 4")
    acc = MinibatchCKA(names_x, names_y)
    specs = {"xy": ((len(names_x), len(names_y)), "float64"), "xx": ((len(names_x),), "float64"),
             "yy": ((len(names_y),), "float64"), "varied_x": ((len(names_x),), "bool"),
             "varied_y": ((len(names_y),), "bool"), "n_batches": ((1,), "int64")}
    state = {"cka_batch": batch, "forward_batch": bs}
    part = cache.partial(specs, fresh=force, state=state)
    if part.state != state:
        part = cache.partial(specs, fresh=True, state=state)
    if part.done:
        acc.load_state(part.arrays, device=dev)
    layers = {"x": names_x, "y": names_y}
    sink = _CKASink(part, acc, layers, batch, bs, n)
    # Forward batches over all n images, as the layer-cache path ran them (same bits on the CPU).
    with X.hooked(models, layers, dev) as captured:
        X.forward_loop(models, captured, {"x": entries[0].id, "y": entries[1].id}, store, sink, device=dev,
                       dtype=dtype, profile=profile, dataset_name=dataset_name, chunk_images=chunk_images,
                       on_chunk=on_chunk, desc="CKA ")
    _save(part, acc)
    info = {"pair": [e.id for e in entries], "dataset": dataset_name, "n": n, "images_used": used,
            "minibatches": acc.n_batches, "device": str(dev), "dtype": dtype, "layers_x": names_x, "layers_y": names_y,
            "store": store.entry.dir.name, "torch": torch.__version__}
    return part.commit(info)


def _take(buffer: list[dict], rows: int) -> dict:
    """Pop the first ``rows`` rows of a buffer of per-batch {layer: (b, d) tensor} dicts as one dict."""
    import torch

    out: dict[str, list] = {}
    left = rows
    while left:
        first = buffer[0]
        b = next(iter(first.values())).shape[0]
        k = min(b, left)
        for name, v in first.items():
            out.setdefault(name, []).append(v[:k])
        if k == b:
            buffer.pop(0)
        else:
            buffer[0] = {name: v[k:] for name, v in first.items()}
        left -= k
    return {name: parts[0] if len(parts) == 1 else torch.cat(parts) for name, parts in out.items()}


def _save(part, acc) -> None:
    for k, v in acc.state().items():
        part.arrays[k][...] = v

