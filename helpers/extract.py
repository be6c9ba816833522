"""Extraction engine: decode each dataset once, run every model over it, cache what they produce.

What is produced (Section 4 and Appendix C of the paper):

- :func:`activations`: the encoder output ``h^(n) = f_v(x^(n))`` (``N x d_H``, the activation
  vectors whose kurtosis is Eq. (1) and whose projections on the right singular vectors of ``W`` are
  studied in Section 4) and the logits of the linear head (``N x 1000``), with the labels.
- :func:`layer_activations`: one pooled vector per image and layer, for the layer-by-layer CKA of
  Appendix C (Figures 7-8). ResNet stages are averaged over space; transformer blocks give both the
  class token (``blockNN.cls``) and the mean of the patch tokens (``blockNN.mean``); ``embedding``
  is ``h`` (for the CLIP ResNets, the attention-pool output).
- :func:`extract_many`: several pool entries over one dataset in one pass over the uint8 store.
- :func:`accuracies`: top-1 per evaluation dataset from the cached logits (Section 3, Appendix B).

How (details in :mod:`helpers.store`): a dataset is decoded, resized and centre-cropped once per
input geometry into a uint8 store shared by every model with that geometry; each model normalises
with its own mean/std on its device, under bf16/fp16 autocast on CUDA when the profile asks for it
(always fp32 on CPU). Results are cached under a key covering the weights digest, the head, the
dataset digest, the preprocessing, the output set, the compute dtype, the sample limit and
:data:`EXTRACT_VERSION`; writes are chunked, atomic and resumable, and a cache hit loads no model.

Cache layout under ``profile.cache_dir`` (each entry folder as described in :mod:`helpers.store`)::

    stores/<dataset>-<geometry>-<key>/        pixels (N x 3 x S x S uint8), labels, index
    activations/<entry id>/<dataset>-<key>/   h, logits, labels
    layers/<entry id>/<dataset>-<key>/        one N x d array per layer name
    models/<entry id>.json                    weights digest, preprocessing and layer names of an
                                              entry, trusted while its fingerprint is unchanged

A changed key makes a new folder; folders of superseded keys are never read again and can be
deleted by hand.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .config import EVAL_DATASETS, PoolEntry, Profile
from .store import (CHUNK_IMAGES, CacheEntry, Checkpoints, Geometry, ImageStore, atomic_write_json, ensure_store,
                    key_of, store_material)

#: Bump when cached activations would change for the same model, data and settings.
EXTRACT_VERSION = 1

_HERE = Path(__file__).resolve().parent


class NonFiniteActivations(FloatingPointError):
    """A model produced NaN or infinite activations; the message names the model and the batch."""


@dataclass
class Activations:
    """Cached outputs of one pool entry on one dataset (read-only memmaps).

    ``h``: ``N x d_H`` float32, the encoder output ``f_v(x)`` of Section 2 (before the head's
    normalisation). ``logits``: ``N x 1000`` float32 from the entry's linear head (zero-shot,
    finetuned or supervised). ``labels``: ``N`` int64 in the dataset's own label space.
    ``layers``: the pooled per-layer activations when they were requested (Appendix C).
    """

    entry_id: str
    dataset_name: str
    h: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    manifest: dict
    layers: dict[str, np.ndarray] | None = None
    dataset: Any = field(default=None, repr=False)  # the opened dataset (scoring needs ObjectNet's mapping)

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy (fraction) scored as the testbed does for this dataset (helpers.data)."""
        from .data import accuracy

        return float(accuracy(self.dataset_name, self.logits, self.labels, dataset=self.dataset))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def activations(entry: PoolEntry | str, dataset_name: str, profile: Profile, force: bool = False,
                skip_unreadable: bool = False) -> Activations:
    """``h`` (N x d_H), logits (N x 1000) and labels of one pool entry on one dataset, computed once
    and then read from the cache (Section 4: "activation vectors h^(n) = f_v(x^(n))").

    ``dataset_name``: one of ``helpers.config.DATASETS``. For ``broden`` (Section 5's probing set)
    the labels are the images' positions in the dataset, as ``helpers.data.open_broden`` gives them."""
    out = extract_many([entry], dataset_name, profile, force=force, skip_unreadable=skip_unreadable)
    return next(iter(out.values()))


