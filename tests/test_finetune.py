"""Finetuning (Appendix H.1) and supervised training (Appendix H.2) on fixture ImageNet folders:
the paper's recipes, a loss that falls, exact resume, NaN and corrupt-checkpoint handling, and
checkpoints that load back as the pool entries they were trained for."""
import copy
import hashlib
import math
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from helpers.config import load_profile
from helpers.finetune import FinetuneRecipe, finetune
from helpers.fixtures import DEMO_CLASSES, write_imagenet
from helpers.models import load
from helpers.supervised import SupervisedRecipe, initial_model, train_supervised
from helpers.training import (CheckpointError, CorruptCheckpointWarning, LrSchedule, TrainingDiverged,
                              epoch_checkpoints, fit, run_dir, training_set,
                              weights_digest)

ONE_TEMPLATE = ["a photo of a {}."]  # a 1,000 x 1 zero-shot head builds in a second


class Interrupted(Exception):
    """Stands for a job killed between two epochs (after the checkpoint reached the disk)."""


def _stop_after(epoch):
    def callback(k, path, stats):
        if k == epoch:
            raise Interrupted(f"stopped after {path}")
    return callback


POOL = [
    {"id": "zs-vit", "arch": "ViT-B-32", "family": "robust_zeroshot_clip", "pretraining": "x", "model": "demo-ViT-B-32"},
    {"id": "ft-vit", "arch": "ViT-B-32", "family": "finetuned_clip", "pretraining": "x", "model": "demo-ViT-B-32",
     "finetuned_from": "zs-vit", "checkpoint": "{checkpoints_dir}/ft-vit/final.pt"},
    {"id": "zs-coca", "arch": "coca_ViT-B-32", "family": "coca_zeroshot", "pretraining": "x",
     "model": "demo-coca_ViT-B-32", "seed": 7},
    {"id": "ft-coca", "arch": "coca_ViT-B-32", "family": "coca_finetuned", "pretraining": "x",
     "model": "demo-coca_ViT-B-32", "finetuned_from": "zs-coca"},
    {"id": "sup-vit", "arch": "ViT-B-32", "family": "supervised", "pretraining": "x", "model": "demo-ViT-B-32", "seed": 3},
    {"id": "sup-rn", "arch": "RN50", "family": "supervised", "pretraining": "x", "model": "demo-RN50", "seed": 2,
     "checkpoint": "{checkpoints_dir}/sup-rn/final.pt"},
]


