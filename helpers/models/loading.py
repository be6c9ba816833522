"""Every pool entry as a classifier: image embedding h = f_v(x) and linear head W (Section 2).

:func:`load` returns a :class:`LoadedModel`. Its ``encoder`` maps normalised images to h, the
vector the linear head reads, and its logits are

- zero-shot and finetuned CLIP / CoCa: logit(x) = W h / ||h||  (Section 2, the logit^(k) equation)
- supervised models:                   logit(x) = W h + b

Weights come from exactly one place (see :class:`helpers.config.PoolEntry`):

- an open_clip pretrained tag, read from a Hugging Face hub cache (downloaded only when online);
- a local file: an open_clip CLIP state dict (ImageNet-Captions), a classifier checkpoint of this
  project (finetuned and supervised models, written by :func:`save_classifier`), or a torchvision
  ViT state dict;
- a random initialisation seeded by ``entry.seed`` (profiles with ``allow_random_init``).

Every file is read with ``torch.load(weights_only=True)``: a checkpoint that would run code when
unpickled is refused.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import pickle
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from helpers.config import PoolEntry

#: ``format`` field of the checkpoints written by :func:`save_classifier`.
CLASSIFIER_FORMAT = "clip-study-classifier/1"

#: Families whose head is the zero-shot head built from the model's own text encoder.
ZERO_SHOT_FAMILIES = ("robust_zeroshot_clip", "imagenet_captions_clip", "coca_zeroshot")
#: Finetuned from a zero-shot model: logits still read the normalised embedding (Section 2).
FINETUNED_FAMILIES = ("finetuned_clip", "coca_finetuned")
#: Trained from scratch with a biased linear head on the raw embedding.
SUPERVISED_FAMILIES = ("supervised",)

_HEAD_CACHE_VERSION = "zero-shot-head/1"
_TORCHVISION_VIT_PREFIX = "vit_"


class ModelError(ValueError):
    """A pool entry or weights file that cannot give a model; the message names both."""


class MissingWeightsError(ModelError, FileNotFoundError):
    """The weights of an entry are not on this machine (and cannot be downloaded)."""


class UnsafeCheckpointError(ModelError):
    """A checkpoint holding Python objects that would run code when unpickled."""


def _label(entry: PoolEntry) -> str:
    if entry.pretrained:
        weights = f"pretrained tag {entry.pretrained!r}"
    elif entry.checkpoint:
        weights = f"checkpoint {entry.checkpoint}"
    else:
        weights = f"random init, seed {entry.seed}"
    return f"entry {entry.id!r} ({entry.source} model {entry.model!r}, {weights})"


# --------------------------------------------------------------------------------------------
# open_clip and torchvision access


def _open_clip(model: str | None = None):
    import open_clip

    if model is not None and model.startswith("demo-"):
        from helpers.demo.archs import register_demo_models

        register_demo_models()
    return open_clip


def _torchvision_builder(entry: PoolEntry) -> Callable:
    from helpers.demo.archs import TORCHVISION_DEMO_BUILDERS

    if entry.model in TORCHVISION_DEMO_BUILDERS:
        return TORCHVISION_DEMO_BUILDERS[entry.model]
    import torchvision.models

    known = [n for n in torchvision.models.list_models() if n.startswith(_TORCHVISION_VIT_PREFIX)]
    if entry.model not in known:
        raise ModelError(f"{_label(entry)}: {entry.model!r} is not a torchvision ViT builder; "
                         f"expected one of {', '.join(known + list(TORCHVISION_DEMO_BUILDERS))}")
    return torchvision.models.get_model_builder(entry.model)


def _open_clip_config(entry: PoolEntry) -> dict:
    oc = _open_clip(entry.model)
    cfg = oc.get_model_config(entry.model)
    if cfg is None:
        close = difflib.get_close_matches(entry.model, oc.list_models(), n=5, cutoff=0.5)
        raise ModelError(f"{_label(entry)}: open_clip has no model config {entry.model!r}"
                         + (f"; close names: {', '.join(close)}" if close else ""))
    return cfg


# --------------------------------------------------------------------------------------------
# Preprocessing


@dataclass(frozen=True)
class Preprocessing:
    """The eval transform of an entry. open_clip entries (``resize_size`` None): resize the
    shortest side to ``image_size`` (``interpolation``), centre-crop ``image_size`` x ``image_size``.
    torchvision entries: resize the shortest side to ``resize_size`` (their preset: 256, bilinear,
    antialiased), centre-crop ``image_size``. Then scale to [0, 1], subtract ``image_mean``, divide
    by ``image_std``."""

    image_size: int
    interpolation: str
    resize_mode: str
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    resize_size: int | None = None

    @property
    def geometry(self):
        """The uint8 images before normalisation (one decoded store per geometry)."""
        from helpers.store import Geometry

        return Geometry(self.image_size, self.interpolation, self.resize_mode, self.resize_size)

    @property
    def geometry_key(self) -> str:
        """Identifies the uint8 images before normalisation (one decoded store per key)."""
        return self.geometry.key


def _torchvision_eval_transform(entry: PoolEntry, size: int) -> tuple[int, str]:
    """(resize size, interpolation) of torchvision's own eval preset for the builder's ImageNet
    weights (``IMAGENET1K_V1``: ViT-B/16 and B/32 resize 256 bilinear, crop 224); demo builders
    keep torchvision's 256/224 ratio."""
    import torchvision.models

    try:
        weights = torchvision.models.get_model_weights(entry.model)
    except (ValueError, KeyError):
        return int(round(size * 256 / 224)), "bilinear"
    chosen = getattr(weights, "IMAGENET1K_V1", None) or next(iter(weights))
    kw = dict(getattr(chosen.transforms, "keywords", {}))
    crop = int(kw.get("crop_size", size))
    if crop != size:
        raise ModelError(f"{_label(entry)}: torchvision's {chosen} weights are evaluated at {crop} px but "
                         f"the {entry.model} builder takes {size} px")
    interpolation = kw.get("interpolation")
    return int(kw.get("resize_size", 256)), (interpolation.value if interpolation is not None else "bilinear")


