"""The training loop shared by finetuning (Appendix H.1, :mod:`helpers.training.finetune`) and supervised
training from scratch (Appendix H.2, :mod:`helpers.training.supervised`).

What it does, in the order of one step: decode ImageNet training images in a torch ``DataLoader``
(a ``DistributedSampler`` splits each global batch over the ``torchrun`` processes), augment them,
normalise on the device with the model's own mean/std, compute the logits of the classifier
(``W h/||h||`` for CLIP and CoCa, ``W h + b`` for a supervised model), the cross-entropy, one AdamW
step with gradient clipping, and a learning-rate schedule stepped per iteration.

Checkpoints (the layout :func:`checkpoint_bytes` counts): after every epoch ``k`` the run folder gets

- ``epoch_<k>.pt``: the classifier's weights alone, in the ``clip-study-classifier/1`` format of
  :func:`helpers.models.save_classifier` (so any epoch loads as a model, as Figure 5 needs), with
  the epoch, step, loss history and run identity but no optimiser state: 4 bytes per trained
  parameter (image encoder + head W (+ bias b); the text tower is not trained and not stored);
- ``resume_<k>.pt``: everything a resume needs, self-contained: the same weights, the optimiser
  (the two AdamW moments: twice the weights again), scheduler, gradient scaler, every rank's RNG
  states, epoch, global step, loss history and identity: about 3x the weights.

Only the newest epoch keeps a resume state: ``resume_<k-1>.pt`` is deleted once ``resume_<k>.pt``
is written, read back and flushed to disk, so a job killed at any moment finds at least one usable
resume state (for a moment two; the newest that loads wins). ``keep_epochs`` (:data:`KEEP_EPOCHS`)
decides which weights files stay: ``all`` (every epoch, E x the weights; what Figure 5 reads, the
finetuning default) or ``last`` (the newest only: 1 x the weights; the default of supervised
training, whose epochs nothing reads). At the end the classifier goes to the pool entry's checkpoint
path (``final.pt``) and the resume state is deleted. Files are written to a temporary name and
renamed, so a reader never sees half a file. A run that finds resume states resumes from the newest
one that loads (a corrupt file is named in a warning and the previous one, if still there, is
used); one of another identity is refused. Data order and augmentation are functions of
``(seed, epoch, image index)`` alone, so a resumed run feeds the model the same batches as an
uninterrupted one and, on the CPU, ends with bit-identical weights.
"""
from __future__ import annotations

import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from helpers.config import load_profile, run_setting
from helpers.data import open_dataset
from helpers.models import autocast, save_classifier
from helpers.models.precision import compute_dtype
from helpers.training import ddp

#: What a resume state (``resume_<k>.pt``) holds beyond the classifier fields of ``save_classifier``.
CHECKPOINT_KEYS = ("encoder", "head", "optimizer", "scheduler", "epoch", "step", "identity")
#: The resume-only fields: what an ``epoch_<k>.pt`` weights file does not hold.
RESUME_ONLY_KEYS = ("optimizer", "scheduler", "scaler", "rng")
#: Which per-epoch weights files a run keeps (see the module docstring and :func:`checkpoint_bytes`).
KEEP_EPOCHS = ("all", "last")
#: AdamW keeps two moments per parameter, each the parameter's size (fp32).
ADAMW_MOMENTS = 2


class TrainingDiverged(FloatingPointError):
    """The loss (or the gradient norm) became NaN or infinite; the message names the step and the
    last good checkpoint to resume from after fixing the cause."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used for this run; the message names the file and the reason."""


class CorruptCheckpointWarning(UserWarning):
    """A checkpoint file could not be read; the run falls back to the previous epoch's."""


