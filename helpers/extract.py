"""Extraction engine: decode each dataset once, run every model over it, cache what they produce.

What is produced (Section 4 and Appendix C of the paper):

- :func:`activations`: the encoder output ``h^(n) = f_v(x^(n))`` (``N x d_H``, the activation
  vectors whose kurtosis is Eq. (1) and whose projections on the right singular vectors of ``W`` are
  studied in Section 4) and the class logits of the linear head (``N x 1000``), with the labels.
- :func:`layer_activations`: one pooled vector per image and layer, for the layer-by-layer CKA of
  Appendix C (Figures 7-8). ResNet stages are averaged over space; ViT blocks give both the class
  token (``blockNN.cls``) and the mean of the patch tokens (``blockNN.mean``); ``embedding`` is ``h``.
- :func:`extract_many`: several pool entries over one dataset in one pass over the uint8 store.
- :func:`accuracies`: top-1 per evaluation dataset from the cached logits (Section 3's table).

How (details in :mod:`helpers.store`): a dataset is decoded, resized and centre-cropped once per
input geometry into a uint8 store shared by every model with that geometry; each model normalises
with its own mean/std on its device, under bf16/fp16 autocast on CUDA when the profile asks for it
(always fp32 on CPU). Results are cached under a key covering the weights digest, the dataset digest,
the preprocessing, the output set, the compute dtype, the sample limit and :data:`EXTRACT_VERSION`;
writes are chunked, atomic and resumable.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .config import EVAL_DATASETS, PoolEntry, Profile
from .store import CacheEntry, Geometry, ImageStore, ensure_store, store_material

#: Bump when cached activations would change for the same model, data and settings.
EXTRACT_VERSION = 1

#: Rows between two resume checkpoints (rounded to whole batches).
CHUNK_IMAGES = 1024


class NonFiniteActivations(FloatingPointError):
    """A model produced NaN or infinite activations; the message names the model and the batch."""


@dataclass
class Activations:
    """Cached outputs of one pool entry on one dataset (read-only memmaps).

    ``h``: ``N x d_H`` float32, the encoder output ``f_v(x)`` (Section 2; unnormalised).
    ``logits``: ``N x 1000`` float32, the linear head applied to ``h`` (Section 2's zero-shot head,
    or the finetuned / supervised head). ``labels``: ``N`` int64 in the dataset's label space.
    ``layers``: per-layer pooled activations when they were requested (Appendix C).
    """

    entry_id: str
    dataset_name: str
    h: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    manifest: dict
    layers: dict[str, np.ndarray] | None = None
    _dataset: Any = field(default=None, repr=False)

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy (fraction) as the paper's testbed scores this dataset (see helpers.data)."""
        from .data import accuracy

        return float(accuracy(self.dataset_name, self.logits, self.labels, dataset=self._dataset))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def activations(entry: PoolEntry | str, dataset_name: str, profile: Profile, force: bool = False,
                skip_unreadable: bool = False) -> Activations:
    """``h`` (N x d_H), logits (N x 1000) and labels of one pool entry on one dataset, computed once
    and then read from the cache (Section 4: "activation vectors h^(n) = f_v(x^(n))")."""
    out = extract_many([entry], dataset_name, profile, force=force, skip_unreadable=skip_unreadable)
    return next(iter(out.values()))


def layer_activations(entry: PoolEntry | str, dataset_name: str, profile: Profile,
                      layers: Sequence[str] | None = None, force: bool = False) -> dict[str, np.ndarray]:
    """Per-layer activations pooled to one ``N x d_layer`` float32 memmap per name (Appendix C's
    layer-by-layer CKA). ``layers`` picks names from :func:`layer_names` (None: all of them)."""
    out = extract_many([entry], dataset_name, profile, layers=list(layers) if layers else "all", force=force)
    return next(iter(out.values())).layers


