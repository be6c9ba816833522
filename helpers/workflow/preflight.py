"""``clip-study plan``: everything that can fail later, checked in seconds without weights or a GPU,
and what the run will cost (issue 11.5, 12.3).

:func:`check` returns a :class:`Report`: ``problems`` (each names the file, key, entry or folder
and what was expected; the run would fail or give numbers that are not the paper's), ``todo`` (steps
before ``clip-study run``: weights to download, checkpoints a named command produces), the datasets
found, the free disk, and per stage the cache bytes and GPU-hours (:mod:`helpers.workflow.costs`).
:func:`format` prints it, ending with the line ``total cache: <N> GB``. ``clip-study run`` calls
:func:`check` on its slice before it starts any job.

What is checked:

- the profile: every value's type and range (:func:`helpers.config.load_profile`), every open_clip
  (model, tag) and torchvision builder known to the installed libraries, the QuickGELU rule and
  finetuned lineage (:func:`helpers.models.check_entry`, over the whole pool);
- weights: each checkpoint file present, or produced by a named command; each open_clip tag's file
  in the Hugging Face hub cache (``paths.hf_cache``, else the default one), or to download;
- datasets: the folder each section reads opens in its real layout (the loaders of
  :mod:`helpers.data`, listing files with ``os.scandir``, decoding nothing), and for ``kind: paper``
  its image and class counts equal the published sizes (:mod:`helpers.paper.published`);
- disk: the free space of the file systems holding ``cache_dir`` and ``checkpoints_dir`` against
  what the run still has to write there.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# helpers.engine, .models, .data and .training import torch (about 2 s): they are imported inside the
# functions that use them, so `clip-study --help`, a refused flag and the job loop start without it
from helpers.paper import published
from helpers.workflow import costs, cuda_check
from helpers.workflow.sections import PAIR_SECTIONS, SECTION_DATASETS, close_sections, notebooks
from helpers.config import EVAL_DATASETS, REPO_ROOT, ConfigError, PoolEntry, Profile, checkpoint_status, load_profile


@dataclass
class Report:
    """What :func:`check` found. ``ok``: no problem in the profile, data or disk. ``ready``: ok,
    and nothing in ``pending`` (the steps of ``todo`` the run cannot do itself: checkpoints a
    command produces, downloads while ``HF_HUB_OFFLINE`` is set); ``clip-study run`` launches only
    a ready slice, ``clip-study plan`` exits 0 only for one."""

    profile: Profile | None
    sections: list[str] = field(default_factory=list)
    entries: list[PoolEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    datasets: list[dict] = field(default_factory=list)
    disk: list[str] = field(default_factory=list)
    stages: list[costs.Stage] = field(default_factory=list)
    jobs: int = 0
    to_train: list[PoolEntry] = field(default_factory=list)  # checkpoints a training command still writes
    sources: list[str] = field(default_factory=list)  # where to get what is missing (helpers.data.sources)
    rate: float | None = None  # the device's measured FLOP/s (plan --rate); None: the assumed rates
    decode_rates: dict[str, tuple[float, str]] = field(default_factory=dict)  # dataset -> (img/s per worker, how)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def ready(self) -> bool:
        return self.ok and not self.pending

    @property
    def total_cache_bytes(self) -> float:
        return costs.cache_bytes(self.stages)

    @property
    def checkpoint_bytes(self) -> float:
        return sum(s.checkpoint_bytes for s in self.stages)


def _sections(requested: list[str] | None, report: Report) -> list[str]:
    known = list(notebooks())
    if not requested:
        return known
    for s in requested:
        if s not in known:
            report.problems.append(f"--section {s}: no such section{close_sections([s], known)}; expected one of "
                                   f"{', '.join(known)}")
    return [s for s in known if s in requested]


def _check_models(profile: Profile, report: Report) -> None:
    """Every entry of the pool against the installed open_clip / torchvision: model name, (model,
    tag) pair, torchvision builder, the QuickGELU rule and finetuned lineage; builds nothing and
    reads no weights. Each problem names the profile file and the entry's key, as
    :func:`helpers.config.load_profile` does for the values it checks."""
    from helpers.models import ModelError, check_entry

    for i, e in enumerate(profile.pool):  # a loaded profile's pool is in the order of its YAML list
        try:
            check_entry(e, profile.pool)
        except ModelError as exc:
            msg = str(exc)
            key = "pretrained" if "list_pretrained" in msg else "model"
            report.problems.append(f"{profile.path}: pool[{i}] ({e.id}).{key}: {msg}")


def _datasets_needed(sections: list[str], entries: list[PoolEntry], profile: Profile) -> dict[str, list[str]]:
    """dataset -> the sections that read it."""
    need: dict[str, list[str]] = {}
    ids = {e.id for e in entries}
    has_pairs = any(e.finetuned_from in ids for e in entries)
    for s in sections:
        names = list(SECTION_DATASETS.get(s, ()))
        if s in PAIR_SECTIONS and has_pairs:
            names += list(EVAL_DATASETS) + (["broden"] if s == "wiseft" and "broden" in profile.datasets else [])
        for d in names:
            need.setdefault(d, []).append(s)
    return need


def _hub_location(entry: PoolEntry) -> tuple[str | None, list[str], str | None]:
    """(hub repository, candidate file names, download url) of an open_clip tag: the lookup of
    ``helpers.models.weights.hub_weights``, without downloading."""
    from helpers.models.catalogue import open_clip_module

    oc = open_clip_module(entry.model)
    cfg = oc.get_pretrained_cfg(entry.model, entry.pretrained)
    hub = cfg.get("hf_hub")
    if not hub:
        return None, [], cfg.get("url")
    if hub.endswith("/"):
        return hub[:-1], [oc.constants.HF_SAFE_WEIGHTS_NAME, oc.constants.HF_WEIGHTS_NAME], None
    repo, filename = os.path.split(hub)
    names = [filename[:-4] + ".safetensors", filename] if filename.endswith((".bin", ".pth")) else [filename]
    return repo, names, None


def _check_hub(profile: Profile, entries: list[PoolEntry], report: Report) -> None:
    import huggingface_hub
    from huggingface_hub import constants

    cache = str(profile.paths.get("hf_cache") or constants.HF_HUB_CACHE)
    where = "paths.hf_cache" if profile.paths.get("hf_cache") else "the default hub cache"
    present, seen = 0, set()
    for e in entries:
        if not e.pretrained:
            continue
        repo, names, url = _hub_location(e)
        if repo is None:
            report.todo.append(f"to download: {url} for entry {e.id!r} (no hub repository): set its "
                               "`checkpoint:` to the downloaded file instead of `pretrained:`")
            continue
        if any(isinstance(huggingface_hub.try_to_load_from_cache(repo, n, cache_dir=cache), str) for n in names):
            present += 1
            continue
        if repo in seen:
            continue
        seen.add(repo)
        size = costs.download_bytes(e)
        line = (f"to download: {repo} ({'~%.1f GB' % (size / costs.GB) if size else 'size unknown'}) "
                f"for entry {e.id!r} into {cache} ({where}): `hf download {repo} --cache-dir {cache}`")
        report.todo.append(line)
        if _hub_offline():
            report.pending.append(line)
    tags = sum(1 for e in entries if e.pretrained)
    if tags:
        report.checked.append(f"hub weights: {present} of {tags} open_clip tag(s) in {cache}")


def _hub_offline() -> bool:
    from helpers.models.weights import hub_offline as offline

    return offline()


def _unloadable(path: Path) -> str | None:
    """Why ``torch.load(weights_only=True)`` refuses a checkpoint (unsafe pickle, damaged file), or
    None; memory-mapped, so nothing is copied and no model is built."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - every refusal is reported with the file
        first = re.sub(r"\x1b\[[0-9;]*m", "", (str(exc).strip().splitlines() or [type(exc).__name__])[0])
        return f"checkpoint file {path} cannot be read safely (torch.load weights_only=True: {first})"
    return None


