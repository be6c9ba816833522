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

One engine: the model under diagnosis is a transient pool entry (a :class:`~helpers.config.PoolEntry`
built from the model name and weights, never written to the profile), and the folder is a dataset
(:class:`helpers.data.folder.ImageFolderDataset`). Extraction, the decode-once uint8 store, the
resumable cache, the progress bars and model loading are those of every chapter
(:func:`helpers.engine.extract.extract_many`, :mod:`helpers.store`, :func:`helpers.models.loading.load`): the
activations land under ``<cache_dir>/stores/folder-...`` and ``<cache_dir>/activations/diagnose-<slug>/``,
so a rerun loads no model and runs no forward pass. The head comes from the classifier checkpoint
or the zero-shot head cache (:func:`helpers.models.head_without_model`), and Eq. (4) is probed by
:func:`helpers.engine.probing.probe_activations`, as for the pool.

A plain encoder (any ``nn.Module`` or callable) goes through the same engine as an in-memory
:class:`~helpers.models.loading.LoadedModel`, keyed by the digest of its parameters (a named callable: by
its name; an unnamed callable is recomputed on every call).

Given the model's six top-1 accuracies (``accuracies``: ImageNet and the five shifts; ``clip-study
diagnose --accuracies``), the report also places its effective robustness (Eq. 5) among the OpenCLIP
zoo's published accuracies (:func:`helpers.chapters.openclip_zoo.placement`). With accuracies and no
model, nothing is extracted: the report holds that placement only (a model evaluated elsewhere).

