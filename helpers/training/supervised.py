"""Supervised ImageNet models trained from scratch (Appendix H.2).

No public ImageNet weights exist for CLIP's modified ResNets (attention pooling instead of global
average pooling, a three-convolution stem, anti-aliased strided convolutions), so the paper trains
them: the image tower of the entry's open_clip architecture (``RN50``, ``RN101``) with a linear head
on the raw embedding, logits W h + b, both randomly initialised (open_clip's CLIP initialisation;
the head as ``nn.Linear``'s) from the entry's ``seed``.

Recipe (:class:`SupervisedRecipe`): 90 epochs, batch 1,024, AdamW at 1e-3, multiplied by 0.1 after
epochs 30 and 60, 5,000 linear warm-up steps, weight decay 1e-2, RandomResizedCrop and horizontal
flip, label smoothing. Where the paper gives no value the choices are those of torchvision's ImageNet
reference recipe: label smoothing 0.1, RandomResizedCrop scale (0.08, 1.0) with bilinear
interpolation; and as in finetuning: weight decay on every parameter, no gradient clipping.

Checkpoints (:mod:`helpers.training.loop`): nothing reads a supervised run's intermediate epochs, so by
default only the newest epoch's weights file is kept (``keep_epochs="last"``) beside the newest
resume state: 2 W kept after the run (W = 4 bytes per parameter of the image tower and head: 0.16 GB
for RN50) and 6 W more while it trains; ``"all"`` would keep 90 W (14 GB for RN50).

The supervised ViTs of the paper are torchvision's released weights: nothing is trained for them.
Run with ``clip-study train-supervised --entry <id>`` or under ``torchrun -m helpers.workflow.cli train-supervised``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from helpers.config import Profile
from helpers.models import load
from helpers.training import ddp
from helpers.training.loop import (
    Recipe, TrainResult, fit, loader_settings, output_path, precision_for, run_dir, run_identity, single_process,
    training_set, weights_digest,
)

#: Nothing reads the epochs of a run from scratch: keep the newest only.
KEEP_EPOCHS_DEFAULT = "last"


@dataclass(frozen=True)
class SupervisedRecipe(Recipe):
    """Appendix H.2's hyperparameters (see the module docstring)."""

    epochs: int = 90
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 5000
    schedule: str = "step"
    lr_milestones: tuple[int, ...] = (30, 60)
    lr_decay: float = 0.1
    grad_clip: float | None = None
    label_smoothing: float = 0.1
    crop_scale: tuple[float, float] = (0.08, 1.0)
    interpolation: str = "bilinear"
    hflip: bool = True
    seed: int = 0


def initial_model(profile: Profile, entry_id: str):
    """The untrained classifier of a supervised entry: its architecture's image tower and a linear
    head with bias, randomly initialised from ``entry.seed`` (whatever ``checkpoint:`` says: that
    file is what training produces)."""
    entry = profile.entry(entry_id)
    if entry.family != "supervised":
        raise ValueError(f"profile {profile.name!r}: entry {entry.id!r} is of family {entry.family!r}; "
                         "training from scratch produces supervised entries only")
    if entry.source != "open_clip":
        raise ValueError(f"profile {profile.name!r}: entry {entry.id!r} is a torchvision model; the paper uses "
                         "torchvision's released weights for those (Appendix H.2), nothing to train")
    if entry.pretrained:
        raise ValueError(f"profile {profile.name!r}: entry {entry.id!r} names pretrained tag {entry.pretrained!r}; "
                         "a supervised entry trained here needs a `checkpoint:` path instead")
    return load(dataclasses.replace(entry, checkpoint=None), device="cpu")


def train_supervised(profile: Profile, entry_id: str, recipe: SupervisedRecipe | None = None, *,
                     ctx: ddp.Context | None = None, limit: int | None = None, restart: bool = False,
                     keep_epochs: str | None = None, on_epoch_end: Callable | None = None) -> TrainResult:
    """Train supervised pool entry ``entry_id`` from scratch on ImageNet (Appendix H.2) and write its
    checkpoint (``checkpoint:`` path, default ``<checkpoints_dir>/<id>/final.pt``).

    ``ctx``, ``limit``, ``restart``, ``on_epoch_end``: as for :func:`helpers.training.finetune.finetune`;
    ``keep_epochs``: ``last`` (default: the newest epoch's weights only) or ``all``.
    """
    recipe = recipe or SupervisedRecipe()
    entry = profile.entry(entry_id)
    model = initial_model(profile, entry_id)
    ctx = ctx or single_process(profile)
    dataset = training_set(profile, limit)
    identity = run_identity(recipe, dataset, start=weights_digest(model), start_entry=None)
    return fit(model, dataset, recipe, run_dir(profile, entry), output_path(profile, entry), identity=identity,
               ctx=ctx, label=entry.id, precision=precision_for(profile, ctx), **loader_settings(profile),
               restart=restart, final_extra={"entry": entry.id, "trained_by": "supervised"},
               keep_epochs=keep_epochs or KEEP_EPOCHS_DEFAULT, on_epoch_end=on_epoch_end)