def _check_checkpoints(profile: Profile, entries: list[PoolEntry], report: Report) -> list[PoolEntry]:
    """Checkpoint files of the slice (and of the parents a finetuning run starts from); returns the
    entries whose checkpoint a command still has to produce."""
    by_id = {e.id: e for e in profile.pool}
    wanted = list({e.id: e for e in entries + [by_id[e.finetuned_from] for e in entries
                                               if e.finetuned_from in by_id]}.values())
    to_produce, present = [], 0
    for e, key, state, detail in checkpoint_status(profile, wanted):
        if state == "present":
            present += 1
            why = _unloadable(Path(e.checkpoint))
            if why:
                report.problems.append(f"{profile.path}: {key}: {why}")
        elif state == "produced":
            to_produce.append(e)
            report.todo.append(detail)
            report.pending.append(detail)
        else:
            report.problems.append(f"{profile.path}: {key}: {detail}")
            if e.family == "imagenet_captions_clip" and not any("ImageNet-Captions" in x for x in report.sources):
                from helpers.data import sources

                report.sources += sources.captions_lines(e.checkpoint)
    n = sum(1 for e in wanted if e.checkpoint)
    if n:
        report.checked.append(f"checkpoints: {present} of {n} present, {len(to_produce)} produced by a command")
    for e in wanted:
        problem = _activation_of_training_run(e)
        if problem:
            report.problems.append(f"{profile.path}: pool[{[x.id for x in profile.pool].index(e.id)}] ({e.id}).model: "
                                   f"{problem}")
    return to_produce


