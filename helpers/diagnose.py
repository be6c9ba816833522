"""Diagnose a new model: the paper's robustness indicators for any image encoder, measured on
in-distribution images only, and placed against this study's pool.

Section 7 of the paper proposes outlier features as "a useful tool for practitioners to get a
feeling for the distribution shift robustness of a pretrained model during deployment, when the
exact form of distribution shift is typically unknown": they are detected without any shifted
data. :func:`diagnose` measures, on a folder of images (recursively, no labels needed):

- the activation kurtosis of Eq. (1), with a percentile bootstrap interval over images;
- the importance ratio of Eq. (3), when the model has a linear head W (open_clip models: the
  zero-shot head over class names, ImageNet's by default; a classifier checkpoint: its own head;
  a plain encoder: the ``head`` passed in);
- the number of unique Broden concepts of Eq. (4), when it has a head and the profile's Broden
  folder exists;

and reads the pool's indicators and effective robustness (Eq. 5) from the profile's results tables
(sections robustness, outlier_features, privileged_directions, concept_probing) to give the rank
correlation of each indicator with ER across the pool and the new model's place among the pool's
models. It writes ``<out>/report.md``, ``<out>/summary.json`` and two figures beside them.

Activations are cached under ``<cache_dir>/diagnose/<slug>/``, keyed by the weights digest and a
digest of the image files (relative path, size, mtime), so a rerun loads no model and runs no
forward pass. A plain encoder is cached under the digest of its parameters when it is an
``nn.Module``, under the ``name`` given otherwise, and not at all without one.

The paper computes none of the placement: the rank correlations, the pool percentile and the
nearest models are this project's (methods page), and they are only as meaningful as the pool.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .config import PoolEntry, Profile, load_profile
from .store import atomic_save_npy, atomic_write_json, atomic_write_text, key_of

#: Bump when cached activations or heads would change for the same weights and images.
DIAGNOSE_VERSION = 1

#: Below this many images the mean kurtosis moves too much with the sample to place a model: the
#: report says so (and still gives the interval). The paper averages over all 50,000 ImageNet
#: test images; 30 is our floor, not the paper's.
MIN_STABLE_IMAGES = 30

#: The pool sections whose results tables the placement reads: ER (Eq. 5), kurtosis (Eq. 1),
#: importance ratio (Eq. 3), unique concepts (Eq. 4).
POOL_SECTIONS = ("robustness", "outlier_features", "privileged_directions", "concept_probing")

#: Indicator column of the pool table -> (label, paper's equation, log scale when comparing).
INDICATORS = {
    "kurtosis": ("activation kurtosis", "Eq. (1)", True),
    "importance_ratio": ("importance ratio", "Eq. (3)", True),
    "unique_concepts": ("unique Broden concepts", "Eq. (4)", False),
}

#: How many pool models are listed as the nearest to the new one.
NEAREST = 3

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_TEMPLATES = "open_clip.OPENAI_IMAGENET_TEMPLATES"


class DiagnoseError(ValueError):
    """Input :func:`diagnose` cannot use; the message names the folder, file, model or tag and
    what was expected."""


# --------------------------------------------------------------------------------------------
# Images


def list_images(folder: str | os.PathLike, limit: int | None = None, seed: int = 0) -> list[Path]:
    """Image files under ``folder``, recursively, sorted (hidden files and folders left out).

    ``limit`` keeps a random subset of that many, drawn with ``seed`` and kept in sorted order.
    Raises :class:`DiagnoseError` for a missing folder, an empty one, or one without images."""
    from .data.base import IMAGE_EXTENSIONS, is_image, preview

    folder = Path(folder).expanduser()
    expected = f"a folder of images ({', '.join(IMAGE_EXTENSIONS)}), searched recursively"
    if not folder.exists():
        raise DiagnoseError(f"images folder {folder} does not exist; expected {expected}")
    if not folder.is_dir():
        raise DiagnoseError(f"images folder {folder} is a file, not a folder; expected {expected}")
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in names if not n.startswith(".")]
    files.sort()
    images = [f for f in files if is_image(f.name)]
    if not files:
        raise DiagnoseError(f"images folder {folder} is empty; expected {expected}")
    if not images:
        names = [f.relative_to(folder).as_posix() for f in files]
        raise DiagnoseError(f"images folder {folder} holds {len(files)} file(s) but no image: {preview(names)}; "
                            f"expected {expected}")
    if limit is not None:
        if not (isinstance(limit, int) and limit > 0):
            raise DiagnoseError(f"limit must be a positive number of images or None; got {limit!r}")
        if limit < len(images):
            keep = np.sort(np.random.default_rng(seed).choice(len(images), size=limit, replace=False))
            images = [images[i] for i in keep]
    return images


class _ImageFiles:
    """Map-style dataset over image files: ``(index, transform(image) or None, error or None)``.

    An unreadable file is returned as an error instead of raised, so that the caller decides
    (stop and name it, or skip and count it) without a second decoding pass over the folder."""

    def __init__(self, files: Sequence[Path], transform: Callable):
        self.files, self.transform = list(files), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from .data.base import UnreadableImageError, decode_rgb

        try:
            image = decode_rgb(self.files[i])
        except UnreadableImageError as exc:
            return i, None, str(exc)
        return i, self.transform(image), None


def _collate(items):
    """(indices of the decoded images, their stacked tensors or None, [(index, error)])."""
    import torch

    ok = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, err) for i, x, err in items if x is None]
    idx = [i for i, _ in ok]
    return idx, (torch.stack([x for _, x in ok]) if ok else None), bad


def _encode_files(files: Sequence[Path], encode: Callable, transform: Callable, device: str, batch_size: int,
                  num_workers: int, precision: str, skip_unreadable: bool, what: str, desc: str):
    """h (N_read x d, float32) of the readable ``files`` in their order, and the skipped
    ``[(file, reason)]``. Decoding runs through a torch DataLoader with the model's transform."""
    import contextlib

    import torch
    from tqdm import tqdm  # plain bars: notebook widgets need ipywidgets and would warn

    dev = torch.device(device)
    autocast = (torch.autocast(device_type=dev.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])
                if dev.type != "cpu" and precision != "fp32" else contextlib.nullcontext())
    loader = torch.utils.data.DataLoader(_ImageFiles(files, transform), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, collate_fn=_collate)
    chunks, skipped = [], []
    with tqdm(total=len(files), unit="img", desc=desc) as bar:
        for idx, x, bad in loader:
            bar.update(len(idx) + len(bad))
            if bad and not skip_unreadable:
                raise DiagnoseError(f"{bad[0][1]}; pass skip_unreadable=True (--skip-unreadable) to leave "
                                    "unreadable images out and count them")
            skipped += [(files[i], err) for i, err in bad]
            if x is None:
                continue
            with torch.inference_mode(), autocast:
                h = encode(x.to(dev))
            if not isinstance(h, torch.Tensor) or h.ndim != 2 or h.shape[0] != len(idx):
                got = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
                raise DiagnoseError(f"{what}: expected features of shape ({len(idx)}, d) for a batch of {len(idx)} "
                                    f"images, got {got}")
            h = h.float().cpu().numpy()
            if not np.isfinite(h).all():
                first = files[idx[int(np.flatnonzero(~np.isfinite(h).all(axis=1))[0])]]
                raise DiagnoseError(f"{what}: NaN or infinite activations (first on {first})")
            chunks.append(h)
    if not chunks:
        raise DiagnoseError(f"none of the {len(files)} images could be read (first: {skipped[0][1]})")
    return np.concatenate(chunks), skipped


