"""Study configuration: one commented YAML per profile (``configs/demo.yml``, ``configs/paper.yml``).

A profile holds the global parameters (device, batch size, workers, cache/results folders, dataset
roots, sample limits, the paper's constants) and the model pool. :func:`load_profile` validates it
and every error names the offending key, e.g. ``configs/paper.yml: pool[3].family: 'zero-shot' is
not one of ...``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

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

    @property
    def cache_dir(self) -> Path:
        return self.paths["cache_dir"]

    @property
    def results_dir(self) -> Path:
        return self.paths["results_dir"]

    @property
    def is_demo(self) -> bool:
        return self.allow_random_init

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


_TOP_KEYS = {"profile", "description", "device", "batch_size", "num_workers", "precision",
             "allow_random_init", "paths", "datasets", "limits", "metrics", "pool"}
_REQUIRED_TOP = {"profile", "paths", "datasets", "pool"}
_PATH_KEYS = {"data_root", "cache_dir", "results_dir", "checkpoints_dir", "hf_cache"}
_METRIC_DEFAULTS = {
    "er_slope": 0.76,  # beta_1 of Eq. (5), fitted on Taori et al.'s testbed (Appendix A)
    "er_intercept": -1.49,  # beta_0 of Eq. (5)
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


def profile_path(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yml", ".yaml") or p.exists():
        return p.resolve()
    candidate = CONFIG_DIR / f"{name_or_path}.yml"
    if not candidate.exists():
        known = ", ".join(sorted(x.stem for x in CONFIG_DIR.glob("*.yml")))
        raise ConfigError(f"no profile named {str(name_or_path)!r}: expected a YAML path or one of: {known}")
    return candidate


def load_profile(name_or_path: str | os.PathLike = "demo", overrides: dict[str, Any] | None = None) -> Profile:
    """Load and validate a profile by name (``demo``, ``paper``) or YAML path.

    ``overrides`` maps dotted keys to values (``{"device": "cuda", "paths.data_root": "/data"}``)
    and is applied before validation; so is the environment variable ``CLIP_STUDY_DATA_ROOT``,
    which replaces ``paths.data_root``.
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
    if os.environ.get("CLIP_STUDY_DATA_ROOT"):
        raw.setdefault("paths", {})["data_root"] = os.environ["CLIP_STUDY_DATA_ROOT"]
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value, path)
    return _validate(raw, path)


def _set_dotted(raw: dict, dotted: str, value: Any, path: Path) -> None:
    keys = dotted.split(".")
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: override {dotted!r}: {k!r} is not a mapping")
    node[keys[-1]] = value