def _training_params(checkpoint: Path) -> tuple[Path, dict[str, str]] | None:
    """The ``params.txt`` open_clip's trainer writes beside its run (``<logs>/<name>/params.txt``,
    checkpoints in ``<logs>/<name>/checkpoints/``), parsed, if the checkpoint sits in such a run."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        f = folder / "params.txt"
        if f.is_file():
            pairs = (line.split(": ", 1) for line in f.read_text(errors="replace").splitlines() if ": " in line)
            return f, {k.strip(): v.strip() for k, v in pairs}
    return None


def _activation_of_training_run(e: PoolEntry) -> str | None:
    """The QuickGELU trap of a local open_clip state dict (issue 12): GELU and QuickGELU have no
    parameters, so the weights cannot tell which one they were trained with and any model name
    loads them. What can be seen cheaply is the training run's ``params.txt`` (its ``model`` and
    ``force_quick_gelu``); without one, the published-accuracy guard is what catches the mismatch
    (book/methods.md)."""
    if not e.checkpoint or e.source != "open_clip" or not Path(e.checkpoint).is_file():
        return None
    found = _training_params(Path(e.checkpoint))
    if found is None or "model" not in found[1]:
        return None
    from helpers.models.catalogue import open_clip_module

    path, params = found
    trained_model = params["model"]
    cfg = open_clip_module(trained_model).get_model_config(trained_model) or {}
    trained = bool(cfg.get("quick_gelu", False)) or params.get("force_quick_gelu", "False") == "True"
    runs = bool((open_clip_module(e.model).get_model_config(e.model) or {}).get("quick_gelu", False))
    if trained == runs:
        return None
    base = e.model[: -len("-quickgelu")] if e.model.endswith("-quickgelu") else e.model
    return (f"{e.checkpoint} was trained with {'QuickGELU' if trained else 'plain GELU'} ({path}: model "
            f"{trained_model}, force_quick_gelu {params.get('force_quick_gelu', 'False')}), but open_clip model "
            f"{e.model!r} runs {'plain GELU' if trained else 'QuickGELU'}; expected model "
            f"{(base + '-quickgelu') if trained else base!r}")


def _check_dataset(profile: Profile, name: str, readers: list[str], report: Report) -> int | None:
    """Open one dataset in its layout; compare its size with the published one (kind: paper).
    Returns the number of images the run will use (after the profile's limit), None if unusable."""
    from helpers.data import DatasetLayoutError, open_dataset

    row = {"dataset": name, "folder": None, "images": None, "classes": None, "status": "", "readers": readers}
    report.datasets.append(row)
    if name not in profile.datasets:
        row["status"] = "not set"
        report.problems.append(f"{profile.path}: datasets.{name}: not set, but {', '.join(readers)} read(s) it; "
                               f"expected the folder of {name} in its real layout (book/reproducing.md)")
        _where_to_get(profile, name, None, report)
        return None
    root = profile.dataset_root(name)
    row["folder"] = str(root)
    try:
        ds = open_dataset(name, root)
    except (DatasetLayoutError, OSError) as exc:
        row["status"] = "missing" if not Path(root).exists() else "bad layout"
        report.problems.append(f"{profile.path}: datasets.{name}: {exc} ({_data_root_hint(profile)})")
        _where_to_get(profile, name, root, report)
        return None
    n = len(ds.files)
    classes = len(ds.concepts) if name == "broden" else len(set(ds.labels.tolist()))
    row.update(images=n, classes=classes, status="ok")
    _measure_decode(name, ds, report)
    if profile.kind == "paper":
        want_n, want_c = published.IMAGES[name], published.CLASSES[name]
        slack = published.SLACK.get(name, 0.0)
        if abs(n - want_n) > slack * want_n or classes != want_c:
            row["status"] = "incomplete"
            _where_to_get(profile, name, root, report)
            about = "about " if slack else ""
            report.problems.append(
                f"{profile.path}: datasets.{name} ({root}): expected {about}{want_n:,} images in {want_c:,} "
                f"{'concepts' if name == 'broden' else 'classes'} (the published size), found {n:,} in {classes:,}: "
                "an incomplete or different copy (kind: paper compares with the published sizes)")
    limit = profile.limit(name)
    return n if limit is None else min(n, limit)


def _measure_decode(name: str, ds, report: Report, n: int = 16) -> None:
    """The decode rate of this copy of the dataset (a few images, the store's own decode path), for
    the stores' wall time: ObjectNet's large photos decode several times slower than ImageNet's."""
    try:
        rate = costs.measure_decode_rate(ds, n=n)
    except Exception:  # noqa: BLE001 - an unreadable image is the run's to report (skip_unreadable)
        return
    if rate:
        report.decode_rates[name] = (rate, f"measured on {min(n, len(ds.files))} images")


def _data_root_hint(profile: Profile) -> str:
    """Where the dataset folders are looked for, and the variable that moves them."""
    env = os.environ.get("CLIP_STUDY_DATA_ROOT")
    return (f"data_root {profile.paths['data_root']}, from CLIP_STUDY_DATA_ROOT" if env else
            f"data_root {profile.paths['data_root']}; set CLIP_STUDY_DATA_ROOT=/path/to/datasets to read them elsewhere")


def _where_to_get(profile: Profile, name: str, root: Path | None, report: Report) -> None:
    from helpers.data import sources

    report.sources += sources.plan_lines(name, root, profile.paths["data_root"])


def _tree_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def _existing_parent(p: Path) -> Path:
    p = Path(p)
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_disk(profile: Profile, report: Report) -> None:
    """Free space against what is still to be written, per file system. The checkpoint bytes are
    those of the runs still to train (:func:`helpers.workflow.costs.estimate`), so only their own run
    folders count as written (an interrupted run's epochs), not the finished runs beside them."""
    from helpers.training.loop import run_dir

    needs: dict[int, list] = {}
    for key, folder, need in (("paths.cache_dir", profile.cache_dir, costs.peak_bytes(report.stages)),
                              ("paths.checkpoints_dir", profile.paths["checkpoints_dir"], report.checkpoint_bytes)):
        if key == "paths.checkpoints_dir":
            have = sum(_tree_bytes(d) for d in {run_dir(profile, e) for e in report.to_train} if d.exists())
        else:
            have = _tree_bytes(folder) if folder.exists() else 0
        if key == "paths.cache_dir" and profile.paths["checkpoints_dir"].is_relative_to(folder) and folder.exists():
            have -= _tree_bytes(profile.paths["checkpoints_dir"]) if profile.paths["checkpoints_dir"].exists() else 0
        todo = max(0.0, need - have)
        parent = _existing_parent(folder)
        dev = os.stat(parent).st_dev
        slot = needs.setdefault(dev, [parent, 0.0, [], []])
        slot[1] += todo
        slot[2].append(f"{key} {folder}")
        what = "cache at its peak, transient stores included" if key == "paths.cache_dir" else \
            "checkpoints still to train"
        slot[3].append(f"{need / costs.GB:.1f} GB {what}" + (f" - {have / costs.GB:.1f} GB already there" if have else ""))
    for parent, todo, keys, parts in needs.values():
        free = shutil.disk_usage(parent).free
        line = (f"{' and '.join(keys)}: {todo / costs.GB:.1f} GB still to write ({' + '.join(parts)}), "
                f"{free / costs.GB:.1f} GB free on {parent}")
        report.disk.append(line)
        if todo > free:  # in bytes: a small run's need rounds to "0.0 GB"
            report.problems.append(f"{profile.path}: {' and '.join(k.split()[0] for k in keys)}: not enough disk: "
                                   f"{' and '.join(keys)} need {int(todo):,} bytes still to write, "
                                   f"{int(free):,} bytes free on {parent} (point "
                                   f"{' / '.join(k.split()[0] for k in keys)} elsewhere, e.g. CLIP_STUDY_CACHE=/scratch/...)")


def check(profile: Profile | str | os.PathLike, sections: list[str] | None = None, entry: str | None = None,
          backbone: str | None = None, per_entry: bool = False, cuda_facts=None, rate: float | None = None) -> Report:
    """Check a run of ``sections`` (None: all) over the slice ``entry`` / ``backbone`` of ``profile``
    (a loaded :class:`Profile` or a name / path, loaded here so that its validation errors become
    problems) and estimate its cost; builds no model, reads no weights, decodes no image.
    ``cuda_facts``: the machine's CUDA stack (default: :func:`helpers.workflow.cuda_check.probe`,
    asked only for a CUDA device)."""
    if not isinstance(profile, Profile):
        try:
            profile = load_profile(profile)
        except ConfigError as exc:
            lines = str(exc).splitlines()
            return Report(None, problems=[l.strip() for l in (lines[1:] if len(lines) > 1 else lines)])
    report = Report(profile, rate=rate)
    report.checked.append(_library_line())
    _check_models(profile, report)
    _check_cuda(profile, report, cuda_facts)
    report.sections = _sections(sections, report)
    try:
        report.entries = profile.select(entry=entry, backbone=backbone)
    except KeyError as exc:
        report.problems.append(str(exc.args[0]))
        return report
    entries = report.entries
    report.jobs = len(report.sections) * (len(entries) if per_entry else 1)

    to_train = report.to_train = _check_checkpoints(profile, entries, report)
    _check_hub(profile, entries, report)

    need = _datasets_needed(report.sections, entries, profile)
    if to_train:
        need.setdefault("imagenet-train", []).append("clip-study finetune / train-supervised")

    images: dict[str, int] = {}
    for name in [d for d in (*EVAL_DATASETS, "broden", "imagenet-train") if d in need]:
        got = _check_dataset(profile, name, need[name], report)
        lim = profile.limit(name)
        images[name] = got if got is not None else (published.IMAGES[name] if lim is None
                                                    else min(lim, published.IMAGES[name]))

    report.stages = costs.estimate(profile, entries, report.sections, images=images, to_train=to_train,
                                   train_images=images.get("imagenet-train", 0), rate=report.rate,
                                   decode_rates=report.decode_rates)
    _check_disk(profile, report)
    return report


def _check_cuda(profile: Profile, report: Report, facts) -> None:
    """The CUDA stack first (:mod:`helpers.workflow.cuda_check`): build, driver, devices, index, bf16."""
    if cuda_check.device_index(profile.device) is None:
        return
    found = cuda_check.check(profile.device, profile.precision, facts or cuda_check.probe())
    report.checked += [f"CUDA: {line}" for line in found.lines]
    report.problems += [f"{profile.path}: {p}" for p in found.problems]  # the file that names the device


def _library_line() -> str:
    import open_clip
    import torch
    import torchvision

    return (f"profile values and model names: open_clip {open_clip.__version__}, torchvision "
            f"{torchvision.__version__}, torch {torch.__version__}")


def format(report: Report) -> str:  # noqa: A001 - the name the runner calls
    """The report as ``clip-study plan`` prints it; the last line is ``total cache: <N> GB``."""
    out: list[str] = []
    P = report.profile
    if P is None:
        out.append("clip-study plan: the profile does not load:")
        out += [f"  problem: {p}" for p in report.problems]
        out.append("total cache: unknown (fix the profile first)")
        return "\n".join(out)
    dev = P.device + (f", {P.precision}" if P.device.startswith("cuda") else "")
    out.append(f"clip-study plan: profile {P.name!r} ({P.path}), kind {P.kind}, {len(report.entries)} entries, "
               f"{len(report.sections)} section(s), {report.jobs} job(s), device {dev}")
    out.append(f"  cache_dir        {P.cache_dir}")
    out.append(f"  checkpoints_dir  {P.paths['checkpoints_dir']}")
    out.append(f"  data_root        {P.paths['data_root']}")
    out.append(f"  (relative paths resolve against the checkout {REPO_ROOT}; CLIP_STUDY_DATA_ROOT replaces data_root, "
               "CLIP_STUDY_CACHE moves cache_dir and checkpoints_dir)")
    out.append("")
    out.append("Checked")
    out += [f"  ok  {c}" for c in report.checked]
    if report.datasets:
        out.append("")
        out.append("Datasets")
        for r in report.datasets:
            found = f"{r['images']:,} images, {r['classes']:,} {'concepts' if r['dataset'] == 'broden' else 'classes'}" \
                if r["images"] is not None else "-"
            out.append(f"  {r['dataset']:<16} {r['status']:<11} {found:<34} {r['folder'] or '(not set)'}")
    if report.todo:
        out.append("")
        out.append(f"To do before `clip-study run` ({len(report.todo)})")
        out += [f"  - {t}" for t in report.todo]
    if report.sources:
        out.append("")
        out.append("Where to get what is missing (book/reproducing.md, section 3)")
        out += [f"  {line}" for line in report.sources]
    out.append("")
    out += costs.format_stages(report.stages, P, report.rate)
    if report.disk:
        out.append("")
        out.append("Disk")
        out += [f"  {d}" for d in report.disk]
        out.append(f"  (the total cache below is what stays under cache_dir once the run is done; the bytes still to "
                   "write add the transient stores' peak and the checkpoints, less what is already on disk)")
    out.append("")
    if report.problems:
        out.append(f"Problems: the run would fail ({len(report.problems)})")
        out += [f"  - {p}" for p in report.problems]
    else:
        out.append("No problems found.")
    if report.pending:
        offline = " (HF_HUB_OFFLINE is set: nothing downloads during the run)" if _hub_offline() else ""
        out.append(f"Not ready: {len(report.pending)} step(s) of the to-do list above must run first{offline}.")
    elif report.ok:
        out.append("Ready: `clip-study run` can start" + (" (it downloads the weights above)" if report.todo else "") + ".")
    out.append(costs.total_line(report.stages))
    return "\n".join(out)
