"""Extraction engine: decode each dataset once, run every model over it, cache what they produce.

What is produced (Section 4 and Appendix C of the paper):

- :func:`activations`: the encoder output ``h^(n) = f_v(x^(n))`` (``N x d_H`` float32, the
  activation vectors whose kurtosis is Eq. (1) and whose projections on the right singular vectors
  of ``W`` are studied in Section 4), with the labels. The logits are *not* stored: they are the
  entry's own head applied to ``h`` (:attr:`Activations.logits`, Section 2), computed on demand from
  the cached head (:func:`head`), so the cache holds no ``N x 1000`` array for any dataset.
- :func:`head`: the linear head ``W`` (and ``b``) of an entry, cached once per head digest and read
  without building the model.
- :func:`layer_activations`: one pooled vector per image and layer (opt-in, for forks; the CKA
  chapter does not need it, see :mod:`helpers.engine.cka_pass`). ResNet stages are averaged over space;
  transformer blocks give both the class token (``blockNN.cls``) and the mean of the patch tokens
  (``blockNN.mean``); ``embedding`` is ``h`` (for the CLIP ResNets, the attention-pool output).
- :func:`extract_many`: several pool entries over one dataset in one pass over the uint8 store;
  :func:`extract_datasets`: one entry over several datasets with one model build.
- :func:`accuracies`: top-1 per evaluation dataset from ``h`` and the head (Section 3, Appendix B).
- :func:`stores_needed` / :func:`build_stores`: the uint8 stores an extraction will open, found
  without weights, decoded ahead (``clip-study run``'s decode stage) through the same
  :func:`open_store` an extraction calls, so that no GPU waits on a decode.

How (details in :mod:`helpers.store`): a dataset is decoded, resized and centre-cropped once per
input geometry into a uint8 store shared by every model with that geometry; each model normalises
with its own mean/std on its device, under bf16/fp16 autocast on CUDA when the profile asks for it
(always fp32 on CPU). Results are cached under a key covering the weights digest, the head, the
dataset digest, the preprocessing, the output set, the compute dtype, the sample limit and
:data:`EXTRACT_VERSION`; writes are chunked, atomic and resumable, and a cache hit loads no model.

Cache layout under ``profile.cache_dir`` (each entry folder as described in :mod:`helpers.store`)::

    stores/<dataset>-<geometry>-<key>/        pixels (N x 3 x S x S uint8), labels, index
    activations/<entry id>/<dataset>-<key>/   h (N x d_H float32), labels
    linear_heads/<entry id>-<key>/            W (K x d_H float32), b (K, supervised only)
    layers/<entry id>/<dataset>-<key>/        one N x d array per layer name (opt-in only)
    cka/<zero-shot id>--<finetuned id>/<dataset>-<key>/   minibatch-CKA accumulators (cka_pass)
    models/<entry id>.json                    weights digest, preprocessing and layer names of an
                                              entry, trusted while its fingerprint is unchanged

Loaded models are kept in a small process-level memo (:data:`MODELS_IN_MEMORY`, per entry,
fingerprint, device and precision), so a job that asks for several datasets, the head and the
activations of one entry builds it once (:func:`release_models` empties it).

A changed key makes a new folder; folders of superseded keys are never read again and can be
deleted by hand.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from helpers.config import EVAL_DATASETS, PoolEntry, Profile
from helpers.data import accuracy, open_broden, open_dataset
# the module, not its names: a test intercepts models.load / models.load_from_profile to prove no model is built
import helpers.models as helpers_models
from helpers.models import ModelError, preprocessing
from helpers.models.precision import autocast, compute_dtype
from helpers.store import (
    CHUNK_IMAGES, CacheEntry, Checkpoints, DecodeError, Geometry, ImageStore, atomic_write_json, ensure_store,
    key_of, store_entry, store_material,
)

#: Bump when cached activations would change for the same model, data and settings.
#: 2: no logits array (derived from h and the cached head); heads cached per entry.
EXTRACT_VERSION = 2

#: Loaded models kept in memory between calls (a CKA pair needs two).
MODELS_IN_MEMORY = 2

_HELPERS = Path(__file__).resolve().parent.parent


class NonFiniteActivations(FloatingPointError):
    """A model produced NaN or infinite activations; the message names the model and the batch."""


@dataclass(frozen=True)
class Head:
    """The linear head of an entry (Section 2): ``W`` (K x d_H float32), ``b`` (K) or None, and
    whether the logits read the normalised embedding (zero-shot and finetuned CLIP / CoCa:
    logit = W h/||h||) or the raw one (supervised: W h + b)."""

    W: np.ndarray
    b: np.ndarray | None
    normalize: bool
    digest: str

    def logits(self, h: np.ndarray, block: int = 8192) -> np.ndarray:
        """``N x K`` float32 logits of embeddings ``h`` (N x d_H), by the rule of
        :meth:`helpers.models.loading.LoadedModel.logits_from_features` (same torch ops, float32, CPU)."""
        import torch
        import torch.nn.functional as F

        W = torch.from_numpy(np.array(self.W, dtype=np.float32))
        b = None if self.b is None else torch.from_numpy(np.array(self.b, dtype=np.float32))
        out = np.empty((len(h), W.shape[0]), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, len(h), block):
                x = torch.from_numpy(np.array(h[i:i + block], dtype=np.float32))
                if self.normalize:
                    x = F.normalize(x, dim=-1)
                out[i:i + block] = F.linear(x, W, b).numpy()
        return out


@dataclass
class Activations:
    """Outputs of one pool entry on one dataset (read-only memmaps when cached).

    ``h``: ``N x d_H`` float32, the encoder output ``f_v(x)`` of Section 2 (before the head's
    normalisation). ``labels``: ``N`` int64 in the dataset's own label space. ``head``: the entry's
    :class:`Head`. ``logits`` (``N x 1000`` float32) is derived: the head applied to ``h``.
    ``layers``: the pooled per-layer activations when they were requested (Appendix C).
    """

    entry_id: str
    dataset_name: str
    h: np.ndarray
    labels: np.ndarray
    manifest: dict
    head: Head | None = field(default=None, repr=False)
    layers: dict[str, np.ndarray] | None = None
    dataset: Any = field(default=None, repr=False)  # the opened dataset (scoring needs ObjectNet's mapping)
    _logits: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def logits(self) -> np.ndarray:
        """``N x 1000`` float32: the entry's own head applied to ``h`` (computed once per object)."""
        if self._logits is None:
            if self.head is None:
                raise ValueError(f"activations of {self.entry_id!r} on {self.dataset_name} carry no head")
            self._logits = self.head.logits(self.h)
        return self._logits

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy (fraction) scored as the testbed does for this dataset (helpers.data)."""
        return float(accuracy(self.dataset_name, self.logits, self.labels, dataset=self.dataset))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def activations(entry: PoolEntry | str, dataset_name: str, profile: Profile, force: bool = False,
                skip_unreadable: bool | None = None) -> Activations:
    """``h`` (N x d_H) and labels of one pool entry on one dataset, computed once and then read
    from the cache (Section 4: "activation vectors h^(n) = f_v(x^(n))"); ``.logits`` derives from h.

    ``dataset_name``: one of ``helpers.config.DATASETS``. For ``broden`` (Section 5's probing set)
    the labels are the images' positions in the dataset, as ``helpers.data.open_broden`` gives them."""
    out = extract_many([entry], dataset_name, profile, force=force, skip_unreadable=skip_unreadable)
    return next(iter(out.values()))


def extract_datasets(entry: PoolEntry | str, datasets: Sequence[str], profile: Profile, *, force: bool = False,
                     skip_unreadable: bool | None = None, layers: Sequence[str] | str | None = None,
                     device: str | None = None) -> dict[str, Activations]:
    """One entry over several datasets with one model build: the model (built only when some
    dataset misses the cache) stays in the process memo across the datasets. Returns
    ``{dataset: Activations}`` in the order of ``datasets``."""
    e = profile.entry(entry) if isinstance(entry, str) else entry
    return {d: extract_many([e], d, profile, force=force, skip_unreadable=skip_unreadable, layers=layers,
                            device=device)[e.id] for d in datasets}


def layer_activations(entry: PoolEntry | str, dataset_name: str, profile: Profile,
                      layers: Sequence[str] | None = None, force: bool = False,
                      keep: bool = True) -> dict[str, np.ndarray]:
    """Per-layer activations pooled to one ``N x d_layer`` float32 memmap per name, in network order
    (Appendix C). ``layers``: names from :func:`layer_names` (None: all).

    Opt-in, for forks that need the activations themselves: the CKA chapter accumulates its
    statistics in one pass without them (:func:`helpers.engine.cka_pass.pair_cka`). Disk cost per image,
    all layers, float32 (``4 x sum of the layer widths``, the class token and the patch mean of
    every block plus ``h``): ViT-B-32 / B-16 75,776 B (12 blocks x 2 x 768 + 512), ViT-L-14
    199,680 B (24 x 2 x 1024 + 768), RN50 19,456 B (256 + 512 + 1024 + 2048 + 1024), RN101
    17,408 B; e.g. 12.7 GB for one ViT-B-32 over the 166,963 evaluation images, 567 GB for the 36
    models of the paper's finetuning pairs. :func:`helpers.workflow.costs.layer_bytes_per_image` gives it for
    any architecture. ``keep=False``: computed in memory, nothing written under ``layers/`` (nor
    ``activations/``), for a one-off look at a layer that need not be read back."""
    out = extract_many([entry], dataset_name, profile, layers=list(layers) if layers else "all", force=force,
                       keep=keep)
    return next(iter(out.values())).layers


def head(entry: PoolEntry | str, profile: Profile, device: str | None = None) -> Head:
    """The linear head of a pool entry, read from ``<cache_dir>/linear_heads/`` without building
    the model; on a miss the model is built once on the profile's device (its zero-shot head under
    the profile's precision, :func:`helpers.models.loading.load`) and its head cached."""
    import torch

    e = profile.entry(entry) if isinstance(entry, str) else entry
    dev = torch.device(device or profile.device)
    info, model = describe(e, profile, dev)
    return _head_of(e, info, profile, dev, model)


def activation_keys(entries: Iterable[PoolEntry | str], dataset_name: str, profile: Profile, *,
                    models: Mapping[str, Any] | None = None, skip_unreadable: bool | None = None,
                    device: str | None = None) -> dict[str, str]:
    """The cache key :func:`extract_many` gives each entry's activations on ``dataset_name``
    (without running any model when the entries' memos are fresh): what results computed from
    those activations, without caching them, are keyed on (WiSE-FT mixtures, epoch checkpoints)."""
    skip_unreadable = profile.skip_unreadable if skip_unreadable is None else skip_unreadable
    plan = _plan(entries, dataset_name, profile, device=device, layers=None, force=False,
                 skip_unreadable=skip_unreadable, models=models, probe_cache=False)
    return {j.entry.id: j.cache.key for j in plan.jobs}


def extract_many(entries: Iterable[PoolEntry | str], dataset_name: str, profile: Profile, *,
                 layers: Sequence[str] | str | None = None, force: bool = False,
                 skip_unreadable: bool | None = None, models_per_pass: int | None = None,
                 device: str | None = None, chunk_images: int = CHUNK_IMAGES,
                 on_chunk: Callable[[int], None] | None = None,
                 models: Mapping[str, Any] | None = None, keep: bool = True,
                 dataset: Any = None) -> dict[str, Activations]:
    """Run several pool entries over one dataset: decode it once into the uint8 store, then one pass
    over the store for up to ``models_per_pass`` models at a time (default: all that miss the cache).

    ``layers``: None (only ``h``), ``"all"``, or names from :func:`layer_names`; per-layer
    outputs are cached separately and attached as ``.layers``. ``force`` recomputes the activations
    (the store is keyed by the files' digest and is reused). ``skip_unreadable`` leaves undecodable
    images out (listed in the manifests' ``skipped``) instead of stopping. A pass records a resume
    checkpoint every ``chunk_images`` images or ``helpers.store.CHECKPOINT_S`` seconds and then calls
    ``on_chunk(k)``. ``models``: ``{entry id: LoadedModel}`` already in memory (e.g. WiSE-FT mixtures
    of Appendix I, which have no weights file); they are keyed by their own ``weights_digest`` and
    moved to the device. ``keep=False``: compute in memory and write nothing under ``activations/``
    (the manifests still carry the key a cached result would have); for results that keep only
    small summaries (WiSE-FT mixtures, epoch checkpoints). Returns ``{entry id: Activations}`` in
    the order of ``entries``. ``dataset``: an opened dataset to read instead of the profile's
    ``dataset_name`` folder (``diagnose``'s :class:`helpers.data.folder.ImageFolderDataset`; its own
    ``limit`` applies).
    """
    # None: the profile's skip_unreadable (a profile key and `clip-study run --skip-unreadable`)
    skip_unreadable = profile.skip_unreadable if skip_unreadable is None else skip_unreadable
    plan = _plan(entries, dataset_name, profile, device=device, layers=layers, force=force,
                 skip_unreadable=skip_unreadable, models=models, probe_cache=keep and not force,
                 keep_models=models_per_pass is None, dataset=dataset)
    jobs, dev, dtype, dataset = plan.jobs, plan.device, plan.dtype, plan.dataset

    misses = [j for j in jobs if j.loaded is None]
    ids = list(dict.fromkeys(j.entry.id for j in misses))
    step = models_per_pass or len(ids) or 1
    for g in range(0, len(ids), step):
        group_ids = set(ids[g:g + step])
        group = [j for j in misses if j.entry.id in group_ids]
        for geometry in dict.fromkeys(j.geometry for j in group):
            todo = [j for j in group if j.geometry == geometry]
            keep_store = keeps_store(profile, geometry)
            sentry = plan.stores[geometry].entry(profile.cache_dir)
            with contextlib.ExitStack() as held:
                if not keep_store:
                    held.enter_context(sentry.reading())  # before it is opened: see remove_unused
                store = open_store(plan.stores[geometry], profile)
                if not keep:
                    _run_pass(todo, store, dataset_name, dev, dtype, profile, True, chunk_images, on_chunk, keep=False)
                else:
                    _locked_pass(todo, store, dataset_name, dev, dtype, profile, force, chunk_images, on_chunk)
            if not keep_store:
                sentry.remove_unused()
        for j in group:
            j.model = None  # drop this call's reference (the memo keeps at most MODELS_IN_MEMORY)

    out = {}
    for e in plan.entries:
        final, *per_layer = [j for j in jobs if j.entry.id == e.id]
        m, a = final.loaded
        out[e.id] = Activations(e.id, dataset_name, a["h"], a["labels"], m, head=plan.heads[e.id],
                                layers=per_layer[0].loaded[1] if per_layer else None, dataset=dataset)
    return out


def _locked_pass(todo: list["_Job"], store: ImageStore, dataset_name: str, dev, dtype: str, profile: Profile,
                 force: bool, chunk_images: int, on_chunk) -> None:
    with contextlib.ExitStack() as held:
        # Locks are taken in one global order, so two processes cannot deadlock on them.
        for j in sorted(todo, key=lambda j: str(j.cache.dir)):
            held.enter_context(j.cache.lock())
            # Another process may have committed this key while we waited for the lock.
            j.loaded = None if force else j.cache.load()
        todo = [j for j in todo if j.loaded is None]
        if todo:
            _run_pass(todo, store, dataset_name, dev, dtype, profile, force, chunk_images, on_chunk)


#: A geometry's uint8 store is kept on disk when at least this many pool entries read it; the
#: store of a rarer geometry (the torchvision ViTs' 256 -> 224 bilinear: two models) is removed
#: after each pass, saving its 150,528 B per image (35 GB for the paper's datasets) for one more
#: decode per model.
KEEP_STORE_MIN_ENTRIES = 3

_GEOMETRY_USERS: dict[str, dict] = {}


def keeps_store(profile: Profile, geometry: Geometry) -> bool:
    """Whether the store of ``geometry`` stays on disk for ``profile`` (see
    :data:`KEEP_STORE_MIN_ENTRIES`); resolved from the pool's preprocessing, no weights read."""
    key = profile.digest()
    if key not in _GEOMETRY_USERS:
        counts: dict = {}
        for e in profile.pool:
            try:
                g = preprocessing(e).geometry
            except ModelError:
                continue  # loading it will report the entry
            counts[g] = counts.get(g, 0) + 1
        _GEOMETRY_USERS[key] = counts
    return _GEOMETRY_USERS[key].get(geometry, 0) >= KEEP_STORE_MIN_ENTRIES or geometry not in _GEOMETRY_USERS[key]


def accuracies(entry: PoolEntry | str, profile: Profile,
               datasets: Sequence[str] = EVAL_DATASETS) -> dict[str, float]:
    """Top-1 accuracy (fraction) per dataset from ``h`` and the head, extracting what is missing
    with one model build: this run's column beside the paper's Tables 1-2 (Section 3, Appendix B)."""
    return {name: a.accuracy for name, a in extract_datasets(entry, datasets, profile).items()}


def loaded_model(entry: PoolEntry | str, profile: Profile, device: str | None = None) -> Any:
    """The entry's :class:`~helpers.models.loading.LoadedModel` on the profile's device (or ``device``),
    from the process memo when this job built it already: one build per job. Do not modify it in
    place (copy it, as :func:`helpers.engine.mixtures.interpolate` does)."""
    import torch

    e = profile.entry(entry) if isinstance(entry, str) else entry
    return _load(e, profile, torch.device(device or profile.device))


def release_models() -> None:
    """Empty the process memo of loaded models (and the CUDA cache allocator's free blocks)."""
    with _LOADED_LOCK:
        _LOADED.clear()
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - freeing memory is best effort
        pass


def layer_names(model: Any) -> list[str]:
    """Ordered names of the pooled per-layer outputs of a loaded model (see the module docstring).
    Block numbers are zero-padded so that a lexical sort keeps depth order."""
    if model.arch_kind == "modified_resnet":
        return [f"layer{i}" for i in range(1, 5)] + ["embedding"]
    if model.arch_kind not in ("vit", "coca", "torchvision_vit"):
        return ["embedding"]  # an encoder of unknown structure (a plain module given to diagnose)
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
    normalize_features: bool
    resize_size: int | None = None

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.image_size, self.interpolation, self.resize_mode, self.resize_size)


