"""The pool's catalogue: model families, the open_clip / torchvision names an entry may use, its
eval preprocessing, and the traps a pool entry is checked against before anything is built
(QuickGELU, tags, finetuned lineage). Builds no model and reads no weights file."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from helpers.config import PoolEntry
from helpers.demo.archs import TORCHVISION_DEMO_BUILDERS
from helpers.store import Geometry

#: ``format`` field of the checkpoints written by :func:`helpers.models.weights.save_classifier`.
CLASSIFIER_FORMAT = "clip-study-classifier/1"

#: Families whose head is the zero-shot head built from the model's own text encoder.
ZERO_SHOT_FAMILIES = ("robust_zeroshot_clip", "imagenet_captions_clip", "coca_zeroshot")

#: Finetuned from a zero-shot model: logits still read the normalised embedding (Section 2).
FINETUNED_FAMILIES = ("finetuned_clip", "coca_finetuned")

#: Trained from scratch with a biased linear head on the raw embedding.
SUPERVISED_FAMILIES = ("supervised",)

_TORCHVISION_VIT_PREFIX = "vit_"


class ModelError(ValueError):
    """A pool entry or weights file that cannot give a model; the message names both."""


class MissingWeightsError(ModelError, FileNotFoundError):
    """The weights of an entry are not on this machine (and cannot be downloaded)."""


class UnsafeCheckpointError(ModelError):
    """A checkpoint holding Python objects that would run code when unpickled."""


def entry_label(entry: PoolEntry) -> str:
    """How every error message names an entry: id, source, model and where its weights come from."""
    if entry.pretrained:
        weights = f"pretrained tag {entry.pretrained!r}"
    elif entry.checkpoint:
        weights = f"checkpoint {entry.checkpoint}"
    else:
        weights = f"random init, seed {entry.seed}"
    return f"entry {entry.id!r} ({entry.source} model {entry.model!r}, {weights})"


def expected_file(entry: PoolEntry) -> str:
    """What the entry's weights file must be (and which command writes it), for error messages."""
    if entry.family in FINETUNED_FAMILIES:
        return f"a classifier checkpoint ({CLASSIFIER_FORMAT}) written by `clip-study finetune --entry {entry.id}`"
    if entry.family in SUPERVISED_FAMILIES and entry.source == "torchvision":
        return f"torchvision's {entry.model} state dict (e.g. {entry.model}-<hash>.pth from download.pytorch.org)"
    if entry.family in SUPERVISED_FAMILIES:
        return (f"a classifier checkpoint ({CLASSIFIER_FORMAT}) written by "
                f"`clip-study train-supervised --entry {entry.id}`")
    return f"an open_clip state dict for {entry.model} (torch.save(model.state_dict()))"


def open_clip_module(model: str | None = None):
    """The ``open_clip`` module, with the demo stand-in architectures registered when ``model`` is one."""
    import open_clip

    if model is not None and model.startswith("demo-"):
        from helpers.demo.archs import register_demo_models

        register_demo_models()
    return open_clip


def torchvision_builder(entry: PoolEntry) -> Callable:
    """The torchvision ViT builder (or demo stand-in) the entry names; :class:`ModelError` otherwise."""
    if entry.model in TORCHVISION_DEMO_BUILDERS:
        return TORCHVISION_DEMO_BUILDERS[entry.model]
    import torchvision.models

    known = [n for n in torchvision.models.list_models() if n.startswith(_TORCHVISION_VIT_PREFIX)]
    if entry.model not in known:
        raise ModelError(f"{entry_label(entry)}: {entry.model!r} is not a torchvision ViT builder; "
                         f"expected one of {', '.join(known + list(TORCHVISION_DEMO_BUILDERS))}")
    return torchvision.models.get_model_builder(entry.model)