# --------------------------------------------------------------------------------------------
# Cache: one .npy per array beside a manifest written last


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "model"


def _cached(folder: Path, kind: str, material: dict, compute: Callable[[], tuple[np.ndarray, dict]]):
    """(array, meta) from ``folder/<kind>-<key>.npy`` when its manifest carries this key; else
    ``compute()`` and store it (array first, manifest last, each atomically)."""
    key = key_of(material)
    npy, manifest = folder / f"{kind}-{key[:20]}.npy", folder / f"{kind}-{key[:20]}.json"
    try:
        m = json.loads(manifest.read_text())
        if m.get("key") == key:
            a = np.load(npy)
            if list(a.shape) == m["shape"]:
                return a, m["meta"]
    except (FileNotFoundError, json.JSONDecodeError, ValueError, KeyError):
        pass
    a, meta = compute()
    atomic_save_npy(npy, a)
    atomic_write_json(manifest, {"key": key, "material": material, "shape": list(a.shape), "meta": meta})
    return a, meta


# --------------------------------------------------------------------------------------------
# The model under diagnosis


@dataclass
class _Subject:
    """What is diagnosed: a description, a cache identity, and how to load it (lazily: a cache hit
    loads nothing)."""

    label: str
    slug: str
    description: dict
    digest: str | None  # None: not cached
    head_key: Any  # what the head depends on besides the weights; None: no head
    load: Callable[[], tuple[Callable, Callable, np.ndarray | None, str]]  # encode, transform, W, head source
    notes: list[str] = field(default_factory=list)


def _open_clip(model: str):
    import warnings

    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        # open_clip imports huggingface_hub, which imports tqdm.auto: in a notebook without
        # ipywidgets that warns once, about bars this offline, plain-tqdm code never draws.
        warnings.simplefilter("ignore", TqdmWarning)
        import open_clip

    if model.startswith("demo-"):
        from .demo_archs import register_demo_models

        register_demo_models()
    return open_clip


def _read_classnames(classnames) -> list[str] | None:
    if classnames is None:
        return None
    if isinstance(classnames, (str, os.PathLike)):
        path = Path(classnames).expanduser()
        if not path.is_file():
            raise DiagnoseError(f"class names file {path} does not exist; expected a text file with one class "
                                "name per line")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        where = f"class names file {path}"
    else:
        names = [str(c).strip() for c in classnames if str(c).strip()]
        where = "classnames"
    if len(names) < 2:
        raise DiagnoseError(f"{where}: a zero-shot head needs at least 2 class names, one per line; found {len(names)}")
    return names


def _checkpoint_path(pretrained: str) -> Path | None:
    """``pretrained`` read as a file path when it looks like one (a tag never has a slash or a
    weights-file ending)."""
    p = Path(pretrained).expanduser()
    if os.sep in pretrained or "/" in pretrained or pretrained.lower().endswith(_WEIGHT_SUFFIXES) or p.exists():
        return p
    return None


def _entry_for(model: str, pretrained: str | None, profile: Profile, seed: int) -> tuple[PoolEntry, bool]:
    """A pool entry built on the fly for an open_clip model (so that :func:`helpers.models.load`
    applies its checks: QuickGELU, normalisation, offline weights), and whether its weights file is
    a classifier checkpoint with its own head."""
    from . import models

    oc = _open_clip(model)
    if oc.get_model_config(model) is None:
        close = difflib.get_close_matches(model, oc.list_models(), n=6, cutoff=0.5)
        raise DiagnoseError(f"open_clip does not know the model {model!r}; close names: "
                            f"{', '.join(close) or 'none'} (all of them: open_clip.list_models())")
    common = dict(id=f"diagnose:{model}", arch=model, family="robust_zeroshot_clip", model=model)
    if pretrained is None:
        if not profile.allow_random_init:
            raise DiagnoseError(f"no weights for {model!r}: pass pretrained=<open_clip tag> or a checkpoint path "
                                f"(--pretrained); random initialisation is allowed only on profiles with "
                                f"allow_random_init: true, and profile {profile.name!r} does not allow it")
        return PoolEntry(**common, pretraining=f"random init (seed {seed})", seed=seed), False
    path = _checkpoint_path(pretrained)
    if path is not None:
        if not path.is_file():
            raise DiagnoseError(f"checkpoint {path} {'is a folder' if path.is_dir() else 'does not exist'}; expected "
                                f"a weights file for {model!r}: an open_clip state dict (.pt, .bin, .safetensors) or "
                                f"a classifier checkpoint written by `clip-study finetune`")
        entry = PoolEntry(**common, pretraining=f"checkpoint {path.name}", checkpoint=str(path.resolve()))
        try:
            ckpt = models._read_checkpoint(entry)
        except models.ModelError as exc:
            raise DiagnoseError(str(exc)) from None
        if isinstance(ckpt, dict) and "format" in ckpt:
            # A finetuned classifier: its own head, read on the normalised embedding (Section 2).
            return PoolEntry(**{**common, "family": "finetuned_clip"}, pretraining=f"checkpoint {path.name}",
                             checkpoint=str(path.resolve())), True
        return entry, False
    tags = oc.list_pretrained_tags_by_model(model)
    if pretrained not in tags:
        raise DiagnoseError(f"open_clip knows no pretrained tag {pretrained!r} for model {model!r}; its tags: "
                            f"{', '.join(tags) or 'none'} (a checkpoint is given as a path to an existing file)")
    return PoolEntry(**common, pretraining=pretrained, pretrained=pretrained), False