def layer_activations(entry: PoolEntry | str, dataset_name: str, profile: Profile,
                      layers: Sequence[str] | None = None, force: bool = False) -> dict[str, np.ndarray]:
    """Per-layer activations pooled to one ``N x d_layer`` float32 memmap per name, in network order
    (Appendix C's layer-by-layer CKA). ``layers``: names from :func:`layer_names` (None: all)."""
    out = extract_many([entry], dataset_name, profile, layers=list(layers) if layers else "all", force=force)
    return next(iter(out.values())).layers


def extract_many(entries: Iterable[PoolEntry | str], dataset_name: str, profile: Profile, *,
                 layers: Sequence[str] | str | None = None, force: bool = False,
                 skip_unreadable: bool = False, models_per_pass: int | None = None,
                 device: str | None = None, chunk_images: int = CHUNK_IMAGES,
                 on_chunk: Callable[[int], None] | None = None,
                 models: Mapping[str, Any] | None = None) -> dict[str, Activations]:
    """Run several pool entries over one dataset: decode it once into the uint8 store, then one pass
    over the store for up to ``models_per_pass`` models at a time (default: all that miss the cache).

    ``layers``: None (only ``h`` and logits), ``"all"``, or names from :func:`layer_names`; per-layer
    outputs are cached separately and attached as ``.layers``. ``force`` recomputes the activations
    (the store is keyed by the files' digest and is reused). ``skip_unreadable`` leaves undecodable
    images out (listed in the manifests' ``skipped``) instead of stopping. A pass records a resume
    checkpoint every ``chunk_images`` images or ``helpers.store.CHECKPOINT_S`` seconds and then calls
    ``on_chunk(k)``. ``models``: ``{entry id: LoadedModel}`` already in memory (e.g. WiSE-FT mixtures
    of Appendix I, which have no weights file); they are keyed by their own ``weights_digest`` and
    moved to the device. Returns ``{entry id: Activations}`` in the order of ``entries``.
    """
    import torch

    from .data import open_broden, open_dataset

    entries = list({e.id: e for e in (profile.entry(e) if isinstance(e, str) else e for e in entries)}.values())
    dev = torch.device(device or profile.device)
    dtype = "fp32" if dev.type == "cpu" else profile.precision
    limit = profile.limit(dataset_name)
    # Unreadable files are dropped while decoding into the store (not by the datasets' up-front
    # scan, which would decode every image again on each call, cache hits included).
    root = profile.dataset_root(dataset_name)
    if dataset_name == "broden":
        dataset = open_broden(root, limit=limit)
    else:
        dataset = open_dataset(dataset_name, root, limit=limit)
    stores: dict[Geometry, dict] = {}

    jobs: list[_Job] = []
    for e in entries:
        if models and e.id in models:
            model = models[e.id].to(dev)
            info = _info_of(model)
        else:
            info, model = _describe(e, profile, dev, fresh=force)
        geometry = Geometry(info.image_size, info.interpolation, info.resize_mode)
        if geometry not in stores:
            stores[geometry] = store_material(dataset_name, dataset, geometry, limit, skip_unreadable)
        wanted = [("final", None)]
        if layers is not None:
            wanted.append(("layers", _resolve_layers(e, info, layers)))
        for kind, names in wanted:
            cache = CacheEntry(profile.cache_dir / ("activations" if kind == "final" else "layers") / e.id,
                               dataset_name, _material(e, info, key_of(stores[geometry]), geometry, names, dtype, limit))
            jobs.append(_Job(e, info, geometry, kind, names, cache, None if force else cache.load()))
        if (models_per_pass is None or (models and e.id in models)) and any(
                j.loaded is None for j in jobs if j.entry is e):
            # Loaded to describe it (or given) and needed by a pass: keep it rather than load it twice.
            for j in jobs:
                if j.entry is e:
                    j.model = model

    misses = [j for j in jobs if j.loaded is None]
    ids = list(dict.fromkeys(j.entry.id for j in misses))
    step = models_per_pass or len(ids) or 1
    for g in range(0, len(ids), step):
        group_ids = set(ids[g:g + step])
        group = [j for j in misses if j.entry.id in group_ids]
        for geometry in dict.fromkeys(j.geometry for j in group):
            todo = [j for j in group if j.geometry == geometry]
            store = ensure_store(dataset_name, dataset, geometry, profile.cache_dir, limit=limit,
                                 skip_unreadable=skip_unreadable, batch_size=profile.batch_size,
                                 num_workers=profile.num_workers, material=stores[geometry])
            with contextlib.ExitStack() as held:
                # Locks are taken in one global order, so two processes cannot deadlock on them.
                for j in sorted(todo, key=lambda j: str(j.cache.dir)):
                    held.enter_context(j.cache.lock())
                    # Another process may have committed this key while we waited for the lock.
                    j.loaded = None if force else j.cache.load()
                todo = [j for j in todo if j.loaded is None]
                if todo:
                    _run_pass(todo, store, dataset_name, dev, dtype, profile, force, chunk_images, on_chunk)
        for j in group:
            j.model = None  # free device memory before the next group

    out = {}
    for e in entries:
        final, *per_layer = [j for j in jobs if j.entry.id == e.id]
        m, a = final.loaded
        out[e.id] = Activations(e.id, dataset_name, a["h"], a["logits"], a["labels"], m,
                                layers=per_layer[0].loaded[1] if per_layer else None, dataset=dataset)
    return out