def extract_many(entries: Iterable[PoolEntry | str], dataset_name: str, profile: Profile, *,
                 layers: Sequence[str] | str | None = None, force: bool = False,
                 skip_unreadable: bool = False, models_per_pass: int | None = None,
                 device: str | None = None, chunk_images: int = CHUNK_IMAGES,
                 on_chunk: Callable[[int], None] | None = None) -> dict[str, Activations]:
    """Run several pool entries over one dataset: decode it once, then one pass over the uint8 store
    for up to ``models_per_pass`` models at a time (default: all entries that miss the cache).

    ``layers``: None (only ``h`` and logits), ``"all"``, or a list of names from
    :func:`layer_names`; per-layer outputs are cached separately and attached as ``.layers``.
    ``on_chunk(k)`` is called after the k-th resume checkpoint of a pass has been written.
    Returns ``{entry id: Activations}`` in the order of ``entries``.
    """
    import torch

    from .data import open_dataset
    from .models import load_from_profile

    entries = [profile.entry(e) if isinstance(e, str) else e for e in entries]
    dev = torch.device(device or profile.device)
    dtype = "fp32" if dev.type == "cpu" else profile.precision
    limit = profile.limit(dataset_name)
    dataset = open_dataset(dataset_name, profile.dataset_root(dataset_name),
                           skip_unreadable=skip_unreadable, limit=limit)

    results: dict[str, Activations] = {}
    store_keys: dict[Geometry, str] = {}
    pending: list[PoolEntry] = list(entries)
    step = models_per_pass or len(pending) or 1
    for g in range(0, len(pending), step):
        jobs: list[_Job] = []
        for e in pending[g:g + step]:
            model = load_from_profile(profile, e.id, device=str(dev))
            geometry = Geometry.of(model)
            if geometry not in store_keys:
                store_keys[geometry] = CacheEntry(profile.cache_dir / "stores", "", store_material(
                    dataset_name, dataset, geometry, limit, skip_unreadable)).key
            skey = store_keys[geometry]
            wanted = [("final", None)] + ([] if layers is None else [("layers", _resolve_layers(model, layers))])
            for kind, names in wanted:
                cache = CacheEntry(profile.cache_dir / ("activations" if kind == "final" else "layers") / e.id,
                                   dataset_name, _material(e, model, skey, geometry, names, dtype, limit))
                jobs.append(_Job(e, model, geometry, kind, names, cache, None if force else cache.manifest()))
        misses = [j for j in jobs if j.manifest is None]
        for geometry in dict.fromkeys(j.geometry for j in misses):
            group = [j for j in misses if j.geometry == geometry]
            store = ensure_store(dataset_name, dataset, geometry, profile.cache_dir, limit=limit,
                                 skip_unreadable=skip_unreadable, batch_size=profile.batch_size,
                                 num_workers=profile.num_workers)
            with contextlib.ExitStack() as locks:
                for j in group:
                    locks.enter_context(j.cache.lock())
                    # Another process may have committed this key while we waited for its lock.
                    j.manifest = None if force else j.cache.manifest()
                todo = [j for j in group if j.manifest is None]
                if todo:
                    _run_pass(todo, store, dataset_name, dev, dtype, profile, force, chunk_images, on_chunk)
        for e in pending[g:g + step]:
            mine = [j for j in jobs if j.entry.id == e.id]
            final = mine[0].cache.open(mine[0].manifest)
            results[e.id] = Activations(
                e.id, dataset_name, final["h"], final["logits"], final["labels"], mine[0].manifest,
                layers=mine[1].cache.open(mine[1].manifest) if len(mine) > 1 else None, _dataset=dataset)
        del jobs
    return {e.id: results[e.id] for e in entries}


def accuracies(entry: PoolEntry | str, profile: Profile,
               datasets: Sequence[str] = EVAL_DATASETS) -> dict[str, float]:
    """Top-1 accuracy (fraction) per dataset from the cached logits, extracting what is missing:
    the "this run" column of Section 3's accuracy table (Appendix B)."""
    return {name: activations(entry, name, profile).accuracy for name in datasets}


def layer_names(model: Any) -> list[str]:
    """Ordered names of the pooled per-layer outputs of a loaded model (see the module docstring)."""
    kind = model.arch_kind
    if kind == "modified_resnet":
        return [f"layer{i}" for i in range(1, 5)] + ["embedding"]
    blocks = _blocks(model)
    width = len(str(len(blocks) - 1))
    # Zero-padded so that a lexical sort keeps depth order (torch_cka's known label-order fault).
    return [f"block{i:0{width}d}.{p}" for i in range(len(blocks)) for p in ("cls", "mean")] + ["embedding"]


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------

@dataclass
class _Job:
    """One cache entry to fill: the final outputs or a set of pooled layers of one model."""

    entry: PoolEntry
    model: Any
    geometry: Geometry
    kind: str  # "final" (h, logits, labels) | "layers"
    layers: list[str] | None
    cache: CacheEntry
    manifest: dict | None