def _fingerprint(entry: PoolEntry, profile: Profile) -> str:
    """What a model's weights digest and preprocessing can depend on, readable without loading it:
    the entry, its checkpoint file's size and mtime, the hub cache, the library versions, the
    precision (zero-shot heads are built under it) and the source of the loading code and demo
    architectures. A change makes :func:`describe` reload."""
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
    code = [*sorted((_HELPERS / "models").glob("*.py")), _HELPERS / "demo" / "archs.py",
            *sorted((_HELPERS / "reference" / "model_configs").glob("*.json"))]
    parts["code"] = {p.name: _code_digest(p) for p in code if p.exists()}
    return key_of(parts)


_CODE_DIGESTS: dict[tuple[str, int], str] = {}


def _code_digest(path: Path) -> str:
    st = path.stat()
    k = (str(path), st.st_mtime_ns)
    if k not in _CODE_DIGESTS:
        _CODE_DIGESTS[k] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _CODE_DIGESTS[k]


def describe(entry: PoolEntry, profile: Profile, device, fresh: bool = False) -> tuple[_ModelInfo, Any]:
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
    model = _load(entry, profile, device, fingerprint=fp)
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
    resize = getattr(model, "resize_size", None)
    return _ModelInfo(model.weights_digest, head.hexdigest(), int(model.image_size), str(model.interpolation),
                      str(model.resize_mode), tuple(float(v) for v in model.image_mean),
                      tuple(float(v) for v in model.image_std), str(model.arch_kind), tuple(layer_names(model)),
                      bool(model.normalize_features), None if resize is None else int(resize))