def accuracies(entry: PoolEntry | str, profile: Profile,
               datasets: Sequence[str] = EVAL_DATASETS) -> dict[str, float]:
    """Top-1 accuracy (fraction) per dataset from the cached logits, extracting what is missing:
    this run's column beside the paper's Tables 1-2 (Section 3, Appendix B)."""
    return {name: activations(entry, name, profile).accuracy for name in datasets}


def layer_names(model: Any) -> list[str]:
    """Ordered names of the pooled per-layer outputs of a loaded model (see the module docstring).
    Block numbers are zero-padded so that a lexical sort keeps depth order."""
    if model.arch_kind == "modified_resnet":
        return [f"layer{i}" for i in range(1, 5)] + ["embedding"]
    blocks = _blocks(model)
    width = len(str(len(blocks) - 1))
    return [f"block{i:0{width}d}.{p}" for i in range(len(blocks)) for p in ("cls", "mean")] + ["embedding"]


# --------------------------------------------------------------------------------------------
# What a model is, without loading it
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _ModelInfo:
    weights_digest: str
    head_digest: str
    image_size: int
    interpolation: str
    resize_mode: str
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    arch_kind: str
    layer_names: tuple[str, ...]


def _fingerprint(entry: PoolEntry, profile: Profile) -> str:
    """What a model's weights digest and preprocessing can depend on, readable without loading it:
    the entry, its checkpoint file's size and mtime, the hub cache, the library versions and the
    source of the loading code and demo architectures. A change makes :func:`_describe` reload."""
    import open_clip
    import torch
    import torchvision

    parts: dict[str, Any] = {"entry": dataclasses.asdict(entry), "hf_cache": str(profile.paths.get("hf_cache")),
                             "versions": [torch.__version__, torchvision.__version__, open_clip.__version__]}
    if getattr(profile, "zero_shot_templates", None) or getattr(profile, "zero_shot_classes", None):
        # a smoke profile's reduced zero-shot head (models.reduced_zero_shot_head) changes the head digest
        parts["reduced_head"] = [profile.zero_shot_templates, profile.zero_shot_classes]
    if entry.checkpoint:
        try:
            st = Path(entry.checkpoint).stat()
            parts["checkpoint"] = [st.st_size, st.st_mtime_ns]
        except FileNotFoundError:
            parts["checkpoint"] = None  # loading then raises the models helper's own error
    code = [_HERE / "models.py", _HERE / "demo_archs.py", *sorted((_HERE / "reference" / "model_configs").glob("*.json"))]
    parts["code"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in code if p.exists()}
    return key_of(parts)


