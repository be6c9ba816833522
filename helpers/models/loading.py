"""Every pool entry as a classifier: image embedding h = f_v(x) and linear head W (Section 2).

:func:`load` returns a :class:`LoadedModel`. Its ``encoder`` maps normalised images to h, the
vector the linear head reads, and its logits are

- zero-shot and finetuned CLIP / CoCa: logit(x) = W h / ||h||  (Section 2, the logit^(k) equation)
- supervised models:                   logit(x) = W h + b

Weights come from exactly one place (see :class:`helpers.config.PoolEntry`):

- an open_clip pretrained tag, read from a Hugging Face hub cache (downloaded only when online);
- a local file: an open_clip CLIP state dict (ImageNet-Captions), a classifier checkpoint of this
  project (finetuned and supervised models, written by :func:`helpers.models.weights.save_classifier`),
  or a torchvision ViT state dict;
- a random initialisation seeded by ``entry.seed`` (profiles with ``allow_random_init``).

Every file is read with ``torch.load(weights_only=True)`` (:mod:`helpers.models.weights`).
"""
from __future__ import annotations

import json
import logging
import os
import pickle
from contextlib import contextmanager
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from helpers.config import PoolEntry
from helpers.models.catalogue import (
    CLASSIFIER_FORMAT, SUPERVISED_FAMILIES, ZERO_SHOT_FAMILIES, ModelError, Preprocessing, check_entry, entry_label,
    expected_file, open_clip_config, open_clip_module, preprocessing, quick_gelu_required, torchvision_builder,
)
from helpers.models.heads import cached_zero_shot_head, feature_dim, reduced_zero_shot_head
from helpers.models.weights import file_sha256, hash_parts, hub_weights, read_checkpoint, unsafe_checkpoint_error
from helpers.store import pixel_transform

class _Uint8Pixels:
    """PIL image -> uint8 tensor (3, S, S): the geometric half of the entry's eval transform, the
    very pixels the extraction engine's stores hold (:func:`helpers.store.pixel_transform`)."""

    def __init__(self, prep: Preprocessing):
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
            builder = torchvision_builder(entry)
            if meta:
                with torch.device("meta"):
                    return builder(weights=None)
            model = builder(weights=None)
        else:
            oc = open_clip_module(entry.model)
            if meta:
                with torch.device("meta"):
                    return oc.create_model(entry.model, device="meta")
            model = oc.create_model(entry.model, device="cpu")
    return model.to(device)