#: (entry id, fingerprint, device, precision) -> LoadedModel, least recently used first.
_LOADED: "OrderedDict[tuple, Any]" = OrderedDict()
_LOADED_LOCK = threading.Lock()


def _load(entry: PoolEntry, profile: Profile, device, fingerprint: str | None = None) -> Any:
    """Load an entry on ``device`` (through the profile when it is one of its pool's entries, so
    that the models helper checks it against the pool), or take it from the process memo: one
    build per job. The memo holds :data:`MODELS_IN_MEMORY` models; older ones are dropped."""
    key = (entry.id, fingerprint or _fingerprint(entry, profile), str(device), profile.precision)
    with _LOADED_LOCK:
        model = _LOADED.get(key)
        if model is not None:
            _LOADED.move_to_end(key)
            return model
        while len(_LOADED) >= MODELS_IN_MEMORY:
            _LOADED.popitem(last=False)  # freed before the next build, not after it
    if entry in profile.pool:
        model = helpers_models.load_from_profile(profile, entry.id, device=str(device), precision=profile.precision)
    else:
        model = helpers_models.load(entry, str(device), profile.cache_dir, profile.paths.get("hf_cache"),
                                    **helpers_models.profile_load_options(profile))
    with _LOADED_LOCK:
        _LOADED[key] = model
    return model


