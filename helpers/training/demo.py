"""The demo profile's trained counterparts: its finetuned entries (Appendix H.1's loop, from their
zero-shot entries) and its supervised ResNet (Appendix H.2's loop, from scratch), trained for a
handful of steps on the generated ImageNet training folder so that the WiSE-FT chapter and Figure 5
have real epoch checkpoints to read. ``clip-study prepare-demo`` runs it; entries whose checkpoint
is already this recipe's are skipped.

The recipes keep the paper's structure (schedule shape, clipping, augmentation, label smoothing)
and shrink its sizes: a few epochs of 2 steps on 32 images, and a learning rate large enough for
the tiny models to move visibly in those steps. The numbers carry no meaning about CLIP.
"""
from __future__ import annotations

import time

from helpers.config import Profile
from helpers.models import FINETUNED_FAMILIES
from helpers.training.finetune import FinetuneRecipe, finetune
from helpers.training.supervised import SupervisedRecipe, train_supervised

#: Class-balanced training images used per demo run (4 per demo class).
DEMO_TRAIN_IMAGES = 32

#: Appendix H.1 with demo sizes: 3 epochs of 2 steps (so Figure 5 has three epochs to plot).
DEMO_FINETUNE = FinetuneRecipe(epochs=3, batch_size=16, lr=1e-3, warmup_steps=2)

#: Appendix H.2 with demo sizes: 2 epochs of 2 steps, the learning-rate drop after epoch 1.
DEMO_SUPERVISED = SupervisedRecipe(epochs=2, batch_size=16, lr=1e-3, warmup_steps=2, lr_milestones=(1,))


def demo_jobs(profile: Profile) -> list[tuple[str, str]]:
    """``(kind, entry id)`` of every entry the demo trains: the finetuned entries that name their
    zero-shot parent, and the supervised CLIP ResNets (the paper's ViTs use torchvision weights)."""
    jobs = [("finetune", e.id) for e in profile.pool if e.family in FINETUNED_FAMILIES and e.finetuned_from]
    jobs += [("supervised", e.id) for e in profile.pool
             if e.family == "supervised" and e.source == "open_clip" and e.arch.startswith("RN")]
    return jobs


def prepare_demo(profile: Profile, restart: bool = False) -> list[dict]:
    """Train every :func:`demo_jobs` entry with the demo recipes; one summary row per entry."""
    if not profile.is_demo:
        raise ValueError(f"profile {profile.name!r} is not a demo profile (allow_random_init is false); use "
                         "`clip-study finetune` / `clip-study train-supervised` with the paper's recipes")
    rows = []
    for kind, entry_id in demo_jobs(profile):
        t0 = time.perf_counter()
        if kind == "finetune":
            result = finetune(profile, entry_id, DEMO_FINETUNE, limit=DEMO_TRAIN_IMAGES, restart=restart)
        else:
            result = train_supervised(profile, entry_id, DEMO_SUPERVISED, limit=DEMO_TRAIN_IMAGES, restart=restart)
        rows.append({"entry": entry_id, "kind": kind, "checkpoint": str(result.final),
                     "status": "trained" if result.epochs_run else "up to date",
                     "loss_first_epoch": result.history[0]["loss"] if result.history else None,
                     "loss_last_epoch": result.history[-1]["loss"] if result.history else None,
                     "seconds": time.perf_counter() - t0})
    return rows