def _describe(entry: PoolEntry, profile: Profile, device, fresh: bool = False) -> tuple[_ModelInfo, Any]:
    """Weights digest, preprocessing and layer names of an entry, memoised under
    ``<cache_dir>/models/<id>.json`` against :func:`_fingerprint`, so that a cache hit loads no model
    (a ViT-L-14 load and the sha256 of its 1.7 GB checkpoint take seconds). ``fresh`` (a forced
    recompute) ignores the memo. Returns the info and the model when it had to be loaded (else None)."""
    memo = profile.cache_dir / "models" / f"{entry.id}.json"
    fp = _fingerprint(entry, profile)
    try:
        saved = json.loads(memo.read_text())
        if saved.get("fingerprint") == fp and not fresh:
            return _ModelInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["info"].items()}), None
    except (FileNotFoundError, json.JSONDecodeError, TypeError, KeyError):
        pass
    model = _load(entry, profile, device)
    info = _info_of(model)
    memo.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(memo, {"fingerprint": fp, "entry": entry.id, "info": dataclasses.asdict(info)})
    return info, model


def _info_of(model: Any) -> _ModelInfo:
    # A zero-shot head is built from the text tower, class names and templates, none of which the
    # weights digest of the image tower's checkpoint sees: the head's own bytes go into the key.
    head = hashlib.sha256(model.head.detach().float().cpu().numpy().tobytes())
    if model.bias is not None:
        head.update(model.bias.detach().float().cpu().numpy().tobytes())
    return _ModelInfo(model.weights_digest, head.hexdigest(), int(model.image_size), str(model.interpolation),
                      str(model.resize_mode), tuple(float(v) for v in model.image_mean),
                      tuple(float(v) for v in model.image_std), str(model.arch_kind), tuple(layer_names(model)))


def _load(entry: PoolEntry, profile: Profile, device) -> Any:
    """Load an entry on ``device`` (through the profile when it is one of its pool's entries, so
    that the models helper checks it against the pool)."""
    from .models import load, load_from_profile

    if entry in profile.pool:
        return load_from_profile(profile, entry.id, device=str(device))
    return load(entry, str(device), profile.cache_dir, profile.paths.get("hf_cache"))


def _resolve_layers(entry: PoolEntry, info: _ModelInfo, layers: Sequence[str] | str) -> list[str]:
    if layers == "all":
        return list(info.layer_names)
    unknown = [n for n in layers if n not in info.layer_names]
    if unknown:
        raise KeyError(f"entry {entry.id!r} ({info.arch_kind}) has no layer output {unknown[0]!r}; "
                       f"known: {', '.join(info.layer_names)}")
    return [n for n in info.layer_names if n in set(layers)]


def _material(entry: PoolEntry, info: _ModelInfo, store_key: str, geometry: Geometry,
              layers: list[str] | None, dtype: str, limit: int | None) -> dict:
    """Everything cached activations depend on; any change gives a new key (a cache miss)."""
    return {"kind": "activations" if layers is None else "layers", "version": EXTRACT_VERSION,
            "entry": entry.id, "weights_digest": info.weights_digest, "head_digest": info.head_digest,
            "store": store_key,
            "geometry": geometry.key, "image_mean": list(info.image_mean), "image_std": list(info.image_std),
            "outputs": layers or ["h", "logits"], "dtype": dtype, "limit": limit}


# --------------------------------------------------------------------------------------------
# The pass over the store
# --------------------------------------------------------------------------------------------

@dataclass(eq=False)
class _Job:
    """One cache entry to fill: the final outputs or a set of pooled layers of one entry."""

    entry: PoolEntry
    info: _ModelInfo
    geometry: Geometry
    kind: str  # "final" (h, logits, labels) | "layers"
    layers: list[str] | None
    cache: CacheEntry
    loaded: tuple[dict, dict[str, np.ndarray]] | None  # (manifest, arrays) once committed
    model: Any = None