@dataclass(frozen=True)
class Recipe:
    """Hyperparameters of one training run; the subclasses set the paper's values as defaults.

    ``batch_size`` is global (split over the ``torchrun`` processes). ``schedule``: ``cosine``
    (linear warm-up to ``lr``, then cosine annealing to 0 at the last step; Appendix H.1) or
    ``step`` (linear warm-up, then ``lr * lr_decay ** m`` after ``m`` of the ``lr_milestones``
    epochs; Appendix H.2). Both are stepped per iteration. ``grad_clip``: maximal global L2 norm of
    the gradient (None: no clipping). ``crop_scale`` and ``interpolation`` parametrise
    RandomResizedCrop; ``hflip`` adds a random horizontal flip.
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    schedule: str
    lr_milestones: tuple[int, ...]
    lr_decay: float
    grad_clip: float | None
    label_smoothing: float
    crop_scale: tuple[float, float]
    interpolation: str
    hflip: bool
    seed: int

    def __post_init__(self):
        problems = []
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a positive integer, found {getattr(self, name)!r}")
        if self.warmup_steps < 0:
            problems.append(f"warmup_steps must be >= 0, found {self.warmup_steps}")
        if not self.lr > 0:
            problems.append(f"lr must be positive, found {self.lr}")
        if self.schedule not in ("cosine", "step"):
            problems.append(f"schedule must be 'cosine' or 'step', found {self.schedule!r}")
        if self.interpolation not in ("bicubic", "bilinear"):
            problems.append(f"interpolation must be 'bicubic' or 'bilinear', found {self.interpolation!r}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            problems.append(f"crop_scale must satisfy 0 < low <= high <= 1, found {self.crop_scale}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing must be in [0, 1), found {self.label_smoothing}")
        if problems:
            raise ValueError(f"{type(self).__name__}: " + "; ".join(problems))

    def as_dict(self) -> dict:
        """Plain values (tuples as lists), as stored in checkpoints and compared on resume."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def replace(self, **changes) -> "Recipe":
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no hyperparameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
        kw = {**asdict(self), **{k: v for k, v in changes.items() if v is not None}}
        for k in ("lr_milestones", "crop_scale"):
            kw[k] = tuple(kw[k])
        return type(self)(**kw)


class LrSchedule:
    """Multiplier of the base learning rate at a global step (a ``LambdaLR`` lambda).

    Cosine (the WiSE-FT reference): ``(s + 1) / warmup`` for ``s < warmup``, then
    ``(1 + cos(pi (s - warmup) / (total - warmup))) / 2``. Step (Appendix H.2):
    ``min(1, (s + 1) / warmup) * lr_decay ** (number of milestones <= epoch of s)``.
    A callable object rather than a closure, so that its state is saved with the scheduler.
    """

    def __init__(self, recipe: Recipe, steps_per_epoch: int):
        self.schedule = recipe.schedule
        self.warmup = recipe.warmup_steps
        self.total = recipe.epochs * steps_per_epoch
        self.steps_per_epoch = steps_per_epoch
        self.milestones = list(recipe.lr_milestones)
        self.decay = recipe.lr_decay

    def __call__(self, step: int) -> float:
        warm = (step + 1) / self.warmup if step < self.warmup else 1.0
        if self.schedule == "step":
            epoch = step // self.steps_per_epoch  # epochs completed before this step
            return warm * self.decay ** sum(epoch >= m for m in self.milestones)
        if step < self.warmup:
            return warm
        span = max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * (step - self.warmup) / span))


def train_transform(image_size, recipe: Recipe):
    """RandomResizedCrop (``recipe.crop_scale``, ``recipe.interpolation``), an optional horizontal
    flip, then a uint8 tensor: normalisation happens on the device with the model's mean/std."""
    from torchvision import transforms as T

    mode = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[recipe.interpolation]
    steps = [T.RandomResizedCrop(image_size, scale=tuple(recipe.crop_scale), interpolation=mode)]
    if recipe.hflip:
        steps.append(T.RandomHorizontalFlip())
    steps.append(T.PILToTensor())
    return T.Compose(steps)


class SeededAugment:
    """A training set whose random augmentation of image ``i`` in epoch ``e`` depends only on
    ``(seed, e, i)``: the same crops whatever the number of workers or processes, and after a
    resume. ``base[i]`` must return ``(PIL image, label)``."""

    def __init__(self, base, transform: Callable, seed: int):
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        import torch

        image, label = self.base[i]
        sample_seed = int(np.random.SeedSequence([self.seed, self.epoch, int(i)]).generate_state(1)[0])
        # torchvision draws crop boxes and flips from torch's global generator; fork it so the
        # caller's random stream is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return self.transform(image), label


@dataclass
class TrainResult:
    """What :func:`fit` did: the final checkpoint, the epochs run in this call (1-based), the
    resume state it resumed from (None: from the start; the final file itself: nothing to do) and the
    per-epoch history of the whole run (mean loss, last step's learning rate, seconds, images/s)."""

    final: Path
    epochs_run: list[int] = field(default_factory=list)
    resumed_from: Path | None = None
    history: list[dict] = field(default_factory=list)


def epoch_path(run_dir: Path, epoch: int) -> Path:
    """The weights-only file of epoch ``epoch`` (what Figure 5 loads)."""
    return Path(run_dir) / f"epoch_{epoch}.pt"


