"""Finetuning (Appendix H.1) and supervised training (Appendix H.2) on fixture ImageNet folders:
the paper's recipes, a loss that falls, exact resume, NaN and corrupt-checkpoint handling, and
checkpoints that load back as the pool entries they were trained for."""
import copy
import dataclasses
import hashlib
import math
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from helpers.config import load_profile
from helpers.training.finetune import FinetuneRecipe, finetune
from helpers.demo.fixtures import DEMO_CLASSES, write_imagenet
from helpers.models import load
from helpers.training.supervised import SupervisedRecipe, initial_model, train_supervised
from helpers.training.loop import (CHECKPOINT_KEYS, RESUME_ONLY_KEYS, CheckpointError, CorruptCheckpointWarning,
                              LrSchedule, TrainingDiverged, checkpoint_bytes, epoch_checkpoints, fit, resume_states,
                              run_dir, training_set, weights_digest)

ONE_TEMPLATE = ["a photo of a {}."]  # a 1,000 x 1 zero-shot head builds in a second


class Interrupted(Exception):
    """Stands for a job killed between two epochs (after the epoch's files reached the disk)."""


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
    assert resumed.resumed_from.name == "resume_1.pt"
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
    assert str(fresh.cache_dir / "run" / "resume_1.pt") in str(err.value)
    assert not (fresh.cache_dir / "run" / "epoch_2.pt").exists()
    assert [k for k, _ in resume_states(fresh.cache_dir / "run")] == [1]  # still there to resume from


def _killed_before_clean_up(monkeypatch):
    """Make the run behave as a job killed after writing epoch k's resume state and before deleting
    epoch k-1's: the clean-up of resume states never runs."""
    from helpers.training import loop as training

    monkeypatch.setattr(training, "prune", lambda *a, **k: None)


def test_killed_before_the_old_resume_state_is_deleted_resumes_from_the_newest(fresh, monkeypatch):
    recipe = tiny(SupervisedRecipe, epochs=3)
    reference = torch.load(train_supervised(fresh, "sup-vit", recipe).final, weights_only=True)
    with monkeypatch.context() as m:
        _killed_before_clean_up(m)
        with pytest.raises(Interrupted, match=r"stopped after .*epoch_2\.pt"):
            train_supervised(fresh, "sup-vit", recipe, restart=True, on_epoch_end=_stop_after(2))
    folder = run_dir(fresh, fresh.entry("sup-vit"))
    assert [k for k, _ in resume_states(folder)] == [1, 2]  # both left on disk
    result = train_supervised(fresh, "sup-vit", recipe)
    assert result.resumed_from == folder / "resume_2.pt" and result.epochs_run == [3]
    final = torch.load(result.final, weights_only=True)
    for k in reference["encoder"]:
        assert torch.equal(final["encoder"][k], reference["encoder"][k]), k
    assert torch.equal(final["head"], reference["head"]) and torch.equal(final["bias"], reference["bias"])
    assert resume_states(folder) == []  # a finished run keeps no resume state


def test_corrupt_newest_resume_state_is_named_and_the_previous_one_used(fresh, monkeypatch):
    recipe = tiny(SupervisedRecipe, epochs=3)
    with monkeypatch.context() as m:
        _killed_before_clean_up(m)
        with pytest.raises(Interrupted):
            train_supervised(fresh, "sup-vit", recipe, on_epoch_end=_stop_after(2))
    folder = run_dir(fresh, fresh.entry("sup-vit"))
    bad = folder / "resume_2.pt"
    bad.write_bytes(bad.read_bytes()[:1000])  # a write cut short by a crash (or a full disk)
    with pytest.warns(CorruptCheckpointWarning, match=f"{bad}: cannot be read"):
        result = train_supervised(fresh, "sup-vit", recipe)
    assert result.resumed_from == folder / "resume_1.pt" and result.epochs_run == [2, 3]


def test_epoch_weights_without_a_resume_state_start_over_with_a_warning(fresh):
    recipe = tiny(SupervisedRecipe, epochs=2)
    with pytest.raises(Interrupted):
        train_supervised(fresh, "sup-vit", recipe, keep_epochs="all", on_epoch_end=_stop_after(1))
    folder = run_dir(fresh, fresh.entry("sup-vit"))
    (folder / "resume_1.pt").unlink()
    with pytest.warns(CorruptCheckpointWarning, match="no usable resume state"):
        result = train_supervised(fresh, "sup-vit", recipe)
    assert result.resumed_from is None and result.epochs_run == [1, 2]