def _weights_digest(entry: PoolEntry, profile: Profile) -> str:
    """The ``weights_digest`` :func:`helpers.models.load` gives this entry, without building the
    model: a rerun on cached activations loads nothing."""
    from . import models

    if entry.checkpoint:
        return models._digest("file", entry.model, models.file_sha256(entry.checkpoint))
    if entry.pretrained:
        _, blob = models._hub_weights(entry, profile.paths.get("hf_cache"))
        return models._digest("open_clip", entry.model, entry.pretrained, blob)
    return models._digest("random", entry.source, entry.model, entry.seed, models._architecture_fingerprint(entry))


def _model_error(exc: Exception, entry: PoolEntry) -> DiagnoseError:
    hint = ""
    if entry.pretrained:
        hint = (f" For diagnose, a weights file is given as --pretrained /path/to/file (with --model "
                f"{entry.model}).")
    return DiagnoseError(f"{exc}{hint}")


def _open_clip_subject(model: str, pretrained: str | None, classnames: list[str] | None, profile: Profile,
                       device: str, seed: int) -> _Subject:
    from . import models

    entry, own_head = _entry_for(model, pretrained, profile, seed)
    try:
        models.check_entry(entry)
        digest = _weights_digest(entry, profile)
    except models.ModelError as exc:
        raise _model_error(exc, entry) from None
    notes = []
    if own_head and classnames is not None:
        notes.append(f"{entry.checkpoint} is a classifier checkpoint with its own head: the class names were "
                     "not used")
    if own_head:
        head_key, head_desc = "classifier checkpoint head", "the classifier checkpoint's own head"
        classnames = None
    else:
        names = classnames if classnames is not None else "open_clip.IMAGENET_CLASSNAMES"
        head_key = {"classnames": names, "templates": _TEMPLATES}
        head_desc = (f"zero-shot head over {len(classnames)} class names x the 80 OpenAI templates"
                     if classnames is not None else "zero-shot head over ImageNet's 1,000 classes x the 80 OpenAI "
                     "templates (as the pool's)")
    if entry.checkpoint:
        weights, tag = f"checkpoint {entry.checkpoint}", f"{Path(entry.checkpoint).stem}-{digest[:8]}"
    elif entry.pretrained:
        weights, tag = f"open_clip tag {entry.pretrained!r}", entry.pretrained
    else:
        weights, tag = f"random initialisation, seed {seed}", f"random-seed{seed}"

    def load():
        try:
            lm = models.load(entry, device, profile.cache_dir, profile.paths.get("hf_cache"), classnames=classnames)
        except models.ModelError as exc:
            raise _model_error(exc, entry) from None
        W = lm.head.detach().float().cpu().numpy()
        return lm.encode, lm.preprocess, W, lm.head_source

    return _Subject(label=f"{model} ({weights})", slug=_slug(f"{model}-{tag}"),
                    description={"kind": "open_clip", "model": model, "pretrained": entry.pretrained,
                                 "checkpoint": entry.checkpoint, "seed": None if entry.pretrained or entry.checkpoint
                                 else seed, "weights": weights, "weights_digest": digest, "head": head_desc},
                    digest=digest, head_key=head_key, load=load, notes=notes)


def _module_digest(module) -> str:
    """Digest of an nn.Module's class and every parameter and buffer (names, shapes, bytes)."""
    import torch

    h = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _array_digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


def _callable_subject(encoder, preprocess, head, name: str | None, device: str) -> _Subject:
    import torch

    if preprocess is None or not callable(preprocess):
        raise DiagnoseError("encoder= needs preprocess=, a transform from a PIL image to a normalised float "
                            "tensor (3, S, S), e.g. a torchvision transforms.Compose")
    if not callable(encoder):
        raise DiagnoseError(f"encoder must be a callable or nn.Module mapping a (B, 3, S, S) batch to (B, d) "
                            f"features; got {type(encoder).__name__}")
    W = None
    if head is not None:
        W = (head.detach().float().cpu().numpy() if isinstance(head, torch.Tensor)
             else np.asarray(head, dtype=np.float32))
        if W.ndim != 2 or min(W.shape) == 0:
            raise DiagnoseError(f"head must be a K x d matrix W (classes x features); got shape {W.shape}")
    is_module = isinstance(encoder, torch.nn.Module)
    kind = type(encoder).__qualname__ if is_module else getattr(encoder, "__qualname__", type(encoder).__name__)
    if is_module:
        digest = key_of({"module": _module_digest(encoder), "name": name, "preprocess": repr(preprocess)})
        cached = f"cached under the digest of its parameters{f' and the name {name!r}' if name else ''}"
    elif name:
        digest = key_of({"callable": name, "preprocess": repr(preprocess)})
        cached = f"cached under the name {name!r} (change it when the weights change)"
    else:
        digest, cached = None, "not cached (pass name= to cache a plain callable's activations)"
    notes = [] if digest else ["the encoder is a plain callable without name=: its activations were not cached"]
    head_desc = f"the given head W ({W.shape[0]} x {W.shape[1]})" if W is not None else None

    def load():
        if is_module:
            encoder.to(device).eval()
        return encoder, preprocess, W, "the given head W" if W is not None else ""

    label = name or kind
    return _Subject(label=f"{label} (plain torch encoder)", slug=_slug(name or f"{kind}-{(digest or 'nocache')[:8]}"),
                    description={"kind": "callable", "name": name, "encoder": kind, "weights": cached,
                                 "weights_digest": digest, "preprocess": repr(preprocess), "head": head_desc},
                    digest=digest, head_key=_array_digest(W) if W is not None else None, load=load, notes=notes)