def make_profile(root, per_class=4, classes=2):
    write_imagenet(root / "data", "train", classes=DEMO_CLASSES[:classes], per_class=per_class, size=(64, 48))
    raw = {"profile": "train-test", "allow_random_init": True,
           "paths": {"data_root": str(root / "data"), "cache_dir": str(root / "cache"),
                     "results_dir": str(root / "results"), "checkpoints_dir": str(root / "ckpt")},
           "datasets": {"imagenet-train": "{data_root}/train"}, "pool": POOL}
    (root / "profile.yml").write_text(yaml.safe_dump(raw))
    return load_profile(root / "profile.yml")


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return make_profile(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def zero_shot(profile):
    """The zero-shot models, loaded once: each test trains a deep copy."""
    return {e: load(profile.entry(e), templates=ONE_TEMPLATE) for e in ("zs-vit", "zs-coca")}


@pytest.fixture
def fresh(tmp_path):
    return make_profile(tmp_path)


def tiny(recipe_cls, **kw):
    return recipe_cls().replace(**{"epochs": 2, "batch_size": 4, "warmup_steps": 1, "lr": 1e-3, **kw})


def test_recipes_are_the_papers():
    ft = FinetuneRecipe()
    assert (ft.epochs, ft.batch_size, ft.lr, ft.weight_decay, ft.warmup_steps, ft.schedule) == (10, 256, 3e-5, 0.1, 500, "cosine")
    assert (ft.grad_clip, ft.crop_scale, ft.interpolation, ft.hflip, ft.label_smoothing) == (1.0, (0.9, 1.0), "bicubic", False, 0.0)
    sup = SupervisedRecipe()
    assert (sup.epochs, sup.batch_size, sup.lr, sup.weight_decay, sup.warmup_steps) == (90, 1024, 1e-3, 1e-2, 5000)
    assert (sup.schedule, sup.lr_milestones, sup.lr_decay, sup.hflip, sup.label_smoothing) == ("step", (30, 60), 0.1, True, 0.1)
    with pytest.raises(TypeError, match="no hyperparameter 'learning_rate'"):
        ft.replace(learning_rate=1.0)
    with pytest.raises(ValueError, match="schedule must be"):
        ft.replace(schedule="linear")


def test_schedules():
    cos = LrSchedule(FinetuneRecipe(epochs=2, warmup_steps=4), steps_per_epoch=12)  # 24 steps
    assert [cos(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]  # WiSE-FT's (step + 1) / warmup
    assert cos(4) == 1.0 and math.isclose(cos(14), 0.5) and cos(23) < 0.02
    step = LrSchedule(SupervisedRecipe(epochs=90, warmup_steps=5), steps_per_epoch=10)
    assert step(0) == 0.2 and step(4) == 1.0 and step(299) == 1.0
    assert math.isclose(step(300), 0.1) and math.isclose(step(599), 0.1) and math.isclose(step(600), 0.01)


def test_finetune_lowers_the_loss_and_gives_the_finetuned_entry(profile, zero_shot):
    start = copy.deepcopy(zero_shot["zs-vit"])
    W0 = start.head.detach().clone()
    result = finetune(profile, "ft-vit", tiny(FinetuneRecipe, epochs=3), start=start)
    losses = [h["loss"] for h in result.history]
    assert result.epochs_run == [1, 2, 3] and losses[-1] < losses[0]
    assert result.final == run_dir(profile, profile.entry("ft-vit")) / "final.pt"
    assert [k for k, _ in epoch_checkpoints(result.final.parent)] == [1, 2, 3]
    ft = load(profile.entry("ft-vit"))  # the entry's checkpoint: path is the file just written
    assert ft.normalize_features and ft.bias is None
    assert torch.equal(ft.head, start.head.cpu())  # the trained model is what was saved
    assert not torch.equal(ft.head, W0) and (ft.head - W0).abs().max() < 0.1  # moved away from the zero-shot head
    # A second call finds the final checkpoint current and trains nothing.
    again = finetune(profile, "ft-vit", tiny(FinetuneRecipe, epochs=3), start=copy.deepcopy(zero_shot["zs-vit"]))
    assert again.epochs_run == [] and again.resumed_from == result.final


def test_finetune_coca(profile, zero_shot):
    result = finetune(profile, "ft-coca", tiny(FinetuneRecipe, epochs=1), start=copy.deepcopy(zero_shot["zs-coca"]))
    state = torch.load(result.final, weights_only=True)
    assert state["entry"] == "ft-coca" and state["finetuned_from"] == "zs-coca"
    assert state["model"] == "demo-coca_ViT-B-32" and state["normalize_features"] is True


def test_finetune_refuses_a_wrong_start(profile):
    with pytest.raises(ValueError, match="finetuned from 'zs-vit'"):
        finetune(profile, "ft-vit", tiny(FinetuneRecipe), start=initial_model(profile, "sup-vit"))
    with pytest.raises(ValueError, match="has no finetuned_from"):
        finetune(profile, "zs-vit", tiny(FinetuneRecipe))


def test_resume_equals_an_uninterrupted_run(fresh):
    recipe = tiny(SupervisedRecipe, epochs=2, lr_milestones=(1,))
    straight = train_supervised(fresh, "sup-vit", recipe)
    reference = torch.load(straight.final, weights_only=True)
    with pytest.raises(Interrupted, match=r"stopped after .*epoch_1\.pt"):
        train_supervised(fresh, "sup-vit", recipe, restart=True, on_epoch_end=_stop_after(1))
    assert [k for k, _ in epoch_checkpoints(straight.final.parent)] == [1]
    resumed = train_supervised(fresh, "sup-vit", recipe)
    assert resumed.epochs_run == [2]  # the finished epoch 1 is not repeated
    assert resumed.resumed_from.name == "epoch_1.pt"
    final = torch.load(resumed.final, weights_only=True)
    assert final["encoder"].keys() == reference["encoder"].keys()
    for k in final["encoder"]:
        assert torch.equal(final["encoder"][k], reference["encoder"][k]), k
    assert torch.equal(final["head"], reference["head"]) and torch.equal(final["bias"], reference["bias"])
    assert [h["loss"] for h in final["history"]] == [h["loss"] for h in reference["history"]]


def test_nan_loss_names_the_step_and_the_last_good_checkpoint(fresh):
    model = initial_model(fresh, "sup-vit")
    dataset = training_set(fresh)  # 8 images: 2 steps of 4 per epoch

    def blow_up(k, path, stats):
        if k == 1:  # a numerical blow-up in the weights after epoch 1
            with torch.no_grad():
                model.head.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 3 \(epoch 2, batch 1 of 2\)") as err:
        fit(model, dataset, tiny(SupervisedRecipe, epochs=3), fresh.cache_dir / "run", fresh.cache_dir / "final.pt",
            on_epoch_end=blow_up)
    assert str(fresh.cache_dir / "run" / "epoch_1.pt") in str(err.value)
    assert not (fresh.cache_dir / "run" / "epoch_2.pt").exists()


def test_corrupt_checkpoint_is_named_and_the_previous_one_used(fresh):
    recipe = tiny(SupervisedRecipe, epochs=3)
    with pytest.raises(Interrupted, match=r"stopped after .*epoch_2\.pt"):
        train_supervised(fresh, "sup-vit", recipe, on_epoch_end=_stop_after(2))
    folder = run_dir(fresh, fresh.entry("sup-vit"))
    bad = folder / "epoch_2.pt"
    bad.write_bytes(bad.read_bytes()[:1000])  # a write cut short by a crash (or a full disk)
    with pytest.warns(CorruptCheckpointWarning, match=f"{bad}: cannot be read"):
        result = train_supervised(fresh, "sup-vit", recipe)
    assert result.resumed_from == folder / "epoch_1.pt" and result.epochs_run == [2, 3]


def test_other_settings_do_not_resume_silently(fresh):
    recipe = tiny(SupervisedRecipe, epochs=2)
    with pytest.raises(Interrupted, match=r"stopped after .*epoch_1\.pt"):
        train_supervised(fresh, "sup-vit", recipe, on_epoch_end=_stop_after(1))
    with pytest.raises(CheckpointError, match=r"epoch_1\.pt belongs to another run \(lr: 0\.001 there, 0\.002 now\)"):
        train_supervised(fresh, "sup-vit", recipe.replace(lr=2e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert train_supervised(fresh, "sup-vit", recipe.replace(lr=2e-3), restart=True).epochs_run == [1, 2]


def test_supervised_resnet_checkpoint_loads_as_its_entry(fresh):
    dataset = training_set(fresh, limit=4)
    result = train_supervised(fresh, "sup-rn", tiny(SupervisedRecipe, epochs=1), limit=4)
    assert result.final == fresh.paths["checkpoints_dir"] / "sup-rn" / "final.pt"
    m = load(fresh.entry("sup-rn"))
    assert m.arch_kind == "modified_resnet" and not m.normalize_features and m.bias is not None
    state = torch.load(result.final, weights_only=True)
    # the identity written out by hand: the recipe's fields, the 4 training images (relative path and
    # label, one line each, sha256) and the digest of the seeded initial weights training started from
    lines = "".join(f"{Path(f).relative_to(dataset.root).as_posix()}\t{int(y)}\n"
                    for f, y in zip(dataset.files, dataset.labels))
    labels = sorted(int(y) for y in dataset.labels)  # class-balanced: two images of each class
    assert len(dataset) == 4 and labels[0] == labels[1] < labels[2] == labels[3]
    start = weights_digest(initial_model(fresh, "sup-rn"))
    assert state["identity"] == {"recipe": {**SupervisedRecipe().as_dict(), "epochs": 1, "batch_size": 4,
                                            "warmup_steps": 1, "lr": 1e-3},
                                 "images": 4, "images_digest": hashlib.sha256(lines.encode()).hexdigest(),
                                 "start": start, "start_entry": None}
    assert start != weights_digest(initial_model(fresh, "sup-vit"))  # the start does identify the weights