def _blocks(model: Any):
    if model.arch_kind in ("vit", "coca"):
        return model.encoder.transformer.resblocks
    if model.arch_kind == "torchvision_vit":
        return model.encoder.encoder.layers
    raise ValueError(f"no per-layer outputs for architecture kind {model.arch_kind!r}")


def _layer_hooks(model: Any, names: Sequence[str], out: dict) -> list:
    """Forward hooks writing pooled layer outputs into ``out`` (on the model's device, float32).

    ResNet stages: global average over space. Transformer blocks (batch-first tokens in open_clip
    3.x and torchvision): token 0 is the class token; the mean runs over the patch tokens only."""
    wanted = {n.split(".")[0] for n in names if n != "embedding"}
    handles = []
    if model.arch_kind == "modified_resnet":
        for stage in sorted(wanted):
            def pool_space(_m, _i, y, stage=stage):
                out[stage] = y.float().mean(dim=(2, 3))
            handles.append(getattr(model.encoder, stage).register_forward_hook(pool_space))
        return handles
    blocks = _blocks(model)
    width = len(str(len(blocks) - 1))
    for i, block in enumerate(blocks):
        name = f"block{i:0{width}d}"
        if name in wanted:
            def pool_tokens(_m, _i, y, name=name):
                out[f"{name}.cls"] = y[:, 0].float()
                out[f"{name}.mean"] = y[:, 1:].float().mean(dim=1)
            handles.append(block.register_forward_hook(pool_tokens))
    return handles


class _StoreBatches:
    """Batches of the uint8 store for a DataLoader (``batch_size=None``): item b -> (first row,
    ``B x 3 x S x S`` uint8 tensor). The memmap is opened lazily, so each worker maps the file."""

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
        return lo, torch.from_numpy(np.array(self._pixels[lo:lo + self.batch_size]))


def _autocast(device, dtype: str):
    import torch

    if device.type == "cpu" or dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[dtype])


def _forward(model: Any, x8, device, dtype: str, captured: dict) -> dict:
    """One model on one uint8 batch already on its device: normalise (fp32), ``h`` under autocast,
    then the head in fp32 from ``h`` (a small matmul; keeps the logits' argmax out of bf16 ties)."""
    import torch

    captured.clear()
    with torch.inference_mode():
        x = model.normalize_input(x8)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, dtype):
            h = model.encode(x)
        h = h.float()
        outputs = {"h": h, "logits": model.logits_from_features(h).float(), "embedding": h}
    outputs.update(captured)
    return outputs


class _Clock:
    """Time of one model's forward for its progress bar: wall time on the CPU; on CUDA, where the
    launch returns at once, a pair of events read once the batch has been copied back."""

    def __init__(self, device):
        import torch

        self._cuda = device.type == "cuda"
        if self._cuda:
            self._start, self._end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> "_Clock":
        if self._cuda:
            self._end.record()
        else:
            self._elapsed = time.perf_counter() - self._t0
        return self

    def seconds(self) -> float:
        return self._start.elapsed_time(self._end) / 1000 if self._cuda else self._elapsed