def resume_path(run_dir: Path, epoch: int) -> Path:
    """The resume state written after epoch ``epoch`` (weights, optimiser, scheduler, RNG, step)."""
    return Path(run_dir) / f"resume_{epoch}.pt"


def _numbered(run_dir: str | os.PathLike, prefix: str) -> list[tuple[int, Path]]:
    run_dir = Path(run_dir)
    out = []
    for p in run_dir.glob(f"{prefix}_*.pt") if run_dir.is_dir() else []:
        k = p.stem.split("_", 1)[1]
        if k.isdigit():
            out.append((int(k), p))
    return sorted(out)


def epoch_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(k, path)`` of the ``epoch_<k>.pt`` weights files of a run folder, by increasing epoch."""
    return _numbered(run_dir, "epoch")


def resume_states(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(k, path)`` of the ``resume_<k>.pt`` files of a run folder, by increasing epoch (one, or two
    when a job was killed between writing the newest and deleting the previous)."""
    return _numbered(run_dir, "resume")


def checkpoint_bytes(weights_bytes: float, epochs: int, keep_epochs: str = "all") -> tuple[float, float]:
    """Disk a run of ``epochs`` epochs uses under its run folder and checkpoint path, from the size
    of one copy of its trained weights (4 bytes per parameter of the image encoder and head).

    Returns ``(kept, peak_extra)``: ``kept`` stays after the run (the ``epoch_<k>.pt`` files
    ``keep_epochs`` keeps, E or 1 times the weights, plus ``final.pt``); ``peak_extra`` is what the
    run needs on top of that while it trains: two resume states of 3x the weights each (weights and
    the two AdamW moments) for the moment between writing the newest and deleting the previous."""
    if keep_epochs not in KEEP_EPOCHS:
        raise ValueError(f"keep_epochs must be one of {', '.join(KEEP_EPOCHS)}, found {keep_epochs!r}")
    resume = (1 + ADAMW_MOMENTS) * weights_bytes
    kept = (epochs if keep_epochs == "all" else 1) * weights_bytes + weights_bytes
    return kept, 2 * resume


def read_checkpoint(path: Path, required: tuple[str, ...] = CHECKPOINT_KEYS) -> dict:
    """Load a checkpoint with ``weights_only=True``; :class:`CheckpointError` naming the file when it
    cannot be read or lacks one of ``required``."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle error, I/O error: all mean "unusable"
        raise CheckpointError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(state).__name__}")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (missing {', '.join(missing)})")
    return state


def run_identity(recipe: Recipe, dataset, **start: Any) -> dict:
    """What a run's result depends on besides its progress: the recipe, the training images (their
    paths relative to the dataset root and labels; cheap, no file is read) and ``start`` (e.g. the
    digest of the weights training starts from). Stored in every checkpoint and compared on resume."""
    import hashlib

    h = hashlib.sha256()
    root = Path(dataset.root)
    for f, y in zip(dataset.files, dataset.labels):
        h.update(f"{Path(f).relative_to(root).as_posix()}\t{int(y)}\n".encode())
    return {"recipe": recipe.as_dict(), "images": len(dataset), "images_digest": h.hexdigest(), **start}


def weights_digest(model) -> str:
    """sha256 of a model's parameters and buffers (names, shapes, dtypes, bytes): identifies the
    exact weights a run starts from, the zero-shot head included."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _mismatch(path: Path, saved: dict, identity: dict) -> str | None:
    flat_saved = {**saved.get("recipe", {}), **{k: v for k, v in saved.items() if k != "recipe"}}
    flat_now = {**identity["recipe"], **{k: v for k, v in identity.items() if k != "recipe"}}
    diff = [f"{k}: {flat_saved.get(k)!r} there, {flat_now[k]!r} now" for k in flat_now if flat_saved.get(k) != flat_now[k]]
    return f"{path} belongs to another run ({'; '.join(diff)})" if diff else None