def _fail(path: Path, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {msg}")


def _expect(path: Path, key: str, value: Any, typ: type | tuple, what: str) -> Any:
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise _fail(path, key, f"expected {what}, found {value!r}")
    return value


def _validate(raw: dict, path: Path) -> Profile:
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise _fail(path, sorted(unknown)[0], f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    missing = _REQUIRED_TOP - set(raw)
    if missing:
        raise _fail(path, sorted(missing)[0], "required key is missing")

    base = path.parent.parent if path.parent.name == "configs" else path.parent
    paths_raw = _expect(path, "paths", raw["paths"], dict, "a mapping of folder names to paths")
    for k in paths_raw:
        if k not in _PATH_KEYS:
            raise _fail(path, f"paths.{k}", f"unknown key (allowed: {', '.join(sorted(_PATH_KEYS))})")
    for k in ("data_root", "cache_dir", "results_dir"):
        if k not in paths_raw:
            raise _fail(path, f"paths.{k}", "required key is missing")

    def resolve(key: str, value: Any) -> Path:
        _expect(path, key, value, str, "a path string")
        value = os.path.expandvars(os.path.expanduser(value))
        value = value.format(**{k: v for k, v in paths_resolved.items()})
        p = Path(value)
        return p if p.is_absolute() else (base / p).resolve()

    paths_resolved: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for k in ("data_root", "cache_dir", "results_dir", "checkpoints_dir", "hf_cache"):
        if paths_raw.get(k) is not None:
            try:
                paths[k] = resolve(f"paths.{k}", paths_raw[k])
            except KeyError as exc:
                raise _fail(path, f"paths.{k}", f"refers to {{{exc.args[0]}}}, which is not defined before it") from None
            paths_resolved[k] = str(paths[k])
    paths.setdefault("checkpoints_dir", paths["cache_dir"] / "checkpoints")
    paths_resolved.setdefault("checkpoints_dir", str(paths["checkpoints_dir"]))

    ds_raw = _expect(path, "datasets", raw["datasets"], dict, "a mapping of dataset names to folders")
    datasets = {}
    for k, v in ds_raw.items():
        if k not in DATASETS:
            raise _fail(path, f"datasets.{k}", f"unknown dataset (allowed: {', '.join(DATASETS)})")
        try:
            datasets[k] = resolve(f"datasets.{k}", v)
        except KeyError as exc:
            raise _fail(path, f"datasets.{k}", f"refers to {{{exc.args[0]}}}, not a key of paths") from None

    limits = {}
    for k, v in (raw.get("limits") or {}).items():
        if k != "default" and k not in DATASETS:
            raise _fail(path, f"limits.{k}", f"unknown dataset (allowed: default, {', '.join(DATASETS)})")
        if v is not None:
            _expect(path, f"limits.{k}", v, int, "a positive integer or null")
            if v <= 0:
                raise _fail(path, f"limits.{k}", f"expected a positive integer or null, found {v}")
        limits[k] = v

    metrics = dict(_METRIC_DEFAULTS)
    for k, v in (raw.get("metrics") or {}).items():
        if k not in _METRIC_DEFAULTS:
            raise _fail(path, f"metrics.{k}", f"unknown key (allowed: {', '.join(_METRIC_DEFAULTS)})")
        metrics[k] = v
    for k in ("er_slope", "er_intercept", "concept_threshold"):
        _expect(path, f"metrics.{k}", metrics[k], (int, float), "a number")
    if metrics["concept_sign"] not in ("positive", "both"):
        raise _fail(path, "metrics.concept_sign", f"expected 'positive' or 'both', found {metrics['concept_sign']!r}")

    precision = raw.get("precision", "fp32")
    if precision not in _PRECISIONS:
        raise _fail(path, "precision", f"expected one of {', '.join(_PRECISIONS)}, found {precision!r}")
    batch_size = _expect(path, "batch_size", raw.get("batch_size", 64), int, "a positive integer")
    num_workers = _expect(path, "num_workers", raw.get("num_workers", 0), int, "a non-negative integer")
    allow_random = _expect(path, "allow_random_init", raw.get("allow_random_init", False), bool, "true or false")

    pool_raw = _expect(path, "pool", raw["pool"], list, "a list of model entries")
    if not pool_raw:
        raise _fail(path, "pool", "the pool is empty")
    pool: list[PoolEntry] = []
    for i, e in enumerate(pool_raw):
        pool.append(_validate_entry(path, i, e, allow_random, resolve))
    ids = [e.id for e in pool]
    for i, e in enumerate(pool):
        if e.id in ids[:i]:
            raise _fail(path, f"pool[{i}].id", f"duplicate id {e.id!r} (first used by pool[{ids.index(e.id)}])")
        if e.finetuned_from is not None and e.finetuned_from not in ids:
            raise _fail(path, f"pool[{i}] ({e.id}).finetuned_from", f"{e.finetuned_from!r} is not an id in the pool")

    return Profile(
        name=str(raw["profile"]), path=path, description=str(raw.get("description", "")).strip(),
        device=str(raw.get("device", "cpu")), batch_size=batch_size, num_workers=num_workers,
        precision=precision, allow_random_init=allow_random, paths=paths, datasets=datasets,
        limits=limits, metrics=metrics, pool=tuple(pool), raw=raw,
    )


def _validate_entry(path: Path, i: int, e: Any, allow_random: bool, resolve) -> PoolEntry:
    where = f"pool[{i}]"
    _expect(path, where, e, dict, "a mapping")
    if "id" in e:
        where = f"pool[{i}] ({e['id']})"
    for k in e:
        if k not in _ENTRY_KEYS:
            raise _fail(path, f"{where}.{k}", f"unknown key (allowed: {', '.join(sorted(_ENTRY_KEYS))})")
    for k in _ENTRY_REQUIRED:
        if k not in e:
            raise _fail(path, f"{where}.{k}", "required key is missing")
        _expect(path, f"{where}.{k}", e[k], str, "a string")
    if e["arch"] not in ARCHS:
        raise _fail(path, f"{where}.arch", f"{e['arch']!r} is not one of {', '.join(ARCHS)}")
    if e["family"] not in FAMILIES:
        raise _fail(path, f"{where}.family", f"{e['family']!r} is not one of {', '.join(FAMILIES)}")
    source = e.get("source", "open_clip")
    if source not in _SOURCES:
        raise _fail(path, f"{where}.source", f"{source!r} is not one of {', '.join(_SOURCES)}")
    if e.get("pretrained") and e.get("checkpoint"):
        raise _fail(path, f"{where}.checkpoint", "give either pretrained or checkpoint, not both")
    if not e.get("pretrained") and not e.get("checkpoint") and not allow_random:
        raise _fail(path, f"{where}.pretrained",
                    "no weights: give an open_clip pretrained tag or a checkpoint path "
                    "(random initialisation is allowed only in profiles with allow_random_init: true)")
    if e.get("finetuned_from") is not None:
        _expect(path, f"{where}.finetuned_from", e["finetuned_from"], str, "a pool entry id")
    kw = dict(e)
    if kw.get("checkpoint"):
        try:
            kw["checkpoint"] = str(resolve(f"{where}.checkpoint", kw["checkpoint"]))
        except KeyError as exc:
            raise _fail(path, f"{where}.checkpoint", f"refers to {{{exc.args[0]}}}, not a key of paths") from None
    for k in ("image_mean", "image_std"):
        if kw.get(k) is not None:
            v = kw[k]
            if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
                raise _fail(path, f"{where}.{k}", f"expected a list of three numbers, found {v!r}")
            kw[k] = tuple(float(x) for x in v)
    if "seed" in kw:
        _expect(path, f"{where}.seed", kw["seed"], int, "an integer")
    return PoolEntry(**kw)
