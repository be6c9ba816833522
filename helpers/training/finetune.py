"""Finetuned CLIP and CoCa models (Appendix H.1): a zero-shot pool entry finetuned end to end on
the ImageNet training set, as Wortsman et al. (2022b, WiSE-FT) do.

The classifier starts from the zero-shot model: its image encoder and its zero-shot head W (whose
rows carry the logit scale tau^-1, Section 2) are both trained, with logits W h/||h|| and the
cross-entropy. Recipe (:class:`FinetuneRecipe`): 10 epochs, batch 256, AdamW with learning rate
3e-5 and weight decay 0.1 on every parameter, cosine annealing stepped per iteration after 500
linear warm-up steps, gradient norm clipped at 1.0, RandomResizedCrop(scale 0.9-1.0, bicubic) and
no flip (the WiSE-FT reference loop; the clipping and augmentation are its choices, the paper is
silent on them).

The result is the pool entry whose ``finetuned_from`` names the zero-shot entry: each epoch's
weights (weights only, what Figure 5 reads) go to ``<checkpoints_dir>/<entry id>/epoch_<k>.pt``,
the newest epoch's resume state to ``resume_<k>.pt`` beside them (deleted once the run is done), and
the final classifier to the entry's ``checkpoint:`` path (default
``<checkpoints_dir>/<entry id>/final.pt``). Disk per run (:func:`helpers.training.loop.checkpoint_bytes`,
W = 4 bytes x the image encoder's and head's parameters, 1.2 GB for ViT-L-14): ``keep_epochs="all"``
(the default) keeps 10 W + W for final.pt (13 GB for ViT-L-14) and needs 6 W more while it trains
(two resume states for a moment); ``"last"`` keeps 2 W but leaves Figure 5 only the final epoch.
Once Figure 5's table for the entry is recorded, ``--keep-epochs last`` on the finished run drops
epochs 1 to 9 (refused before: they could not be made again without finetuning anew).

Run it with ``clip-study finetune --entry <id>`` or, on several GPUs or nodes,
``torchrun --nproc_per_node=8 -m helpers.workflow.cli finetune --profile paper --entry <id>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from helpers.chapters.wiseft import TRAJECTORY_SECTION
from helpers.config import Profile
from helpers.models import load_from_profile
from helpers.study import results
from helpers.training import ddp
from helpers.training.loop import (
    Recipe, TrainResult, epoch_checkpoints, final_is_current, fit, loader_settings, output_path, precision_for,
    run_dir, run_identity, single_process, training_set, weights_digest,
)

#: Finetuning keeps every epoch's weights: Figure 5 reads them.
KEEP_EPOCHS_DEFAULT = "all"


@dataclass(frozen=True)
class FinetuneRecipe(Recipe):
    """Appendix H.1's hyperparameters (see the module docstring)."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 3e-5
    weight_decay: float = 0.1
    warmup_steps: int = 500
    schedule: str = "cosine"
    lr_milestones: tuple[int, ...] = ()
    lr_decay: float = 0.1
    grad_clip: float | None = 1.0
    label_smoothing: float = 0.0
    crop_scale: tuple[float, float] = (0.9, 1.0)
    interpolation: str = "bicubic"
    hflip: bool = False
    seed: int = 0


def finetune(profile: Profile, entry_id: str, recipe: FinetuneRecipe | None = None, *, start=None,
             ctx: ddp.Context | None = None, limit: int | None = None, restart: bool = False,
             keep_epochs: str | None = None, on_epoch_end: Callable | None = None) -> TrainResult:
    """Finetune the zero-shot parent of pool entry ``entry_id`` (its ``finetuned_from``) on ImageNet
    (Appendix H.1) and write the entry's checkpoint.

    ``start``: the parent as an already loaded :class:`~helpers.models.loading.LoadedModel` (default: load it
    from the profile). ``ctx``: from :func:`helpers.training.ddp.setup` under ``torchrun`` (default: one
    process on the profile's device). ``limit``: train on a class-balanced subset of that many
    images. ``keep_epochs``: ``all`` (default) or ``last`` (:func:`helpers.training.loop.fit`; on a
    finished run, ``last`` drops the older epochs once Figure 5's table for the entry exists).
    Resumes an interrupted run; returns at once when the checkpoint is already this run's.
    """
    recipe = recipe or FinetuneRecipe()
    entry = profile.entry(entry_id)
    if not entry.finetuned_from:
        raise ValueError(f"profile {profile.name!r}: entry {entry.id!r} has no finetuned_from; finetuning starts "
                         "from the zero-shot entry it names")
    if entry.pretrained:
        raise ValueError(f"profile {profile.name!r}: entry {entry.id!r} reads its weights from pretrained tag "
                         f"{entry.pretrained!r}; give it a `checkpoint:` path for the finetuned weights instead")
    parent = profile.entry(entry.finetuned_from)
    ctx = ctx or single_process(profile)
    # On the training device: a zero-shot head not yet cached is built there (80,000 prompts).
    model = start if start is not None else load_from_profile(profile, parent.id, device=str(ctx.device))
    if model.entry.id != parent.id:
        raise ValueError(f"entry {entry.id!r} is finetuned from {parent.id!r}, but the start model given is "
                         f"{model.entry.id!r}")
    if not model.normalize_features:
        raise ValueError(f"entry {parent.id!r} has a supervised head (W h + b); finetuning starts from a "
                         "zero-shot CLIP or CoCa head (W h/||h||)")
    dataset = training_set(profile, limit)
    identity = run_identity(recipe, dataset, start=weights_digest(model), start_entry=parent.id)
    keep_epochs = keep_epochs or KEEP_EPOCHS_DEFAULT
    if keep_epochs == "last" and not restart:  # on every rank: all raise together
        _check_figure5_recorded(profile, entry, identity)
    return fit(model, dataset, recipe, run_dir(profile, entry), output_path(profile, entry), identity=identity,
               ctx=ctx, label=entry.id, precision=precision_for(profile, ctx), **loader_settings(profile),
               restart=restart, final_extra={"entry": entry.id, "finetuned_from": parent.id, "trained_by": "finetune"},
               keep_epochs=keep_epochs, on_epoch_end=on_epoch_end)


def _check_figure5_recorded(profile: Profile, entry, identity: dict) -> None:
    """Refuse to drop a finished run's older epochs before Figure 5's table for it is recorded:
    they cannot be made again without finetuning anew."""
    final = output_path(profile, entry)
    older = epoch_checkpoints(run_dir(profile, entry))[:-1]
    if not older or not final_is_current(final, identity):
        return  # nothing finished to drop (a run in progress with "last" keeps what it was told)
    table = results.table_path(profile, TRAJECTORY_SECTION, entry.id)
    if not table.exists():
        raise ValueError(f"{entry.id}: keep_epochs='last' would delete {older[0][1]}..{older[-1][1].name}, the "
                         f"epochs Figure 5 reads, but its table {table} is not recorded yet; run the wiseft section "
                         f"first (clip-study run --profile {profile.name} --section wiseft), then drop them")