def latest_good_checkpoint(run_dir: Path, identity: dict) -> tuple[Path, dict] | None:
    """The newest ``resume_<k>.pt`` that loads, with its state; unreadable ones are skipped with a
    :class:`CorruptCheckpointWarning` naming them. A readable resume state of another run (other
    recipe, training images or starting weights) raises :class:`CheckpointError`: resuming it would
    silently mix two runs."""
    for k, path in reversed(resume_states(run_dir)):
        try:
            state = read_checkpoint(path)
            if state["epoch"] != k:
                raise CheckpointError(f"{path}: holds epoch {state['epoch']}, not {k}")
        except CheckpointError as exc:
            warnings.warn(f"{exc}; resuming from the previous epoch's resume state instead",
                          CorruptCheckpointWarning, stacklevel=3)
            continue
        problem = _mismatch(path, state["identity"], identity)
        if problem:
            raise CheckpointError(f"{problem}; resume with the same settings, or pass restart=True "
                                  f"(--restart) to start over")
        return path, state
    epochs = epoch_checkpoints(run_dir)
    if epochs:
        warnings.warn(f"{run_dir}: epoch weights {epochs[0][1].name}..{epochs[-1][1].name} but no usable resume "
                      "state (resume_<k>.pt): training starts over and rewrites them", CorruptCheckpointWarning,
                      stacklevel=3)
    return None


def final_is_current(final: Path, identity: dict) -> bool:
    """Whether ``final`` exists and was produced by this run (then there is nothing to do). A final
    file of another run raises :class:`CheckpointError` naming it; an unreadable one is retrained."""
    if not final.exists():
        return False
    try:
        state = read_checkpoint(final, required=("encoder", "head"))
    except CheckpointError as exc:
        warnings.warn(f"{exc}; it will be rewritten", CorruptCheckpointWarning, stacklevel=3)
        return False
    if "identity" not in state:
        raise CheckpointError(f"{final} exists and was not written by this training code; move it away or "
                              f"pass restart=True (--restart) to overwrite it")
    problem = _mismatch(final, state["identity"], identity)
    if problem:
        raise CheckpointError(f"{problem}; pass restart=True (--restart) to retrain and overwrite it")
    return True


def clear_run(run_dir: Path, final: Path) -> None:
    """Remove a run's epoch weights, resume states and final file (``restart=True``)."""
    for _, p in epoch_checkpoints(run_dir) + resume_states(run_dir):
        p.unlink()
    final.unlink(missing_ok=True)


def _flush(*paths: Path) -> None:
    """fsync files and their folders, so that what was renamed into place survives a power loss
    before anything older is deleted (a killed process needs no more than the rename)."""
    for p in list(paths) + sorted({Path(p).parent for p in paths}):
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:  # some file systems refuse fsync on a folder
            pass
        finally:
            os.close(fd)


def prune(run_dir: Path, keep_epochs: str, current: int, *, finished: bool = False) -> None:
    """Delete what the layout no longer needs once epoch ``current``'s files are on disk
    (:func:`_flush`): every resume state but ``resume_<current>.pt`` (all of them when the run is
    ``finished``: its ``final.pt`` is written) and, for ``keep_epochs="last"``, every weights file
    but ``epoch_<current>.pt`` (stale later ones of an earlier attempt included)."""
    for k, p in resume_states(run_dir):
        if finished or k != current:
            p.unlink(missing_ok=True)
    if keep_epochs == "last":
        for k, p in epoch_checkpoints(run_dir):
            if k != current:
                p.unlink(missing_ok=True)


def _rng_state() -> dict:
    import torch

    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather_rng(ctx: ddp.Context) -> list[dict]:
    """Every rank's RNG states (rank order), so that a resume restores each process's stream."""
    import torch.distributed as dist

    mine = _rng_state()
    if not ctx.distributed:
        return [mine]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, mine)
    return out


def training_loader(train_set, recipe: Recipe, ctx: ddp.Context, num_workers: int, persistent_workers: bool = True,
            prefetch_factor: int = 4):
    """The (sampler, DataLoader) of a run: each process's share of every global batch of decoded,
    augmented uint8 images (benchmarks/training_loader.py measures it against the bare decode)."""
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    if recipe.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {recipe.batch_size} is global and must be divisible by the "
                         f"{ctx.world_size} processes")
    per_rank = recipe.batch_size // ctx.world_size
    # One sampler for every world size: with one replica it is a seeded shuffle per epoch; with W
    # replicas rank r takes positions r, r + W, ... of the same permutation, so the W per-rank
    # batches of a step together hold exactly the images of the one-process global batch.
    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=recipe.seed, drop_last=True)
    # Persistent workers keep their processes (and decoders) from one epoch to the next; each
    # keeps prefetch_factor batches decoded ahead, so the GPU does not wait on JPEG decoding.
    workers = dict(persistent_workers=persistent_workers, prefetch_factor=prefetch_factor) if num_workers else {}
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, num_workers=num_workers,
                        pin_memory=ctx.device.type == "cuda", drop_last=True,
                        generator=torch.Generator().manual_seed(recipe.seed), **workers)
    if len(loader) == 0:
        raise ValueError(f"the training set has {len(train_set)} images, fewer than one global batch of "
                         f"{recipe.batch_size}; lower batch_size")
    return sampler, loader