def test_epochs_keep_weights_only_and_the_newest_the_resume_state(fresh, zero_shot):
    """After each epoch: every epoch_<k>.pt holds the classifier and no optimiser state and loads as
    the finetuned model of that epoch; only the newest epoch has a resume state; a finished run keeps
    none. The files' sizes are the layout checkpoint_bytes counts."""
    from helpers.models import LoadedModel

    start = copy.deepcopy(zero_shot["zs-vit"])
    n_params = sum(p.numel() for p in start.parameters())
    folder = run_dir(fresh, fresh.entry("ft-vit"))
    seen = {}

    def inspect(k, path, stats):
        seen[k] = ([j for j, _ in epoch_checkpoints(folder)], [j for j, _ in resume_states(folder)])
        resume = torch.load(folder / f"resume_{k}.pt", weights_only=True)
        assert set(CHECKPOINT_KEYS) | {"scaler", "rng"} <= set(resume) and resume["epoch"] == k
        # weights and the two AdamW moments: 3 x 4 bytes per parameter
        assert 3 * 4 * n_params <= (folder / f"resume_{k}.pt").stat().st_size < 3 * 4 * n_params * 1.05 + 1e6
        weights = torch.load(path, weights_only=True)
        assert torch.equal(weights["head"], resume["head"])
        for name in weights["encoder"]:
            assert torch.equal(weights["encoder"][name], resume["encoder"][name]), name

    result = finetune(fresh, "ft-vit", tiny(FinetuneRecipe, epochs=3), start=start, on_epoch_end=inspect)
    assert seen == {1: ([1], [1]), 2: ([1, 2], [2]), 3: ([1, 2, 3], [3])}
    assert resume_states(folder) == [] and result.final.exists()
    assert n_params == sum(v.numel() for v in start.encoder.state_dict().values() if v.is_floating_point()) + start.head.numel()
    keys = set(torch.load(folder / "epoch_1.pt", weights_only=True)["encoder"])
    assert keys == set(start.encoder.state_dict())  # the image tower (open_clip's model.visual) ...
    assert not {k for k in keys if k.startswith(("token_embedding", "text_projection", "ln_final"))}  # ... only
    final = torch.load(result.final, weights_only=True)
    for k, path in epoch_checkpoints(folder):
        state = torch.load(path, weights_only=True)
        assert state["format"] == "clip-study-classifier/1" and state["epoch"] == k
        assert not set(RESUME_ONLY_KEYS) & set(state), (k, sorted(state))
        # 4 bytes per trained parameter (+ the pickle's names and metadata)
        assert 4 * n_params <= path.stat().st_size < 4 * n_params * 1.05 + 200_000
        m = load(dataclasses.replace(fresh.entry("ft-vit"), checkpoint=str(path)))
        assert isinstance(m, LoadedModel) and m.normalize_features and m.bias is None
        assert torch.equal(m.head, state["head"])
        if k == 3:
            assert torch.equal(state["head"], final["head"])
    assert checkpoint_bytes(4 * n_params, 3, "all") == (4 * 4 * n_params, 2 * 3 * 4 * n_params)
    on_disk = sum(f.stat().st_size for f in folder.iterdir())  # epoch_1..3.pt and final.pt, nothing else
    assert sorted(f.name for f in folder.iterdir()) == ["epoch_1.pt", "epoch_2.pt", "epoch_3.pt", "final.pt"]
    assert 4 * 4 * n_params <= on_disk < 4 * 4 * n_params * 1.05 + 4 * 200_000
    assert checkpoint_bytes(4 * n_params, 3, "last") == (2 * 4 * n_params, 2 * 3 * 4 * n_params)


def test_keep_last_epoch_only(fresh, zero_shot):
    folder = run_dir(fresh, fresh.entry("ft-vit"))
    seen = []
    result = finetune(fresh, "ft-vit", tiny(FinetuneRecipe, epochs=3), start=copy.deepcopy(zero_shot["zs-vit"]),
                      keep_epochs="last",
                      on_epoch_end=lambda k, p, s: seen.append([j for j, _ in epoch_checkpoints(folder)]))
    assert seen == [[1], [2], [3]] and resume_states(folder) == [] and result.final.exists()
    with pytest.raises(ValueError, match="keep_epochs must be one of all, last"):
        finetune(fresh, "ft-vit", tiny(FinetuneRecipe, epochs=3), start=copy.deepcopy(zero_shot["zs-vit"]),
                 keep_epochs="none")