# --------------------------------------------------------------------------------------------
# The result


@dataclass
class Diagnosis:
    """The indicators of one model on one folder of images, and its place among the pool.

    ``kurtosis`` is a :class:`helpers.metrics.BootstrapCI` (NaN bounds below 2 usable images);
    ``importance_ratio`` and ``unique_concepts`` are None when not computed (``notes`` says why).
    ``pool``: the pool's indicators and ER from the results tables (empty without results);
    ``correlations``: Spearman rank correlation of each indicator with ER across the pool, with its
    bootstrap interval over models; ``placement``: per indicator, the new model's percentile in
    the pool and its nearest pool models. ``summary`` is what ``summary.json`` holds."""

    label: str
    slug: str
    images: Path
    profile: Profile
    description: dict
    n_images: int
    skipped: list[tuple[str, str]]
    per_image_kurtosis: np.ndarray
    kurtosis: Any
    importance_ratio: float | None
    unique_concepts: int | None
    concepts_info: dict
    pool: Any
    correlations: Any
    placement: dict
    warnings: list[str]
    notes: list[str]
    out: Path | None = None
    figures: dict[str, Path] = field(default_factory=dict)

    @property
    def report_path(self) -> Path | None:
        return None if self.out is None else self.out / "report.md"

    @property
    def summary_path(self) -> Path | None:
        return None if self.out is None else self.out / "summary.json"

    def indicator_rows(self) -> list[dict]:
        """Per indicator: label, this model's value and interval, the pool's range, its percentile."""
        k = self.kurtosis
        values = {"kurtosis": (k.estimate, k.low, k.high), "importance_ratio": (self.importance_ratio, None, None),
                  "unique_concepts": (self.unique_concepts, None, None)}
        rows = []
        for col, (label, eq, _) in INDICATORS.items():
            v, lo, hi = values[col]
            pool = self.pool[col].dropna() if col in self.pool else self.pool.iloc[:0, :0]
            rows.append({"indicator": f"{label}, {eq}", "this model": v, "low": lo, "high": hi,
                         "pool min": pool.min() if len(pool) else None, "pool max": pool.max() if len(pool) else None,
                         "percentile in pool": self.placement.get(col, {}).get("percentile")})
        return rows

    def indicators(self):
        """:meth:`indicator_rows` as a DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.indicator_rows())

    def nearest(self, indicator: str = "kurtosis"):
        """The pool models whose ``indicator`` is closest to this model's, with their ER (%)."""
        import pandas as pd

        return pd.DataFrame(self.placement.get(indicator, {}).get("nearest", []))

    def row(self) -> dict:
        """A flat results-table row (``Study.record``)."""
        k = self.kurtosis
        return {"model": self.label, "images": str(self.images), "n_images": self.n_images,
                "n_skipped": len(self.skipped), "kurtosis": k.estimate, "ci_low": k.low, "ci_high": k.high,
                "importance_ratio": self.importance_ratio, "unique_concepts": self.unique_concepts,
                "kurtosis_percentile": self.placement.get("kurtosis", {}).get("percentile"),
                "weights_digest": self.description.get("weights_digest")}

    @property
    def summary(self) -> dict:
        k = self.kurtosis
        corr = {} if self.correlations is None or self.correlations.empty else {
            r["indicator"]: {key: r[key] for key in ("models", "spearman", "low", "high", "note") if key in r}
            for r in self.correlations.to_dict("records")}
        return _json_safe({
            "version": DIAGNOSE_VERSION,
            "model": {"label": self.label, **self.description},
            "images": {"folder": str(self.images), "n_images": self.n_images, "n_skipped": len(self.skipped),
                       "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
                       "n_constant": int(np.isnan(self.per_image_kurtosis).sum())},
            "profile": {"name": self.profile.name, "path": str(self.profile.path), "is_demo": self.profile.is_demo},
            "kurtosis": {"estimate": k.estimate, "low": k.low, "high": k.high, "level": k.level, "n_boot": k.n_boot,
                         "median_per_image": float(np.nanmedian(self.per_image_kurtosis)),
                         "gaussian_reference": 3.0},
            "importance_ratio": self.importance_ratio,
            "unique_concepts": self.unique_concepts,
            "concepts": self.concepts_info,
            "pool": {"models": [] if self.pool.empty else self.pool.to_dict("records"),
                     "correlations_with_er": corr, "placement": self.placement},
            "warnings": self.warnings,
            "notes": self.notes,
            "files": {"report": "report.md", **{name: p.name for name, p in self.figures.items()}},
        })

    def markdown(self, figures: bool = True) -> str:
        """The report as Markdown; ``figures=False`` leaves out the image links (a notebook shows
        the PNG files itself)."""
        return _report(self, figures)

    def _repr_markdown_(self) -> str:
        return self.markdown(figures=False)


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


# --------------------------------------------------------------------------------------------
# Pool comparison


def pool_table(profile: Profile, pool: Iterable[PoolEntry] | None = None):
    """The pool's per-model ER, %acc and indicators from the results tables
    (:func:`helpers.chapters.summary.pool_indicators`), restricted to ``pool`` (default: all)."""
    from .chapters.summary import pool_indicators
    from .study import Study

    entries = list(profile.pool if pool is None else pool)
    df = pool_indicators(Study(profile, entries, "diagnose"))
    if df.empty:
        return df
    return df[df["entry"].isin([e.id for e in entries])].reset_index(drop=True)


def _missing_sections(profile: Profile) -> list[str]:
    from . import results

    return [s for s in POOL_SECTIONS if results.load(profile, s).empty]


def _run_command(profile: Profile, sections: Sequence[str]) -> str:
    name = profile.name if profile.path.parent.name == "configs" else str(profile.path)
    return f"clip-study run --profile {name} " + " ".join(f"--section {s}" for s in sections)