def preprocessing(entry: PoolEntry) -> Preprocessing:
    """Preprocessing of an entry, resolved without reading any weights file.

    Mean / std: the entry's own ``image_mean`` / ``image_std`` win, then the pretrained tag's
    (ViT-L-14 ``laion2b_s32b_b82k``: 0.5), then the source's default (open_clip: OpenAI's;
    torchvision: ImageNet's). A weights file carries no normalisation, which is why the paper
    profile repeats the 0.5 of LAION-2B ViT-L-14 on its entries. Geometry: open_clip entries use
    their tag's (224 px, bicubic, shortest side, centre crop); torchvision entries their weights'
    own preset (ViT-B/16 and B/32: resize 256 bilinear, centre crop 224), without which their
    published 81.1 % / 75.9 % cannot be met (methods page).
    """
    resize = None
    if entry.source == "torchvision":
        with torch.device("meta"):
            size = _torchvision_builder(entry)(weights=None).image_size
        resize, interpolation = _torchvision_eval_transform(entry, int(size))
        resize_mode = "shortest"
        from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD

        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        oc = _open_clip(entry.model)
        cfg = _open_clip_config(entry)
        size = cfg["vision_cfg"].get("image_size", 224)
        if isinstance(size, (list, tuple)):
            if len(set(size)) != 1:
                raise ModelError(f"{_label(entry)}: non-square input {size} is not supported")
            size = size[0]
        default = oc.transform.PreprocessCfg()
        tag_cfg = oc.get_pretrained_cfg(entry.model, entry.pretrained) if entry.pretrained else {}
        interpolation = tag_cfg.get("interpolation", default.interpolation)
        resize_mode = tag_cfg.get("resize_mode", default.resize_mode)
        mean = tuple(tag_cfg.get("mean", default.mean))
        std = tuple(tag_cfg.get("std", default.std))
    mean = tuple(float(x) for x in (entry.image_mean or mean))
    std = tuple(float(x) for x in (entry.image_std or std))
    if resize_mode != "shortest" or interpolation not in ("bicubic", "bilinear"):
        raise ModelError(f"{_label(entry)}: preprocessing {interpolation}/{resize_mode} is not supported "
                         "(expected bicubic or bilinear resizing of the shortest side)")
    return Preprocessing(int(size), interpolation, resize_mode, mean, std, resize)


class _Uint8Pixels:
    """PIL image -> uint8 tensor (3, S, S): the geometric half of the entry's eval transform, the
    very pixels the extraction engine's stores hold (:func:`helpers.store.pixel_transform`)."""

    def __init__(self, prep: Preprocessing):
        from helpers.store import pixel_transform

        self._pixels = pixel_transform(prep.geometry)

    def __call__(self, image) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self._pixels(image)))


class _EvalTransform:
    """PIL image -> normalised float tensor (3, S, S): :class:`_Uint8Pixels`, scaled to [0, 1]
    and normalised (torchvision's preset and open_clip's eval transform alike)."""

    def __init__(self, prep: Preprocessing):
        self._pixels = _Uint8Pixels(prep)
        self._mean = torch.tensor(prep.image_mean).view(3, 1, 1)
        self._std = torch.tensor(prep.image_std).view(3, 1, 1)

    def __call__(self, image) -> torch.Tensor:
        return (self._pixels(image).float().div_(255) - self._mean) / self._std


# --------------------------------------------------------------------------------------------
# Checks (QuickGELU, tags, finetuned lineage)


def quick_gelu_required(entry: PoolEntry, pool: Iterable[PoolEntry] = ()) -> bool | None:
    """Whether the entry's weights were trained with QuickGELU, from open_clip's pretrained cfg of
    its tag, or of the tag it was finetuned from (through ``pool``); None when no tag is known.

    open_clip 3.x no longer switches QuickGELU on from the tag: the model name must say it
    (``-quickgelu``), else plain GELU runs silently on weights trained with QuickGELU.
    """
    by_id = {e.id: e for e in pool}
    seen: set[str] = set()
    e: PoolEntry | None = entry
    while e is not None and e.id not in seen:
        seen.add(e.id)
        if e.source == "open_clip" and e.pretrained:
            return bool(_open_clip(e.model).get_pretrained_cfg(e.model, e.pretrained).get("quick_gelu", False))
        e = by_id.get(e.finetuned_from) if e.finetuned_from else None
    return None


def _config_quick_gelu(entry: PoolEntry) -> bool:
    return bool(_open_clip_config(entry).get("quick_gelu", False))


def _has_quick_gelu(module: nn.Module) -> bool:
    from open_clip.transformer import QuickGELU

    return any(isinstance(m, QuickGELU) for m in module.modules())