def test_finished_run_drops_its_epochs_only_once_figure5_is_recorded(fresh, zero_shot):
    from helpers.study import results
    from helpers.chapters.wiseft import TRAJECTORY_SECTION

    recipe = tiny(FinetuneRecipe, epochs=3)
    folder = run_dir(fresh, fresh.entry("ft-vit"))
    finetune(fresh, "ft-vit", recipe, start=copy.deepcopy(zero_shot["zs-vit"]))
    table = results.table_path(fresh, TRAJECTORY_SECTION, "ft-vit")
    with pytest.raises(ValueError, match=f"Figure 5 reads, but its table {table} is not recorded yet"):
        finetune(fresh, "ft-vit", recipe, start=copy.deepcopy(zero_shot["zs-vit"]), keep_epochs="last")
    assert [k for k, _ in epoch_checkpoints(folder)] == [1, 2, 3]
    table.parent.mkdir(parents=True)
    table.write_text("epoch,region,fraction\n")
    again = finetune(fresh, "ft-vit", recipe, start=copy.deepcopy(zero_shot["zs-vit"]), keep_epochs="last")
    assert again.epochs_run == [] and [k for k, _ in epoch_checkpoints(folder)] == [3]


def test_other_settings_do_not_resume_silently(fresh):
    recipe = tiny(SupervisedRecipe, epochs=2)
    with pytest.raises(Interrupted, match=r"stopped after .*epoch_1\.pt"):
        train_supervised(fresh, "sup-vit", recipe, on_epoch_end=_stop_after(1))
    with pytest.raises(CheckpointError, match=r"resume_1\.pt belongs to another run \(lr: 0\.001 there, 0\.002 now\)"):
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


def test_plan_counts_the_checkpoint_layout():
    """``clip-study plan``'s finetuning checkpoint bytes, against the layout written out with the
    published parameter counts: ViT-L-14 finetuned (image tower 303.97 M, head 1,000 x 768) keeps
    10 epochs + final.pt, RN50 supervised (38.32 M, head 1,000 x 1,024 + bias) its last epoch + final.pt,
    and the largest run needs two resume states of 3 W each while it trains."""
    from helpers.workflow import costs

    P = load_profile("paper")
    vit_l = next(e for e in P.pool if e.finetuned_from and e.model.startswith("ViT-L-14"))
    rn50 = next(e for e in P.pool if e.family == "supervised" and e.model.startswith("RN50"))
    w_vit_l, w_rn50 = 4 * (303.97e6 + 1000 * 768), 4 * (38.32e6 + 1000 * 1024 + 1000)
    (stage,) = [s for s in costs.estimate(P, [], [], to_train=[vit_l, rn50], train_images=1) if s.name == "finetuning"]
    assert math.isclose(stage.checkpoint_bytes, 11 * w_vit_l + 2 * w_rn50 + 2 * 3 * w_vit_l, rel_tol=1e-9)
    (last,) = [s for s in costs.estimate(P, [], [], to_train=[vit_l, rn50], train_images=1, keep_epochs="last")
               if s.name == "finetuning"]
    assert math.isclose(last.checkpoint_bytes, 2 * w_vit_l + 2 * w_rn50 + 6 * w_vit_l, rel_tol=1e-9)


def test_plan_disk_counts_only_the_runs_still_to_train(fresh):
    """Finished runs beside the ones still to train are not "already written" checkpoint bytes; an
    interrupted run's own epochs are. (Sparse files: sizes without disk.)"""
    from helpers.workflow import costs
    from helpers.workflow import preflight

    ckpt = fresh.paths["checkpoints_dir"]
    (ckpt / "done-run").mkdir(parents=True)
    with open(ckpt / "done-run" / "epoch_1.pt", "wb") as f:
        f.truncate(20 * 10**9)
    todo = fresh.entry("ft-vit")
    run_dir(fresh, todo).mkdir(parents=True)
    with open(run_dir(fresh, todo) / "epoch_1.pt", "wb") as f:
        f.truncate(2 * 10**9)
    report = preflight.Report(fresh, stages=[costs.Stage("finetuning", checkpoint_bytes=5e9)], to_train=[todo])
    preflight._check_disk(fresh, report)
    assert len(report.disk) == 1 and "3.0 GB still to write" in report.disk[0], report.disk


def test_command_line_passes_keep_epochs(fresh, capsys):
    from pathlib import Path

    from helpers.workflow.cli import build_parser
    from helpers.training.loop import TrainResult, run_cli

    got = {}

    def train(profile, entry_id, recipe, **kw):
        got.update(kw, entry=entry_id, epochs=recipe.epochs)
        return TrainResult(Path("final.pt"), [1, 2])

    for flags, want in (([], None), (["--keep-epochs", "last"], "last")):
        args = build_parser().parse_args(["finetune", "--profile", str(fresh.path), "--entry", "ft-vit", "--device", "cpu",
                                          "--epochs", "2", *flags])
        assert run_cli(args, train, FinetuneRecipe()) == 0
        assert (got["keep_epochs"], got["entry"], got["epochs"]) == (want, "ft-vit", 2)