def fit(model, dataset, recipe: Recipe, run_dir: str | os.PathLike, final: str | os.PathLike, *,
        identity: dict | None = None, ctx: ddp.Context | None = None, label: str = "training",
        precision: str = "fp32", num_workers: int = 0, restart: bool = False, final_extra: dict | None = None,
        keep_epochs: str = "all", on_epoch_end: Callable[[int, Path, dict], None] | None = None,
        persistent_workers: bool = True, prefetch_factor: int = 4, accumulation_steps: int = 1) -> TrainResult:
    # about 80 lines of code under the docstring: the epoch loop stays whole so that resuming, DDP,
    # the per-epoch save and the final classifier read in one place (the step, the data and the
    # resume are their own functions)
    """Train ``model`` (a :class:`helpers.models.loading.LoadedModel`: encoder, head and bias trained
    together) on ``dataset`` (an ``ImageDataset`` giving ``(PIL image, label)``, e.g.
    ``open_dataset("imagenet-train", root)``) with ``recipe``.

    Epoch weights and the newest resume state go to ``run_dir``, the final classifier to ``final``
    (``final_extra`` is stored in all, e.g. ``entry=<id>``); ``keep_epochs``: which epoch weights
    files stay (:data:`KEEP_EPOCHS`; disk per run: :func:`checkpoint_bytes`; a finished run called
    with ``last`` drops its older ones). ``identity``: :func:`run_identity` (default: from the
    recipe and the dataset). A run resumes from its newest good checkpoint and returns at once when
    ``final`` is already this run's; ``restart`` starts over. ``precision``: ``fp32``, or autocast
    ``bf16``/``fp16`` on CUDA. ``on_epoch_end(epoch, weights_file, stats)`` runs on every rank once
    the epoch's weights and resume state are on disk. Raises :class:`TrainingDiverged` when the loss becomes NaN.
    ``num_workers``, ``persistent_workers``, ``prefetch_factor``: the DataLoader's decoding processes.
    ``accumulation_steps``: each process's batch is run in this many micro-batches whose gradients
    add up before the one optimiser step (:func:`_train_step`), so the recipe's effective batch is
    unchanged while the activations held at once shrink by that factor.
    """
    import torch
    from torch.nn.parallel import DistributedDataParallel
    from tqdm import tqdm  # plain bars: notebook widgets need ipywidgets and would warn

    if keep_epochs not in KEEP_EPOCHS:
        raise ValueError(f"keep_epochs must be one of {', '.join(KEEP_EPOCHS)}, found {keep_epochs!r}")
    ctx = ctx or ddp.Context(0, 1, 0, torch.device("cpu"))
    run_dir, final = Path(run_dir), Path(final)
    identity = identity or run_identity(recipe, dataset)
    if restart and ctx.is_main:
        clear_run(run_dir, final)
    ddp.barrier(ctx)
    if ddp.broadcast(ctx, final_is_current(final, identity) if ctx.is_main else None):
        state = read_checkpoint(final, required=())
        if ctx.is_main:  # a job killed after final.pt but before its clean-up; or keep_epochs changed
            prune(run_dir, keep_epochs, int(state.get("epoch", 0)), finished=True)
        ddp.barrier(ctx)
        return TrainResult(final, [], final, list(state.get("history", [])))

    train_set, sampler, loader = _training_data(model, dataset, recipe, ctx, label, num_workers, persistent_workers,
                                                prefetch_factor, accumulation_steps)
    steps_per_epoch = len(loader)

    model.to(ctx.device)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LrSchedule(recipe, steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda") if ctx.device.type == "cuda" and precision == "fp16" else None

    resumed, epoch, step, history = _resume(model, optimizer, scheduler, scaler, run_dir, identity, ctx, label)
    last_good = resumed

    net = model
    if ctx.distributed:
        net = DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    model.train()
    epochs_run = []
    while epoch < recipe.epochs:
        epoch += 1
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        t0, loss_sum, waited = time.perf_counter(), 0.0, 0.0
        bar = tqdm(loader, total=steps_per_epoch, unit="step", desc=f"{label} epoch {epoch}/{recipe.epochs}",
                   disable=not ctx.is_main, smoothing=0.1)
        t_wait = time.perf_counter()
        for i, (x8, y) in enumerate(bar):
            waited += time.perf_counter() - t_wait
            global_loss, lr = _train_step(net, model, x8, y, optimizer, params, scaler, recipe, ctx, precision,
                                          accumulation_steps, (label, step, epoch, i, steps_per_epoch, last_good))
            scheduler.step()
            step += 1
            loss_sum += global_loss
            bar.set_postfix(loss=f"{global_loss:.4f}", lr=f"{lr:.2e}",
                            img_s=f"{(i + 1) * recipe.batch_size / (time.perf_counter() - t0):.1f}", refresh=False)
            t_wait = time.perf_counter()
        bar.close()
        seconds = time.perf_counter() - t0
        stats = {"epoch": epoch, "step": step, "loss": loss_sum / steps_per_epoch, "lr": float(lr), "seconds": seconds,
                 "images_per_s": steps_per_epoch * recipe.batch_size / seconds}
        if ctx.is_main:  # the loader's share: a GPU that waits on decoding shows a large one
            print(f"{label} epoch {epoch}: {stats['images_per_s']:.1f} img/s over {ctx.world_size} process(es); "
                  f"waiting for the loader {waited:.1f} s of {seconds:.1f} s ({100 * waited / seconds:.0f} %)")
        history.append(stats)
        path, resume = _save_epoch(model, optimizer, scheduler, scaler, run_dir, epoch, step, identity, history,
                                   ctx, keep_epochs, final_extra)
        last_good, epochs_run = str(resume), epochs_run + [epoch]
        if on_epoch_end is not None:
            on_epoch_end(epoch, path, stats)

    model.eval()
    if ctx.is_main:
        final.parent.mkdir(parents=True, exist_ok=True)
        save_classifier(model, final, epoch=epoch, step=step, identity=identity, history=history,
                        **(final_extra or {}))
        _flush(final)
        prune(run_dir, keep_epochs, epoch, finished=True)  # nothing is left to resume
    ddp.barrier(ctx)
    return TrainResult(final, epochs_run, None if resumed is None else Path(resumed), history)


def _training_data(model, dataset, recipe: Recipe, ctx: ddp.Context, label: str, num_workers: int,
                   persistent_workers: bool, prefetch_factor: int, accumulation_steps: int):
    """The augmented training set, its sampler and loader; refuses an ``accumulation_steps`` that
    does not divide the per-process batch, and states the effective batch."""
    train_set = SeededAugment(dataset, train_transform(model.image_size, recipe), recipe.seed)
    sampler, loader = training_loader(train_set, recipe, ctx, num_workers, persistent_workers, prefetch_factor)
    per_rank = recipe.batch_size // ctx.world_size
    if not isinstance(accumulation_steps, int) or accumulation_steps < 1 or per_rank % accumulation_steps:
        raise ValueError(f"accumulation_steps must be a positive integer dividing the per-process batch of {per_rank} "
                         f"(batch_size {recipe.batch_size} over {ctx.world_size} process(es)), found {accumulation_steps!r}")
    if ctx.is_main:
        print(f"{label}: effective batch {recipe.batch_size} = {ctx.world_size} process(es) x {accumulation_steps} "
              f"accumulation step(s) x micro-batch {per_rank // accumulation_steps}; {num_workers} loader worker(s)"
              + (f", persistent, prefetch {prefetch_factor}" if num_workers and persistent_workers else
                 f", prefetch {prefetch_factor}" if num_workers else ""))
    return train_set, sampler, loader


def _resume(model, optimizer, scheduler, scaler, run_dir: Path, identity, ctx: ddp.Context, label: str):
    """Restore the newest good resume state of this run, if any (weights, optimiser, scheduler,
    scaler, each rank's RNG); returns (its path or None, epoch, step, history)."""
    found = latest_good_checkpoint(run_dir, identity) if ctx.is_main else None
    resumed = ddp.broadcast(ctx, None if found is None else str(found[0]))
    if resumed is None:
        return None, 0, 0, []
    state = found[1] if ctx.is_main else read_checkpoint(Path(resumed))
    restore_weights(model, state)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if len(state.get("rng") or []) == ctx.world_size:
        _set_rng_state(state["rng"][ctx.rank])
    epoch, step, history = int(state["epoch"]), int(state["step"]), list(state.get("history", []))
    if ctx.is_main:
        print(f"{label}: resuming after epoch {epoch} (step {step}) from {resumed}")
    return resumed, epoch, step, history


def _save_epoch(model, optimizer, scheduler, scaler, run_dir: Path, epoch: int, step: int, identity, history,
                ctx: ddp.Context, keep_epochs: str, final_extra) -> tuple[Path, Path]:
    """The epoch's weights file and its resume state, written by the main process; returns both paths."""
    rngs = _gather_rng(ctx)
    path, resume = epoch_path(run_dir, epoch), resume_path(run_dir, epoch)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        progress = dict(epoch=epoch, step=step, identity=identity, world_size=ctx.world_size, history=history,
                        **(final_extra or {}))
        save_classifier(model, path, **progress)  # weights only: what Figure 5 loads
        save_classifier(model, resume, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        scaler=None if scaler is None else scaler.state_dict(), rng=rngs, **progress)
        # Both files were read back before their rename; once they are flushed, the previous
        # resume state (and, for keep_epochs="last", the previous weights) can go.
        _flush(path, resume)
        prune(run_dir, keep_epochs, epoch)
    ddp.barrier(ctx)
    return path, resume


def _train_step(net, model, x8, y, optimizer, params, scaler, recipe: Recipe, ctx: ddp.Context, precision: str,
                accumulation_steps: int, where: tuple) -> tuple[float, float]:
    """One optimiser step on one process's batch ``(x8, y)``, run in ``accumulation_steps``
    micro-batches: each micro-batch's mean loss is weighted by its share of the batch, so the summed
    gradients are those of the whole batch's mean loss (label smoothing included). Under DDP the
    gradients are all-reduced once, on the last micro-batch. Returns the batch's loss (mean over
    processes) and the learning rate the step used."""
    import contextlib

    import torch
    import torch.nn.functional as F

    label, step, epoch, i, n, last_good = where
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=ctx.device)
    chunks = list(zip(x8.chunk(accumulation_steps), y.chunk(accumulation_steps)))
    for k, (xc, yc) in enumerate(chunks):
        x = model.normalize_input(xc.to(ctx.device, non_blocking=True))
        yc = yc.to(ctx.device, non_blocking=True)
        sync = k == len(chunks) - 1 or not hasattr(net, "no_sync")
        with (contextlib.nullcontext() if sync else net.no_sync()):
            with autocast(ctx.device, precision):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), yc, label_smoothing=recipe.label_smoothing) * (len(yc) / len(y))
            (scaler.scale(loss) if scaler is not None else loss).backward()
        total += loss.detach()
    # The mean over ranks is the same number on every rank, so all stop together.
    global_loss = float(ddp.mean(ctx, total))
    if not math.isfinite(global_loss):
        raise TrainingDiverged(_diverged(label, "loss", global_loss, step, epoch, i, n, last_good))
    if scaler is not None:
        scaler.unscale_(optimizer)
    if recipe.grad_clip is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip))
        # With fp16 the scaler skips steps whose gradients overflow, by design.
        if scaler is None and not math.isfinite(norm):
            raise TrainingDiverged(_diverged(label, "gradient norm", norm, step, epoch, i, n, last_good))
    lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return global_loss, lr


