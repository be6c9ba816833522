"""Study configuration: one commented YAML per profile (``configs/demo.yml``, ``configs/paper.yml``).

A profile holds the global parameters (device, batch size, workers, cache/results folders, dataset
roots, sample limits, the paper's constants) and the model pool. :func:`load_profile` validates every value (types, ranges,
known keys) and raises one :class:`ConfigError` listing every problem, each naming the file and the
key, e.g. ``configs/paper.yml: metrics.bootstrap: expected an integer >= 1, got 'many'``; it imports
neither torch nor open_clip, so a profile loads in a fraction of a second. Whether the installed
open_clip and torchvision know each model name and (model, tag) pair, and the QuickGELU rule, are
checked by ``clip-study plan`` and before ``clip-study run`` starts a job
(:mod:`helpers.workflow.preflight`), and again when a model is built. Whether the checkpoint files exist is a fact of the machine, not of the profile:
:func:`checkpoint_status` says, per entry, whether its file is present, produced by a named command
(finetuned and supervised entries) or missing; ``load_profile(..., check_files=True)`` and
``clip-study plan`` turn the missing ones into errors.

Path values may use ``{data_root}``-style references to earlier ``paths`` keys, ``~``, and
environment variables as ``$VAR``, ``${VAR}`` or ``${VAR:-default}`` (the default is used when the
variable is unset or empty), e.g. ``cache_dir: "${CLIP_STUDY_CACHE:-~/.cache/clip-study}/paper"``.

One rule for relative paths, wherever the YAML lives: a relative path resolves against the
repository checkout (:data:`REPO_ROOT`), as every profile in ``configs/`` assumes (``_data/demo``
is ``<checkout>/_data/demo`` for a copy of the demo profile in ``/tmp`` too). Two environment
variables override the profile: ``CLIP_STUDY_DATA_ROOT`` replaces ``paths.data_root``, and
``CLIP_STUDY_CACHE`` moves the cache and the checkpoints to ``$CLIP_STUDY_CACHE/<profile>`` and
``$CLIP_STUDY_CACHE/<profile>-checkpoints`` (a profile whose paths already name the variable, as
``paper`` does, keeps its own expressions).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"

#: Backbones of the paper (Section 3) plus the CoCa pair of Appendix D.
ARCHS = ("RN50", "RN101", "ViT-B-16", "ViT-B-32", "ViT-L-14", "coca_ViT-B-32", "coca_ViT-L-14")

#: Families of the pool, in the order the paper's figures use.
FAMILIES = {
    "robust_zeroshot_clip": "Robust zero-shot CLIP",
    "finetuned_clip": "Fine-tuned CLIP",
    "supervised": "Supervised",
    "imagenet_captions_clip": "Non-robust zero-shot CLIP (ImageNet-Captions)",
    "coca_zeroshot": "CoCa zero-shot",
    "coca_finetuned": "CoCa fine-tuned",
}

#: What a profile is for (top-level ``kind``): the banner of every chapter follows it.
KINDS = ("demo", "smoke", "paper")

#: The five natural distribution shifts of Section 3, in the paper's order.
SHIFTS = ("imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet", "imagenet-a")
EVAL_DATASETS = ("imagenet",) + SHIFTS
DATASETS = EVAL_DATASETS + ("imagenet-train", "broden")


class ConfigError(ValueError):
    """A profile that does not validate; the message names the file and the key."""


@dataclass(frozen=True)
class PoolEntry:
    """One model of the pool.

    Weights come from exactly one place: an open_clip ``pretrained`` tag, a local ``checkpoint``
    file, or (profiles with ``allow_random_init``) a random initialisation seeded by ``seed``.
    """

    id: str
    arch: str
    family: str
    pretraining: str
    model: str  # open_clip model name (architecture config), or a torchvision builder name
    pretrained: str | None = None  # open_clip pretrained tag
    checkpoint: str | None = None  # local weights file (resolved to an absolute path)
    source: str = "open_clip"  # open_clip | torchvision
    finetuned_from: str | None = None  # id of the zero-shot entry a finetuned model starts from
    image_mean: tuple[float, float, float] | None = None
    image_std: tuple[float, float, float] | None = None
    seed: int = 0
    note: str = ""
    #: Published ImageNet top-1 (%) of these weights; after extraction a deviation of more than
    #: ``PUBLISHED_TOLERANCE`` points is a loud warning (activation, normalisation, preprocessing or
    #: checkpoint mismatch; :mod:`helpers.chapters.robustness`). None: nothing to compare with.
    published_top1: float | None = None
    stands_in_for: str | None = None  # demo only: id of the paper.yml entry this model stands in for

    @property
    def backbone(self) -> str:
        return self.arch

    @property
    def family_label(self) -> str:
        return FAMILIES[self.family]

    @property
    def weights_label(self) -> str:
        if self.pretrained:
            return f"{self.model} / {self.pretrained}"
        if self.checkpoint:
            return f"{self.model} / {self.checkpoint}"
        return f"{self.model} / random init (seed {self.seed})"


@dataclass(frozen=True)
class Profile:
    """A validated study configuration."""

    name: str
    path: Path
    description: str
    device: str
    batch_size: int
    num_workers: int
    precision: str
    allow_random_init: bool
    paths: dict[str, Path]
    datasets: dict[str, Path]
    limits: dict[str, int | None]
    metrics: dict[str, Any]
    pool: tuple[PoolEntry, ...]
    raw: dict = field(repr=False, compare=False, default_factory=dict)
    #: demo | smoke | paper (top-level ``kind``; default: demo when ``allow_random_init``, else paper).
    kind: str = "paper"
    #: Leave undecodable images out (listed in the manifests and the robustness chapter) instead of
    #: stopping at the end of the decoding pass with every unreadable file named.
    skip_unreadable: bool = False
    #: smoke profiles only: zero-shot heads from the first N of the 80 OpenAI templates ...
    zero_shot_templates: int | None = None
    #: ... and from the text tower for these ImageNet class indices only (the other rows random)
    zero_shot_classes: tuple[int, ...] | None = None

    @property
    def cache_dir(self) -> Path:
        return self.paths["cache_dir"]

    @property
    def results_dir(self) -> Path:
        return self.paths["results_dir"]

    @property
    def is_demo(self) -> bool:
        return self.kind == "demo"

    def entry(self, entry_id: str) -> PoolEntry:
        for e in self.pool:
            if e.id == entry_id:
                return e
        raise KeyError(
            f"profile {self.name!r} has no pool entry {entry_id!r}; known: {', '.join(e.id for e in self.pool)}"
        )

    def select(self, entry: str | None = None, backbone: str | None = None,
               family: str | Iterable[str] | None = None) -> list[PoolEntry]:
        """Pool entries matching every given filter (None matches all)."""
        fams = {family} if isinstance(family, str) else set(family) if family else None
        out = [e for e in self.pool
               if (entry is None or e.id == entry)
               and (backbone is None or e.arch == backbone)
               and (fams is None or e.family in fams)]
        if entry is not None and not out:
            self.entry(entry)  # raises with the known ids
        if backbone is not None and not out:
            raise KeyError(f"profile {self.name!r} has no entry with backbone {backbone!r}; "
                           f"backbones: {', '.join(sorted({e.arch for e in self.pool}))}")
        return out

    def dataset_root(self, name: str) -> Path:
        if name not in self.datasets:
            raise KeyError(f"profile {self.name!r} names no root for dataset {name!r} (datasets: {', '.join(self.datasets)})")
        return self.datasets[name]

    def limit(self, dataset: str) -> int | None:
        """Maximum number of images to use from a dataset (None: all)."""
        return self.limits.get(dataset, self.limits.get("default"))

    def digest(self) -> str:
        """Hash of the validated content, used in run keys."""
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


_TOP_KEYS = {"profile", "kind", "description", "device", "batch_size", "num_workers", "precision",
             "allow_random_init", "skip_unreadable", "paths", "datasets", "limits", "metrics", "pool",
             "zero_shot_templates", "zero_shot_classes"}
#: Keys for GPU nodes, with their defaults (read with :func:`run_setting`): the wall-clock limit of one
#: job under ``clip-study run --gpus`` (None: none), and the training loader's persistent workers,
#: prefetch depth (batches per worker) and gradient accumulation (micro-batches per optimiser step).
RUN_SETTINGS = {"job_time_limit_minutes": None, "persistent_workers": True, "prefetch_factor": 4,
                "accumulation_steps": 1}
_TOP_KEYS |= set(RUN_SETTINGS)
#: open_clip.OPENAI_IMAGENET_TEMPLATES holds 80 templates (Radford et al., 2021).
_N_TEMPLATES = 80
_REQUIRED_TOP = {"profile", "paths", "datasets", "pool"}
_PATH_KEYS = {"data_root", "cache_dir", "results_dir", "checkpoints_dir", "hf_cache"}
_METRIC_DEFAULTS = {
    "er_slope": 0.76,  # beta_1 of Eq. (5), fitted on Taori et al.'s testbed (Appendix A)
    "er_intercept": -1.49,  # beta_0 of Eq. (5)
    "baseline": "paper",  # ER's beta_1, beta_0: paper (er_slope, er_intercept) | refit (the testbed, Appendix A)
    "concept_threshold": 0.9,  # AP threshold of Section 5
    "concept_thresholds": [0.8, 0.85, 0.9, 0.95],  # footnote 3's sensitivity sweep
    "concept_sign": "both",  # how a singular vector's arbitrary sign is handled (see methods)
    "broden_min_positives": 10,  # concepts with fewer positives are reported, not probed
    "prune_fractions": [0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99],
    "bootstrap": 1000,  # bootstrap resamples for confidence intervals
    "seed": 0,
}
_ENTRY_REQUIRED = ("id", "arch", "family", "pretraining", "model")
_ENTRY_KEYS = {f.name for f in fields(PoolEntry)}
_PRECISIONS = ("fp32", "bf16", "fp16")
_SOURCES = ("open_clip", "torchvision")
#: The device strings ``torch.device`` accepts here: no leading zero, an index below 2**31.
_DEVICE = re.compile(r"(cpu|cuda|cuda:(?P<index>0|[1-9][0-9]*))")
#: Points of ImageNet top-1 a measured accuracy may differ from ``published_top1`` before it is flagged.
PUBLISHED_TOLERANCE = 1.5
#: Families whose checkpoint a command of this project writes (helpers.models.catalogue's family groups).
PRODUCED_BY = {"finetuned_clip": "finetune", "coca_finetuned": "finetune", "supervised": "train-supervised"}


def profile_path(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yml", ".yaml") or p.exists():
        return p.resolve()
    candidate = CONFIG_DIR / f"{name_or_path}.yml"
    if not candidate.exists():
        known = ", ".join(sorted(x.stem for x in CONFIG_DIR.glob("*.yml")))
        raise ConfigError(f"no profile named {str(name_or_path)!r}: expected a YAML path or one of: {known}")
    return candidate


def load_profile(name_or_path: str | os.PathLike = "demo", overrides: dict[str, Any] | None = None, *,
                 check_files: bool = False, blame: dict[str, str] | None = None) -> Profile:
    """Load and validate a profile by name (``demo``, ``paper``) or YAML path.

    ``overrides`` maps dotted keys to values (``{"device": "cuda", "paths.data_root": "/data"}``)
    and is applied before validation; so is the environment variable ``CLIP_STUDY_DATA_ROOT``,
    which replaces ``paths.data_root``. Every problem found is listed in one :class:`ConfigError`.
    ``check_files``: also fail on checkpoint files that are missing and that no command of this
    project produces (:func:`checkpoint_status`). ``blame``: dotted key -> who set it (``-p
    batch_size``), named instead of the profile file when that key's value is refused.
    """
    path = profile_path(name_or_path)
    if not path.exists():
        raise ConfigError(f"{path}: profile file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, found {type(raw).__name__}")
    _environment_paths(raw)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value, path)
    profile = _validate(raw, path, blame)
    if check_files:
        missing = [f"{path}: {where}: {detail}" for where, state, detail in
                   (s[1:] for s in checkpoint_status(profile)) if state == "missing"]
        if missing:
            raise ConfigError(_joined(missing))
    return profile


def _environment_paths(raw: dict) -> None:
    """``CLIP_STUDY_DATA_ROOT`` and ``CLIP_STUDY_CACHE`` over the profile's own paths (module
    docstring); ``-p``/overrides still win, being applied after."""
    paths = raw.get("paths")
    if not isinstance(paths, dict):
        return
    if os.environ.get("CLIP_STUDY_DATA_ROOT"):
        paths["data_root"] = os.environ["CLIP_STUDY_DATA_ROOT"]
    cache = os.environ.get("CLIP_STUDY_CACHE")
    named = any("CLIP_STUDY_CACHE" in str(paths.get(k, "")) for k in ("cache_dir", "checkpoints_dir"))
    if cache and not named:
        name = str(raw.get("profile", "profile"))
        paths["cache_dir"] = f"{cache}/{name}"
        paths["checkpoints_dir"] = f"{cache}/{name}-checkpoints"


def checkpoint_status(profile: Profile, entries: Iterable[PoolEntry] | None = None) -> list[tuple[PoolEntry, str, str, str]]:
    """``(entry, key, state, detail)`` for each entry with a ``checkpoint``: state ``present``,
    ``produced`` (missing, but ``detail`` names the command that writes it: finetuned and supervised
    CLIP entries) or ``missing`` (nothing in this project writes it; ``detail`` says what is expected)."""
    out = []
    ids = [e.id for e in profile.pool]
    for e in profile.pool if entries is None else entries:
        if not e.checkpoint:
            continue
        key = f"pool[{ids.index(e.id)}] ({e.id}).checkpoint" if e.id in ids else f"{e.id}.checkpoint"
        if Path(e.checkpoint).is_file():
            out.append((e, key, "present", e.checkpoint))
        elif e.family in PRODUCED_BY and e.source == "open_clip":
            # the demo's few-step checkpoints come from one command for all of them
            name = profile.name if profile.path == CONFIG_DIR / f"{profile.name}.yml" else str(profile.path)
            command = (f"prepare-demo --profile {name}" if profile.is_demo
                       else f"{PRODUCED_BY[e.family]} --profile {name} --entry {e.id}")
            out.append((e, key, "produced", f"produced by: clip-study {command} (into {e.checkpoint})"))
        else:
            out.append((e, key, "missing", f"checkpoint file {e.checkpoint} not found, and no command of this "
                                           f"project writes it; expected {_expected_weights(e)}"))
    return out


def _expected_weights(e: PoolEntry) -> str:
    if e.source == "torchvision":
        return f"torchvision's {e.model} state dict (e.g. {e.model}-<hash>.pth from download.pytorch.org)"
    return f"an open_clip state dict for {e.model} (torch.save(model.state_dict()))"


def _set_dotted(raw: dict, dotted: str, value: Any, path: Path) -> None:
    keys = dotted.split(".")
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: override {dotted!r}: {k!r} is not a mapping")
    node[keys[-1]] = value


_ENV = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def expand_env(value: str) -> str:
    """``$VAR``, ``${VAR}`` and ``${VAR:-default}`` (default when unset or empty), then ``~``.
    An unset variable without a default is left as written, as ``os.path.expandvars`` does."""
    def sub(m: re.Match) -> str:
        name = m.group("braced") or m.group("bare")
        got = os.environ.get(name)
        if m.group("default") is not None:
            return got if got else m.group("default")
        return got if got is not None else m.group(0)

    return os.path.expanduser(_ENV.sub(sub, value))


def _joined(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems)


class _Problems:
    """Collects every problem of one profile, each as ``<file>: <key>: <message>``."""

    def __init__(self, path: Path, blame: dict[str, str] | None = None):
        self.path, self.items, self.blame = path, [], blame or {}

    def add(self, key: str, msg: str) -> None:
        self.items.append(f"{self.blame.get(key, self.path)}: {key}: {msg}")

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(_joined(self.items))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """A finite int or float (``.nan`` and ``.inf`` in YAML are floats, and no profile number may be one)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check(problems: _Problems, key: str, value: Any, ok: bool, what: str) -> bool:
    if not ok:
        problems.add(key, f"expected {what}, got {value!r}")
    return ok