def _material(entry: PoolEntry, model: Any, store_key: str, geometry: Geometry, layers: list[str] | None,
              dtype: str, limit: int | None) -> dict:
    """Everything cached activations depend on; any change gives a new key (a cache miss)."""
    return {"kind": "activations" if layers is None else "layers", "version": EXTRACT_VERSION,
            "entry": entry.id, "weights_digest": model.weights_digest, "store": store_key,
            "geometry": geometry.key, "image_mean": [float(v) for v in model.image_mean],
            "image_std": [float(v) for v in model.image_std], "outputs": layers or ["h", "logits"],
            "dtype": dtype, "limit": limit}


def _resolve_layers(model: Any, layers: Sequence[str] | str) -> list[str]:
    known = layer_names(model)
    if layers == "all":
        return known
    unknown = [n for n in layers if n not in known]
    if unknown:
        raise KeyError(f"model {model.entry_id if hasattr(model, 'entry_id') else ''!s} has no layer output "
                       f"{unknown[0]!r}; known: {', '.join(known)}")
    return [n for n in known if n in set(layers)]


def _blocks(model: Any):
    enc = model.encoder
    if model.arch_kind in ("vit", "coca"):
        return enc.transformer.resblocks
    if model.arch_kind == "torchvision_vit":
        return enc.encoder.layers
    raise ValueError(f"no per-layer outputs for architecture kind {model.arch_kind!r}")


def _layer_hooks(model: Any, names: list[str], out: dict) -> list:
    """Forward hooks writing pooled layer outputs into ``out`` (on the model's device, float32).

    ResNet stages: global average over space. Transformer blocks (batch-first tokens in open_clip
    3.x and torchvision): token 0 is the class token; the mean runs over the patch tokens only."""
    wanted = {n.split(".")[0] for n in names if n != "embedding"}
    handles = []
    if model.arch_kind == "modified_resnet":
        for stage in wanted:
            def hook(_m, _i, y, stage=stage):
                out[stage] = y.float().mean(dim=(2, 3))
            handles.append(getattr(model.encoder, stage).register_forward_hook(hook))
        return handles
    blocks = _blocks(model)
    width = len(str(len(blocks) - 1))
    for i, block in enumerate(blocks):
        name = f"block{i:0{width}d}"
        if name not in wanted:
            continue

        def hook(_m, _i, y, name=name):
            y = y[0] if isinstance(y, tuple) else y
            out[f"{name}.cls"] = y[:, 0].float()
            out[f"{name}.mean"] = y[:, 1:].float().mean(dim=1)
        handles.append(block.register_forward_hook(hook))
    return handles


class _StoreBatches:
    """Batches of the uint8 store for a DataLoader (``batch_size=None``): item b -> (first row,
    ``B x 3 x S x S`` uint8 tensor). Opens the memmap lazily so that workers each map the file."""

    def __init__(self, path: Path, n: int, batch_size: int, start: int):
        self.path, self.n, self.batch_size, self.start = path, n, batch_size, start
        self._pixels = None

    def __len__(self) -> int:
        return -(-(self.n - self.start) // self.batch_size)

    def __getitem__(self, b: int):
        import torch

        if self._pixels is None:
            self._pixels = np.load(self.path, mmap_mode="r")
        lo = self.start + b * self.batch_size
        return lo, torch.from_numpy(np.ascontiguousarray(self._pixels[lo:lo + self.batch_size]))


def _autocast(device, dtype: str):
    import torch

    if device.type == "cpu" or dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[dtype])


def _forward(model: Any, x, device, dtype: str, captured: dict) -> dict:
    """One model on one normalised batch: ``h`` under autocast, the head in fp32 (a cheap matmul
    whose logits are compared across models to a fraction of a percent of accuracy)."""
    import torch

    captured.clear()
    with torch.inference_mode():
        with _autocast(device, dtype):
            h = model.encode(x)
        h = h.float()
        outputs = {"h": h, "logits": model.logits_from_features(h).float(), "embedding": h}
    outputs.update(captured)
    return outputs