def check_entry(entry: PoolEntry, pool: Iterable[PoolEntry] = ()) -> None:
    """Raise :class:`ModelError` if the entry cannot load correctly; builds nothing.

    Checks that the model name exists, that an open_clip (model, tag) pair is in
    ``open_clip.list_pretrained()``, the QuickGELU rule, that the family has a head source, and,
    given the ``pool``, that a finetuned entry keeps the architecture and normalisation of the
    entry it was finetuned from.
    """
    pool = tuple(pool)
    if entry.source == "torchvision":
        _torchvision_builder(entry)
        if entry.pretrained:
            raise ModelError(f"{_label(entry)}: torchvision weights are read from files; replace "
                             f"`pretrained:` by `checkpoint: <path to the .pth>`")
        if entry.family not in SUPERVISED_FAMILIES:
            raise ModelError(f"{_label(entry)}: family {entry.family!r} needs a text encoder for its head; "
                             "torchvision ViTs serve only the supervised family")
    else:
        oc = _open_clip(entry.model)
        _open_clip_config(entry)
        if entry.pretrained:
            if (entry.model, entry.pretrained) not in oc.list_pretrained():
                pairs = oc.list_pretrained(as_str=True)
                close = difflib.get_close_matches(f"{entry.model}:{entry.pretrained}", pairs, n=6, cutoff=0.6)
                tags = oc.list_pretrained_tags_by_model(entry.model)
                raise ModelError(
                    f"{_label(entry)}: ({entry.model!r}, {entry.pretrained!r}) is not in open_clip.list_pretrained(). "
                    f"Tags of {entry.model}: {', '.join(tags) or 'none'}. "
                    f"Close model:tag pairs: {', '.join(close) or 'none'}")
            if entry.family not in ZERO_SHOT_FAMILIES:
                raise ModelError(f"{_label(entry)}: family {entry.family!r} takes its head from a classifier "
                                 "checkpoint; give `checkpoint:` instead of a pretrained tag")
        required = quick_gelu_required(entry, pool)
        if required is not None and required != _config_quick_gelu(entry):
            base = entry.model[: -len("-quickgelu")] if entry.model.endswith("-quickgelu") else entry.model
            fix = f"{base}-quickgelu" if required else base
            raise ModelError(
                f"{_label(entry)}: its weights were trained with {'QuickGELU' if required else 'plain GELU'} "
                f"but open_clip model {entry.model!r} runs {'plain GELU' if required else 'QuickGELU'} "
                f"(open_clip 3.x does not switch activations from the tag); use model {fix!r}")
    if entry.finetuned_from and pool:
        parent = next((e for e in pool if e.id == entry.finetuned_from), None)
        if parent is None:
            raise ModelError(f"{_label(entry)}: finetuned_from {entry.finetuned_from!r} is not in the pool")
        if (parent.source, parent.model) != (entry.source, entry.model):
            raise ModelError(f"{_label(entry)}: finetuned from {parent.id!r} ({parent.source} {parent.model!r}) "
                             "but names another architecture; a finetuned model keeps its parent's")
        mine, theirs = preprocessing(entry), preprocessing(parent)
        if (mine.image_mean, mine.image_std) != (theirs.image_mean, theirs.image_std):
            raise ModelError(f"{_label(entry)}: normalises with mean {mine.image_mean} / std {mine.image_std} "
                             f"but its parent {parent.id!r} with {theirs.image_mean} / {theirs.image_std}; "
                             "copy the parent's image_mean / image_std onto this entry")


# --------------------------------------------------------------------------------------------
# Building architectures