def _head_material(entry: PoolEntry, info: _ModelInfo) -> dict:
    return {"kind": "linear-head", "version": EXTRACT_VERSION, "entry": entry.id,
            "weights_digest": info.weights_digest, "head_digest": info.head_digest}


def _head_of(entry: PoolEntry, info: _ModelInfo, profile: Profile | None, device, model: Any = None,
             cache: bool = True) -> Head:
    """The entry's head from ``<cache_dir>/linear_heads/`` or from ``model`` (loading it on a miss);
    ``cache=False`` (in-memory mixtures): from ``model`` only, nothing written."""
    if not cache:
        return _head_from_model(model, info)
    entry_cache = CacheEntry(profile.cache_dir / "linear_heads", entry.id, _head_material(entry, info))
    loaded = entry_cache.load()
    if loaded is not None:
        m, a = loaded
        return Head(a["W"], a.get("b"), bool(m["normalize"]), info.head_digest)
    if model is None:
        model = _load(entry, profile, device)
    h = _head_from_model(model, info)
    with entry_cache.lock():
        if entry_cache.load() is None:
            specs = {"W": (h.W.shape, "float32")}
            if h.b is not None:
                specs["b"] = (h.b.shape, "float32")
            part = entry_cache.partial(specs, fresh=True)
            part.arrays["W"][:] = h.W
            if h.b is not None:
                part.arrays["b"][:] = h.b
            part.commit({"normalize": h.normalize, "entry": entry.id, "head_source": str(model.head_source)})
    return h