def _placement(df, new: dict, n_boot: int, seed: int) -> tuple[Any, dict, list[str]]:
    """Rank correlation of each indicator with ER across the pool, and the new model's percentile
    and nearest pool models per indicator."""
    import pandas as pd

    from .metrics import rank_correlation

    corr, place, notes = [], {}, []
    for col, (label, eq, log) in INDICATORS.items():
        if col not in df or df[col].isna().all():
            continue
        sub = df[["entry", "family", "er", col]].dropna()
        row = {"indicator": col, "models": len(sub), "spearman": np.nan, "low": np.nan, "high": np.nan}
        try:
            ci = rank_correlation(sub[col].to_numpy(), sub["er"].to_numpy(), n_boot=n_boot, seed=seed)
            row.update(spearman=ci.estimate, low=ci.low, high=ci.high)
        except ValueError as exc:  # fewer than 3 models, a constant column, too many degenerate resamples
            row["note"] = str(exc)
            notes.append(f"no rank correlation of {label} with ER across the pool: {exc}")
        corr.append(row)
        v = new.get(col)
        if v is None or not np.isfinite(v) or sub.empty:
            continue
        x = sub[col].to_numpy(dtype=float)
        percentile = 100.0 * (np.sum(x < v) + 0.5 * np.sum(x == v)) / len(x)
        # Kurtosis and the importance ratio spread over orders of magnitude across the paper's pool.
        dist = np.abs(np.log(x) - np.log(v)) if log and v > 0 and (x > 0).all() else np.abs(x - v)
        near = sub.assign(distance=dist).nsmallest(NEAREST, "distance")
        place[col] = {"percentile": float(percentile), "n_pool": int(len(x)),
                      "nearest": [{"entry": r.entry, "family": r.family, col: float(getattr(r, col)),
                                   "er_percent": 100 * float(r.er)} for r in near.itertuples()]}
    return pd.DataFrame(corr), place, notes


# --------------------------------------------------------------------------------------------
# Figures and report


def _save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _log_x(ax) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 3, 10, 40 rather than 3 x 10^0
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)