def _create_open_clip(entry: PoolEntry, weights_file: str) -> nn.Module:
    """open_clip's own loader on a weights file (state-dict conversions, strict key check)."""
    oc = open_clip_module(entry.model)
    try:
        return oc.create_model(entry.model, pretrained=weights_file, device="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise unsafe_checkpoint_error(entry, weights_file, exc) from None
    except RuntimeError as exc:
        detail = "\n".join(str(exc).splitlines()[:4])
        raise ModelError(f"{entry_label(entry)}: {weights_file} is not an open_clip state dict for "
                         f"{entry.model!r}: {detail}") from None


def _has_quick_gelu(module: nn.Module) -> bool:
    from open_clip.transformer import QuickGELU

    return any(isinstance(m, QuickGELU) for m in module.modules())


def image_encoder(model: nn.Module, entry: PoolEntry) -> tuple[nn.Module, str]:
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
    raise ModelError(f"{entry_label(entry)}: image tower {type(visual).__name__} is not supported "
                     "(expected open_clip's ViT or modified ResNet)")


def _random_linear_head(d_H: int, n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W, b uniform in +-1/sqrt(d_H), the scale of ``nn.Linear``'s default init, from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    bound = d_H ** -0.5
    W = (torch.rand(n_classes, d_H, generator=g) * 2 - 1) * bound
    b = (torch.rand(n_classes, generator=g) * 2 - 1) * bound
    return W, b


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
            oc = open_clip_module()
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
        ckpt = read_checkpoint(entry)
        if isinstance(ckpt, dict) and "format" in ckpt:
            model = _from_classifier(entry, ckpt, prep)
        elif entry.source == "torchvision":
            model = _from_torchvision_state_dict(entry, ckpt, prep)
        else:
            del ckpt
            if entry.family not in ZERO_SHOT_FAMILIES:
                raise ModelError(f"{entry_label(entry)}: {entry.checkpoint} is a plain state dict, but family "
                                 f"{entry.family!r} needs its head from {expected_file(entry)}")
            clip_model = _create_open_clip(entry, entry.checkpoint)
            digest = hash_parts("file", entry.model, file_sha256(entry.checkpoint))
            source = f"open_clip state dict {entry.checkpoint}"
    elif entry.pretrained:
        path, blob = hub_weights(entry, hf_cache)
        clip_model = _create_open_clip(entry, path)
        digest = hash_parts("open_clip", entry.model, entry.pretrained, blob)
        source = f"open_clip {entry.model} / {entry.pretrained} ({path})"
    else:
        digest = hash_parts("random", entry.source, entry.model, entry.seed, _architecture_fingerprint(entry))
        source = f"random init, seed {entry.seed}"
        arch = build_architecture(entry)
        if entry.source == "torchvision" or entry.family in SUPERVISED_FAMILIES:
            encoder, kind = image_encoder(arch, entry)
            W, b = _random_linear_head(feature_dim(encoder), 1000, entry.seed)
            model = LoadedModel(entry, encoder, W, b, False, kind, prep, digest, source,
                                f"random linear head, seed {entry.seed}")
        else:
            clip_model = arch
    if clip_model is None:
        if classnames is not None or templates is not None:
            raise ModelError(f"{entry_label(entry)}: classnames/templates apply to zero-shot heads only; this "
                             f"entry's head is the {model.head_source}")
        return model.to(device).eval()

    required = quick_gelu_required(entry)
    if required is not None and required != _has_quick_gelu(clip_model):
        raise ModelError(f"{entry_label(entry)}: the built model {'lacks' if required else 'has'} QuickGELU "
                         f"activations, but its weights were trained {'with' if required else 'without'} them")
    if reduced_head is not None and classnames is None and templates is None:
        W, head_source = reduced_zero_shot_head(entry, clip_model, digest, cache_dir, *reduced_head,
                                                device=device, batch_size=batch_size, precision=precision)
    else:
        W, head_source = cached_zero_shot_head(entry, clip_model, digest, cache_dir, classnames, templates,
                                                device, batch_size, precision)
    encoder, kind = image_encoder(clip_model, entry)
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
    cfg = json.dumps(open_clip_config(entry), sort_keys=True)
    return f"{cfg} open_clip {open_clip.__version__} torch {torch.__version__}"


def _from_classifier(entry: PoolEntry, ckpt: dict, prep: Preprocessing) -> LoadedModel:
    where = f"{entry_label(entry)}: classifier checkpoint {entry.checkpoint}"
    if ckpt.get("format") != CLASSIFIER_FORMAT:
        raise ModelError(f"{where} has format {ckpt.get('format')!r}; expected {CLASSIFIER_FORMAT!r}")
    missing = [k for k in ("model", "encoder", "head", "normalize_features") if k not in ckpt]
    if missing:
        raise ModelError(f"{where} lacks the key(s) {', '.join(missing)}")
    if (ckpt.get("source", "open_clip"), ckpt["model"]) != (entry.source, entry.model):
        raise ModelError(f"{where} holds a {ckpt.get('source', 'open_clip')} {ckpt['model']!r} model, but the entry "
                         f"names {entry.source} {entry.model!r}")
    encoder, kind = image_encoder(build_architecture(entry), entry)
    try:
        encoder.load_state_dict(ckpt["encoder"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = "\n".join(str(exc).splitlines()[:4])
        raise ModelError(f"{where}: its encoder does not fit {entry.model!r}: {detail}") from None
    W, b, d_H = ckpt["head"], ckpt.get("bias"), feature_dim(encoder)
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
    digest = hash_parts("file", entry.model, file_sha256(entry.checkpoint))
    return LoadedModel(entry, encoder, W, b, bool(ckpt["normalize_features"]), kind, prep, digest,
                       f"classifier checkpoint {entry.checkpoint}", f"classifier checkpoint {entry.checkpoint}")


def _from_torchvision_state_dict(entry: PoolEntry, sd: Any, prep: Preprocessing) -> LoadedModel:
    where = f"{entry_label(entry)}: {entry.checkpoint}"
    if not (isinstance(sd, dict) and sd and all(isinstance(v, torch.Tensor) for v in sd.values())):
        raise ModelError(f"{where} is not a state dict of tensors; expected {expected_file(entry)}")
    net = build_architecture(entry)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        detail = "\n".join(str(exc).splitlines()[:4])
        raise ModelError(f"{where} does not fit torchvision {entry.model!r}; expected {expected_file(entry)}: "
                         f"{detail}") from None
    W, b = net.heads.head.weight.detach().clone(), net.heads.head.bias.detach().clone()
    encoder, kind = image_encoder(net, entry)
    digest = hash_parts("file", entry.model, file_sha256(entry.checkpoint))
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