def loader_settings(profile) -> dict:
    """The training loader's and the accumulation's profile settings, as :func:`fit` takes them."""
    return {"num_workers": profile.num_workers, "persistent_workers": run_setting(profile, "persistent_workers"),
            "prefetch_factor": run_setting(profile, "prefetch_factor"),
            "accumulation_steps": run_setting(profile, "accumulation_steps")}


def _diverged(label: str, what: str, value: float, step: int, epoch: int, i: int, n: int, last_good: str | None) -> str:
    resume = (f"the last good checkpoint (resume state) is {last_good}" if last_good else
              "no checkpoint was written yet (it diverged in the first epoch)")
    return (f"{label}: {what} became {value} at step {step + 1} (epoch {epoch}, batch {i + 1} of {n}); "
            f"training stopped before applying that step; {resume}. Lower the learning rate or check the data, "
            f"then run again to resume from there.")


def trainable_parameters(model) -> list:
    """The encoder's parameters and the head (and bias): everything the classifier computes with."""
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def restore_weights(model, state: dict) -> None:
    """Load the encoder, head and bias of a classifier checkpoint into ``model`` in place."""
    import torch

    model.encoder.load_state_dict(state["encoder"])
    with torch.no_grad():
        model.head.copy_(state["head"])
        if model.bias is not None and state.get("bias") is not None:
            model.bias.copy_(state["bias"])


