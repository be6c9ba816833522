"""The full-size tier (configs/smoke-real.yml, ``kind: smoke``): the real open_clip RN50, ViT-B-32 and
CoCa ViT-B-32 and torchvision vit_b_32 at 224 px with random weights run every chapter notebook
through the runner (``pytest -m realarch``; ``make test-full``). And, in the fast tier, the rules
of its reduced zero-shot head: refused outside smoke profiles, and built as documented.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import torch
import yaml

from helpers import models
from helpers.study import results
from helpers.workflow import runner
from helpers.config import REPO_ROOT, ConfigError, load_profile

CLI = [sys.executable, "-m", "helpers.workflow.cli"]


def _write(tmp_path, **top):
    raw = {"profile": "t", "allow_random_init": True,
           "paths": {"data_root": str(tmp_path), "cache_dir": str(tmp_path / "c"), "results_dir": str(tmp_path / "r")},
           "datasets": {}, "pool": [{"id": "m", "arch": "RN50", "family": "robust_zeroshot_clip",
                                     "pretraining": "x", "model": "demo-RN50", "seed": 0}], **top}
    path = tmp_path / "p.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("top,match", [
    ({"zero_shot_templates": 1}, "zero_shot_templates: a reduced zero-shot head is allowed only in profiles with "
                                 "kind: smoke \\(this one is kind: demo\\)"),
    ({"kind": "paper", "zero_shot_classes": ["n01440764"]}, "zero_shot_classes: .*kind: smoke \\(this one is kind: paper\\)"),
    ({"kind": "smoke", "zero_shot_templates": 81}, "zero_shot_templates: expected an integer from 1 to 80, got 81"),
    ({"kind": "smoke", "zero_shot_templates": True}, "zero_shot_templates: expected an integer from 1 to 80"),
    ({"kind": "smoke", "zero_shot_classes": ["n01440764", "banana"]}, "'banana' is not one of the 1,000 ImageNet wnids"),
    ({"kind": "smoke", "zero_shot_classes": ["n01440764", "n01440764"]}, "lists a wnid twice"),
    ({"kind": "smoke", "zero_shot_classes": []}, "expected a non-empty list of ImageNet wnids"),
    ({"kind": "draft"}, "kind: expected one of demo, smoke, paper, got 'draft'"),
])
def test_reduced_head_keys_are_refused_outside_smoke_profiles(tmp_path, top, match):
    with pytest.raises(ConfigError, match=match):
        load_profile(_write(tmp_path, **top))


def test_kind_defaults_and_the_shipped_profiles(tmp_path):
    assert load_profile(_write(tmp_path)).kind == "demo"  # allow_random_init without a kind
    assert load_profile("paper").kind == "paper" and load_profile("paper").zero_shot_templates is None
    smoke = load_profile("smoke-real")
    assert smoke.kind == "smoke" and smoke.zero_shot_templates == 1
    names = open_clip.IMAGENET_CLASSNAMES
    assert [names[i] for i in smoke.zero_shot_classes] == [
        "bow tie", "broom", "candle", "mitten", "sandal", "Windsor tie", "wine bottle", "lemon", "banana"]
    assert {e.model for e in smoke.pool} == {"RN50", "ViT-B-32", "coca_ViT-B-32", "vit_b_32"}


def test_reduced_head_rows(tmp_path):
    """Text rows: open_clip's head (tau^-1 x the normalised mean of the first template's normalised
    text embeddings), computed here from encode_text; the other rows: unit vectors x tau^-1 from the
    entry's seed; cached heads and a second load give the same matrix."""
    classes = ["n01440764", "n02883205"]
    P = load_profile(_write(tmp_path, kind="smoke", zero_shot_templates=2, zero_shot_classes=classes))
    lm = models.load_from_profile(P, "m")
    assert lm.head.shape == (1000, 64) and "2 classes x 2 templates" in lm.head_source
    idx = list(P.zero_shot_classes)
    from helpers.demo.archs import register_demo_models

    register_demo_models()
    torch.manual_seed(0)
    clip = open_clip.create_model("demo-RN50").eval()
    tok = open_clip.get_tokenizer("demo-RN50")
    scale = float(clip.logit_scale.detach().exp())
    with torch.no_grad():
        for i in idx:
            texts = [t(open_clip.IMAGENET_CLASSNAMES[i]) for t in open_clip.OPENAI_IMAGENET_TEMPLATES[:2]]
            e = torch.nn.functional.normalize(clip.encode_text(tok(texts)), dim=-1).mean(0)
            torch.testing.assert_close(lm.head[i].detach(), scale * e / e.norm(), rtol=1e-5, atol=1e-5)
    others = np.setdiff1d(np.arange(1000), idx)
    np.testing.assert_allclose(lm.head[others].detach().norm(dim=1).numpy(), scale, rtol=1e-5)
    # seeded: the same rows from another load (the text rows read back from the head cache)
    again = models.load_from_profile(P, "m")
    assert torch.equal(again.head, lm.head)
    assert list((P.cache_dir / "heads").glob("*.pt"))


@pytest.mark.realarch
@pytest.mark.slow
def test_every_chapter_runs_on_the_real_architectures():
    """``clip-study demo-data`` and ``clip-study run`` on configs/smoke-real.yml, as a user runs them:
    every section executes, and the tables carry the real towers' shapes."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    for cmd in (["demo-data", "--profile", "smoke-real"], ["run", "--profile", "smoke-real"]):
        proc = subprocess.run(CLI + cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
    P = load_profile("smoke-real")
    jobs = runner.plan(P)
    assert jobs and all(runner.is_current(j) for j in jobs)  # every section ran to completion
    cka = results.load(P, "cka_layers")
    vit = cka[cka["zero_shot"] == "smoke-vit-zeroshot"]
    assert {f"block{i:02d}.cls" for i in range(12)} <= set(vit["layer"])  # ViT-B-32: 12 blocks
    assert set(cka["dataset"]) == {"imagenet", "imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet",
                                   "imagenet-a"}
    rob = results.load(P, "robustness")
    assert set(rob["entry"]) == {e.id for e in P.pool}


def test_changing_the_reduced_head_recomputes_the_logits(tmp_path):
    """The model memo of the extraction engine is keyed by the reduced-head keys too: another
    template count gives another head, so the cached logits are recomputed, not reported current."""
    from helpers.engine import extract
    from helpers.demo import fixtures

    fixtures.write_imagenet(tmp_path / "imagenet", "val", classes=fixtures.DEMO_CLASSES[:2], per_class=2,
                            size=(64, 48))
    path = _write(tmp_path, kind="smoke", zero_shot_templates=1, batch_size=4,
                  datasets={"imagenet": "{data_root}/imagenet/val"})
    one = extract.activations("m", "imagenet", load_profile(path))
    two = extract.activations("m", "imagenet", load_profile(path, overrides={"zero_shot_templates": 2}))
    again = extract.activations("m", "imagenet", load_profile(path))
    assert not np.allclose(np.asarray(one.logits), np.asarray(two.logits))
    np.testing.assert_array_equal(np.asarray(one.logits), np.asarray(again.logits))
    np.testing.assert_array_equal(np.asarray(one.h), np.asarray(two.h))  # same encoder, same h