The paper computes none of the placement: the rank correlations, the pool percentile and the
nearest models are this project's (methods page), and they are only as meaningful as the pool.
"""
from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import yaml

from helpers import plots
from helpers.chapters import openclip_zoo as zc
from helpers.chapters.summary import pool_indicators
from helpers.metrics import (PAPER_INTERCEPT, PAPER_SLOPE, er_coefficients, importance_ratio, kurtosis_interval,
                             rank_correlation, svd_head, testbed_baseline)
from helpers.paper.published import OPENCLIP_COLUMNS
from helpers.plots import DISPLAY_NAMES
from helpers.study import Study, results
from helpers.engine import flops  # light: the FLOP table, torch only when an architecture is measured
from helpers.config import EVAL_DATASETS, FAMILIES, REPO_ROOT, PoolEntry, Profile, load_profile
from helpers.store import DecodeError, atomic_write_json, atomic_write_text, key_of

# helpers.models, helpers.data, the engine's extraction and probing, torch and open_clip are imported
# inside the functions that measure a model: `clip-study diagnose --accuracies` places a model
# evaluated elsewhere without them (about 1.5 s)

#: Bump when the report or summary would change for the same activations.
DIAGNOSE_VERSION = 3

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

#: Prefix of the transient entries' ids: their cache folders are ``activations/diagnose-<slug>/``.
ENTRY_PREFIX = "diagnose-"

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")

#: Files ``--accuracies`` reads (else it is ``key=value`` pairs), and how their numbers are read:
#: ``auto`` takes them as percent when any exceeds 1, else as fractions.
ACCURACY_FILES = (".csv", ".json", ".yaml", ".yml")
ACCURACY_UNITS = ("auto", "fraction", "percent")
_ACCURACY_EXAMPLE = ("imagenet=0.62,imagenet-v2=0.55,imagenet-r=0.69,imagenet-sketch=0.42,objectnet=0.44,"
                     "imagenet-a=0.31")


#: The OpenAI template sets a zero-shot head can average over (``--templates``): 1, the single
#: prompt of the CLIP paper (Radford et al., 2021, Section 3.1.4); 7, the subset CLIP's notebook
#: ``notebooks/Prompt_Engineering_for_ImageNet.ipynb`` (github.com/openai/CLIP) selected, which open_clip
#: ships as ``SIMPLE_IMAGENET_TEMPLATES``; 80 (None here), ``open_clip.OPENAI_IMAGENET_TEMPLATES``,
#: the pool's.
TEMPLATE_SETS: dict[int, tuple[str, ...] | None] = {
    1: ("a photo of a {}.",),
    7: ("itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
        "a {} in a video game.", "art of the {}.", "a photo of the small {}."),
    80: None,
}
#: Seconds of text-tower work (the zero-shot head) diagnose starts on a CPU without ``yes``.
CPU_HEAD_SECONDS = 120.0


@dataclass
class DiagnoseConfig:
    """Everything :func:`diagnose` is asked to do (its arguments, documented there)."""

    images: str | os.PathLike | None = None
    model: str | None = None
    pretrained: str | None = None
    encoder: Callable | None = None
    preprocess: Any = None
    head: Any = None
    name: str | None = None
    classnames: str | os.PathLike | Sequence[str] | None = None
    templates: int | None = None  # 1, 7 or 80 (TEMPLATE_SETS); None: the profile's head (80, a smoke profile's)
    profile: str | os.PathLike | Profile = "demo"
    pool: Iterable[PoolEntry | str] | None = None
    out: str | os.PathLike | None = None
    device: str | None = None
    batch_size: int | None = None
    num_workers: int | None = None
    limit: int | None = None
    skip_unreadable: bool = False
    concepts: bool = True
    seed: int = 0
    write: bool = True
    yes: bool = False  # build a zero-shot head beyond CPU_HEAD_SECONDS on a CPU
    echo: Callable[[str], None] | None = print  # where the cost line goes (None: nowhere)
    accuracies: Any = None  # six top-1 accuracies: a mapping, a CSV/JSON/YAML path or "k=v,..." (read_accuracies)
    accuracy_units: str = "auto"  # auto | fraction | percent


@dataclass(frozen=True)
class HeadPlan:
    """The zero-shot head a diagnosis builds: classes x templates through the text tower, and what
    that costs on the device (:mod:`helpers.engine.flops`: FLOPs per prompt at its assumed rate)."""

    classes: int
    templates: int
    description: str
    seconds: float | None  # None: no per-prompt cost known
    device: str

    @property
    def prompts(self) -> int:
        return self.classes * self.templates

    def line(self) -> str:
        took = "unknown time" if self.seconds is None else f"about {_duration(self.seconds)}"
        return (f"zero-shot head: {self.classes:,} classes x {self.templates} template{'s' * (self.templates > 1)} = "
                f"{self.prompts:,} prompts through the text tower, {took} on {self.device} (unless cached)")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


class DiagnoseError(ValueError):
    """Input :func:`diagnose` cannot use; the message names the folder, file, model or tag and
    what was expected."""


# --------------------------------------------------------------------------------------------
# The six accuracies of a model evaluated elsewhere (``--accuracies``)


@dataclass(frozen=True)
class Accuracies:
    """The six top-1 accuracies given for the model, checked: ``values`` are fractions keyed and
    ordered as :data:`helpers.config.EVAL_DATASETS`; ``units`` is how the numbers given were read
    (``fraction`` or ``percent``) and ``why`` says on what ground; ``source`` the file or ``the
    command line``."""

    values: dict[str, float]
    units: str
    why: str
    source: str


def _accuracy_keys() -> dict[str, str]:
    """Accepted spelling -> dataset key: the study's keys and OpenCLIP's column headers
    (``ImageNet 1k``, ``ImageNet v2``, ...), case-insensitive, ``_`` and spaces read as ``-``."""
    keys = {_norm_key(k): k for k in EVAL_DATASETS}
    keys.update({_norm_key(v): k for k, v in OPENCLIP_COLUMNS.items()})
    return keys


def _norm_key(key) -> str:
    return re.sub(r"[\s_]+", "-", str(key).strip().lower())


def _accuracy_form(spec) -> str:
    """``mapping``, ``pairs`` (``key=value,...`` text) or ``file`` (a path, even one with ``=`` in it)."""
    if isinstance(spec, Mapping):
        return "mapping"
    if isinstance(spec, str) and "=" in spec and not Path(spec).expanduser().is_file():
        return "pairs"
    return "file"


def _accuracy_pairs(spec, form: str, where: str) -> list[tuple[Any, Any]]:
    """(key, value) pairs as given: a mapping, ``key=value,...`` text, or a CSV / JSON / YAML file."""
    if form == "mapping":
        return list(spec.items())
    text = str(spec)
    if form == "pairs":
        pairs = []
        for item in filter(None, (t.strip() for t in text.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise DiagnoseError(f"{where}: {item!r} is not key=value; expected {_ACCURACY_EXAMPLE}")
            pairs.append((key.strip(), value.strip()))
        return pairs
    path = Path(text).expanduser()
    if not path.is_file():
        raise DiagnoseError(f"{where} {path} {'is a folder' if path.is_dir() else 'does not exist'}; expected a CSV, "
                            f"JSON or YAML file of the six accuracies, or key=value pairs such as {_ACCURACY_EXAMPLE}")
    if path.suffix.lower() not in ACCURACY_FILES:
        raise DiagnoseError(f"{where} {path}: expected a {', '.join(ACCURACY_FILES)} file (or key=value pairs), "
                            f"got {path.suffix or 'no extension'}")
    return _accuracy_file(path, f"{where} {path}")


def _accuracy_file(path: Path, where: str) -> list[tuple[Any, Any]]:
    """A CSV with a header row of keys and one row of values, or two columns (key, value; a header
    row is skipped); a JSON or YAML mapping of key to value."""


    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
        if len(rows) == 2 and len(rows[0]) == len(rows[1]) > 2:
            return list(zip(rows[0], rows[1]))
        if rows and all(len(r) == 2 for r in rows):
            if not _is_number(rows[0][1]):
                rows = rows[1:]  # a header row (dataset,accuracy)
            return [(k, v) for k, v in rows]
        raise DiagnoseError(f"{where}: expected a header row of the six dataset keys and one row of values, or two "
                            f"columns (dataset, accuracy); got {len(rows)} row(s) of "
                            f"{sorted({len(r) for r in rows}) or [0]} column(s)")
    try:
        data = json.loads(path.read_text()) if path.suffix.lower() == ".json" else yaml.safe_load(path.read_text())
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise DiagnoseError(f"{where}: not valid {kind} ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise DiagnoseError(f"{where}: expected a mapping of dataset key to accuracy (imagenet: 0.62, ...), got "
                            f"{type(data).__name__}")
    return list(data.items())


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def read_accuracies(spec, units: str = "auto") -> Accuracies:
    """The six top-1 accuracies of a model, checked before anything else runs.

    ``spec``: a mapping, ``"imagenet=0.62,imagenet-v2=0.55,..."``, or the path of a CSV (a header of
    keys and one row, or two columns key,value), JSON or YAML (a mapping) file. Keys are those of
    :data:`helpers.config.EVAL_DATASETS` (ImageNet and the five shifts of Section 3), or OpenCLIP's
    column headers. ``units``: ``fraction`` ([0, 1]), ``percent`` ([0, 100]) or ``auto`` (percent
    when any value exceeds 1). Raises :class:`DiagnoseError` naming the file or key and what was
    expected: a missing dataset, an unknown key (with the closest known one), a key given twice, a
    value that is not a finite number in range."""
    if units not in ACCURACY_UNITS:
        raise DiagnoseError(f"accuracy units {units!r}: expected one of {', '.join(ACCURACY_UNITS)}")
    form = _accuracy_form(spec)
    from_file = form == "file"
    where = "accuracies file" if from_file else "accuracies"
    pairs = _accuracy_pairs(spec, form, where)
    if from_file:
        where = f"accuracies file {Path(str(spec)).expanduser()}"
    known, raw = _accuracy_keys(), {}
    expected = f"expected the six keys {', '.join(EVAL_DATASETS)}"
    for key, value in pairs:
        k = known.get(_norm_key(key))
        if k is None:
            close = difflib.get_close_matches(_norm_key(key), list(EVAL_DATASETS), n=1, cutoff=0.0)
            raise DiagnoseError(f"{where}: unknown key {str(key)!r}; the closest known name is {close[0]!r} "
                                f"({expected})")
        if k in raw:
            raise DiagnoseError(f"{where}: {k} is given twice")
        if isinstance(value, bool) or not _is_number(value):
            raise DiagnoseError(f"{where}: {k} = {value!r} is not a number; expected a top-1 accuracy as a fraction "
                                "in [0, 1] or a percentage in [0, 100]")
        v = float(value)
        if not math.isfinite(v):
            raise DiagnoseError(f"{where}: {k} = {value} is not finite; expected a top-1 accuracy as a fraction in "
                                "[0, 1] or a percentage in [0, 100]")
        raw[k] = v
    missing = [d for d in EVAL_DATASETS if d not in raw]
    if missing:
        raise DiagnoseError(f"{where}: no accuracy for {', '.join(missing)}; {expected} (ImageNet top-1 and the "
                            "five shifts of Section 3)")
    auto = units == "auto"
    if auto:
        above = [d for d in EVAL_DATASETS if raw[d] > 1]
        units = "percent" if above else "fraction"
        why = (f"read as percent because {above[0]} = {raw[above[0]]:g} is above 1" if above else
               "read as fractions because no value is above 1 (--accuracy-units percent reads them as percent)")
    else:
        why = f"read as {'percent' if units == 'percent' else 'fractions'}, as --accuracy-units {units} asks"
    top = 100.0 if units == "percent" else 1.0
    for d in EVAL_DATASETS:
        if not 0 <= raw[d] <= top:
            ranges = "[0, 1] (fractions) and [0, 100] (percent)" if auto else f"[0, {top:g}] ({units}, as asked)"
            raise DiagnoseError(f"{where}: {d} = {raw[d]:g} is outside {ranges}; expected a top-1 accuracy")
    return Accuracies({d: raw[d] / top for d in EVAL_DATASETS}, units, why,
                      str(Path(str(spec)).expanduser()) if from_file else "the command line" if form == "pairs"
                      else "the mapping passed in")


# --------------------------------------------------------------------------------------------
# The model under diagnosis: a transient pool entry


@dataclass
class _Subject:
    """What is diagnosed: a transient pool entry, how the engine gets its model (``model``: an
    in-memory LoadedModel for a plain encoder; None: the engine loads the entry itself, and only
    on a cache miss), and where its head W comes from."""

    label: str
    slug: str
    entry: PoolEntry
    description: dict
    model: Any = None  # helpers.models.loading.LoadedModel of a plain encoder
    head: np.ndarray | None = None  # a plain encoder's head W (None: no head)
    head_kind: str | None = None  # "zero-shot" | "own" | "given" | None
    classnames: list[str] | None = None  # zero-shot head over these (None: ImageNet's)
    templates: int | None = None  # TEMPLATE_SETS key (None: the profile's head)
    load_options: dict = field(default_factory=dict)  # how _head loads the model for its zero-shot head
    force: bool = False  # recompute every time (an unnamed callable has no cache identity)
    notes: list[str] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "model"


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
    """The transient pool entry of an open_clip model (so that :func:`helpers.models.loading.load` applies
    its checks: QuickGELU, normalisation, offline weights), and whether its weights file is a
    classifier checkpoint with its own head."""
    from helpers import models
    from helpers.models.catalogue import open_clip_module
    from helpers.models.weights import read_checkpoint

    oc = open_clip_module(model)
    if oc.get_model_config(model) is None:
        close = difflib.get_close_matches(model, oc.list_models(), n=6, cutoff=0.5)
        raise DiagnoseError(f"open_clip does not know the model {model!r}; close names: "
                            f"{', '.join(close) or 'none'} (all of them: open_clip.list_models())")
    common = dict(id=f"{ENTRY_PREFIX}{_slug(model)}", arch=model, family="robust_zeroshot_clip",
                  model=model, note="transient entry of clip-study diagnose (not in the profile)")
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
            ckpt = read_checkpoint(entry)
        except models.ModelError as exc:
            raise DiagnoseError(str(exc)) from None
        if isinstance(ckpt, dict) and "format" in ckpt:
            # A finetuned classifier: its own head, read on the normalised embedding (Section 2).
            return dataclasses.replace(entry, family="finetuned_clip"), True
        return entry, False
    tags = oc.list_pretrained_tags_by_model(model)
    if pretrained not in tags:
        raise DiagnoseError(f"open_clip knows no pretrained tag {pretrained!r} for model {model!r}; its tags: "
                            f"{', '.join(tags) or 'none'} (a checkpoint is given as a path to an existing file)")
    return PoolEntry(**common, pretraining=pretrained, pretrained=pretrained), False


def _model_error(exc: Exception, entry: PoolEntry) -> DiagnoseError:
    hint = ""
    if entry.pretrained:
        hint = (f" For diagnose, a weights file is given as --pretrained /path/to/file (with --model "
                f"{entry.model}).")
    return DiagnoseError(f"{exc}{hint}")


def _open_clip_subject(model: str, pretrained: str | None, classnames: list[str] | None, profile: Profile,
                       seed: int, templates: int | None = None) -> _Subject:
    from helpers import models

    entry, own_head = _entry_for(model, pretrained, profile, seed)
    if entry.checkpoint:
        # the path tells two files of one name apart; the engine keys the activations on the content
        tag = f"{Path(entry.checkpoint).stem}-{key_of({'path': entry.checkpoint})[:8]}"
        weights = f"checkpoint {entry.checkpoint}"
    elif entry.pretrained:
        tag, weights = entry.pretrained, f"open_clip tag {entry.pretrained!r}"
    else:
        tag, weights = f"random-seed{seed}", f"random initialisation, seed {seed}"
    slug = _slug(f"{model}-{tag}")
    entry = dataclasses.replace(entry, id=ENTRY_PREFIX + slug)
    try:
        models.check_entry(entry)
    except models.ModelError as exc:
        raise _model_error(exc, entry) from None
    notes = []
    if own_head and (classnames is not None or templates is not None):
        unused = " and ".join(w for w, v in (("class names", classnames), ("templates", templates)) if v is not None)
        notes.append(f"{entry.checkpoint} is a classifier checkpoint with its own head: the {unused} were not used")
        classnames, templates = None, None
    head_desc = "the classifier checkpoint's own head" if own_head else \
        _head_plan(entry, classnames, templates, profile, profile.device).description
    return _Subject(label=f"{model} ({weights})", slug=slug, entry=entry,
                    description={"kind": "open_clip", "model": model, "pretrained": entry.pretrained,
                                 "checkpoint": entry.checkpoint, "entry": entry.id,
                                 "seed": None if entry.pretrained or entry.checkpoint else seed, "weights": weights,
                                 "head": head_desc},
                    head_kind="own" if own_head else "zero-shot", classnames=classnames, templates=templates,
                    notes=notes)


def _template_list(templates: int | None):
    """The ``templates`` argument of :func:`helpers.models.loading.load` for a TEMPLATE_SETS key."""
    if templates is None:
        return None
    if templates not in TEMPLATE_SETS:
        raise DiagnoseError(f"templates: expected one of {', '.join(map(str, TEMPLATE_SETS))} (the OpenAI template "
                            f"sets), got {templates!r}")
    chosen = TEMPLATE_SETS[templates]
    if chosen is None:
        import open_clip

        return list(open_clip.OPENAI_IMAGENET_TEMPLATES)
    return list(chosen)


def _head_plan(entry: PoolEntry, classnames: list[str] | None, templates: int | None, P: Profile,
               device: str) -> HeadPlan:
    """The head actually built: explicit class names / templates, else the profile's (a smoke
    profile's reduced head), else ImageNet's 1,000 classes x 80 templates; and its cost."""
    if classnames is None and templates is None and P.zero_shot_classes is not None:
        k, t = flops.head_prompts(P)
        desc = (f"zero-shot head of profile {P.name!r}: {k} ImageNet classes x {t} OpenAI template(s) from the text "
                f"tower, the other {flops.N_CLASSES - k} rows seeded random (a smoke profile's head)")
    else:
        k = len(classnames) if classnames is not None else flops.N_CLASSES
        t = templates if templates is not None else flops.head_prompts(P)[1] if classnames is None else 80
        which = f"{k:,} class names" if classnames is not None else "ImageNet's 1,000 classes"
        desc = f"zero-shot head over {which} x {t} OpenAI template{'s' * (t > 1)}" + (
            " (as the pool's)" if classnames is None and t == 80 else "")
    try:
        per_prompt = flops.arch_cost(entry).text_gflops * 1e9
    except Exception:  # noqa: BLE001 - a model the meta device cannot count: the time is unknown
        per_prompt = None
    rate = flops.flops_per_second(dataclasses.replace(P, device=device))
    return HeadPlan(k, t, desc, None if not per_prompt else k * t * per_prompt / rate, device)


def _check_head_cost(plan: HeadPlan, yes: bool, echo) -> None:
    """Say what the head costs before building it; on a CPU, refuse beyond CPU_HEAD_SECONDS unless
    ``yes``."""
    if echo is not None:
        echo(f"diagnose: {plan.line()}")
    if (not yes and not str(plan.device).startswith("cuda") and plan.seconds is not None
            and plan.seconds > CPU_HEAD_SECONDS):
        raise DiagnoseError(f"the {plan.line()}: more than {_duration(CPU_HEAD_SECONDS)} on a CPU. Pass --yes "
                            "(yes=True) to build it anyway, or a smaller head: --templates 1 or 7, --classnames FILE "
                            "with your classes, or a GPU (--device cuda)")


def _module_digest(module) -> str:
    """Digest of an nn.Module's class and every parameter and buffer (names, shapes, bytes)."""
    import torch

    h = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