def _head_from_model(model: Any, info: _ModelInfo) -> Head:
    W = model.head.detach().float().cpu().numpy()
    b = None if model.bias is None else model.bias.detach().float().cpu().numpy()
    return Head(W, b, bool(model.normalize_features), info.head_digest)


def profile_dataset(dataset_name: str, profile: Profile) -> Any:
    """The profile's dataset, limited. Unreadable files are dropped while decoding into the store
    (not by the datasets' up-front scan, which would decode every image again on each call, cache
    hits included)."""
    root, limit = profile.dataset_root(dataset_name), profile.limit(dataset_name)
    if dataset_name == "broden":
        return open_broden(root, limit=limit)
    return open_dataset(dataset_name, root, limit=limit)


@dataclass(frozen=True, eq=False)
class StoreSpec:
    """One uint8 store an extraction reads: its dataset, input geometry and key material
    (:func:`helpers.store.store_material`), with what :func:`open_store` needs to build it (the
    opened dataset, its sample limit, whether unreadable images are skipped). Unpacks as
    ``(dataset, geometry, material)``."""

    dataset: str
    geometry: Geometry
    material: dict
    source: Any = field(repr=False)
    limit: int | None = None
    skip_unreadable: bool = False

    @property
    def key(self) -> str:
        return key_of(self.material)

    @property
    def images(self) -> int:
        return int(self.material["n_files"])

    def __iter__(self):
        return iter((self.dataset, self.geometry, self.material))

    def entry(self, cache_dir: Path) -> CacheEntry:
        return store_entry(self.dataset, self.geometry, cache_dir, self.material)

    def committed(self, cache_dir: Path) -> bool:
        """Whether a build of this store was committed under ``cache_dir``
        (:meth:`helpers.store.CacheEntry.committed`: its arrays not verified, opening it does that)."""
        return self.entry(cache_dir).committed()


def store_spec(dataset_name: str, dataset: Any, geometry: Geometry, limit: int | None,
               skip_unreadable: bool) -> StoreSpec:
    """The store of ``dataset`` for ``geometry``: the one place its key material is made, for an
    extraction (:func:`_plan`) and for the decode stage (:func:`stores_needed`) alike."""
    return StoreSpec(dataset_name, geometry, store_material(dataset_name, dataset, geometry, limit, skip_unreadable),
                     dataset, limit, bool(skip_unreadable))


def open_store(spec: StoreSpec, profile: Profile, on_chunk: Callable[[int], None] | None = None) -> ImageStore:
    """Open the store ``spec`` under the profile's cache, decoding it first (with the profile's
    ``batch_size`` and ``num_workers``) when it is missing: what an extraction and the decode stage
    (:func:`build_stores`) both call, so that they read and write the same entry."""
    return ensure_store(spec.dataset, spec.source, spec.geometry, profile.cache_dir, limit=spec.limit,
                        skip_unreadable=spec.skip_unreadable, batch_size=profile.batch_size,
                        num_workers=profile.num_workers, material=spec.material, on_chunk=on_chunk)


def stores_needed(profile: Profile, entries: Iterable[PoolEntry | str], datasets: Iterable[str], *,
                  skip_unreadable: bool | None = None) -> list[StoreSpec]:
    """The uint8 stores :func:`extract_many` opens for ``entries`` over each of ``datasets``, found
    without loading any weights: each entry's input geometry from its preprocessing
    (``helpers.models.preprocessing``, as :func:`keeps_store` reads it), each dataset opened as an
    extraction opens it (:func:`profile_dataset`, the profile's limit). Only the geometries whose
    store stays on disk (:func:`keeps_store`): a rarer one is removed after each pass, so decoding it
    ahead would be undone. ``skip_unreadable`` None: the profile's. An entry whose preprocessing
    cannot be resolved is left out (loading it in the job names the problem). In the order of
    ``datasets``, then of the entries' geometries."""
    skip = profile.skip_unreadable if skip_unreadable is None else skip_unreadable
    geometries: list[Geometry] = []
    for e in entries:
        e = profile.entry(e) if isinstance(e, str) else e
        try:
            g = preprocessing(e).geometry
        except ModelError:
            continue
        if g not in geometries and keeps_store(profile, g):
            geometries.append(g)
    out = []
    for d in dict.fromkeys(datasets):
        if geometries:
            dataset = profile_dataset(d, profile)
            out += [store_spec(d, dataset, g, profile.limit(d), skip) for g in geometries]
    return out