def _valid_device(s: Any) -> bool:
    # checked without importing torch (seconds), which a profile load does not otherwise need
    m = _DEVICE.fullmatch(s) if isinstance(s, str) else None
    return m is not None and (m.group("index") is None or int(m.group("index")) < 2**31)


def _validate(raw: dict, path: Path, blame: dict[str, str] | None = None) -> Profile:
    P = _Problems(path, blame)
    for k in sorted(set(raw) - _TOP_KEYS):
        P.add(k, f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    for k in sorted(_REQUIRED_TOP - set(raw)):
        P.add(k, "required key is missing")
    P.raise_if_any()

    base = REPO_ROOT  # one rule for every profile, wherever its YAML lives (module docstring)
    paths, resolve = _validate_paths(P, raw, base)
    datasets = _validate_datasets(P, raw, resolve)
    limits = _validate_limits(P, raw)
    metrics = _validate_metric_keys(P, raw)
    _validate_metrics(P, metrics)
    scalars = _validate_scalars(P, raw)
    zs_templates, zs_classes = _validate_reduced_head(P, raw, scalars["kind"])
    _validate_run_settings(P, raw)
    pool = _validate_pool(P, raw, scalars["allow_random_init"], resolve)
    P.raise_if_any()

    return Profile(
        name=str(raw["profile"]), path=path, description=str(raw.get("description", "")).strip(),
        paths=paths, datasets=datasets, limits=limits, metrics=metrics, pool=tuple(pool), raw=raw,
        zero_shot_templates=zs_templates, zero_shot_classes=zs_classes, **scalars,
    )


def _validate_paths(P: _Problems, raw: dict, base: Path) -> tuple[dict[str, Path], Callable[[str, Any], Path | None]]:
    """The ``paths`` mapping, resolved in order (a ``{paths key}`` reference names a key resolved
    before it), and the resolver every later path value goes through (``{paths key}`` references,
    ``$VAR``, ``~``, relative to the profile's project folder)."""
    paths_raw = raw["paths"]
    if not isinstance(paths_raw, dict):
        P.add("paths", f"expected a mapping of folder names to paths, got {paths_raw!r}")
        paths_raw = {}
    for k in paths_raw:
        if k not in _PATH_KEYS:
            P.add(f"paths.{k}", f"unknown key (allowed: {', '.join(sorted(_PATH_KEYS))})")
    for k in ("data_root", "cache_dir", "results_dir"):
        if k not in paths_raw and isinstance(raw["paths"], dict):
            P.add(f"paths.{k}", "required key is missing")

    paths_resolved: dict[str, str] = {}

    def resolve(key: str, value: Any) -> Path | None:
        if not isinstance(value, str):
            P.add(key, f"expected a path string, got {value!r}")
            return None
        value = expand_env(value)
        try:
            value = value.format(**paths_resolved)
        except KeyError as exc:
            P.add(key, f"refers to {{{exc.args[0]}}}, which is not a paths key defined before it "
                       f"(defined: {', '.join(paths_resolved) or 'none'})")
            return None
        except (ValueError, IndexError) as exc:
            P.add(key, f"expected a path with {{paths key}} references, got {value!r} ({exc})")
            return None
        p = Path(value)
        return p if p.is_absolute() else (base / p).resolve()

    paths: dict[str, Path] = {}
    for k in ("data_root", "cache_dir", "results_dir", "checkpoints_dir", "hf_cache"):
        if paths_raw.get(k) is not None:
            got = resolve(f"paths.{k}", paths_raw[k])
            if got is not None:
                paths[k] = got
                paths_resolved[k] = str(got)
    if "cache_dir" in paths:
        paths.setdefault("checkpoints_dir", paths["cache_dir"] / "checkpoints")
        paths_resolved.setdefault("checkpoints_dir", str(paths["checkpoints_dir"]))
    return paths, resolve


def _validate_datasets(P: _Problems, raw: dict, resolve) -> dict[str, Path]:
    ds_raw = raw["datasets"]
    datasets: dict[str, Path] = {}
    if _check(P, "datasets", ds_raw, isinstance(ds_raw, dict), "a mapping of dataset names to folders"):
        for k, v in ds_raw.items():
            if k not in DATASETS:
                P.add(f"datasets.{k}", f"unknown dataset (allowed: {', '.join(DATASETS)})")
                continue
            got = resolve(f"datasets.{k}", v)
            if got is not None:
                datasets[k] = got
    return datasets


def _validate_limits(P: _Problems, raw: dict) -> dict[str, int | None]:
    limits: dict[str, int | None] = {}
    limits_raw = raw.get("limits") or {}
    if _check(P, "limits", limits_raw, isinstance(limits_raw, dict), "a mapping of dataset names to image counts"):
        for k, v in limits_raw.items():
            if k != "default" and k not in DATASETS:
                P.add(f"limits.{k}", f"unknown dataset (allowed: default, {', '.join(DATASETS)})")
                continue
            if _check(P, f"limits.{k}", v, v is None or (_is_int(v) and v > 0), "a positive integer or null"):
                limits[k] = v
    return limits


def _validate_metric_keys(P: _Problems, raw: dict) -> dict[str, Any]:
    """The ``metrics`` mapping over :data:`_METRIC_DEFAULTS` (values checked by :func:`_validate_metrics`)."""
    metrics = dict(_METRIC_DEFAULTS)
    metrics_raw = raw.get("metrics") or {}
    if _check(P, "metrics", metrics_raw, isinstance(metrics_raw, dict), "a mapping"):
        for k, v in metrics_raw.items():
            if k not in _METRIC_DEFAULTS:
                P.add(f"metrics.{k}", f"unknown key (allowed: {', '.join(_METRIC_DEFAULTS)})")
            else:
                metrics[k] = v
    return metrics


def _validate_scalars(P: _Problems, raw: dict) -> dict[str, Any]:
    """The top-level scalars, as :class:`Profile` fields (a bad value is reported and kept, except
    ``allow_random_init``, read as false)."""
    precision = raw.get("precision", "fp32")
    _check(P, "precision", precision, precision in _PRECISIONS, f"one of {', '.join(_PRECISIONS)}")
    device = raw.get("device", "cpu")
    _check(P, "device", device, _valid_device(device), "a torch device: cpu, cuda or cuda:N")
    batch_size = raw.get("batch_size", 64)
    _check(P, "batch_size", batch_size, _is_int(batch_size) and batch_size > 0, "a positive integer")
    num_workers = raw.get("num_workers", 0)
    _check(P, "num_workers", num_workers, _is_int(num_workers) and num_workers >= 0, "a non-negative integer")
    allow_random = raw.get("allow_random_init", False)
    if not _check(P, "allow_random_init", allow_random, isinstance(allow_random, bool), "true or false"):
        allow_random = False
    skip_unreadable = raw.get("skip_unreadable", False)
    _check(P, "skip_unreadable", skip_unreadable, isinstance(skip_unreadable, bool), "true or false")
    kind = raw.get("kind", "demo" if allow_random else "paper")
    _check(P, "kind", kind, kind in KINDS, f"one of {', '.join(KINDS)}")
    return dict(device=str(device), batch_size=batch_size, num_workers=num_workers, precision=precision,
                allow_random_init=allow_random, skip_unreadable=skip_unreadable, kind=kind)


def _validate_pool(P: _Problems, raw: dict, allow_random: bool, resolve) -> list[PoolEntry]:
    """Every entry of ``pool`` (:func:`_validate_entry`), then unique ids and finetuned parents in the pool."""
    pool_raw = raw["pool"]
    pool: list[PoolEntry] = []
    where: list[int] = []  # position in the YAML list of each validated entry
    if _check(P, "pool", pool_raw, isinstance(pool_raw, list), "a list of model entries"):
        if not pool_raw:
            P.add("pool", "the pool is empty")
        for i, e in enumerate(pool_raw):
            entry = _validate_entry(P, i, e, allow_random, resolve)
            if entry is not None:
                pool.append(entry)
                where.append(i)
    ids = [e.id for e in pool]
    for k, (i, e) in enumerate(zip(where, pool)):
        if e.id in ids[:k]:
            P.add(f"pool[{i}].id", f"duplicate id {e.id!r} (first used by pool[{where[ids.index(e.id)]}])")
        if e.finetuned_from is not None and e.finetuned_from not in ids:
            P.add(f"pool[{i}] ({e.id}).finetuned_from", f"{e.finetuned_from!r} is not an id in the pool")
    return pool


def run_setting(profile: "Profile", key: str) -> Any:
    """A :data:`RUN_SETTINGS` value of ``profile`` (its default when the profile does not set it)."""
    return profile.raw.get(key, RUN_SETTINGS[key])


def _validate_run_settings(P: "_Problems", raw: dict) -> None:
    limit = raw.get("job_time_limit_minutes")
    _check(P, "job_time_limit_minutes", limit, limit is None or (_is_number(limit) and limit > 0),
           "a positive number of minutes, or null for no limit")
    pw = raw.get("persistent_workers", True)
    _check(P, "persistent_workers", pw, isinstance(pw, bool), "true or false")
    for key in ("prefetch_factor", "accumulation_steps"):
        v = raw.get(key, RUN_SETTINGS[key])
        _check(P, key, v, _is_int(v) and v >= 1, "a positive integer")


def _validate_reduced_head(P: "_Problems", raw: dict, kind: str) -> tuple[int | None, tuple[int, ...] | None]:
    """The reduced zero-shot head of smoke profiles. 80 templates x 1,000 classes take 1.5-2.6
    CPU-hours per model; a smoke profile (random weights, fixture data) may build its heads from
    fewer, a profile of any other kind may not: its accuracies would not be the paper's."""
    templates, classes = raw.get("zero_shot_templates"), raw.get("zero_shot_classes")
    for key, value in (("zero_shot_templates", templates), ("zero_shot_classes", classes)):
        if value is not None and kind != "smoke":
            P.add(key, f"a reduced zero-shot head is allowed only in profiles with kind: smoke (this one is "
                       f"kind: {kind}); remove the key to use all {_N_TEMPLATES} OpenAI templates x 1,000 classes")
            return None, None
    if templates is not None and not _check(P, "zero_shot_templates", templates,
                                            _is_int(templates) and 1 <= templates <= _N_TEMPLATES,
                                            f"an integer from 1 to {_N_TEMPLATES}"):
        templates = None
    if classes is not None:
        wnids = [w.strip() for w in (REPO_ROOT / "helpers" / "reference" / "imagenet_wnids.txt").read_text().split()]
        if not _check(P, "zero_shot_classes", classes, isinstance(classes, list) and bool(classes)
                      and all(isinstance(w, str) for w in classes), "a non-empty list of ImageNet wnids"):
            return templates, None
        unknown = [w for w in classes if w not in wnids]
        if unknown:
            P.add("zero_shot_classes", f"{unknown[0]!r} is not one of the 1,000 ImageNet wnids")
            return templates, None
        if len(set(classes)) != len(classes):
            P.add("zero_shot_classes", "lists a wnid twice")
            return templates, None
        classes = tuple(sorted(wnids.index(w) for w in classes))
    return templates, classes


def _validate_metrics(P: _Problems, m: dict) -> None:
    def fraction(v: Any) -> bool:
        return _is_number(v) and 0 < v <= 1

    for k in ("er_slope", "er_intercept"):
        _check(P, f"metrics.{k}", m[k], _is_number(m[k]), "a number")
    _check(P, "metrics.baseline", m["baseline"], m["baseline"] in ("paper", "refit"), "'paper' or 'refit'")
    _check(P, "metrics.concept_threshold", m["concept_threshold"], fraction(m["concept_threshold"]),
           "a number in (0, 1]")
    v = m["concept_thresholds"]
    _check(P, "metrics.concept_thresholds", v, isinstance(v, list) and bool(v) and all(fraction(x) for x in v),
           "a non-empty list of numbers in (0, 1]")
    _check(P, "metrics.concept_sign", m["concept_sign"], m["concept_sign"] in ("positive", "both"),
           "'positive' or 'both'")
    v = m["broden_min_positives"]
    _check(P, "metrics.broden_min_positives", v, _is_int(v) and v >= 1, "an integer >= 1")
    v = m["prune_fractions"]
    _check(P, "metrics.prune_fractions", v,
           isinstance(v, list) and bool(v) and all(_is_number(x) and 0 <= x < 1 for x in v),
           "a non-empty list of numbers in [0, 1)")
    _check(P, "metrics.bootstrap", m["bootstrap"], _is_int(m["bootstrap"]) and m["bootstrap"] >= 1,
           "an integer >= 1")
    _check(P, "metrics.seed", m["seed"], _is_int(m["seed"]), "an integer")


def _validate_entry(P: _Problems, i: int, e: Any, allow_random: bool, resolve) -> PoolEntry | None:
    where = f"pool[{i}]"
    if not isinstance(e, dict):
        P.add(where, f"expected a mapping, got {e!r}")
        return None
    if "id" in e:
        where = f"pool[{i}] ({e['id']})"
    n = len(P.items)
    for k in e:
        if k not in _ENTRY_KEYS:
            P.add(f"{where}.{k}", f"unknown key (allowed: {', '.join(sorted(_ENTRY_KEYS))})")
    for k in _ENTRY_REQUIRED:
        if k not in e:
            P.add(f"{where}.{k}", "required key is missing")
        else:
            _check(P, f"{where}.{k}", e[k], isinstance(e[k], str), "a string")
    if len(P.items) > n:
        return None
    if e["arch"] not in ARCHS:
        P.add(f"{where}.arch", f"{e['arch']!r} is not one of {', '.join(ARCHS)}")
    if e["family"] not in FAMILIES:
        P.add(f"{where}.family", f"{e['family']!r} is not one of {', '.join(FAMILIES)}")
    source = e.get("source", "open_clip")
    if source not in _SOURCES:
        P.add(f"{where}.source", f"{source!r} is not one of {', '.join(_SOURCES)}")
    for k in ("pretrained", "checkpoint", "finetuned_from", "note", "pretraining"):
        if e.get(k) is not None:
            _check(P, f"{where}.{k}", e[k], isinstance(e[k], str), "a string")
    if e.get("pretrained") and e.get("checkpoint"):
        P.add(f"{where}.checkpoint", "give either pretrained or checkpoint, not both")
    if not e.get("pretrained") and not e.get("checkpoint") and not allow_random:
        P.add(f"{where}.pretrained", "no weights: give an open_clip pretrained tag or a checkpoint path "
                                     "(random initialisation is allowed only in profiles with allow_random_init: true)")
    kw = dict(e)
    if isinstance(kw.get("checkpoint"), str) and kw["checkpoint"]:
        got = resolve(f"{where}.checkpoint", kw["checkpoint"])
        kw["checkpoint"] = None if got is None else str(got)
    for k in ("image_mean", "image_std"):
        if kw.get(k) is not None:
            v = kw[k]
            if _check(P, f"{where}.{k}", v, isinstance(v, list) and len(v) == 3 and all(_is_number(x) for x in v),
                      "a list of three numbers"):
                kw[k] = tuple(float(x) for x in v)
    if "seed" in kw:
        _check(P, f"{where}.seed", kw["seed"], _is_int(kw["seed"]), "an integer")
    if kw.get("published_top1") is not None:
        v = kw["published_top1"]
        if _check(P, f"{where}.published_top1", v, _is_number(v) and 0 < v <= 100,
                  "an ImageNet top-1 in percent, in (0, 100], or null"):
            kw["published_top1"] = float(v)
    if len(P.items) > n:
        return None
    return PoolEntry(**kw)