@contextmanager
def _seeded(seed: int):
    """Seed the CPU generator for a build and restore the caller's random state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


class _DropRandomInitNotice(logging.Filter):
    # open_clip warns "initialized randomly" on every build without its own weights, including
    # builds whose weights this module loads right afterwards; the notice would mislead.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded for model")


@contextmanager
def _quiet_random_init_notice():
    f = _DropRandomInitNotice()
    root = logging.getLogger()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def build_architecture(entry: PoolEntry, device: str | torch.device = "cpu") -> nn.Module:
    """The entry's full architecture with random weights seeded by ``entry.seed``: an open_clip
    model (image and text towers, ``logit_scale``) or a torchvision ``VisionTransformer``.

    Built on the CPU so that a seed gives the same weights on every device, then moved;
    ``device="meta"`` builds the structure only (instant, for checks).
    """
    check_entry(entry)
    meta = str(device) == "meta"
    with _seeded(entry.seed), _quiet_random_init_notice():
        if entry.source == "torchvision":
            builder = _torchvision_builder(entry)
            if meta:
                with torch.device("meta"):
                    return builder(weights=None)
            model = builder(weights=None)
        else:
            oc = _open_clip(entry.model)
            if meta:
                with torch.device("meta"):
                    return oc.create_model(entry.model, device="meta")
            model = oc.create_model(entry.model, device="cpu")
    return model.to(device)


def _create_open_clip(entry: PoolEntry, weights_file: str) -> nn.Module:
    """open_clip's own loader on a weights file (state-dict conversions, strict key check)."""
    oc = _open_clip(entry.model)
    try:
        return oc.create_model(entry.model, pretrained=weights_file, device="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unsafe(entry, weights_file, exc) from None
    except RuntimeError as exc:
        detail = "\n".join(str(exc).splitlines()[:4])
        raise ModelError(f"{_label(entry)}: {weights_file} is not an open_clip state dict for "
                         f"{entry.model!r}: {detail}") from None


def _image_encoder(model: nn.Module, entry: PoolEntry) -> tuple[nn.Module, str]:
    """The module mapping normalised images to h, and its kind (where its layers are)."""
    from torchvision.models.vision_transformer import VisionTransformer as TVViT

    if isinstance(model, TVViT):
        model.heads = nn.Identity()  # forward then returns the class token after the final LayerNorm
        return model, "torchvision_vit"
    from open_clip.coca_model import CoCa
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    visual = model.visual
    if isinstance(visual, ModifiedResNet):
        return visual, "modified_resnet"
    if isinstance(visual, VisionTransformer):
        if isinstance(model, CoCa):
            # CoCa's tower also returns the patch tokens its caption decoder reads; the classifier
            # needs only the pooled contrastive embedding, what encode_image(normalize=False) gives.
            visual.output_tokens = False
            return visual, "coca"
        return visual, "vit"
    raise ModelError(f"{_label(entry)}: image tower {type(visual).__name__} is not supported "
                     "(expected open_clip's ViT or modified ResNet)")


def _feature_dim(encoder: nn.Module) -> int:
    return int(encoder.hidden_dim if hasattr(encoder, "hidden_dim") else encoder.output_dim)


def _random_linear_head(d_H: int, n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W, b uniform in +-1/sqrt(d_H), the scale of ``nn.Linear``'s default init, from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    bound = d_H ** -0.5
    W = (torch.rand(n_classes, d_H, generator=g) * 2 - 1) * bound
    b = (torch.rand(n_classes, generator=g) * 2 - 1) * bound
    return W, b


# --------------------------------------------------------------------------------------------
# Weights files, hub cache, digests


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (memoised per path, size and modification time;
    :func:`helpers.study.provenance.sha256_file`, shared with the provenance records)."""
    from helpers.study.provenance import sha256_file

    return sha256_file(path)


def _unsafe(entry: PoolEntry, path: str | os.PathLike, exc: Exception) -> UnsafeCheckpointError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UnsafeCheckpointError(
        f"{_label(entry)}: refusing to load {path}: it holds Python objects that would run code when "
        f"unpickled (torch.load(weights_only=True) rejected it: {first}). Expected tensors only "
        f"({_expected_file(entry)}); re-save it in a session you trust as tensors, e.g. "
        "torch.save(model.state_dict(), path)")


def _expected_file(entry: PoolEntry) -> str:
    if entry.family in FINETUNED_FAMILIES:
        return f"a classifier checkpoint ({CLASSIFIER_FORMAT}) written by `clip-study finetune --entry {entry.id}`"
    if entry.family in SUPERVISED_FAMILIES and entry.source == "torchvision":
        return f"torchvision's {entry.model} state dict (e.g. {entry.model}-<hash>.pth from download.pytorch.org)"
    if entry.family in SUPERVISED_FAMILIES:
        return (f"a classifier checkpoint ({CLASSIFIER_FORMAT}) written by "
                f"`clip-study train-supervised --entry {entry.id}`")
    return f"an open_clip state dict for {entry.model} (torch.save(model.state_dict()))"


def _read_checkpoint(entry: PoolEntry) -> Any:
    path = Path(entry.checkpoint)
    from helpers.study import provenance

    provenance.note_file("checkpoint", path)  # an input of the current job
    if not path.is_file():
        raise MissingWeightsError(f"{_label(entry)}: checkpoint file {path} not found; "
                                  f"expected {_expected_file(entry)}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise ModelError(f"{_label(entry)}: cannot read {path} as safetensors: {exc}") from None
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # pre-zip torch.save format
    except pickle.UnpicklingError as exc:
        raise _unsafe(entry, path, exc) from None
    except Exception as exc:
        raise ModelError(f"{_label(entry)}: cannot read {path} ({type(exc).__name__}: {exc}); "
                         f"expected {_expected_file(entry)}") from None


def _hub_offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return env or bool(constants.HF_HUB_OFFLINE)


def _hub_weights(entry: PoolEntry, hf_cache: str | os.PathLike | None) -> tuple[str, str]:
    """(local file, content digest) of an open_clip tag's weights from the hub cache, downloading
    them only when the hub is not offline; one :class:`MissingWeightsError` otherwise."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import EntryNotFoundError

    oc = _open_clip(entry.model)
    cfg = oc.get_pretrained_cfg(entry.model, entry.pretrained)
    cache = str(hf_cache) if hf_cache else constants.HF_HUB_CACHE
    if not cfg.get("hf_hub"):
        raise MissingWeightsError(f"{_label(entry)}: the tag has no Hugging Face hub repository; download "
                                  f"{cfg.get('url')} and set `checkpoint:` to that file instead of `pretrained:`")
    hub = cfg["hf_hub"]
    if hub.endswith("/"):  # open_clip's convention: a bare repository holds its default file names
        repo = hub[:-1]
        candidates = [oc.constants.HF_SAFE_WEIGHTS_NAME, oc.constants.HF_WEIGHTS_NAME]
    else:
        repo, filename = os.path.split(hub)
        candidates = [filename[:-4] + ".safetensors", filename] if filename.endswith((".bin", ".pth")) else [filename]
    for name in candidates:
        found = huggingface_hub.try_to_load_from_cache(repo, name, cache_dir=cache)
        if isinstance(found, str):
            return found, _blob_digest(found)
    if _hub_offline():
        why = "HF_HUB_OFFLINE is set, so nothing is downloaded"
    else:
        why = _hub_unreachable()
    if why is None:
        for name in candidates:
            try:
                path = huggingface_hub.hf_hub_download(repo, name, cache_dir=cache)
                return path, _blob_digest(path)
            except EntryNotFoundError:
                continue  # the repository has the other file name
            except Exception as exc:
                why = f"downloading {name} failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
                break
        else:
            why = "the repository holds none of these files"
    raise MissingWeightsError(
        f"{_label(entry)}: its weights come from the Hugging Face hub repository {repo!r} "
        f"(file {' or '.join(candidates)}), which is not in the hub cache {cache}, and {why}. "
        f"Supply them in one of two ways: (1) on a machine with network access run "
        f"`hf download {repo} --cache-dir <folder>` and point `paths.hf_cache` of the profile at that folder "
        f"(a hub cache: models--org--repo/snapshots/...); or (2) place the weights file anywhere and replace "
        f"`pretrained: {entry.pretrained}` by `checkpoint: /path/to/{candidates[-1]}` in this entry of the profile, "
        f"keeping its image_mean/image_std.")


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached, found within seconds (huggingface_hub retries for about 25 s
    per file first); None when it answers, or when a proxy is set and only a download can tell."""
    import socket
    import urllib.parse

    from huggingface_hub import constants

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urllib.parse.urlparse(constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return f"the hub ({host}:{port}) cannot be reached ({exc})"
    return None


def _blob_digest(path: str) -> str:
    # The hub cache stores large files as blobs named by their sha256: reuse it instead of rehashing.
    name = Path(os.path.realpath(path)).name
    return name if re.fullmatch(r"[0-9a-f]{64}", name) else file_sha256(path)


# --------------------------------------------------------------------------------------------
# Zero-shot head (Section 2)


class _MemoTokenizer:
    """Tokenises through the given tokenizer, remembering each prompt's tokens so that models
    sharing a tokenizer configuration (every CLIP with open_clip's BPE) tokenise the 80,000
    ImageNet prompts once per process (about 5 s on a CPU)."""

    _memo: dict[tuple, torch.Tensor] = {}
    _limit = 400_000

    def __init__(self, tokenizer):
        from open_clip.tokenizer import SimpleTokenizer

        self.tokenizer = tokenizer
        self.key = None
        # Prompts are shared only between SimpleTokenizers that cut and clean alike; their BPE
        # vocabulary is the one open_clip ships (no open_clip config names another bpe_path).
        if type(tokenizer) is SimpleTokenizer and tokenizer.reduction_fn is None:
            self.key = ("bpe", tokenizer.vocab_size, tokenizer.context_length, tokenizer.clean_fn.__name__,
                        tokenizer.sot_token_id, tokenizer.eot_token_id)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if self.key is None:
            return self.tokenizer(texts)
        missing = list(dict.fromkeys(t for t in texts if (self.key, t) not in self._memo))
        if missing:
            if len(self._memo) + len(missing) > self._limit:
                self._memo.clear()
            for t, row in zip(missing, self.tokenizer(missing).to(torch.int32)):
                self._memo[(self.key, t)] = row
        return torch.stack([self._memo[(self.key, t)] for t in texts]).long()


def _template_text(template: str | Callable[[str], str]) -> str:
    return template("{}") if callable(template) else template


#: Prompts per text-tower forward when a zero-shot head is built (classes per batch = this // templates).
HEAD_PROMPTS_PER_BATCH = {"cpu": 800, "cuda": 4000}


def _autocast(device: str | torch.device, precision: str):
    from contextlib import nullcontext

    dev = torch.device(device)
    if dev.type == "cpu" or precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=dev.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


def zero_shot_head(clip_model: nn.Module, tokenizer, classnames: Sequence[str],
                   templates: Sequence[str | Callable[[str], str]], device: str | torch.device = "cpu",
                   batch_size: int = 10, precision: str = "fp32", desc: str | None = None) -> torch.Tensor:
    """Zero-shot head W (K x d_H) of Section 2: W_k = tau^-1 * normalise(mean over templates t of
    normalise(f_t(t(class_k)))), with tau^-1 = ``logit_scale.exp()``.

    ``clip_model`` is an open_clip CLIP / CoCa already on ``device``; ``templates`` are callables
    or ``str.format`` strings (open_clip.OPENAI_IMAGENET_TEMPLATES: 80); ``batch_size`` classes are
    encoded per forward pass, under ``precision`` autocast on CUDA (the normalisations and the
    mean run in float32 on the text features). The averaging is open_clip's
    ``build_zero_shot_classifier``.
    """
    from tqdm.auto import tqdm

    oc = _open_clip()
    # open_clip decides between str.format and calling from the first template only
    templates = [t if callable(t) else t.format for t in templates]
    classnames = list(classnames)
    clip_model.eval()
    # open_clip's own bar has no label: batches of classes go through its builder under a bar
    # that says what is built and where (each class's mean is independent of the batching)
    label = desc or f"zero-shot head: {len(classnames):,} classes x {len(templates)} templates on {device}"
    parts = []
    with torch.no_grad(), _autocast(device, precision), \
            tqdm(total=len(classnames), desc=label, unit="class", disable=len(classnames) * len(templates) < 2_000) as bar:
        for i in range(0, len(classnames), batch_size):
            chunk = classnames[i:i + batch_size]
            parts.append(oc.build_zero_shot_classifier(_FloatText(clip_model), _MemoTokenizer(tokenizer), chunk,
                                                       templates, num_classes_per_batch=batch_size, device=device,
                                                       use_tqdm=False))
            bar.update(len(chunk))
    directions = torch.cat(parts, dim=1)
    return (clip_model.logit_scale.detach().float().exp() * directions.float().T).float()


class _FloatText:
    """``encode_text`` of a CLIP in float32 output (autocast may give bf16), for open_clip's head
    builder: the per-template normalisation and the mean are then float32."""

    def __init__(self, clip_model: nn.Module):
        self._m = clip_model

    def encode_text(self, tokens, normalize: bool = False):
        import torch.nn.functional as F

        x = self._m.encode_text(tokens).float()
        return F.normalize(x, dim=-1) if normalize else x


def _head_file(cache_dir: str | os.PathLike, model: str, key: str) -> Path:
    return Path(cache_dir) / "heads" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', model)}-{key[:32]}.pt"


def _head_key(entry: PoolEntry, weights_digest: str, classnames, templates,
              dtype: str = "fp32") -> tuple[list, list, str]:
    """Class names and templates (the ImageNet defaults for None) and the cache key of the zero-shot
    head they give with these weights, computed in ``dtype``."""
    oc = _open_clip(entry.model)
    classnames = list(oc.IMAGENET_CLASSNAMES if classnames is None else classnames)
    templates = list(oc.OPENAI_IMAGENET_TEMPLATES if templates is None else templates)
    return classnames, templates, _digest(_HEAD_CACHE_VERSION, weights_digest, json.dumps(classnames),
                                          json.dumps([_template_text(t) for t in templates]),
                                          *([] if dtype == "fp32" else [dtype]))


def head_without_model(entry: PoolEntry, weights_digest: str, cache_dir: str | os.PathLike,
                       classnames: Sequence[str] | None = None) -> torch.Tensor | None:
    """The head W that :func:`load` gives ``entry``, read without building the model when it can be:
    a classifier checkpoint's own head, or the zero-shot head cached under ``cache_dir/heads/`` for
    these weights and class names. None when only a load can give it."""
    if entry.checkpoint:
        ckpt = _read_checkpoint(entry)
        if isinstance(ckpt, dict) and ckpt.get("format") == CLASSIFIER_FORMAT:
            return ckpt["head"].float()
    if entry.family not in ZERO_SHOT_FAMILIES:
        return None
    key = _head_key(entry, weights_digest, classnames, None)[2]
    path = _head_file(cache_dir, entry.model, key)
    if not path.exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload["W"].float() if payload.get("key") == key else None


def _zero_shot_head_cached(entry: PoolEntry, clip_model: nn.Module, weights_digest: str, cache_dir,
                           classnames, templates, device, batch_size, precision: str = "fp32") -> tuple[torch.Tensor, str]:
    """The zero-shot head, read from ``cache_dir/heads/`` when computed before for these weights,
    class names, templates and compute dtype (then the text tower is never moved nor run);
    otherwise the CLIP model is moved to ``device`` and the head built there."""
    oc = _open_clip(entry.model)
    dev = torch.device(device)
    dtype = "fp32" if dev.type == "cpu" else precision
    classnames, templates, key = _head_key(entry, weights_digest, classnames, templates, dtype)
    path = _head_file(cache_dir, entry.model, key) if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(f"{_label(entry)}: cached zero-shot head {path} is unreadable ({exc}); "
                             "delete it to recompute") from None
        expected_shape = (len(classnames), _feature_dim(clip_model.visual))
        if payload.get("key") != key or tuple(payload["W"].shape) != expected_shape:
            raise ModelError(f"{_label(entry)}: cached zero-shot head {path} does not match these weights and "
                             "classes; delete it to recompute")
        return payload["W"], f"zero-shot head, cached {path}"
    if batch_size is None:
        batch_size = max(1, HEAD_PROMPTS_PER_BATCH.get(dev.type, 800) // len(templates))
    clip_model.to(dev).eval()
    W = zero_shot_head(clip_model, oc.get_tokenizer(entry.model), classnames, templates, dev, batch_size, precision,
                       desc=f"{entry.id}: zero-shot head, {len(classnames):,} classes x {len(templates)} templates "
                            f"on {dev}")
    if path is not None:
        _atomic_torch_save({"key": key, "W": W.cpu(), "model": entry.model, "weights_digest": weights_digest,
                            "classes": len(classnames), "templates": len(templates), "dtype": dtype}, path)
    return W, f"zero-shot head over {len(classnames)} classes x {len(templates)} templates ({dtype} on {dev.type})"


def reduced_zero_shot_head(entry: PoolEntry, clip_model: nn.Module, weights_digest: str, cache_dir,
                           n_templates: int | None, class_indices: Sequence[int] | None,
                           device: str | torch.device = "cpu", batch_size: int | None = None,
                           precision: str = "fp32") -> tuple[torch.Tensor, str]:
    """The head of a smoke profile (``kind: smoke``, random weights; refused elsewhere at profile
    load): the zero-shot head of Section 2 from the first ``n_templates`` OpenAI templates (None:
    80) and, when ``class_indices`` are given, from the text tower for those ImageNet classes only;
    the other rows are unit vectors seeded by ``entry.seed``, scaled by tau^-1 like the text rows.
    Still 1,000 rows, so every chapter scores as usual; the text tower of random weights gives rows
    no more meaningful than these, at a fraction of the 2 CPU-minutes of 1,000 prompts."""
    oc = _open_clip(entry.model)
    templates = list(oc.OPENAI_IMAGENET_TEMPLATES)[:n_templates] if n_templates else None
    if class_indices is None:
        return _zero_shot_head_cached(entry, clip_model, weights_digest, cache_dir, None, templates, device, batch_size,
                                      precision)
    names = list(oc.IMAGENET_CLASSNAMES)
    rows = sorted(set(int(i) for i in class_indices))
    text, _ = _zero_shot_head_cached(entry, clip_model, weights_digest, cache_dir, [names[i] for i in rows],
                                     templates, device, batch_size, precision)
    g = torch.Generator().manual_seed(entry.seed)
    W = F.normalize(torch.randn(len(names), text.shape[1], generator=g), dim=-1)
    W = W * float(clip_model.logit_scale.detach().exp())
    W[rows] = text.detach().float().cpu()
    n_t = len(templates) if templates is not None else len(oc.OPENAI_IMAGENET_TEMPLATES)
    return W, (f"smoke-profile zero-shot head: {len(rows)} classes x {n_t} templates from the text tower, "
               f"the other {len(names) - len(rows)} rows seeded random (seed {entry.seed})")


def _atomic_torch_save(obj: Any, path: Path, verify: bool = False) -> None:
    """torch.save to a temporary file in the same folder, then os.replace: readers never see a
    partial file. ``verify``: read the file back with weights_only=True before publishing it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        if verify:
            try:
                torch.load(tmp, map_location="cpu", weights_only=True, mmap=True)
            except pickle.UnpicklingError as exc:
                raise ModelError(f"{path}: the checkpoint holds values torch.load(weights_only=True) cannot read "
                                 f"back ({str(exc).splitlines()[0]}); extra fields must be plain data: numbers, "
                                 "strings, lists, dicts, tensors") from None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------------------------
# The loaded classifier


class LoadedModel(nn.Module):
    """A pool entry as encoder + linear head, in eval mode.

    ``encoder(images) -> h`` (B x d_H), ``head`` W (K x d_H), ``bias`` b (K) or None.
    ``logits_from_features(h)`` is W h / ||h|| when ``normalize_features`` (zero-shot and finetuned
    CLIP / CoCa, Section 2) and W h + b otherwise (supervised). ``state_dict()`` holds the encoder,
    head and bias only (what WiSE-FT interpolates).
    """

    def __init__(self, entry: PoolEntry, encoder: nn.Module, head: torch.Tensor, bias: torch.Tensor | None,
                 normalize_features: bool, arch_kind: str, prep: Preprocessing, weights_digest: str,
                 weights_source: str, head_source: str):
        super().__init__()
        self.entry = entry
        self.encoder = encoder
        self.head = nn.Parameter(head.detach().clone().float())
        self.register_parameter("bias", None if bias is None else nn.Parameter(bias.detach().clone().float()))
        self.normalize_features = bool(normalize_features)
        self.arch_kind = arch_kind
        self.image_size = prep.image_size
        self.interpolation = prep.interpolation
        self.resize_mode = prep.resize_mode
        self.resize_size = prep.resize_size
        self.image_mean = prep.image_mean
        self.image_std = prep.image_std
        self.geometry_key = prep.geometry_key
        self.weights_digest = weights_digest
        self.weights_source = weights_source
        self.head_source = head_source
        self.register_buffer("_input_mean", torch.tensor(prep.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_input_std", torch.tensor(prep.image_std).view(1, 3, 1, 1), persistent=False)
        if prep.resize_size is None:
            oc = _open_clip()
            #: PIL image -> normalised tensor (3, S, S): open_clip's eval transform (or torchvision's preset).
            self.preprocess = oc.image_transform(prep.image_size, is_train=False, mean=prep.image_mean,
                                                 std=prep.image_std, resize_mode=prep.resize_mode,
                                                 interpolation=prep.interpolation)
        else:
            self.preprocess = _EvalTransform(prep)
        #: PIL image -> uint8 tensor (3, S, S): the same transform before scaling and normalisation,
        #: for stores decoded once per ``geometry_key``; ``normalize_input`` completes it.
        self.to_uint8 = _Uint8Pixels(prep)
        self.eval()

    def extra_repr(self) -> str:
        return f"entry={self.entry.id!r}, arch_kind={self.arch_kind!r}, normalize_features={self.normalize_features}"

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (0-255) or float (0-1) images (B, 3, S, S) -> normalised float images, on their device."""
        S = self.image_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (S, S):
            raise ValueError(f"entry {self.entry.id!r}: expected images of shape (B, 3, {S}, {S}) "
                             f"(geometry {self.geometry_key}), found {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            x = images.float().div_(255)
        elif images.is_floating_point():
            x = images
        else:
            raise ValueError(f"entry {self.entry.id!r}: expected uint8 or float images, found {images.dtype}")
        mean = self._input_mean.to(device=x.device, dtype=x.dtype)
        std = self._input_std.to(device=x.device, dtype=x.dtype)
        return (x - mean) / std

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """h = f_v(x) (B x d_H) from normalised images."""
        return self.encoder(images)

    def logits_from_features(self, h: torch.Tensor) -> torch.Tensor:
        """W h / ||h|| (zero-shot, finetuned) or W h + b (supervised); B x K."""
        h = h.to(self.head.dtype)
        if self.normalize_features:
            h = F.normalize(h, dim=-1)
        return F.linear(h, self.head, self.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.encode(images))


# --------------------------------------------------------------------------------------------
# Loading


def load(entry: PoolEntry, device: str | torch.device = "cpu", cache_dir: str | os.PathLike | None = None,
         hf_cache: str | os.PathLike | None = None, *, classnames: Sequence[str] | None = None,
         templates: Sequence[str | Callable[[str], str]] | None = None, batch_size: int | None = None,
         precision: str = "fp32", reduced_head: tuple[int | None, Sequence[int] | None] | None = None) -> LoadedModel:
    """Load a pool entry as a :class:`LoadedModel` on ``device``.

    ``cache_dir``: zero-shot heads are cached under ``cache_dir/heads/`` (None: not cached).
    ``hf_cache``: the Hugging Face hub cache holding open_clip tags' weights (None: the default).
    ``classnames`` / ``templates``: a zero-shot head over other classes than ImageNet's 1,000
    (default ``open_clip.IMAGENET_CLASSNAMES`` x ``OPENAI_IMAGENET_TEMPLATES``); zero-shot heads only.
    Zero-shot heads are built on ``device`` (the text tower moved there only for that, then
    released), ``batch_size`` classes per forward (default: about :data:`HEAD_PROMPTS_PER_BATCH`
    prompts), under ``precision`` autocast on CUDA (fp32 on the CPU); a cached head skips the text
    tower entirely (built on the CPU by open_clip's loader, never moved nor run).
    ``reduced_head``: ``(n_templates, class indices)`` of a smoke profile (:func:`reduced_zero_shot_head`),
    applied when the head is a zero-shot one and neither ``classnames`` nor ``templates`` is given.
    """
    check_entry(entry)
    prep = preprocessing(entry)
    clip_model = None
    if entry.checkpoint:
        ckpt = _read_checkpoint(entry)
        if isinstance(ckpt, dict) and "format" in ckpt:
            model = _from_classifier(entry, ckpt, prep)
        elif entry.source == "torchvision":
            model = _from_torchvision_state_dict(entry, ckpt, prep)
        else:
            del ckpt
            if entry.family not in ZERO_SHOT_FAMILIES:
                raise ModelError(f"{_label(entry)}: {entry.checkpoint} is a plain state dict, but family "
                                 f"{entry.family!r} needs its head from {_expected_file(entry)}")
            clip_model = _create_open_clip(entry, entry.checkpoint)
            digest = _digest("file", entry.model, file_sha256(entry.checkpoint))
            source = f"open_clip state dict {entry.checkpoint}"
    elif entry.pretrained:
        path, blob = _hub_weights(entry, hf_cache)
        clip_model = _create_open_clip(entry, path)
        digest = _digest("open_clip", entry.model, entry.pretrained, blob)
        source = f"open_clip {entry.model} / {entry.pretrained} ({path})"
    else:
        digest = _digest("random", entry.source, entry.model, entry.seed, _architecture_fingerprint(entry))
        source = f"random init, seed {entry.seed}"
        arch = build_architecture(entry)
        if entry.source == "torchvision" or entry.family in SUPERVISED_FAMILIES:
            encoder, kind = _image_encoder(arch, entry)
            W, b = _random_linear_head(_feature_dim(encoder), 1000, entry.seed)
            model = LoadedModel(entry, encoder, W, b, False, kind, prep, digest, source,
                                f"random linear head, seed {entry.seed}")
        else:
            clip_model = arch
    if clip_model is None:
        if classnames is not None or templates is not None:
            raise ModelError(f"{_label(entry)}: classnames/templates apply to zero-shot heads only; this "
                             f"entry's head is the {model.head_source}")
        return model.to(device).eval()

    required = quick_gelu_required(entry)
    if required is not None and required != _has_quick_gelu(clip_model):
        raise ModelError(f"{_label(entry)}: the built model {'lacks' if required else 'has'} QuickGELU "
                         f"activations, but its weights were trained {'with' if required else 'without'} them")
    if reduced_head is not None and classnames is None and templates is None:
        W, head_source = reduced_zero_shot_head(entry, clip_model, digest, cache_dir, *reduced_head,
                                                device=device, batch_size=batch_size, precision=precision)
    else:
        W, head_source = _zero_shot_head_cached(entry, clip_model, digest, cache_dir, classnames, templates,
                                                device, batch_size, precision)
    encoder, kind = _image_encoder(clip_model, entry)
    del clip_model  # the text tower goes with it: only the image tower is kept (and moved)
    model = LoadedModel(entry, encoder, W, None, True, kind, prep, digest, source, head_source)
    model = model.to(device).eval()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()  # the text tower's blocks, when the head was built on the device
    return model


def _architecture_fingerprint(entry: PoolEntry) -> str:
    """What random weights depend on besides the seed: the architecture and the library versions."""
    import open_clip
    import torchvision

    if entry.source == "torchvision":
        structure = build_architecture(entry, device="meta")
        return f"{structure} torchvision {torchvision.__version__} torch {torch.__version__}"
    cfg = json.dumps(_open_clip_config(entry), sort_keys=True)
    return f"{cfg} open_clip {open_clip.__version__} torch {torch.__version__}"


def _from_classifier(entry: PoolEntry, ckpt: dict, prep: Preprocessing) -> LoadedModel:
    where = f"{_label(entry)}: classifier checkpoint {entry.checkpoint}"
    if ckpt.get("format") != CLASSIFIER_FORMAT:
        raise ModelError(f"{where} has format {ckpt.get('format')!r}; expected {CLASSIFIER_FORMAT!r}")
    missing = [k for k in ("model", "encoder", "head", "normalize_features") if k not in ckpt]
    if missing:
        raise ModelError(f"{where} lacks the key(s) {', '.join(missing)}")
    if (ckpt.get("source", "open_clip"), ckpt["model"]) != (entry.source, entry.model):
        raise ModelError(f"{where} holds a {ckpt.get('source', 'open_clip')} {ckpt['model']!r} model, but the entry "
                         f"names {entry.source} {entry.model!r}")
    encoder, kind = _image_encoder(build_architecture(entry), entry)
    try:
        encoder.load_state_dict(ckpt["encoder"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = "\n".join(str(exc).splitlines()[:4])
        raise ModelError(f"{where}: its encoder does not fit {entry.model!r}: {detail}") from None
    W, b, d_H = ckpt["head"], ckpt.get("bias"), _feature_dim(encoder)
    if not (isinstance(W, torch.Tensor) and W.ndim == 2 and W.shape[1] == d_H):
        raise ModelError(f"{where}: head must be a tensor K x {d_H}, found "
                         f"{tuple(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__}")
    if b is not None and not (isinstance(b, torch.Tensor) and tuple(b.shape) == (W.shape[0],)):
        raise ModelError(f"{where}: bias must be None or a tensor of {W.shape[0]} values")
    stored = (ckpt.get("image_mean"), ckpt.get("image_std"))
    if stored[0] is not None:
        stored = (tuple(float(x) for x in stored[0]), tuple(float(x) for x in stored[1]))
        own = (entry.image_mean, entry.image_std)
        if own[0] is not None and (tuple(own[0]), tuple(own[1])) != stored:
            raise ModelError(f"{where} was trained on images normalised with mean {stored[0]} / std {stored[1]}, "
                             f"but the entry sets {own[0]} / {own[1]}")
        prep = Preprocessing(prep.image_size, prep.interpolation, prep.resize_mode, *stored, prep.resize_size)
    digest = _digest("file", entry.model, file_sha256(entry.checkpoint))
    return LoadedModel(entry, encoder, W, b, bool(ckpt["normalize_features"]), kind, prep, digest,
                       f"classifier checkpoint {entry.checkpoint}", f"classifier checkpoint {entry.checkpoint}")


def _from_torchvision_state_dict(entry: PoolEntry, sd: Any, prep: Preprocessing) -> LoadedModel:
    where = f"{_label(entry)}: {entry.checkpoint}"
    if not (isinstance(sd, dict) and sd and all(isinstance(v, torch.Tensor) for v in sd.values())):
        raise ModelError(f"{where} is not a state dict of tensors; expected {_expected_file(entry)}")
    net = build_architecture(entry)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        detail = "\n".join(str(exc).splitlines()[:4])
        raise ModelError(f"{where} does not fit torchvision {entry.model!r}; expected {_expected_file(entry)}: "
                         f"{detail}") from None
    W, b = net.heads.head.weight.detach().clone(), net.heads.head.bias.detach().clone()
    encoder, kind = _image_encoder(net, entry)
    digest = _digest("file", entry.model, file_sha256(entry.checkpoint))
    return LoadedModel(entry, encoder, W, b, False, kind, prep, digest, f"torchvision state dict {entry.checkpoint}",
                       f"torchvision heads.head of {entry.checkpoint}")


def profile_load_options(profile) -> dict[str, Any]:
    """The :func:`load` options a profile sets for every model it loads, pool entries and transient
    ones (``diagnose``) alike: the heads' precision and, in smoke profiles, the reduced zero-shot head."""
    options: dict[str, Any] = {"precision": profile.precision}
    if profile.zero_shot_templates is not None or profile.zero_shot_classes is not None:
        options["reduced_head"] = (profile.zero_shot_templates, profile.zero_shot_classes)
    return options


def load_from_profile(profile, entry_id: str, device: str | torch.device | None = None, **kwargs) -> LoadedModel:
    """:func:`load` with the profile's device, ``cache_dir``, ``paths.hf_cache`` and
    :func:`profile_load_options`, after checking the entry against its pool (QuickGELU through
    ``finetuned_from``, parent architecture)."""
    entry = profile.entry(entry_id)
    check_entry(entry, profile.pool)
    return load(entry, device or profile.device, profile.cache_dir, profile.paths.get("hf_cache"),
                **{**profile_load_options(profile), **kwargs})


def save_classifier(loaded_model: LoadedModel, path: str | os.PathLike, **extra: Any) -> Path:
    """Write ``loaded_model`` as a classifier checkpoint (``clip-study-classifier/1``), atomically.

    Holds ``format``, ``entry``, ``model``, ``source``, ``arch_kind``, ``encoder`` (state dict),
    ``head`` W, ``bias`` b or None, ``normalize_features``, ``image_mean``, ``image_std``, plus
    ``extra`` (plain data: numbers, strings, lists, dicts, tensors). Pass ``entry="<id>"`` to record
    the id of the entry the file is for (a finetuned model saved from its parent's LoadedModel).
    """
    lm = loaded_model
    core = {
        "format": CLASSIFIER_FORMAT, "entry": lm.entry.id, "model": lm.entry.model, "source": lm.entry.source,
        "arch_kind": lm.arch_kind,
        "encoder": {k: v.detach().cpu() for k, v in lm.encoder.state_dict().items()},
        "head": lm.head.detach().cpu(), "bias": None if lm.bias is None else lm.bias.detach().cpu(),
        "normalize_features": lm.normalize_features,
        "image_mean": list(lm.image_mean), "image_std": list(lm.image_std),
    }
    clash = sorted(set(extra) & (set(core) - {"entry"}))
    if clash:
        raise ValueError(f"save_classifier: extra field(s) {', '.join(clash)} would overwrite the checkpoint's own")
    path = Path(path)
    _atomic_torch_save({**core, **extra}, path, verify=True)
    return path