def build_stores(profile: Profile, stores: Sequence[StoreSpec], *, echo: Callable[[str], None] = print,
                 label: str = "decode stage") -> list[dict]:
    """Open or decode every store of ``stores`` (:func:`open_store`, as the extraction would),
    before any model runs: one line per store (dataset, geometry, images, ``cached`` or ``decoded
    in N s``, and the time the stores still to decode take at the rate so far), the decode's own
    progress bar meanwhile. Returns one record per store (dataset, geometry, images, cached,
    seconds). An unreadable image (without ``skip_unreadable``) stops its dataset; the other
    datasets are still decoded, then one :class:`helpers.store.DecodeError` names every bad file."""
    stores = list({s.entry(profile.cache_dir).dir: s for s in stores}.values())
    # opened once here: a committed store is verified now, and counted as cached, not as to do
    cached = {id(s): s.entry(profile.cache_dir).load() is not None for s in stores}
    todo = sum(s.images for s in stores if not cached[id(s)])
    echo(f"{label}: {len(stores)} store(s), {sum(cached.values())} cached, {len(stores) - sum(cached.values())} "
         f"to decode ({todo:,} images, {profile.num_workers} DataLoader worker(s)) under {profile.cache_dir / 'stores'}")
    done, busy, failed, records = 0, 0.0, {}, []
    for k, s in enumerate(stores, 1):
        head = f"{label} [{k}/{len(stores)}] {s.dataset} {s.geometry.key}"
        if s.dataset in failed:
            echo(f"{head}: not decoded ({s.dataset} has unreadable images, above)")
            continue
        t0 = time.perf_counter()
        try:
            store = open_store(s, profile)
        except DecodeError as exc:
            failed[s.dataset] = str(exc)
            echo(f"{head}: failed: {exc}")
            continue
        seconds = time.perf_counter() - t0
        records.append({"dataset": s.dataset, "geometry": s.geometry.key, "images": len(store),
                        "cached": cached[id(s)], "seconds": seconds})
        if cached[id(s)]:
            echo(f"{head}: {len(store):,} images, cached")
            continue
        done, busy = done + s.images, busy + seconds
        rate = done / max(busy, 1e-9)
        left = todo - done
        echo(f"{head}: {len(store):,} images, decoded in {seconds:.1f} s ({s.images / max(seconds, 1e-9):.0f} img/s); "
             + (f"about {left / rate:.0f} s left ({left:,} images)" if left else "all decoded"))
    if failed:
        raise DecodeError(f"{label}: no job started; " + "\n".join(failed.values()))
    return records


@dataclass
class _Plan:
    entries: list[PoolEntry]
    dataset: Any
    device: Any
    dtype: str
    limit: int | None
    stores: dict[Geometry, "StoreSpec"]
    jobs: list["_Job"]
    heads: dict[str, Head]


def _plan(entries, dataset_name: str, profile: Profile, *, device, layers, force: bool, skip_unreadable: bool,
          models, probe_cache: bool, keep_models: bool = True, dataset: Any = None) -> _Plan:
    """The jobs of an extraction: per entry, its info (memo), head, geometry, store material and
    cache entries, with what is already cached loaded (``probe_cache``)."""
    import torch

    entries = list({e.id: e for e in (profile.entry(e) if isinstance(e, str) else e for e in entries)}.values())
    dev = torch.device(device or profile.device)
    dtype = compute_dtype(dev, profile.precision)
    # an opened dataset (diagnose's image folder) carries its own limit
    limit = profile.limit(dataset_name) if dataset is None else None
    dataset = profile_dataset(dataset_name, profile) if dataset is None else dataset
    stores: dict[Geometry, StoreSpec] = {}
    jobs: list[_Job] = []
    heads: dict[str, Head] = {}
    for e in entries:
        given = bool(models and e.id in models)
        if given:
            model = models[e.id].to(dev)
            info = _info_of(model)
        else:
            info, model = describe(e, profile, dev, fresh=force)
        geometry = info.geometry
        if geometry not in stores:
            stores[geometry] = store_spec(dataset_name, dataset, geometry, limit, skip_unreadable)
        wanted = [("final", None)]
        if layers is not None:
            wanted.append(("layers", resolve_layers(e, info, layers)))
        for kind, names in wanted:
            cache = CacheEntry(profile.cache_dir / ("activations" if kind == "final" else "layers") / e.id,
                               dataset_name, _material(e, info, stores[geometry].key, geometry, names, dtype, limit))
            jobs.append(_Job(e, info, geometry, kind, names, cache, cache.load() if probe_cache else None))
        if (keep_models or given) and any(j.loaded is None for j in jobs if j.entry is e):
            # Loaded to describe it (or given) and needed by a pass: keep it rather than load it twice.
            for j in jobs:
                if j.entry is e:
                    j.model = model
        heads[e.id] = _head_of(e, info, profile, dev, model, cache=not given)
    return _Plan(entries, dataset, dev, dtype, limit, stores, jobs, heads)


def resolve_layers(entry: PoolEntry, info: _ModelInfo, layers: Sequence[str] | str) -> list[str]:
    """The entry's layer names ``layers`` asks for (``"all"``: every one), in network order; a
    :class:`KeyError` naming the first unknown one."""
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
            "outputs": layers or ["h"], "dtype": dtype, "limit": limit}


# --------------------------------------------------------------------------------------------
# The pass over the store: one loop (forward_loop) and its sinks, the cache entries of an
# extraction here (_CacheSink) and the minibatch CKA sums of helpers.engine.cka_pass
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


def layer_hooks(model: Any, names: Sequence[str], out: dict) -> list:
    """Forward hooks writing pooled layer outputs into ``out`` (on the model's device, float32).

    ResNet stages: global average over space. Transformer blocks (batch-first tokens in open_clip
    3.x and torchvision): token 0 is the class token; the mean runs over the patch tokens only."""
    wanted = {n.split(".")[0] for n in names if n != "embedding"}
    handles = []
    if not wanted:
        return handles
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