# --------------------------------------------------------------------------------------------
# Pool entries and the command line (shared by helpers.training.finetune and helpers.training.supervised)


def run_dir(profile, entry) -> Path:
    """Folder of a trained entry's epoch weights and resume state: ``<checkpoints_dir>/<entry id>``."""
    return profile.paths["checkpoints_dir"] / entry.id


def output_path(profile, entry) -> Path:
    """Where a trained entry's final classifier goes: its ``checkpoint:`` path, else
    ``<checkpoints_dir>/<entry id>/final.pt``."""
    return Path(entry.checkpoint) if entry.checkpoint else run_dir(profile, entry) / "final.pt"


def training_set(profile, limit: int | None = None):
    """The profile's ImageNet training set (``limit``: a class-balanced subset, for demos)."""
    return open_dataset("imagenet-train", profile.dataset_root("imagenet-train"), limit=limit)


def single_process(profile) -> ddp.Context:
    """The context of a run without ``torchrun``: one process on the profile's device."""
    import torch

    return ddp.Context(0, 1, 0, torch.device(profile.device))


def precision_for(profile, ctx: ddp.Context) -> str:
    """The profile's autocast precision on CUDA; fp32 elsewhere (:func:`helpers.models.precision.compute_dtype`)."""
    return compute_dtype(ctx.device, profile.precision)