_PREPROCESS_EXPECTED = ("torchvision transforms.Compose([Resize(S), CenterCrop(S), ToTensor(), Normalize(mean, std)]) "
                        "or a helpers.models.Preprocessing: the engine decodes each folder once into a uint8 store of "
                        "that geometry and normalises on the device")


def _preprocessing_of(preprocess):
    """The :class:`helpers.models.Preprocessing` a torchvision eval transform amounts to: the uint8
    store holds exactly the pixels its Resize + CenterCrop give (the same torchvision transforms
    open_clip's ``shortest`` mode uses), and Normalize runs on the device."""
    from torchvision import transforms as T

    from helpers.models import Preprocessing

    if isinstance(preprocess, Preprocessing):
        return preprocess
    steps = getattr(preprocess, "transforms", None)
    kinds = [type(t).__name__ for t in steps] if isinstance(steps, list) else None
    if kinds != ["Resize", "CenterCrop", "ToTensor", "Normalize"]:
        raise DiagnoseError(f"preprocess must be {_PREPROCESS_EXPECTED}; got "
                            f"{' -> '.join(kinds) if kinds else type(preprocess).__name__}")
    resize, crop, _, norm = steps
    size = resize.size if isinstance(resize.size, int) else (resize.size[0] if len(resize.size) == 1 else None)
    crop_size = tuple(crop.size) if not isinstance(crop.size, int) else (crop.size, crop.size)
    modes = {T.InterpolationMode.BILINEAR: "bilinear", T.InterpolationMode.BICUBIC: "bicubic"}
    if size is None or crop_size != (size, size) or resize.interpolation not in modes or resize.antialias is False \
            or resize.max_size is not None:
        raise DiagnoseError(f"preprocess {preprocess!r}: Resize must take the shorter side to the CenterCrop size "
                            f"S (bilinear or bicubic, antialiased); expected {_PREPROCESS_EXPECTED}")
    mean, std = (tuple(float(v) for v in np.atleast_1d(np.asarray(x, dtype=float))) for x in (norm.mean, norm.std))
    if len(mean) != 3 or len(std) != 3:
        raise DiagnoseError(f"preprocess {preprocess!r}: Normalize needs 3 means and 3 stds (RGB)")
    return Preprocessing(int(size), modes[resize.interpolation], "shortest", mean, std)