def _run_pass(jobs: list[_Job], store: ImageStore, dataset_name: str, device, dtype: str, profile: Profile,
              force: bool, chunk_images: int, on_chunk: Callable[[int], None] | None) -> None:
    """One pass over ``store`` filling every job (call with the jobs' locks held).

    Each job resumes from its own last complete chunk; the pass starts at the earliest. Chunks are
    whole batches aligned on the same boundaries as an uninterrupted run, so a resumed run feeds the
    model exactly the same batches (identical results on CPU)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    n, bs = len(store), profile.batch_size
    chunk = max(1, chunk_images // bs) * bs
    models = list(dict.fromkeys(id(j.model) for j in jobs))
    by_model = {mid: [j for j in jobs if id(j.model) == mid] for mid in models}
    captured = {mid: {} for mid in models}
    handles = []
    parts = {}
    for mid, js in by_model.items():
        model = js[0].model
        if device.type == "cuda":
            # Channels-last lets cuDNN use tensor-core convolution kernels (ResNets, patch embedding).
            model.to(memory_format=torch.channels_last)
        wanted = [name for j in js if j.kind == "layers" for name in j.layers]
        probe = {}
        if wanted:
            handles += _layer_hooks(model, wanted, captured[mid])
            # Layer widths are only known from a forward pass; one image is enough.
            x1 = torch.from_numpy(np.ascontiguousarray(store.pixels[:1])).to(device)
            probe = _forward(model, model.normalize_input(x1), device, dtype, captured[mid])
        for j in js:
            if j.kind == "final":
                specs = {"h": ((n, int(model.head.shape[1])), "float32"),
                         "logits": ((n, int(model.head.shape[0])), "float32"), "labels": ((n,), "int64")}
            else:
                specs = {name: ((n, int(probe[name].shape[1])), "float32") for name in j.layers}
            part = j.cache.partial(specs, fresh=force, state={"batch_size": bs})
            if part.state.get("batch_size") != bs:
                # Resuming with other batches would break bit-equality with an uninterrupted run.
                part = j.cache.partial(specs, fresh=True, state={"batch_size": bs})
            parts[id(j)] = part
            if j.kind == "final" and part.done == 0:
                part.arrays["labels"][:] = store.labels

    start = min(p.done for p in parts.values())
    loader = DataLoader(_StoreBatches(store.entry.dir / store.manifest["run"] / "pixels.npy", n, bs, start),
                        batch_size=None, shuffle=False, num_workers=profile.num_workers,
                        pin_memory=device.type == "cuda")
    bars = {mid: tqdm(total=n, initial=min(parts[id(j)].done for j in by_model[mid]), unit="img",
                      desc=f"{by_model[mid][0].entry.id} on {dataset_name}", position=k, smoothing=0.1)
            for k, mid in enumerate(models)}
    busy = {mid: 0.0 for mid in models}
    chunks = 0
    try:
        for b, (lo, x8) in enumerate(loader, start=start // bs):
            lo, hi = int(lo), int(lo) + x8.shape[0]
            x8 = x8.to(device, non_blocking=True)
            outs = {}
            for mid in models:
                js = [j for j in by_model[mid] if parts[id(j)].done <= lo]
                if not js:
                    continue
                model = js[0].model
                t0 = time.perf_counter()
                x = model.normalize_input(x8)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                outs[mid] = (js, _forward(model, x, device, dtype, captured[mid]))
                busy[mid] += time.perf_counter() - t0
            # Copy back after every model has been queued, so the device is not idle between models.
            for mid, (js, o) in outs.items():
                t0 = time.perf_counter()
                host = {k: v.cpu().numpy() for k, v in o.items()}
                busy[mid] += time.perf_counter() - t0
                for k, v in host.items():
                    if not np.isfinite(v).all():
                        raise NonFiniteActivations(
                            f"model {js[0].entry.id}: non-finite values in {k!r} at batch {b} "
                            f"(images {lo}..{hi - 1} of {dataset_name}); dtype {dtype}")
                for j in js:
                    arrays = parts[id(j)].arrays
                    for name in (("h", "logits") if j.kind == "final" else j.layers):
                        arrays[name][lo:hi] = host[name]
                bars[mid].update(hi - lo)
                bars[mid].set_postfix_str(f"forward {bars[mid].n - bars[mid].initial:.0f} img in {busy[mid]:.1f} s",
                                          refresh=False)
            if hi % chunk == 0 or hi == n:
                for j in jobs:
                    if parts[id(j)].done < hi:
                        parts[id(j)].advance(hi)
                chunks += 1
                if on_chunk is not None:
                    on_chunk(chunks)
    finally:
        for bar in bars.values():
            bar.close()
        for hnd in handles:
            hnd.remove()
    for j in jobs:
        info = {"entry": j.entry.id, "dataset": dataset_name, "n": n, "device": str(device), "dtype": dtype,
                "batch_size": bs, "store": str(store.entry.dir), "skipped": store.manifest["skipped"],
                "torch": torch.__version__, "weights": j.entry.weights_label}
        if j.kind == "layers":
            info["layers"] = j.layers
        j.manifest = parts[id(j)].commit(info)