def _run_pass(jobs: list[_Job], store: ImageStore, dataset_name: str, device, dtype: str, profile: Profile,
              force: bool, chunk_images: int, on_chunk: Callable[[int], None] | None) -> None:
    """One pass over ``store`` filling every job (called with the jobs' locks held).

    Each job resumes from its own last checkpoint and the pass starts at the earliest. Checkpoints
    fall between batches, and batches always start at multiples of the batch size, so a resumed
    run feeds the models exactly the same batches (bit-identical results on CPU)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm  # plain bars: notebook widgets need ipywidgets and would warn

    n, bs = len(store), profile.batch_size
    ids = list(dict.fromkeys(j.entry.id for j in jobs))
    by_model = {i: [j for j in jobs if j.entry.id == i] for i in ids}
    captured: dict[str, dict] = {i: {} for i in ids}
    handles, parts = [], {}
    try:
        for i, js in by_model.items():
            model = js[0].model if js[0].model is not None else _load(js[0].entry, profile, device)
            if device.type == "cuda":
                # Channels-last lets cuDNN pick tensor-core convolutions (ResNets, patch embedding).
                model.to(memory_format=torch.channels_last)
            wanted = [name for j in js if j.kind == "layers" for name in j.layers]
            handles += _layer_hooks(model, wanted, captured[i])
            # Output widths are known only after a forward pass; one image is enough.
            probe = _forward(model, torch.from_numpy(np.array(store.pixels[:1])).to(device), device, dtype, captured[i])
            for j in js:
                j.model = model
                names = ["h", "logits"] if j.kind == "final" else j.layers
                specs = {name: ((n, int(probe[name].shape[1])), "float32") for name in names}
                if j.kind == "final":
                    specs["labels"] = ((n,), "int64")
                part = j.cache.partial(specs, fresh=force, state={"batch_size": bs})
                if part.state.get("batch_size") != bs:
                    # Resuming with other batches would break bit-equality with an uninterrupted run.
                    part = j.cache.partial(specs, fresh=True, state={"batch_size": bs})
                if j.kind == "final" and part.done == 0:
                    part.arrays["labels"][:] = store.labels
                parts[id(j)] = part

        start = min(p.done for p in parts.values())
        loader = DataLoader(_StoreBatches(store.entry.dir / store.manifest["run"] / "pixels.npy", n, bs, start),
                            batch_size=None, shuffle=False, num_workers=profile.num_workers,
                            pin_memory=device.type == "cuda")
        bars = {i: tqdm(total=n, initial=min(parts[id(j)].done for j in by_model[i]), unit="img",
                        desc=f"{i} on {dataset_name}", position=k, smoothing=0.1, leave=True)
                for k, i in enumerate(ids)}
        busy = dict.fromkeys(ids, 0.0)
        checkpoints = Checkpoints(chunk_images, done=start)
        try:
            for b, (lo, x8) in enumerate(loader, start=start // bs):
                lo, hi = int(lo), int(lo) + x8.shape[0]
                x8 = x8.to(device, non_blocking=True)
                outs = {}
                for i, js in by_model.items():
                    js = [j for j in js if parts[id(j)].done <= lo]
                    if js:
                        clock = _Clock(device)
                        outs[i] = (js, _forward(js[0].model, x8, device, dtype, captured[i]), clock.stop())
                # Copy back only once every model's batch is queued: the device never waits for the host.
                for i, (js, o, clock) in outs.items():
                    host = {k: v.cpu().numpy() for k, v in o.items()}
                    busy[i] += clock.seconds()
                    for k, v in host.items():
                        if not np.isfinite(v).all():
                            raise NonFiniteActivations(
                                f"model {i}: non-finite values (NaN or inf) in {k!r} at batch {b} "
                                f"(images {lo}..{hi - 1}) of {dataset_name}, computed in {dtype} on {device}")
                    for j in js:
                        for name in (("h", "logits") if j.kind == "final" else j.layers):
                            parts[id(j)].arrays[name][lo:hi] = host[name]
                    bars[i].update(hi - lo)
                    bars[i].set_postfix_str(f"model alone {(bars[i].n - bars[i].initial) / max(busy[i], 1e-9):.0f} img/s",
                                            refresh=False)
                if hi == n or checkpoints.due(hi):
                    for p in parts.values():
                        if p.done < hi:
                            p.advance(hi)
                    k = checkpoints.mark(hi)
                    if on_chunk is not None:
                        on_chunk(k)
        finally:
            for bar in bars.values():
                bar.close()
    finally:
        for hnd in handles:
            hnd.remove()
    for j in jobs:
        info = {"entry": j.entry.id, "dataset": dataset_name, "n": n, "device": str(device), "dtype": dtype,
                "batch_size": bs, "store": store.entry.dir.name, "skipped": store.manifest["skipped"],
                "torch": torch.__version__, "weights": j.entry.weights_label}
        if j.kind == "layers":
            info["layers"] = j.layers
        j.loaded = parts[id(j)].commit(info)