def add_run_arguments(parser) -> None:
    parser.add_argument("--profile", default="demo", help="profile name (demo, paper) or YAML path")
    parser.add_argument("--entry", required=True, help="pool entry id whose checkpoint to produce")
    parser.add_argument("--device", help="cpu | cuda (default: the profile's; under torchrun one GPU per process)")
    parser.add_argument("--limit", type=int, help="train on a class-balanced subset of this many images")
    parser.add_argument("--restart", action="store_true", help="discard this entry's checkpoints and start over")
    parser.add_argument("--keep-epochs", choices=KEEP_EPOCHS,
                        help="epoch weights files to keep: all (every epoch, weights only: what Figure 5 reads) or "
                             "last (the newest only; on a finished run: drop the others). Default: all for finetune, "
                             "last for train-supervised; the newest epoch alone also keeps a resume state")


_FLAGS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "lr_milestones", "lr_decay", "grad_clip",
          "label_smoothing", "seed")


def add_recipe_arguments(parser, defaults: Recipe) -> None:
    """One ``--flag`` per tunable hyperparameter, the paper's value shown in ``--help``."""
    g = parser.add_argument_group("hyperparameters (defaults: the paper's)")
    helps = {"batch_size": "global batch, split over the processes", "lr": "peak learning rate",
             "weight_decay": "AdamW decoupled weight decay", "warmup_steps": "linear warm-up steps",
             "lr_milestones": "epochs after which lr is multiplied by --lr-decay (step schedule)",
             "grad_clip": "max gradient norm, 0 for none", "seed": "data order and augmentation seed"}
    for name in _FLAGS:
        default = getattr(defaults, name)
        kw = {"type": int if name in ("epochs", "batch_size", "warmup_steps", "lr_milestones", "seed") else float}
        if name == "lr_milestones":
            kw["nargs"] = "*"
            default = list(default)
        g.add_argument(f"--{name.replace('_', '-')}", help=f"{helps.get(name, name.replace('_', ' '))}; "
                       f"default {default}", **kw)


def recipe_from_args(args, defaults: Recipe) -> Recipe:
    """``defaults`` with the hyperparameters given on the command line."""
    from dataclasses import replace

    recipe = defaults.replace(**{k: getattr(args, k) for k in _FLAGS})
    return replace(recipe, grad_clip=None) if args.grad_clip == 0 else recipe


def run_cli(args, train: Callable, defaults: Recipe) -> int:
    """Join the ``torchrun`` process group if there is one, train, report, leave the group."""
    profile = load_profile(args.profile)
    ctx = ddp.setup(args.device or profile.device)
    try:
        result = train(profile, args.entry, recipe_from_args(args, defaults), ctx=ctx, limit=args.limit,
                       restart=args.restart, keep_epochs=getattr(args, "keep_epochs", None))
    finally:
        ddp.teardown()
    if ctx.is_main:
        if result.epochs_run:
            print(f"{args.entry}: trained epochs {result.epochs_run[0]}-{result.epochs_run[-1]}; wrote {result.final}")
        else:
            print(f"{args.entry}: {result.final} is already up to date")
    return 0