def _forward(model: Any, x8, device, dtype: str, captured: dict) -> dict:
    """One model on one uint8 batch already on its device: normalise (fp32), ``h`` under autocast,
    returned in float32 with the pooled layers the hooks captured. The logits are not computed
    here: they derive from ``h`` and the head (:attr:`Activations.logits`)."""
    import torch

    captured.clear()
    with torch.inference_mode():
        x = model.normalize_input(x8)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            h = model.encode(x)
        h = h.float()
        outputs = {"h": h, "embedding": h}
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


class _CacheSink:
    """The extraction pass's sink: each model's outputs (h, or pooled layers) copied to the host
    into its jobs' cache entries (or, with ``keep=False``, into memory), checkpointed at any batch."""

    def __init__(self, by_model: dict[str, list[_Job]], models: dict[str, Any], captured: dict[str, dict],
                 store: ImageStore, device, dtype: str, force: bool, keep: bool, batch_size: int):
        import torch

        n = len(store)
        self.by_model, self.parts = by_model, {}
        for i, js in by_model.items():
            # Output widths are known only after a forward pass; one image is enough.
            probe = _forward(models[i], torch.from_numpy(np.array(store.pixels[:1])).to(device), device, dtype,
                             captured[i])
            for j in js:
                names = ["h"] if j.kind == "final" else j.layers
                specs = {name: ((n, int(probe[name].shape[1])), "float32") for name in names}
                if j.kind == "final":
                    specs["labels"] = ((n,), "int64")
                self.parts[id(j)] = self._part(j, specs, store, force, keep, batch_size)
        self.start = min(p.done for p in self.parts.values())

    @staticmethod
    def _part(j: _Job, specs, store: ImageStore, force: bool, keep: bool, bs: int):
        if not keep:
            part = _InMemory(j.cache, specs)
            if j.kind == "final":
                part.arrays["labels"][:] = store.labels
            return part
        part = j.cache.partial(specs, fresh=force, state={"batch_size": bs})
        if part.state.get("batch_size") != bs:
            # Resuming with other batches would break bit-equality with an uninterrupted run.
            part = j.cache.partial(specs, fresh=True, state={"batch_size": bs})
        if j.kind == "final" and part.done == 0:
            part.arrays["labels"][:] = store.labels
        return part

    def _pending(self, i: str, lo: int) -> list[_Job]:
        return [j for j in self.by_model[i] if self.parts[id(j)].done <= lo]

    def initial(self, i: str) -> int:
        return min(self.parts[id(j)].done for j in self.by_model[i])

    def wants(self, i: str, lo: int) -> bool:
        return bool(self._pending(i, lo))

    def take(self, i: str, outputs: dict, lo: int) -> dict:
        needed = dict.fromkeys(k for j in self._pending(i, lo) for k in (("h",) if j.kind == "final" else j.layers))
        return {k: outputs[k].cpu().numpy() for k in needed}

    def write(self, i: str, values: dict, lo: int, hi: int) -> None:
        for j in self._pending(i, lo):
            for name in (("h",) if j.kind == "final" else j.layers):
                self.parts[id(j)].arrays[name][lo:hi] = values[name]

    def end_batch(self, lo: int, hi: int) -> None:
        pass

    def boundary(self, hi: int) -> bool:
        return True  # every batch boundary: each job resumes at a multiple of the batch size

    def save(self, hi: int) -> None:
        for p in self.parts.values():
            if p.done < hi:
                p.advance(hi)


@contextlib.contextmanager
def hooked(models: Mapping[Any, Any], layers: Mapping[Any, Sequence[str]], device):
    """Prepare ``models`` for :func:`forward_loop`: channels-last on CUDA and forward hooks pooling
    ``layers[key]`` of each (:func:`layer_hooks`); yields {key: dict the hooks write into} and
    removes the hooks on exit."""
    import torch

    captured: dict = {i: {} for i in models}
    handles: list = []
    try:
        for i, model in models.items():
            if device.type == "cuda":
                # Channels-last lets cuDNN pick tensor-core convolutions (ResNets, patch embedding).
                model.to(memory_format=torch.channels_last)
            handles += layer_hooks(model, layers[i], captured[i])
        yield captured
    finally:
        for hnd in handles:
            hnd.remove()


def _check_finite(values: Mapping[str, Any], name: str, b: int, lo: int, hi: int, dataset_name: str,
                  dtype: str, device) -> None:
    """Raise :class:`NonFiniteActivations` on the first output holding NaN or inf (host arrays or
    device tensors; the latter checked with one device sync)."""
    import torch

    keys = list(values)
    tensors = [v for v in values.values() if isinstance(v, torch.Tensor)]
    if tensors and len(tensors) == len(keys):
        finite = torch.stack([torch.isfinite(v).all() for v in tensors]).tolist()
    else:
        finite = [bool(np.isfinite(v).all()) for v in values.values()]
    for k, ok in zip(keys, finite):
        if not ok:
            raise NonFiniteActivations(
                f"model {name}: non-finite values (NaN or inf) in {k!r} at batch {b} "
                f"(images {lo}..{hi - 1}) of {dataset_name}, computed in {dtype} on {device}")