def _as_module(encoder):
    """A plain callable as an nn.Module (the engine moves and evaluates modules)."""
    import torch

    if isinstance(encoder, torch.nn.Module):
        return encoder

    class FunctionEncoder(torch.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)

    return FunctionEncoder(encoder)


def _callable_subject(encoder, preprocess, head, name: str | None, device: str) -> _Subject:
    """A plain torch encoder as an in-memory LoadedModel over a transient entry. One forward of one
    blank image gives d, which checks the head and sizes the placeholder head of a headless encoder
    (the engine computes logits for every model; they are not read here)."""
    import torch

    from helpers.models import LoadedModel

    if preprocess is None:
        raise DiagnoseError(f"encoder= needs preprocess=, the eval transform of its images: {_PREPROCESS_EXPECTED}")
    if not callable(encoder):
        raise DiagnoseError(f"encoder must be a callable or nn.Module mapping a (B, 3, S, S) batch to (B, d) "
                            f"features; got {type(encoder).__name__}")
    prep = _preprocessing_of(preprocess)
    W = None
    if head is not None:
        W = (head.detach().float().cpu().numpy() if isinstance(head, torch.Tensor)
             else np.asarray(head, dtype=np.float32))
        if W.ndim != 2 or min(W.shape) == 0:
            raise DiagnoseError(f"head must be a K x d matrix W (classes x features); got shape {W.shape}")
    is_module = isinstance(encoder, torch.nn.Module)
    kind = type(encoder).__qualname__ if is_module else getattr(encoder, "__qualname__", type(encoder).__name__)
    if is_module:
        digest = key_of({"module": _module_digest(encoder), "name": name})
        cached = f"cached under the digest of its parameters{f' and the name {name!r}' if name else ''}"
    elif name:
        digest = key_of({"callable": name})
        cached = f"cached under the name {name!r} (change it when the weights change)"
    else:
        digest, cached = key_of({"callable": kind, "uncached": True}), "recomputed on every call (pass name= to cache it)"
    module = _as_module(encoder).to(device).eval()
    S = prep.image_size
    with torch.inference_mode():
        probe = module(torch.zeros(1, 3, S, S, device=device))
    if not isinstance(probe, torch.Tensor) or probe.ndim != 2 or probe.shape[0] != 1:
        got = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
        raise DiagnoseError(f"{name or kind}: expected features of shape (B, d) for a batch of B images, got {got} "
                            "for B = 1")
    d = int(probe.shape[1])
    if W is not None and W.shape[1] != d:
        raise DiagnoseError(f"head W is {W.shape[0]} x {W.shape[1]} but the encoder gives d = {d} features; "
                            "expected W of shape K x d")
    slug = _slug(name or f"{kind}-{digest[:8]}")
    entry = PoolEntry(id=ENTRY_PREFIX + slug, arch=kind, family="supervised", pretraining="plain torch encoder",
                      model=kind, note="transient entry of clip-study diagnose (a plain torch encoder)")
    head_t = torch.from_numpy(W) if W is not None else torch.zeros(1, d)
    model = LoadedModel(entry, module, head_t, None, False, "plain", prep, digest, f"plain torch encoder {kind}",
                        "the given head W" if W is not None else "none (placeholder: no head given)")
    notes = [] if is_module or name else ["the encoder is a plain callable without name=: its activations are "
                                          "recomputed on every call"]
    return _Subject(label=f"{name or kind} (plain torch encoder)", slug=slug, entry=entry, model=model, head=W,
                    head_kind="given" if W is not None else None, force=not (is_module or name), notes=notes,
                    description={"kind": "callable", "name": name, "encoder": kind, "weights": cached,
                                 "weights_digest": digest, "entry": entry.id, "preprocess": repr(preprocess),
                                 "head": f"the given head W ({W.shape[0]} x {W.shape[1]})" if W is not None else None})


def _extract(subject: _Subject, dataset_name: str, P: Profile, device: str, dataset=None,
             skip_unreadable: bool = False):
    """The subject's activations on one dataset, through the study's engine."""
    from helpers import models
    from helpers.engine.extract import NonFiniteActivations, extract_many

    given = {subject.entry.id: subject.model} if subject.model is not None else None
    try:
        out = extract_many([subject.entry], dataset_name, P, device=device, models=given, force=subject.force,
                           skip_unreadable=skip_unreadable, dataset=dataset)
    except DecodeError as exc:
        raise DiagnoseError(f"{exc}; pass skip_unreadable=True (--skip-unreadable) to leave unreadable images out "
                            "and count them") from None
    except NonFiniteActivations as exc:
        raise DiagnoseError(f"{subject.label}: {exc}") from None
    except models.ModelError as exc:
        raise _model_error(exc, subject.entry) from None
    return out[subject.entry.id]


