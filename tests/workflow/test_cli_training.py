"""The training and WiSE-FT command lines end to end (issue 16.5): ``clip-study train-supervised``,
``clip-study finetune`` and ``clip-study wiseft`` run as a user runs them (``python -m helpers.workflow.cli``
in a subprocess) on a tmp profile with tiny fixture data in the real layouts. The checkpoints they
write must load with ``weights_only=True`` as their pool entries, and the WiSE-FT rows must hold
the mixture's numbers, recomputed here from the saved mixture (kurtosis by scipy, ER by Eq. 5
written out, the mixture's weights by the formula of Appendix I).

Slow (a zero-shot head over 80 templates x 1,000 classes is built once, then cached): marked slow.
"""
from __future__ import annotations

import io
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
import yaml

from conftest import REPO
from helpers.demo import fixtures
from helpers.config import EVAL_DATASETS, SHIFTS, load_profile

pytestmark = pytest.mark.slow

CLASSES = fixtures.DEMO_CLASSES[:2]  # bow tie, broom: in ImageNet, V2, R, Sketch, A and ObjectNet
SMALL = dict(per_class=3, size=(64, 48))

POOL = [
    {"id": "zs-vit", "arch": "ViT-B-32", "family": "robust_zeroshot_clip", "pretraining": "x", "model": "demo-ViT-B-32"},
    {"id": "ft-vit", "arch": "ViT-B-32", "family": "finetuned_clip", "pretraining": "x", "model": "demo-ViT-B-32",
     "finetuned_from": "zs-vit", "checkpoint": "{checkpoints_dir}/ft-vit/final.pt"},
    {"id": "sup-rn", "arch": "RN50", "family": "supervised", "pretraining": "x", "model": "demo-RN50", "seed": 2,
     "checkpoint": "{checkpoints_dir}/sup-rn/final.pt"},
]
TINY = ["--epochs", "1", "--batch-size", "4", "--warmup-steps", "1", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-training")
    data = root / "data"
    fixtures.write_imagenet(data / "imagenet", "train", classes=CLASSES, **SMALL)
    fixtures.write_imagenet(data / "imagenet", "val", classes=CLASSES, **SMALL)
    fixtures.write_imagenet_v2(data / "v2", classes=CLASSES, **SMALL)
    fixtures.write_imagenet_r(data / "r", classes=CLASSES, **SMALL)
    fixtures.write_imagenet_sketch(data / "sketch", classes=CLASSES, **SMALL)
    fixtures.write_imagenet_a(data / "a", classes=CLASSES, **SMALL)
    fixtures.write_objectnet(data / "objectnet-1.0", folders=("tie", "broom"), **SMALL)
    fixtures.write_broden(data / "broden", n_images=40)
    raw = {"profile": "cli-training", "allow_random_init": True, "batch_size": 8, "num_workers": 0,
           "metrics": {"broden_min_positives": 3},
           "paths": {"data_root": str(data), "cache_dir": str(root / "cache"), "results_dir": str(root / "results"),
                     "checkpoints_dir": str(root / "ckpt")},
           "datasets": {"imagenet": "{data_root}/imagenet/val", "imagenet-train": "{data_root}/imagenet/train",
                        "imagenet-v2": "{data_root}/v2", "imagenet-r": "{data_root}/r",
                        "imagenet-sketch": "{data_root}/sketch", "objectnet": "{data_root}/objectnet-1.0",
                        "imagenet-a": "{data_root}/a", "broden": "{data_root}/broden"},
           "pool": POOL}
    path = root / "profile.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


def cli(*args, timeout=900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "helpers.workflow.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def finetuned(world):
    out = ok(cli("finetune", "--profile", str(world), "--entry", "ft-vit", *TINY))
    return out


def test_train_supervised_cli_writes_a_checkpoint_that_loads_as_its_entry(world):
    from helpers.models import load

    P = load_profile(world)
    out = ok(cli("train-supervised", "--profile", str(world), "--entry", "sup-rn", *TINY, "--limit", "4"))
    final = P.paths["checkpoints_dir"] / "sup-rn" / "final.pt"
    assert f"sup-rn: trained epochs 1-1; wrote {final}" in out
    state = torch.load(final, weights_only=True)
    assert state["entry"] == "sup-rn" and state["trained_by"] == "supervised"
    assert state["identity"]["recipe"]["epochs"] == 1 and state["identity"]["images"] == 4
    m = load(P.entry("sup-rn"))
    torch.testing.assert_close(m.head.detach(), state["head"])
    assert m.bias is not None and not m.normalize_features
    # a second call finds the checkpoint up to date and trains nothing
    again = ok(cli("train-supervised", "--profile", str(world), "--entry", "sup-rn", *TINY, "--limit", "4"))
    assert f"sup-rn: {final} is already up to date" in again
    # a bad request is one clear error line and exit status 2
    bad = cli("train-supervised", "--profile", str(world), "--entry", "no-such-entry", *TINY)
    assert bad.returncode == 2 and "no-such-entry" in bad.stderr and "Traceback" not in bad.stderr


def test_finetune_cli_writes_a_checkpoint_that_loads_as_the_finetuned_entry(world, finetuned):
    from helpers.models import load

    P = load_profile(world)
    final = P.paths["checkpoints_dir"] / "ft-vit" / "final.pt"
    assert f"ft-vit: trained epochs 1-1; wrote {final}" in finetuned
    state = torch.load(final, weights_only=True)
    assert state["entry"] == "ft-vit" and state["finetuned_from"] == "zs-vit" and state["trained_by"] == "finetune"
    zs, ft = load(P.entry("zs-vit")), load(P.entry("ft-vit"))
    torch.testing.assert_close(ft.head.detach(), state["head"])
    assert ft.normalize_features and ft.head.shape == zs.head.shape == (1000, zs.head.shape[1])
    # finetuning starts from the zero-shot model and moves it (head included)
    assert not torch.equal(ft.head, zs.head)
    moved = [k for k, v in ft.encoder.state_dict().items() if not torch.equal(v, zs.encoder.state_dict()[k])]
    assert moved


def er_by_hand(acc_shift: float, acc_in: float) -> float:
    if acc_in == 0:
        return acc_shift  # logit(0) = -inf: the baseline is 0
    if acc_in == 1:
        return acc_shift - 1
    z = 0.76 * math.log(acc_in / (1 - acc_in)) - 1.49
    return acc_shift - 1 / (1 + math.exp(-z))


def test_wiseft_cli_rows_hold_the_mixtures_numbers(world, finetuned):
    from helpers.data import open_dataset
    from helpers.models import load
    from helpers.engine.mixtures import interpolate, mixture_path

    P = load_profile(world)
    out = ok(cli("wiseft", "--profile", str(world), "--entry", "ft-vit", "--alphas", "0", "0.5", "1", "--save"))
    table = pd.read_csv(io.StringIO(out), sep=r"\s+")
    assert table["alpha"].tolist() == [0.0, 0.5, 1.0]
    assert {*EVAL_DATASETS, "shifts_mean", "er", "kurtosis", "kurtosis_shifts", "unique_concepts"} <= set(table)
    for _, row in table.iterrows():
        mean = np.mean([row[s] for s in SHIFTS])
        assert row.shifts_mean == pytest.approx(mean, abs=1e-4)  # printed with 4 decimals
        assert row.er == pytest.approx(er_by_hand(mean, row.imagenet), abs=2e-4)
        assert all(0 <= row[d] <= 1 for d in EVAL_DATASETS) and float(row.unique_concepts).is_integer()

    # the saved mixture is theta_0.5 = 0.5 theta_zs + 0.5 theta_ft over every parameter, head included
    zs, ft = load(P.entry("zs-vit")), load(P.entry("ft-vit"))
    saved = torch.load(mixture_path(P, P.entry("ft-vit"), 0.5), weights_only=True)
    assert saved["wiseft"] == {"alpha": 0.5, "zeroshot": "zs-vit", "finetuned": "ft-vit"}
    torch.testing.assert_close(saved["head"], 0.5 * zs.head.detach() + 0.5 * ft.head.detach())
    for k, v in saved["encoder"].items():
        a, b = zs.encoder.state_dict()[k], ft.encoder.state_dict()[k]
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.5 * a + 0.5 * b, msg=k)

    # the kurtosis column, recomputed from each model's own forward pass on the ImageNet images
    ds = open_dataset("imagenet", P.dataset_root("imagenet"), transform=zs.to_uint8)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    for alpha, model in ((0.0, zs), (0.5, interpolate(zs, ft, 0.5)), (1.0, ft)):
        with torch.no_grad():
            h = model.encode(model.normalize_input(x)).double().numpy()
        expected = scipy.stats.kurtosis(h, axis=1, fisher=False).mean()
        got = table.set_index("alpha").loc[alpha, "kurtosis"]
        assert got == pytest.approx(expected, rel=1e-3, abs=1e-3), alpha
    k = table.set_index("alpha")["kurtosis"]
    assert k.loc[0.0] != k.loc[1.0]  # the two ends are two different models