def forward_loop(models: Mapping[Any, Any], captured: Mapping[Any, dict], names: Mapping[Any, str], store: ImageStore,
                 sink: Any, *, device, dtype: str, profile: Profile, dataset_name: str, chunk_images: int,
                 on_chunk: Callable[[int], None] | None, desc: str = "") -> None:
    """The engine's one forward loop: ``models`` (prepared by :func:`hooked`) over the uint8
    ``store`` from image ``sink.start``, in batches of the profile's ``batch_size`` read by a
    DataLoader, each model's outputs (:func:`_forward`: h and the pooled layers) checked finite and
    handed to ``sink``, with a progress bar per model (``desc`` + ``names[key]``) and checkpoints.

    The sink decides what is kept: ``initial(key)`` (images already done, for the bar),
    ``wants(key, lo)`` (run this model on the batch at ``lo``?), ``take(key, outputs, lo)`` (the
    values it needs: host arrays or device tensors), ``write(key, values, lo, hi)``,
    ``end_batch(lo, hi)``, ``boundary(hi)`` (may a checkpoint fall at ``hi``?) and ``save(hi)``
    (record it; called at the end of the store too when ``boundary(n)``). Batches always start at
    multiples of the batch size, so a resumed pass feeds the models exactly the same batches."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm  # plain bars: notebook widgets need ipywidgets and would warn

    n, bs, start = len(store), profile.batch_size, sink.start
    loader = DataLoader(_StoreBatches(store.entry.dir / store.manifest["run"] / "pixels.npy", n, bs, start),
                        batch_size=None, shuffle=False, num_workers=profile.num_workers,
                        pin_memory=device.type == "cuda")
    bars = {i: tqdm(total=n, initial=sink.initial(i), unit="img", desc=f"{desc}{names[i]} on {dataset_name}",
                    position=k, smoothing=0.1, leave=True) for k, i in enumerate(models)}
    busy = dict.fromkeys(models, 0.0)
    checkpoints = Checkpoints(chunk_images, done=start)
    try:
        for b, (lo, x8) in enumerate(loader, start=start // bs):
            lo, hi = int(lo), int(lo) + x8.shape[0]
            x8 = x8.to(device, non_blocking=True)
            outs = {}
            for i, model in models.items():
                if sink.wants(i, lo):
                    clock = _Clock(device)
                    outs[i] = (_forward(model, x8, device, dtype, captured[i]), clock.stop())
            # Copy back only once every model's batch is queued: the device never waits for the host.
            for i, (o, clock) in outs.items():
                values = sink.take(i, o, lo)
                busy[i] += clock.seconds()
                _check_finite(values, names[i], b, lo, hi, dataset_name, dtype, device)
                sink.write(i, values, lo, hi)
                bars[i].update(hi - lo)
                bars[i].set_postfix_str(f"model alone {(bars[i].n - bars[i].initial) / max(busy[i], 1e-9):.0f} img/s",
                                        refresh=False)
            sink.end_batch(lo, hi)
            if sink.boundary(hi) and (hi == n or checkpoints.due(hi)):
                sink.save(hi)
                k = checkpoints.mark(hi)
                if on_chunk is not None:
                    on_chunk(k)
    finally:
        for bar in bars.values():
            bar.close()


def _run_pass(jobs: list[_Job], store: ImageStore, dataset_name: str, device, dtype: str, profile: Profile,
              force: bool, chunk_images: int, on_chunk: Callable[[int], None] | None, keep: bool = True) -> None:
    """One pass over ``store`` filling every job (called with the jobs' locks held; ``keep=False``:
    into memory, nothing written, no lock needed): :func:`forward_loop` with the cache sink.

    Each job resumes from its own last checkpoint and the pass starts at the earliest. Checkpoints
    fall between batches, and batches always start at multiples of the batch size, so a resumed
    run feeds the models exactly the same batches (bit-identical results on CPU)."""
    import torch

    ids = list(dict.fromkeys(j.entry.id for j in jobs))
    by_model = {i: [j for j in jobs if j.entry.id == i] for i in ids}
    models = {i: js[0].model if js[0].model is not None else _load(js[0].entry, profile, device)
              for i, js in by_model.items()}
    for i, js in by_model.items():
        for j in js:
            j.model = models[i]
    layers = {i: [name for j in js if j.kind == "layers" for name in j.layers] for i, js in by_model.items()}
    with hooked(models, layers, device) as captured:
        sink = _CacheSink(by_model, models, captured, store, device, dtype, force, keep, profile.batch_size)
        forward_loop(models, captured, {i: i for i in ids}, store, sink, device=device, dtype=dtype, profile=profile,
                     dataset_name=dataset_name, chunk_images=chunk_images, on_chunk=on_chunk)
    for j in jobs:
        info = {"entry": j.entry.id, "dataset": dataset_name, "n": len(store), "device": str(device), "dtype": dtype,
                "batch_size": profile.batch_size, "store": store.entry.dir.name, "skipped": store.manifest["skipped"],
                "torch": torch.__version__, "weights": j.entry.weights_label}
        if j.kind == "layers":
            info["layers"] = j.layers
        j.loaded = sink.parts[id(j)].commit(info)


class _InMemory:
    """The in-memory stand-in of :class:`helpers.store.Partial` for ``keep=False`` passes: arrays
    in RAM, no checkpoints, and a "commit" that returns them with the manifest a cached run would
    carry (its key included)."""

    def __init__(self, entry: CacheEntry, specs: Mapping[str, tuple[tuple[int, ...], str]]):
        self.entry = entry
        self.arrays = {k: np.zeros(shape, dtype=dtype) for k, (shape, dtype) in specs.items()}
        self.done = 0
        self.state: dict = {}

    def advance(self, done: int, state: Mapping[str, Any] | None = None) -> None:
        self.done = int(done)

    def commit(self, info: Mapping[str, Any]) -> tuple[dict, dict[str, np.ndarray]]:
        for a in self.arrays.values():
            a.flags.writeable = False
        return ({"key": self.entry.key, "material": self.entry.material, "run": None, "kept": False, **dict(info)},
                self.arrays)