def open_clip_config(entry: PoolEntry) -> dict:
    """open_clip's model config of the entry; :class:`ModelError` with close names when it has none."""
    oc = open_clip_module(entry.model)
    cfg = oc.get_model_config(entry.model)
    if cfg is None:
        close = difflib.get_close_matches(entry.model, oc.list_models(), n=5, cutoff=0.5)
        raise ModelError(f"{entry_label(entry)}: open_clip has no model config {entry.model!r}"
                         + (f"; close names: {', '.join(close)}" if close else ""))
    return cfg


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
        raise ModelError(f"{entry_label(entry)}: torchvision's {chosen} weights are evaluated at {crop} px but "
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
            size = torchvision_builder(entry)(weights=None).image_size
        resize, interpolation = _torchvision_eval_transform(entry, int(size))
        resize_mode = "shortest"
        from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD

        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        oc = open_clip_module(entry.model)
        cfg = open_clip_config(entry)
        size = cfg["vision_cfg"].get("image_size", 224)
        if isinstance(size, (list, tuple)):
            if len(set(size)) != 1:
                raise ModelError(f"{entry_label(entry)}: non-square input {size} is not supported")
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
        raise ModelError(f"{entry_label(entry)}: preprocessing {interpolation}/{resize_mode} is not supported "
                         "(expected bicubic or bilinear resizing of the shortest side)")
    return Preprocessing(int(size), interpolation, resize_mode, mean, std, resize)


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
            oc = open_clip_module(e.model)
            if (e.model, e.pretrained) not in oc.list_pretrained():
                return None  # an unknown tag says nothing of its activation (check_entry names the tag)
            return bool(oc.get_pretrained_cfg(e.model, e.pretrained).get("quick_gelu", False))
        e = by_id.get(e.finetuned_from) if e.finetuned_from else None
    return None


def _config_quick_gelu(entry: PoolEntry) -> bool:
    return bool(open_clip_config(entry).get("quick_gelu", False))


def check_entry(entry: PoolEntry, pool: Iterable[PoolEntry] = ()) -> None:
    """Raise :class:`ModelError` if the entry cannot load correctly; builds nothing.

    Checks that the model name exists, that an open_clip (model, tag) pair is in
    ``open_clip.list_pretrained()``, the QuickGELU rule, that the family has a head source, and,
    given the ``pool``, that a finetuned entry keeps the architecture and normalisation of the
    entry it was finetuned from.
    """
    pool = tuple(pool)
    if entry.source == "torchvision":
        torchvision_builder(entry)
        if entry.pretrained:
            raise ModelError(f"{entry_label(entry)}: torchvision weights are read from files; replace "
                             f"`pretrained:` by `checkpoint: <path to the .pth>`")
        if entry.family not in SUPERVISED_FAMILIES:
            raise ModelError(f"{entry_label(entry)}: family {entry.family!r} needs a text encoder for its head; "
                             "torchvision ViTs serve only the supervised family")
    else:
        oc = open_clip_module(entry.model)
        open_clip_config(entry)
        if entry.pretrained:
            if (entry.model, entry.pretrained) not in oc.list_pretrained():
                pairs = oc.list_pretrained(as_str=True)
                close = difflib.get_close_matches(f"{entry.model}:{entry.pretrained}", pairs, n=6, cutoff=0.6)
                known = oc.list_pretrained_tags_by_model(entry.model)
                tags = difflib.get_close_matches(entry.pretrained, known, n=len(known), cutoff=0.0)  # closest first
                raise ModelError(
                    f"{entry_label(entry)}: ({entry.model!r}, {entry.pretrained!r}) is not in open_clip.list_pretrained(). "
                    f"Tags of {entry.model}, closest first: {', '.join(tags) or 'none'}. "
                    f"Close model:tag pairs: {', '.join(close) or 'none'}")
            if entry.family not in ZERO_SHOT_FAMILIES:
                raise ModelError(f"{entry_label(entry)}: family {entry.family!r} takes its head from a classifier "
                                 "checkpoint; give `checkpoint:` instead of a pretrained tag")
        required = quick_gelu_required(entry, pool)
        if required is not None and required != _config_quick_gelu(entry):
            base = entry.model[: -len("-quickgelu")] if entry.model.endswith("-quickgelu") else entry.model
            fix = f"{base}-quickgelu" if required else base
            raise ModelError(
                f"{entry_label(entry)}: its weights were trained with {'QuickGELU' if required else 'plain GELU'} "
                f"but open_clip model {entry.model!r} runs {'plain GELU' if required else 'QuickGELU'} "
                f"(open_clip 3.x does not switch activations from the tag); use model {fix!r}")
    if entry.finetuned_from and pool:
        parent = next((e for e in pool if e.id == entry.finetuned_from), None)
        if parent is None:
            raise ModelError(f"{entry_label(entry)}: finetuned_from {entry.finetuned_from!r} is not in the pool")
        if (parent.source, parent.model) != (entry.source, entry.model):
            raise ModelError(f"{entry_label(entry)}: finetuned from {parent.id!r} ({parent.source} {parent.model!r}) "
                             "but names another architecture; a finetuned model keeps its parent's")
        mine, theirs = preprocessing(entry), preprocessing(parent)
        if (mine.image_mean, mine.image_std) != (theirs.image_mean, theirs.image_std):
            raise ModelError(f"{entry_label(entry)}: normalises with mean {mine.image_mean} / std {mine.image_std} "
                             f"but its parent {parent.id!r} with {theirs.image_mean} / {theirs.image_std}; "
                             "copy the parent's image_mean / image_std onto this entry")