def _head(subject: _Subject, P: Profile, acts, device: str) -> np.ndarray | None:
    """W (K x d) of the subject: given, the classifier checkpoint's own, or the zero-shot head. The
    entry's own head comes with its activations when the engine carries it (``acts.head``); else,
    and for a zero-shot head over other class names, it is read without a model build when the
    models helper has it (checkpoint file, head cache), or built by :func:`helpers.models.loading.load` on
    the profile's device (and cached there)."""
    from helpers import models

    if subject.head_kind in (None, "given"):
        return subject.head
    if subject.head_kind != "zero-shot" and getattr(acts, "head", None) is not None:
        return np.asarray(acts.head.W, dtype=np.float32)
    weights_digest = acts.manifest["material"]["weights_digest"]
    try:
        W = None
        if subject.templates in (None, 80) and "reduced_head" not in subject.load_options:  # the head cache's key
            W = models.head_without_model(subject.entry, weights_digest, P.cache_dir, classnames=subject.classnames)
        if W is None:
            W = models.load(subject.entry, device, P.cache_dir, P.paths.get("hf_cache"), classnames=subject.classnames,
                            templates=_template_list(subject.templates), **subject.load_options).head.detach()
    except models.ModelError as exc:
        raise _model_error(exc, subject.entry) from None
    return W.float().cpu().numpy()


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
    the pool and its nearest pool models; ``zoo``: its ER among the OpenCLIP zoo, when accuracies
    were given. A diagnosis from accuracies alone measured nothing: ``kurtosis`` and ``images`` are
    None. ``summary`` is what ``summary.json`` holds."""

    label: str
    slug: str
    images: Path | None
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
    zoo: dict | None = None  # the placement among the OpenCLIP zoo (given accuracies): _zoo_placement
    zoo_tables: Any = None  # (zoo, testbed) frames the zoo figure draws; not in the summary

    @property
    def report_path(self) -> Path | None:
        return None if self.out is None else self.out / "report.md"

    @property
    def summary_path(self) -> Path | None:
        return None if self.out is None else self.out / "summary.json"

    @property
    def measured(self) -> bool:
        """Whether indicators were measured (False: placed in the zoo from accuracies alone)."""
        return self.kurtosis is not None

    def indicator_rows(self) -> list[dict]:
        """Per indicator: label, this model's value and interval, the pool's range, its percentile."""
        if not self.measured:
            return []
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
        return pd.DataFrame(self.indicator_rows())

    def nearest(self, indicator: str = "kurtosis"):
        """The pool models whose ``indicator`` is closest to this model's, with their ER (%)."""
        return pd.DataFrame(self.placement.get(indicator, {}).get("nearest", []))

    def zoo_rows(self) -> list[dict]:
        """The nearest OpenCLIP zoo models by ER (points of %), for a table; [] without accuracies."""
        return [{"model": n["name"], "pretrained": n["pretrained"], "training data": n["family"],
                 "ER": 100 * n["er"]} for n in (self.zoo or {}).get("nearest", [])]

    def zoo_line(self) -> str:
        """One sentence: ER, %acc, rank and percentile among the zoo, and under which coefficients."""
        z = self.zoo
        if z is None:
            return "no accuracies given: not placed among the OpenCLIP zoo"
        return (f"ER {_fmt(100 * z['er'], 1)} points, %acc {_fmt(100 * z['acc_ratio'], 1)} %; "
                f"coefficients: {z['coefficients']['label']}; "
                f"rank {z['rank']} of {z['of']} OpenCLIP models by ER (percentile {z['percentile']:.0f}); "
                f"{z['zoo_above']} zoo and {z['testbed_above']} of {z['testbed']} ImageNet-trained testbed models "
                "have a higher ER")

    def row(self) -> dict:
        """A flat results-table row (``Study.record``)."""
        k = self.kurtosis
        row = {"model": self.label, "images": None if self.images is None else str(self.images),
               "n_images": self.n_images, "n_skipped": len(self.skipped),
               "kurtosis": k.estimate if k else None, "ci_low": k.low if k else None, "ci_high": k.high if k else None,
               "importance_ratio": self.importance_ratio, "unique_concepts": self.unique_concepts,
               "kurtosis_percentile": self.placement.get("kurtosis", {}).get("percentile"),
               "weights_digest": self.description.get("weights_digest")}
        if self.zoo is not None:
            row.update(zoo_er=self.zoo["er"], zoo_rank=self.zoo["rank"], zoo_models=self.zoo["of"],
                       zoo_percentile=self.zoo["percentile"])
        return row

    @property
    def summary(self) -> dict:
        """Every number of the report. ``mode``: ``indicators`` (a model was run on images) or
        ``accuracies only`` (no images, kurtosis, indicators or pool keys); ``zoo`` when accuracies
        were given."""
        head = {"version": DIAGNOSE_VERSION, "mode": "indicators" if self.measured else "accuracies only",
                "model": {"label": self.label, **self.description},
                "profile": {"name": self.profile.name, "path": str(self.profile.path), "is_demo": self.profile.is_demo}}
        tail = {**({"zoo": self.zoo} if self.zoo is not None else {}), "warnings": self.warnings, "notes": self.notes,
                "files": {"report": "report.md", **{name: p.name for name, p in self.figures.items()}}}
        if not self.measured:
            return _json_safe({**head, **tail})
        k = self.kurtosis
        corr = {} if self.correlations is None or self.correlations.empty else {
            r["indicator"]: {key: r[key] for key in ("models", "spearman", "low", "high", "note") if key in r}
            for r in self.correlations.to_dict("records")}
        return _json_safe({
            **head,
            "images": {"folder": str(self.images), "n_images": self.n_images, "n_skipped": len(self.skipped),
                       "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
                       "n_constant": int(np.isnan(self.per_image_kurtosis).sum())},
            "kurtosis": {"estimate": k.estimate, "low": k.low, "high": k.high, "level": k.level, "n_boot": k.n_boot,
                         "median_per_image": float(np.nanmedian(self.per_image_kurtosis)),
                         "gaussian_reference": 3.0},
            "importance_ratio": self.importance_ratio,
            "unique_concepts": self.unique_concepts,
            "concepts": self.concepts_info,
            "pool": {"models": [] if self.pool.empty else self.pool.to_dict("records"),
                     "correlations_with_er": corr, "placement": self.placement},
            **tail,
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
    entries = list(profile.pool if pool is None else pool)
    df = pool_indicators(Study(profile, entries, "diagnose"))
    if df.empty:
        return df
    return df[df["entry"].isin([e.id for e in entries])].reset_index(drop=True)


def _missing_sections(profile: Profile) -> list[str]:
    return [s for s in POOL_SECTIONS if results.load(profile, s).empty]


def _run_command(profile: Profile, sections: Sequence[str]) -> str:
    name = profile.name if profile.path.parent.name == "configs" else str(profile.path)
    return f"clip-study run --profile {name} " + " ".join(f"--section {s}" for s in sections)


def _placement(df, new: dict, n_boot: int, seed: int) -> tuple[Any, dict, list[str]]:
    """Rank correlation of each indicator with ER across the pool, and the new model's percentile
    and nearest pool models per indicator."""


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


#: The heading of the report's zoo section.
ZOO_HEADING = "Effective robustness among the OpenCLIP zoo"


def _zoo_section(d: Diagnosis, figures: bool) -> list[str]:
    """The report's placement among the OpenCLIP zoo: the accuracies as read, ER and %acc under the
    profile's coefficients, rank and percentile, the counts above it, the nearest zoo models and
    the figure."""
    z = d.zoo
    acc = z["accuracies"]
    parts = [f"## {ZOO_HEADING}", "",
             f"The six top-1 accuracies from {acc['source']}, {acc['why']}. In %:", "",
             _table([DISPLAY_NAMES.get(k, k) for k in EVAL_DATASETS] + ["mean of 5 shifts"],
                    [[_fmt(100 * acc["values"][k], 1) for k in EVAL_DATASETS] + [_fmt(100 * z["shifts_mean"], 1)]]), "",
             f"- **Effective robustness, Eq. (5): {_fmt(100 * z['er'], 1)} points**; %acc "
             f"{_fmt(100 * z['acc_ratio'], 1)} %. Coefficients: {z['coefficients']['label']}.",
             f"- **Rank {z['rank']} of {z['of']}** OpenCLIP models by ER (1: the most robust); percentile "
             f"{z['percentile']:.1f} (the share of zoo models with a lower ER).",
             f"- Above it (higher ER): {z['zoo_above']} of {z['of']} zoo models and {z['testbed_above']} of "
             f"{z['testbed']} ImageNet testbed models trained on ImageNet alone.", "",
             "The zoo models nearest in ER:", "",
             _table(["model", "pretrained tag", "training data", "ER (points)"],
                    [[n["name"], f"`{n['pretrained']}`", n["family"], _fmt(100 * n["er"], 1)] for n in z["nearest"]]),
             ""]
    if figures and "zoo_placement" in d.figures:
        parts += [f"![{d.label} among the OpenCLIP zoo]({d.figures['zoo_placement'].name})", ""]
    parts += [z["sources"], ""]
    return parts


def _accuracies_report(d: Diagnosis, figures: bool) -> str:
    """The report of a diagnosis from accuracies alone: the zoo placement and the notes."""
    parts = [f"# Diagnosis: {d.label}", "",
             "Effective robustness (Eq. 5 of Crabbé et al., *Interpreting CLIP: Insights on the Robustness to "
             "ImageNet Distribution Shifts*, TMLR) of a model evaluated elsewhere, from its six accuracies. No model "
             "was run: the indicators of the paper (kurtosis, importance ratio, unique concepts) need `--model` and "
             "`--images`.", ""]
    if d.warnings:
        parts += ["**Warnings**", ""] + [f"- {w}" for w in d.warnings] + [""]
    parts += _zoo_section(d, figures)
    if d.notes:
        parts += ["**Notes**", ""] + [f"- {n}" for n in d.notes] + [""]
    return "\n".join(parts)


def _report(d: Diagnosis, figures: bool) -> str:
    if not d.measured:
        return _accuracies_report(d, figures)
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
    if d.zoo is not None:
        parts += _zoo_section(d, figures)
    parts += ["## How to read this", "",
              "The paper found outlier features (kurtosis ≫ 3) only in models robust to ImageNet's natural "
              "distribution shifts, and kurtosis near 3 in its non-robust models (Section 4, take-away 2). It is an "
              "indicator, not a measurement: this report does not estimate the model's effective robustness. "
              "Privileged directions (a large importance ratio) also appear in non-robust ImageNet-Captions models, "
              "and many unique concepts do not imply robustness either (Sections 4 and 5): the paper does not use "
              "them as robustness indicators. The pool's values were measured on the profile's ImageNet test "
              "images; a comparison assumes these images come from a similar distribution."
              + (" The effective robustness among the OpenCLIP zoo is computed from the accuracies given, not "
                 "from these indicators." if d.zoo is not None else ""), ""]
    if d.notes:
        parts += ["**Notes**", ""] + [f"- {n}" for n in d.notes] + [""]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# Diagnose


def diagnose(config: DiagnoseConfig | str | os.PathLike | None = None, model: str | None = None,
             pretrained: str | None = None, **options: Any) -> Diagnosis:
    """The paper's robustness indicators for one model on a folder of in-distribution images.

    ``config``: a :class:`DiagnoseConfig`, or its fields as arguments (``diagnose(images, model=...,
    pretrained=..., **options)``). The model is either an open_clip ``model`` name with
    ``pretrained`` (an open_clip tag, or the path of a weights file: an open_clip state dict or a
    classifier checkpoint of this project; None: a random initialisation seeded by ``seed``, on
    profiles with ``allow_random_init`` only), or a plain ``encoder`` (a callable or ``nn.Module``
    mapping a normalised float batch (B, 3, S, S) to (B, d) features) with its ``preprocess`` (a
    torchvision ``Compose([Resize(S), CenterCrop(S), ToTensor(), Normalize(mean, std)])`` or a
    :class:`helpers.models.Preprocessing`) and optionally a ``head`` W (K x d) and a cache
    ``name``. A module is moved to ``device`` and put in eval mode; its activations are cached
    under a digest of its parameters (and ``name``), a plain function's only under ``name``.

    ``images``: a folder, searched recursively (default: the profile's ImageNet test folder);
    ``limit``: use a fixed-seed random subset of that many images; ``skip_unreadable``: leave
    undecodable images out and count them instead of stopping at the first. ``classnames``: a
    text file (one name per line) or a list: the zero-shot head's classes (default: ImageNet's
    1,000 open_clip names); ``templates``: 1, 7 or 80 OpenAI templates (:data:`TEMPLATE_SETS`;
    default: the profile's head, 80 for the pool's). Before the head is built its size and time on
    the device are printed (``echo``); on a CPU a head beyond :data:`CPU_HEAD_SECONDS` is refused
    unless ``yes``. ``pool``: the pool entries (or ids) to compare with (default: all of the
    profile's). ``concepts=False`` skips the Broden probing. ``out``: where report.md,
    summary.json and the figures go (default ``<results_dir>/diagnose/<slug>``); ``write=False``
    writes nothing there. ``device``, ``batch_size``, ``num_workers`` default to the profile's.

    ``accuracies``: the model's six top-1 accuracies (:func:`read_accuracies`: a mapping, a CSV /
    JSON / YAML file or ``"imagenet=0.62,..."``; ``accuracy_units`` auto, fraction or percent),
    checked before anything else: the report then places its ER (Eq. 5, the profile's
    coefficients) among the OpenCLIP zoo. Without ``model`` and ``encoder`` that placement is all
    it does (``name`` labels the model): no model is built and no image read.

    Returns a :class:`Diagnosis`. Bad input raises :class:`DiagnoseError` naming it.
    """
    cfg = config if isinstance(config, DiagnoseConfig) else DiagnoseConfig(images=config, model=model,
                                                                            pretrained=pretrained, **options)
    # the accuracies are checked first: a typo stops here, before any model or image is touched
    accs = read_accuracies(cfg.accuracies, cfg.accuracy_units) if cfg.accuracies is not None else None
    P, device = _profile_for(cfg)
    if accs is not None and cfg.model is None and cfg.encoder is None:
        return _accuracies_only(cfg, P, accs)
    subject = _subject_for(cfg, P, device)
    ds = _images_for(cfg, P)
    P = _engine_profile(P) if subject.head_kind == "zero-shot" else P
    warnings_, notes = [], list(subject.notes)
    if P.is_demo:
        warnings_.append(f"profile {P.name!r} is the demo: its pool models are untrained, so where this model falls "
                         "among them says nothing about robustness; run the paper profile for a meaningful pool")
    acts = _extract(subject, _folder_name(), P, device, dataset=ds, skip_unreadable=cfg.skip_unreadable)
    h = np.asarray(acts.h, dtype=np.float32)
    skipped = [(_relative(msg, ds), msg) for msg in acts.manifest.get("skipped", [])]
    if skipped:
        from helpers.data.base import preview

        notes.append(f"{len(skipped)} unreadable image(s) skipped: {preview([s[0] for s in skipped])}")
    subject.description.setdefault("weights_digest", acts.manifest["material"]["weights_digest"])
    per_image, kci = _kurtosis(h, subject.label, P, warnings_, notes)
    W, ir, uc, concepts_info = _head_indicators(cfg, subject, P, acts, h, device, warnings_, notes)
    df, correlations, placement = _place(cfg, P, ds.root, {"kurtosis": kci.estimate, "importance_ratio": ir,
                                                           "unique_concepts": uc}, notes)
    zoo, tables = _zoo_placement(accs, P) if accs is not None else (None, None)
    d = Diagnosis(label=subject.label, slug=subject.slug, images=ds.root, profile=P, description=subject.description,
                  n_images=int(np.isfinite(per_image).sum()), skipped=skipped, per_image_kurtosis=per_image, kurtosis=kci,
                  importance_ratio=ir, unique_concepts=uc, concepts_info=concepts_info,
                  pool=df if not df.empty else pd.DataFrame(), correlations=correlations, placement=placement,
                  warnings=warnings_, notes=notes, zoo=zoo, zoo_tables=tables)
    _write(d, cfg, P)
    return d


def _coefficients(P: Profile) -> dict:
    """Eq. (5)'s beta_1, beta_0 as the profile chooses (:func:`helpers.metrics.er_coefficients`,
    as every chapter), and a label saying which."""
    slope, intercept = er_coefficients(P)
    baseline = P.metrics.get("baseline", "paper")
    if baseline == "refit":
        fit = testbed_baseline()
        label = (f"the ImageNet testbed refit (metrics.baseline: refit): beta_1 = {slope:.3f}, beta_0 = "
                 f"{intercept:.3f}, r {fit.r:.3f} on {fit.n} models trained on ImageNet alone")
    elif (slope, intercept) == (PAPER_SLOPE, PAPER_INTERCEPT):
        label = f"the paper's, Appendix A (metrics.baseline: paper): beta_1 = {slope:.2f}, beta_0 = {intercept:.2f}"
    else:
        label = f"the profile's metrics.er_slope and er_intercept: beta_1 = {slope:g}, beta_0 = {intercept:g}"
    return {"baseline": baseline, "slope": float(slope), "intercept": float(intercept), "label": label}


def _zoo_placement(accs: Accuracies, P: Profile):
    """The model's ER among the OpenCLIP zoo (:func:`helpers.chapters.openclip_zoo.placement`)
    under the profile's coefficients, and the (zoo, testbed) frames its figure draws."""
    coef = _coefficients(P)
    zoo, testbed = zc.zoo_frame(coef["slope"], coef["intercept"]), zc.testbed_frame(coef["slope"], coef["intercept"])
    place = zc.placement(accs.values, zoo, testbed, coef["slope"], coef["intercept"])
    place["accuracies"] = {"values": place["accuracies"], "units": accs.units, "why": accs.why, "source": accs.source}
    place["coefficients"] = coef
    place["sources"] = (
        f"The zoo's numbers are real published numbers: OpenCLIP's zero-shot results ({len(zoo)} (model, pretrained "
        "tag) pairs with all six accuracies, `docs/openclip_results.csv`, one row per model where QuickGELU weights "
        f"are listed twice) and the ImageNet testbed's {len(testbed)} models trained on ImageNet alone "
        "(`robustness_top1s.csv`), vendored under `helpers/reference/`. OpenCLIP's ObjectNet column is "
        "CLIP_benchmark's variant (a 113-class head, no border crop), not the testbed's protocol this study "
        "measures: a model scored with the testbed's protocol is compared on a slightly different ObjectNet.")
    return place, (zoo, testbed)


def _accuracies_only(cfg: DiagnoseConfig, P: Profile, accs: Accuracies) -> Diagnosis:
    """A model evaluated elsewhere: its placement among the zoo from the six accuracies alone;
    nothing is loaded, extracted or decoded."""
    given = {"images": cfg.images, "pretrained": cfg.pretrained, "classnames": cfg.classnames,
             "templates": cfg.templates, "head": cfg.head, "preprocess": cfg.preprocess, "limit": cfg.limit}
    extra = [k for k, v in given.items() if v is not None]
    if extra:
        raise DiagnoseError(f"{', '.join(extra)}: only with a model to run (model= / --model, or encoder=); without "
                            "one, diagnose places the accuracies given among the OpenCLIP zoo and measures nothing")
    label = cfg.name or (Path(accs.source).stem if accs.source not in ("the command line", "the mapping passed in")
                         else "new model")
    zoo, tables = _zoo_placement(accs, P)
    d = Diagnosis(label=label, slug=f"accuracies-{_slug(label)}", images=None, profile=P,
                  description={"kind": "accuracies", "name": label, "accuracies_from": accs.source},
                  n_images=0, skipped=[], per_image_kurtosis=np.empty(0), kurtosis=None, importance_ratio=None,
                  unique_concepts=None, concepts_info={}, pool=pd.DataFrame(), correlations=None, placement={},
                  warnings=[], notes=[], zoo=zoo, zoo_tables=tables)
    _write(d, cfg, P)
    return d


def _write(d: Diagnosis, cfg: DiagnoseConfig, P: Profile) -> None:
    """report.md, summary.json and the figures, under ``out`` (default ``<results_dir>/diagnose/<slug>``)."""
    if not cfg.write:
        return
    d.out = Path(cfg.out).expanduser().resolve() if cfg.out is not None else P.results_dir / "diagnose" / d.slug
    d.figures = plots.diagnose_figures(d, d.out)
    atomic_write_text(d.report_path, d.markdown(figures=True))
    atomic_write_json(d.summary_path, d.summary)


def _folder_name() -> str:
    from helpers.data.folder import NAME

    return NAME


def _profile_for(cfg: DiagnoseConfig) -> tuple[Profile, str]:
    """The profile, a copy carrying the batch size and workers asked for (the engine reads them
    from the profile), and the device."""
    P = cfg.profile if isinstance(cfg.profile, Profile) else load_profile(cfg.profile)
    P = dataclasses.replace(P, batch_size=cfg.batch_size or P.batch_size,
                            num_workers=P.num_workers if cfg.num_workers is None else cfg.num_workers)
    return P, cfg.device or P.device


def _subject_for(cfg: DiagnoseConfig, P: Profile, device: str) -> _Subject:
    """What is diagnosed, its arguments checked; an open_clip model with a zero-shot head is loaded
    here with the head asked for (its size and time said first, refused on a CPU beyond the
    bound), so that the engine builds no other head."""
    if (cfg.encoder is None) == (cfg.model is None):
        raise DiagnoseError("give either model= (an open_clip model name, with pretrained=) or encoder= (a plain "
                            "torch image encoder, with preprocess=), not both or neither")
    if cfg.encoder is not None:
        if cfg.classnames is not None or cfg.templates is not None:
            raise DiagnoseError("classnames and templates build a zero-shot head from an open_clip text tower; a plain "
                                "encoder takes its head as head= (a K x d matrix)")
        if cfg.pretrained is not None:
            raise DiagnoseError("pretrained= applies to open_clip models; a plain encoder comes with its weights")
        return _callable_subject(cfg.encoder, cfg.preprocess, cfg.head, cfg.name, device)
    if cfg.head is not None or cfg.preprocess is not None:
        raise DiagnoseError("head= and preprocess= apply to a plain encoder; an open_clip model brings its own")
    _template_list(cfg.templates)  # a bad choice fails before anything is built
    subject = _open_clip_subject(cfg.model, cfg.pretrained, _read_classnames(cfg.classnames), P, cfg.seed,
                                 cfg.templates)
    if subject.head_kind == "zero-shot":
        from helpers.models import loading as models

        plan = _head_plan(subject.entry, subject.classnames, subject.templates, P, device)
        subject.description["head"] = plan.description
        _check_head_cost(plan, cfg.yes, cfg.echo)
        subject.load_options = models.profile_load_options(P)
        if subject.classnames is not None or subject.templates is not None:
            subject.load_options.pop("reduced_head", None)
    return subject


def _engine_profile(P: Profile) -> Profile:
    """The profile the engine extracts with. The engine loads a transient entry with the profile's
    zero-shot head, which diagnose never reads (:func:`_head` builds W from the classes and
    templates asked for): it gets the cheapest one, one prompt through the text tower."""
    return dataclasses.replace(P, zero_shot_templates=1, zero_shot_classes=(0,))


def _images_for(cfg: DiagnoseConfig, P: Profile):
    from helpers.data import DatasetLayoutError, open_image_folder

    try:
        return open_image_folder(cfg.images if cfg.images is not None else P.dataset_root("imagenet"), limit=cfg.limit)
    except DatasetLayoutError as exc:
        raise DiagnoseError(str(exc)) from None


def _head_indicators(cfg: DiagnoseConfig, subject: _Subject, P: Profile, acts, h, device, warnings_, notes):
    """W, the importance ratio of Eq. (3) and the unique concepts of Eq. (4), where there is a head."""
    W = _head(subject, P, acts, device)
    ir = importance_ratio(W, h, svd=svd_head(W)) if W is not None else None
    if W is None:
        notes.append("no linear head: importance ratio (Eq. 3) and unique concepts (Eq. 4) not computed"
                     + (" (pass head= W)" if cfg.encoder is not None else ""))
    elif subject.head_kind == "given" or subject.classnames is not None or subject.templates is not None:
        notes.append(f"the importance ratio depends on the head ({subject.description.get('head', 'given')}): the "
                     "pool's used its own ImageNet heads (1,000 classes), so compare it with care")
    uc, concepts_info = None, {}
    if W is not None and cfg.concepts:
        uc, concepts_info = _concepts(subject, P, W, device, warnings_, notes)
    elif W is not None:
        notes.append("unique concepts (Eq. 4) not computed (concepts=False)")
    return W, ir, uc, concepts_info


def _place(cfg: DiagnoseConfig, P: Profile, folder: Path, new: dict, notes: list[str]):
    """The pool's indicators and ER, and where the new model falls among them."""
    pool_entries = None if cfg.pool is None else [P.entry(e) if isinstance(e, str) else e for e in cfg.pool]
    df = pool_table(P, pool_entries)
    missing = _missing_sections(P)
    if df.empty:
        notes.append(f"profile {P.name!r} has no results yet under {P.results_dir / 'tables'}: nothing to place this "
                     f"model against. Produce them with `{_run_command(P, list(POOL_SECTIONS))}`")
    elif missing:
        notes.append(f"profile {P.name!r} has no results for {', '.join(missing)}: produce them with "
                     f"`{_run_command(P, missing)}`")
    correlations, placement, pnotes = (None, {}, []) if df.empty else _placement(
        df, new, P.metrics["bootstrap"], P.metrics["seed"])
    notes += pnotes
    default_images = P.datasets.get("imagenet")
    if not df.empty and (default_images is None or Path(default_images).resolve() != folder):
        notes.append(f"the pool's kurtosis was measured on {default_images}; these images come from {folder}")
    return df, correlations, placement


def _kurtosis(h: np.ndarray, label: str, P: Profile, warnings_: list[str], notes: list[str]):
    """Eq. (1) per image and the mean's percentile bootstrap interval over images. Constant vectors
    have no kurtosis (NaN) and are left out of the mean."""
    if h.shape[1] < 2:
        raise DiagnoseError(f"{label}: features have d = {h.shape[1]}; kurtosis needs at least 2 components")
    try:
        per_image, kci = kurtosis_interval(h, n_boot=P.metrics["bootstrap"], seed=P.metrics["seed"])
    except ValueError:
        raise DiagnoseError(f"{label}: every activation vector is constant on these images; kurtosis is undefined") from None
    valid = per_image[~np.isnan(per_image)]
    if valid.size < per_image.size:
        notes.append(f"{per_image.size - valid.size} constant activation vector(s) have no kurtosis and were left "
                     "out of the mean")
    if valid.size < MIN_STABLE_IMAGES:
        warnings_.append(f"only {valid.size} image(s): too few for a stable kurtosis (use at least "
                         f"{MIN_STABLE_IMAGES}, better hundreds); the interval "
                         f"{'is given but wide' if valid.size >= 2 else 'needs at least 2 images'}")
    return per_image, kci


def _concepts(subject: _Subject, P: Profile, W: np.ndarray, device: str, warnings_: list[str],
              notes: list[str]) -> tuple[int | None, dict]:
    """Eq. (4): unique Broden concepts of the right singular vectors of W, probed as for the pool
    (Section 5; :func:`helpers.engine.probing.probe_activations`: same balanced sets, AP
    threshold and sign rule) on the subject's Broden activations from the engine."""
    from helpers.engine.probing import broden_sets, probe_activations, unique_concepts_at
    from helpers.data import DatasetLayoutError

    broden = P.datasets.get("broden")
    if broden is None or not Path(broden).is_dir():
        notes.append(f"Broden folder {broden or '(not named in the profile)'} not found: unique concepts (Eq. 4) "
                     "skipped; Section 5 needs broden1_224 (book/reproducing.md)")
        return None, {}
    try:
        sets = broden_sets(P)
        acts = _extract(subject, "broden", P, device)
    except DatasetLayoutError as exc:
        warnings_.append(f"unique concepts skipped: {exc}")
        return None, {}
    sign, threshold = P.metrics["concept_sign"], P.metrics["concept_threshold"]
    ap = probe_activations(acts, W, sets, sign)
    return unique_concepts_at(ap, threshold), {"threshold": threshold, "sign": sign,
                                                 "probed_concepts": int(sets.probed.size),
                                                 "directions": int(ap.shape[0]), "broden_images": int(acts.h.shape[0])}


def _relative(message: str, ds) -> str:
    """The folder-relative path of the image an engine 'skipped' message (``<path>: cannot ...``) names."""
    path = Path(message.split(": cannot ", 1)[0])
    return path.relative_to(ds.root).as_posix() if path.is_relative_to(ds.root) else str(path)


# --------------------------------------------------------------------------------------------
# Command line (``clip-study diagnose``)


def command_line(images, model: str, pretrained: str | None = None, profile: str | os.PathLike = "demo",
                 **options: Any) -> str:
    """The ``clip-study diagnose`` command equivalent to a :func:`diagnose` call (options given as
    their argument names: ``classnames``, ``out``, ``device``, ``batch_size``, ``limit``, ...;
    None and False are left out, True becomes a flag)."""
    args = ["clip-study", "diagnose", "--profile", str(profile), "--model", model]
    if pretrained is not None:
        args += ["--pretrained", str(pretrained)]
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
    p.add_argument("--model", help="open_clip model name (e.g. ViT-B-32-quickgelu, demo-ViT-B-32); needs --images. "
                   "Omitted with --accuracies: only the placement among the OpenCLIP zoo, nothing is run")
    p.add_argument("--pretrained", help="open_clip pretrained tag (e.g. openai) or the path of a weights file; "
                   "omitted: random initialisation (demo profile only)")
    p.add_argument("--images", help="folder of in-distribution images, searched recursively (with --model)")
    p.add_argument("--accuracies", help="the model's six top-1 accuracies (imagenet and its five shifts): a CSV, JSON "
                   f"or YAML file, or {_ACCURACY_EXAMPLE}; fractions or percent. The report places its effective "
                   "robustness among the OpenCLIP zoo")
    p.add_argument("--accuracy-units", choices=ACCURACY_UNITS, default="auto", help="how --accuracies' numbers are "
                   "read: auto (percent when any value is above 1), fraction or percent")
    p.add_argument("--name", help="the model's name in the report of --accuracies without --model (default: the "
                   "file's name)")
    p.add_argument("--classnames", help="text file of class names, one per line: the zero-shot head's classes "
                   "(default: ImageNet's 1,000)")
    p.add_argument("--templates", type=int, choices=sorted(TEMPLATE_SETS), help="OpenAI templates per class: 1 ('a "
                   "photo of a {}.'), 7 (CLIP's notebook subset) or 80 (the pool's; default: the profile's head)")
    p.add_argument("--yes", action="store_true", help=f"build a zero-shot head that takes more than "
                   f"{CPU_HEAD_SECONDS:.0f} s on a CPU (otherwise refused, naming its size)")
    p.add_argument("--profile", default="demo", help="profile whose pool and results tables to compare with")
    p.add_argument("--out", help="output folder (default: <results_dir>/diagnose/<model-tag>)")
    p.add_argument("--device", help="cpu | cuda | cuda:N (default: the profile's)")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the profile's)")
    p.add_argument("--limit", type=int, help="use a fixed-seed random subset of this many images")
    p.add_argument("--skip-unreadable", action="store_true", help="leave unreadable images out and count them")
    p.add_argument("--no-concepts", action="store_true", help="skip the Broden concept probing (Eq. 4)")
    p.add_argument("--seed", type=int, default=0, help="random-initialisation seed (without --pretrained)")


def run_cli(args) -> int:
    if args.model is None and args.accuracies is None:
        raise DiagnoseError("give --model with --images (the paper's indicators), --accuracies (the placement among "
                            "the OpenCLIP zoo), or both")
    if args.model is not None and args.images is None:
        raise DiagnoseError(f"--model {args.model} needs --images, the folder of in-distribution images to measure on")
    if args.name is not None and args.model is not None:
        raise DiagnoseError("--name labels a model given by --accuracies alone; with --model the report is labelled "
                            "by the model and its weights")
    d = diagnose(DiagnoseConfig(args.images, model=args.model, pretrained=args.pretrained, classnames=args.classnames,
                                templates=args.templates, profile=args.profile, out=args.out, device=args.device,
                                batch_size=args.batch_size, limit=args.limit, skip_unreadable=args.skip_unreadable,
                                concepts=not args.no_concepts, seed=args.seed, yes=args.yes,
                                accuracies=args.accuracies, accuracy_units=args.accuracy_units, name=args.name))
    if d.measured:
        print(f"{d.label}: {d.n_images} images from {d.images}; head: {d.description.get('head', 'none')}")
        print(d.indicators().to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    if d.zoo is not None:
        print(f"{d.label} among the OpenCLIP zoo: accuracies {d.zoo['accuracies']['why']}")
        print(f"  {d.zoo_line()}")
    for w in d.warnings:
        print(f"warning: {w}")
    for n in d.notes:
        print(f"note: {n}")
    print(f"report: {d.report_path}\nsummary: {d.summary_path}")
    return 0
