"""The training loader with worker processes (persistent, with a prefetch depth) and gradient
accumulation in helpers.training.loop.fit, on fixture ImageNet folders and the demo ViT."""
from __future__ import annotations

import re

import pytest
import torch

from helpers.training.loop import fit, loader_settings, training_set
from helpers.training.supervised import SupervisedRecipe, initial_model
from test_finetune import make_profile, tiny


def _weights(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {**{f"encoder.{k}": v for k, v in state["encoder"].items()}, "head": state["head"]}


@pytest.fixture(scope="module")
def P(tmp_path_factory):
    return make_profile(tmp_path_factory.mktemp("loader"))  # 8 training images, 2 classes


def test_two_steps_with_two_persistent_workers_match_the_main_process_loader(P, tmp_path, capsys):
    recipe = tiny(SupervisedRecipe, epochs=1, batch_size=4)  # 8 images: 2 steps
    runs = {}
    for workers in (0, 2):
        model = initial_model(P, "sup-vit")
        out = tmp_path / f"w{workers}"
        res = fit(model, training_set(P), recipe, out / "run", out / "final.pt", label=f"w{workers}",
                  num_workers=workers, persistent_workers=True, prefetch_factor=2)
        assert res.history[0]["step"] == 2
        runs[workers] = _weights(out / "final.pt")
    # augmentation is a function of (seed, epoch, index): the workers feed the same batches
    for k, v in runs[0].items():
        assert torch.equal(v, runs[2][k]), k
    log = capsys.readouterr().out
    assert "w2: effective batch 4 = 1 process(es) x 1 accumulation step(s) x micro-batch 4; 2 loader worker(s), " \
           "persistent, prefetch 2" in log
    assert re.search(r"^w2 epoch 1: [\d.]+ img/s over 1 process\(es\); waiting for the loader [\d.]+ s of [\d.]+ s "
                     r"\(\d+ %\)$", log, re.M), log


def test_accumulation_of_two_micro_batches_of_4_equals_one_batch_of_8(P, tmp_path, capsys, monkeypatch):
    # AdamW's first step is lr * g / (|g| + eps): for a gradient that is zero up to rounding (the
    # attention's key bias) it amplifies rounding to +-lr. Plain SGD makes the update linear in the
    # gradient, so equal updates mean equal gradients; the loop under test is unchanged.
    monkeypatch.setattr(torch.optim, "AdamW", torch.optim.SGD)
    recipe = tiny(SupervisedRecipe, epochs=1, batch_size=8, lr=1.0, grad_clip=None, label_smoothing=0.1)  # one step
    runs = {}
    for accumulation in (1, 2):
        model = initial_model(P, "sup-vit")  # the ViT: LayerNorm only, no batch statistics
        out = tmp_path / f"a{accumulation}"
        res = fit(model, training_set(P), recipe, out / "run", out / "final.pt", label=f"a{accumulation}",
                  accumulation_steps=accumulation)
        runs[accumulation] = (_weights(out / "final.pt"), res.history[0]["loss"])
    start = {f"encoder.{k}": v for k, v in initial_model(P, "sup-vit").encoder.state_dict().items()}
    moved = 0
    for k, v in runs[1][0].items():
        torch.testing.assert_close(runs[2][0][k], v, rtol=1e-4, atol=1e-6)
        moved += k in start and not torch.equal(v, start[k])
    assert moved > 0  # the step changed the weights (the comparison is not of two untouched models)
    assert runs[2][1] == pytest.approx(runs[1][1], rel=1e-5)
    assert "a2: effective batch 8 = 1 process(es) x 2 accumulation step(s) x micro-batch 4" in capsys.readouterr().out


def test_accumulation_must_divide_the_per_process_batch(P, tmp_path):
    with pytest.raises(ValueError, match="accumulation_steps must be a positive integer dividing the per-process "
                                         "batch of 4"):
        fit(initial_model(P, "sup-vit"), training_set(P), tiny(SupervisedRecipe, batch_size=4), tmp_path / "r",
            tmp_path / "f.pt", accumulation_steps=3)


def test_the_profile_sets_the_loader_and_accumulation(P):
    assert loader_settings(P) == {"num_workers": 0, "persistent_workers": True, "prefetch_factor": 4,
                                  "accumulation_steps": 1}
    from helpers.config import load_profile

    Q = load_profile(P.path, overrides={"accumulation_steps": 4, "prefetch_factor": 8, "persistent_workers": False})
    assert loader_settings(Q)["accumulation_steps"] == 4 and loader_settings(Q)["prefetch_factor"] == 8
    assert loader_settings(Q)["persistent_workers"] is False