def _figures(d: Diagnosis, out: Path) -> dict[str, Path]:
    """Per-image kurtosis with the pool's values marked; the pool's kurtosis against ER with this
    model's kurtosis as a vertical line and its interval as a band. Built on matplotlib's Figure
    (no pyplot): nothing is shown or left open in a notebook."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from .config import FAMILIES
    from .plots import FAMILY_COLORS

    k = d.per_image_kurtosis[np.isfinite(d.per_image_kurtosis)]
    est, low, high = d.kurtosis
    pool = d.pool if not d.pool.empty and "kurtosis" in d.pool else None
    pool_k = None if pool is None else pool.dropna(subset=["kurtosis"])
    values = np.concatenate([k, [est], [] if pool_k is None else pool_k["kurtosis"].to_numpy()])
    log = values.min() > 0 and values.max() / values.min() > 10
    figs = {}

    fig = Figure(figsize=(9, 3.8))
    ax = fig.subplots()
    bins = np.geomspace(k.min(), k.max(), 30) if log and k.min() < k.max() else 30
    ax.hist(k, bins=bins, color="0.75", edgecolor="0.5", zorder=2)
    handles = [Line2D([], [], color="0.75", lw=6, label=f"this model, {len(k)} images")]
    if pool_k is not None and not pool_k.empty:
        for r in pool_k.itertuples():
            ax.axvline(r.kurtosis, color=FAMILY_COLORS.get(r.family, "0.3"), ls="--", lw=1.2)
        handles += [Line2D([], [], color=FAMILY_COLORS.get(f, "0.3"), ls="--",
                           label=f"pool model means: {FAMILIES.get(f, f)}")
                    for f in dict.fromkeys(pool_k["family"])]
    if np.isfinite(low):
        ax.axvspan(low, high, color="k", alpha=0.15, zorder=1)
    ax.axvline(est, color="k", lw=2, zorder=3)
    ax.axvline(3, color="0.4", ls=":", lw=1)
    handles += [Line2D([], [], color="k", lw=2, label=f"this model's mean {est:.2f} (band: 95 % interval)"),
                Line2D([], [], color="0.4", ls=":", label="Gaussian (3)")]
    if log:
        _log_x(ax)
    ax.set(xlabel="kurtosis of each image's activation vector, Eq. (1)", ylabel="images",
           title=f"Per-image kurtosis: {d.label}")
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    figs["kurtosis_distribution"] = _save_figure(fig, out / "kurtosis_distribution.png")

    if pool_k is not None and not pool_k.empty:
        fig = Figure(figsize=(9, 4.5))
        ax = fig.subplots()
        for fam, g in pool_k.groupby("family", sort=False):
            ax.scatter(g["kurtosis"], 100 * g["er"], color=FAMILY_COLORS.get(fam, "0.3"), s=40,
                       label=FAMILIES.get(fam, fam), zorder=3)
        for r in pool_k.itertuples():
            ax.annotate(r.entry, (r.kurtosis, 100 * r.er), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if np.isfinite(low):
            ax.axvspan(low, high, color="k", alpha=0.15, label="its 95 % interval")
        ax.axvline(est, color="k", lw=2, label=f"this model: {est:.2f}")
        ax.axvline(3, color="0.4", ls=":", lw=1, label="Gaussian (3)")
        if log:
            _log_x(ax)
        corr = d.correlations
        rho = corr[corr["indicator"] == "kurtosis"] if corr is not None and not corr.empty else None
        title = "Pool: kurtosis vs effective robustness"
        if rho is not None and not rho.empty and np.isfinite(rho["spearman"].iloc[0]):
            r = rho.iloc[0]
            title += f"\nSpearman rho = {r.spearman:.2f} [{r.low:.2f}, {r.high:.2f}], {int(r.models)} models"
        ax.set(xlabel="activation kurtosis, Eq. (1)", ylabel="effective robustness, Eq. (5) (%)", title=title)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        figs["kurtosis_vs_er"] = _save_figure(fig, out / "kurtosis_vs_er.png")
    return figs


def _fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{v:.{digits}f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _report(d: Diagnosis, figures: bool) -> str:
    from .config import FAMILIES

    k = d.kurtosis
    parts = [f"# Diagnosis: {d.label}", "",
             f"Robustness indicators of Crabbé et al., *Interpreting CLIP: Insights on the Robustness to ImageNet "
             f"Distribution Shifts* (TMLR), measured on {d.n_images} images under `{d.images}` without any shifted "
             f"data (Section 7), and placed against the pool of profile `{d.profile.name}`.", ""]
    if d.warnings:
        parts += ["**Warnings**", ""] + [f"- {w}" for w in d.warnings] + [""]
    desc = d.description
    parts += ["## The model", "", _table(["", ""], [
        ["model", d.label], ["weights digest", f"`{(desc.get('weights_digest') or 'none')[:16]}`"],
        ["head", desc.get("head") or "none (no importance ratio, no concepts)"],
        ["images", f"{d.n_images} used, {len(d.skipped)} unreadable skipped"]]), ""]
    rows = []
    for r in d.indicator_rows():
        interval = f"[{_fmt(r['low'])}, {_fmt(r['high'])}]" if r["low"] is not None else "–"
        pool = f"{_fmt(r['pool min'])} – {_fmt(r['pool max'])}" if r["pool min"] is not None else "–"
        rows.append([r["indicator"], _fmt(r["this model"]), interval, pool, _fmt(r["percentile in pool"], 0)])
    parts += ["## Indicators", "", _table(["indicator", "this model", "95 % interval", "pool range",
                                           "percentile in pool"], rows), "",
              f"Kurtosis is the mean over images of the kurtosis of each activation vector (a Gaussian vector gives "
              f"3); the interval is a percentile bootstrap over images ({k.n_boot} resamples).", ""]
    if figures and "kurtosis_distribution" in d.figures:
        parts += [f"![per-image kurtosis]({d.figures['kurtosis_distribution'].name})", ""]
    parts += ["## Against the pool", ""]
    if d.pool.empty:
        parts += ["No pool results to compare with (see the notes below).", ""]
    else:
        corr = d.correlations
        if corr is not None and not corr.empty:
            parts += ["Spearman rank correlation of each indicator with effective robustness across the "
                      f"{len(d.pool)} pool models (95 % bootstrap interval over models):", "",
                      _table(["indicator", "models", "rho", "interval"],
                             [[INDICATORS[r["indicator"]][0], r["models"], _fmt(r["spearman"]),
                               f"[{_fmt(r['low'])}, {_fmt(r['high'])}]"] for r in corr.to_dict("records")]), ""]
        near = d.placement.get("kurtosis", {}).get("nearest", [])
        if near:
            parts += ["Pool models with the nearest kurtosis:", "",
                      _table(["pool model", "family", "kurtosis", "ER (%)"],
                             [[n["entry"], FAMILIES.get(n["family"], n["family"]), _fmt(n["kurtosis"]),
                               _fmt(n["er_percent"], 1)] for n in near]), ""]
        if figures and "kurtosis_vs_er" in d.figures:
            parts += [f"![kurtosis against ER]({d.figures['kurtosis_vs_er'].name})", ""]
    parts += ["## How to read this", "",
              "The paper found outlier features (kurtosis ≫ 3) only in models robust to ImageNet's natural "
              "distribution shifts, and kurtosis near 3 in its non-robust models (Section 4, take-away 2). It is an "
              "indicator, not a measurement: this report does not estimate the model's effective robustness. "
              "Privileged directions (a large importance ratio) also appear in non-robust ImageNet-Captions models, "
              "and many unique concepts do not imply robustness either (Sections 4 and 5): the paper does not use "
              "them as robustness indicators. The pool's values were measured on the profile's ImageNet test "
              "images; a comparison assumes these images come from a similar distribution.", ""]
    if d.notes:
        parts += ["**Notes**", ""] + [f"- {n}" for n in d.notes] + [""]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# Diagnose


def diagnose(images: str | os.PathLike | None = None, model: str | None = None, pretrained: str | None = None, *,
             encoder: Callable | None = None, preprocess: Callable | None = None, head=None, name: str | None = None,
             classnames: str | os.PathLike | Sequence[str] | None = None, profile: str | os.PathLike | Profile = "demo",
             pool: Iterable[PoolEntry | str] | None = None, out: str | os.PathLike | None = None,
             device: str | None = None, batch_size: int | None = None, num_workers: int | None = None,
             limit: int | None = None, skip_unreadable: bool = False, concepts: bool = True, seed: int = 0,
             write: bool = True) -> Diagnosis:
    """The paper's robustness indicators for one model on a folder of in-distribution images.

    The model is either an open_clip ``model`` name with ``pretrained`` (an open_clip tag, or the
    path of a weights file: an open_clip state dict or a classifier checkpoint of this project;
    None: a random initialisation seeded by ``seed``, on profiles with ``allow_random_init`` only),
    or a plain ``encoder`` (a callable or ``nn.Module`` mapping a normalised float batch
    (B, 3, S, S) to (B, d) features) with its ``preprocess`` (PIL image -> normalised tensor) and
    optionally a ``head`` W (K x d) and a cache ``name``. A module is moved to ``device`` and put
    in eval mode; its activations are cached under a digest of its parameters (and ``name``), a
    plain function's only under ``name``.

    ``images``: a folder, searched recursively (default: the profile's ImageNet test folder);
    ``limit``: use a fixed-seed random subset of that many images; ``skip_unreadable``: leave
    undecodable images out and count them instead of stopping at the first. ``classnames``: a
    text file (one name per line) or a list, for the zero-shot head (default: ImageNet's 1,000
    open_clip names). ``pool``: the pool entries (or ids) to compare with (default: all of the
    profile's). ``concepts=False`` skips the Broden probing. ``out``: where report.md,
    summary.json and the figures go (default ``<results_dir>/diagnose/<slug>``); ``write=False``
    writes nothing there. ``device``, ``batch_size``, ``num_workers`` default to the profile's.

    Returns a :class:`Diagnosis`. Bad input raises :class:`DiagnoseError` naming it.
    """
    import pandas as pd

    from .data.base import DatasetLayoutError, digest_of, preview
    from .metrics import BootstrapCI, bootstrap_ci, importance_ratio, kurtosis, svd_head

    P = profile if isinstance(profile, Profile) else load_profile(profile)
    device = device or P.device
    batch_size = batch_size or P.batch_size
    num_workers = P.num_workers if num_workers is None else num_workers
    if (encoder is None) == (model is None):
        raise DiagnoseError("give either model= (an open_clip model name, with pretrained=) or encoder= (a plain "
                            "torch image encoder, with preprocess=), not both or neither")
    if encoder is not None:
        if classnames is not None:
            raise DiagnoseError("classnames build a zero-shot head from an open_clip text tower; a plain encoder "
                                "takes its head as head= (a K x d matrix)")
        if pretrained is not None:
            raise DiagnoseError("pretrained= applies to open_clip models; a plain encoder comes with its weights")
        subject = _callable_subject(encoder, preprocess, head, name, device)
    else:
        if head is not None or preprocess is not None:
            raise DiagnoseError("head= and preprocess= apply to a plain encoder; an open_clip model brings its own")
        subject = _open_clip_subject(model, pretrained, _read_classnames(classnames), P, device, seed)
    if images is None:
        images = P.dataset_root("imagenet")
    folder = Path(images).expanduser().resolve()
    files = list_images(folder, limit=limit, seed=P.metrics["seed"])
    warnings_, notes = [], list(subject.notes)
    if P.is_demo:
        warnings_.append(f"profile {P.name!r} is the demo: its pool models are untrained, so where this model falls "
                         "among them says nothing about robustness; run the paper profile for a meaningful pool")

    loaded = {}

    def model_parts():
        if not loaded:
            loaded["encode"], loaded["transform"], loaded["W"], loaded["head_source"] = subject.load()
        return loaded["encode"], loaded["transform"]

    def run(paths, what, skip):
        encode, transform = model_parts()
        return _encode_files(paths, encode, transform, device, batch_size, num_workers, P.precision, skip,
                             f"{subject.label}", f"diagnose {what}")

    cache = P.cache_dir / "diagnose" / subject.slug

    def cached(kind, material, compute):
        if subject.digest is None:
            return compute()
        return _cached(cache, kind, {"version": DIAGNOSE_VERSION, "weights": subject.digest, **material}, compute)

    def compute_h():
        h, skipped = run(files, f"{folder.name}", skip_unreadable)
        return h.astype(np.float32), {"skipped": [[f.relative_to(folder).as_posix(), r] for f, r in skipped]}

    h, meta = cached("h", {"images": digest_of("diagnose-images", folder, files, None),
                           "precision": P.precision}, compute_h)
    skipped = [tuple(s) for s in meta["skipped"]]
    if skipped and not skip_unreadable:
        raise DiagnoseError(f"{folder / skipped[0][0]}: {skipped[0][1]}; pass skip_unreadable=True "
                            "(--skip-unreadable) to leave unreadable images out and count them")
    if skipped:
        notes.append(f"{len(skipped)} unreadable image(s) skipped: {preview([s[0] for s in skipped])}")

    if h.shape[1] < 2:
        raise DiagnoseError(f"{subject.label}: features have d = {h.shape[1]}; kurtosis needs at least 2 components")
    # Eq. (1) per image; constant vectors have no kurtosis (NaN) and are left out of the mean.
    per_image = kurtosis(h, per_image=True)
    valid = per_image[np.isfinite(per_image)]
    if valid.size == 0:
        raise DiagnoseError(f"{subject.label}: every activation vector is constant on these images; kurtosis is "
                            "undefined")
    if valid.size < per_image.size:
        notes.append(f"{per_image.size - valid.size} constant activation vector(s) have no kurtosis and were left "
                     "out of the mean")
    n_boot, bseed = P.metrics["bootstrap"], P.metrics["seed"]
    if valid.size >= 2:
        kci = bootstrap_ci(lambda a: a.mean(axis=-1), valid, n_boot=n_boot, seed=bseed, vectorized=True)
    else:
        kci = BootstrapCI(float(valid[0]), math.nan, math.nan, 0.95, n_boot)
    if valid.size < MIN_STABLE_IMAGES:
        warnings_.append(f"only {valid.size} image(s): too few for a stable kurtosis (use at least "
                         f"{MIN_STABLE_IMAGES}, better hundreds); the interval "
                         f"{'is given but wide' if valid.size >= 2 else 'needs at least 2 images'}")

    W = None
    if subject.head_key is not None:
        def compute_W():
            model_parts()
            return loaded["W"].astype(np.float32), {"head_source": loaded["head_source"]}

        W, _ = cached("head", {"head": subject.head_key}, compute_W)
        if W.shape[1] != h.shape[1]:
            raise DiagnoseError(f"head W is {W.shape[0]} x {W.shape[1]} but the encoder gives d = {h.shape[1]} "
                                "features; expected W of shape K x d")
    # One SVD of W serves Eq. (3) and the concept probing.
    svd = svd_head(W) if W is not None else None
    ir = importance_ratio(W, h, svd=svd) if W is not None else None
    if W is None:
        notes.append("no linear head: importance ratio (Eq. 3) and unique concepts (Eq. 4) not computed"
                     + (" (pass head= W)" if encoder is not None else ""))
    elif encoder is not None or (classnames is not None and subject.head_key != "classifier checkpoint head"):
        notes.append("the importance ratio depends on the head: the pool's used its own ImageNet heads (1,000 "
                     "classes), so compare it with care")

    uc, concepts_info = None, {}
    broden = P.datasets.get("broden")
    if W is not None and concepts:
        if broden is None or not Path(broden).is_dir():
            notes.append(f"Broden folder {broden or '(not named in the profile)'} not found: unique concepts (Eq. 4) "
                         "skipped; Section 5 needs broden1_224 (book/reproducing.md)")
        else:
            try:
                uc, concepts_info = _concepts(P, svd[2], lambda paths: run(paths, "broden", False)[0], cached)
            except DatasetLayoutError as exc:
                warnings_.append(f"unique concepts skipped: {exc}")
    elif W is not None:
        notes.append("unique concepts (Eq. 4) not computed (concepts=False)")

    # Place the model among the pool's models.
    pool_entries = None if pool is None else [P.entry(e) if isinstance(e, str) else e for e in pool]
    df = pool_table(P, pool_entries)
    missing = _missing_sections(P)
    if df.empty:
        notes.append(f"profile {P.name!r} has no results yet under {P.results_dir / 'tables'}: nothing to place this "
                     f"model against. Produce them with `{_run_command(P, list(POOL_SECTIONS))}`")
    elif missing:
        notes.append(f"profile {P.name!r} has no results for {', '.join(missing)}: produce them with "
                     f"`{_run_command(P, missing)}`")
    correlations, placement, pnotes = (None, {}, []) if df.empty else _placement(
        df, {"kurtosis": kci.estimate, "importance_ratio": ir, "unique_concepts": uc}, n_boot, bseed)
    notes += pnotes
    default_images = P.datasets.get("imagenet")
    if not df.empty and (default_images is None or Path(default_images).resolve() != folder):
        notes.append(f"the pool's kurtosis was measured on {default_images}; these images come from {folder}")

    d = Diagnosis(label=subject.label, slug=subject.slug, images=folder, profile=P, description=subject.description,
                  n_images=int(valid.size), skipped=skipped, per_image_kurtosis=per_image, kurtosis=kci,
                  importance_ratio=ir, unique_concepts=uc, concepts_info=concepts_info,
                  pool=df if not df.empty else pd.DataFrame(), correlations=correlations, placement=placement,
                  warnings=warnings_, notes=notes)
    if write:
        d.out = Path(out).expanduser().resolve() if out is not None else P.results_dir / "diagnose" / subject.slug
        d.figures = _figures(d, d.out)
        atomic_write_text(d.report_path, d.markdown(figures=True))
        d.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d.summary_path, d.summary)
    return d


def _concepts(P: Profile, Vt: np.ndarray, encode_paths: Callable, cached: Callable) -> tuple[int, dict]:
    """Eq. (4): unique Broden concepts of the right singular vectors of W (rows of ``Vt``), probed
    as in Section 5 (:mod:`helpers.chapters.concept_probing`: same balanced sets, AP threshold and
    sign rule)."""
    from .chapters.concept_probing import broden_sets, probe
    from .data import open_broden
    from .metrics import unique_concepts

    sets = broden_sets(P)

    def compute():
        ds = open_broden(P.dataset_root("broden"), limit=P.limit("broden"))
        return encode_paths(ds.files).astype(np.float32), {}

    h, _ = cached("broden", {"broden": sets.key}, compute)
    probed = sets.probed
    threshold, sign = P.metrics["concept_threshold"], P.metrics["concept_sign"]
    ap = np.nan_to_num(probe(h, Vt, sets, sign), nan=0.0)  # concepts without a balanced set: not encoded
    return unique_concepts(ap, threshold), {"threshold": threshold, "sign": sign, "probed_concepts": int(probed.size),
                                            "directions": int(Vt.shape[0]), "broden_images": int(h.shape[0])}


# --------------------------------------------------------------------------------------------
# Command line (``clip-study diagnose``)


def command_line(images, model: str, pretrained: str | None = None, profile: str | os.PathLike = "demo",
                 **options: Any) -> str:
    """The ``clip-study diagnose`` command equivalent to a :func:`diagnose` call (options given as
    their argument names: ``classnames``, ``out``, ``device``, ``batch_size``, ``limit``, ...;
    None and False are left out, True becomes a flag)."""
    import shlex

    args = ["clip-study", "diagnose", "--profile", str(profile), "--model", model]
    if pretrained is not None:
        args += ["--pretrained", str(pretrained)]
    from .config import REPO_ROOT

    # the command runs from the repository root: a path inside it is shown relative (no machine path)
    shown = Path(images).resolve()
    args += ["--images", str(shown.relative_to(REPO_ROOT) if shown.is_relative_to(REPO_ROOT) else images)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not None and value is not False:
            args += [flag, str(value)]
    return shlex.join(args)


def add_arguments(p) -> None:
    p.add_argument("--model", help="open_clip model name (e.g. ViT-B-32-quickgelu, demo-ViT-B-32)", required=True)
    p.add_argument("--pretrained", help="open_clip pretrained tag (e.g. openai) or the path of a weights file; "
                   "omitted: random initialisation (demo profile only)")
    p.add_argument("--images", required=True, help="folder of in-distribution images, searched recursively")
    p.add_argument("--classnames", help="text file of class names, one per line, for the zero-shot head "
                   "(default: ImageNet's 1,000)")
    p.add_argument("--profile", default="demo", help="profile whose pool and results tables to compare with")
    p.add_argument("--out", help="output folder (default: <results_dir>/diagnose/<model-tag>)")
    p.add_argument("--device", help="cpu | cuda | cuda:N (default: the profile's)")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the profile's)")
    p.add_argument("--limit", type=int, help="use a fixed-seed random subset of this many images")
    p.add_argument("--skip-unreadable", action="store_true", help="leave unreadable images out and count them")
    p.add_argument("--no-concepts", action="store_true", help="skip the Broden concept probing (Eq. 4)")
    p.add_argument("--seed", type=int, default=0, help="random-initialisation seed (without --pretrained)")


def run_cli(args) -> int:
    d = diagnose(args.images, model=args.model, pretrained=args.pretrained, classnames=args.classnames,
                 profile=args.profile, out=args.out, device=args.device, batch_size=args.batch_size, limit=args.limit,
                 skip_unreadable=args.skip_unreadable, concepts=not args.no_concepts, seed=args.seed)
    table = d.indicators()
    print(f"{d.label}: {d.n_images} images from {d.images}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    for w in d.warnings:
        print(f"warning: {w}")
    for n in d.notes:
        print(f"note: {n}")
    print(f"report: {d.report_path}\nsummary: {d.summary_path}")
    return 0
