"""Chapter-level oracles, part two (issue 16.1): the chapter functions the mutation run found called
by no test of the fast tier (WiSE-FT pairing, training summary, sweep tables and figures, Figure 5's
epoch-by-epoch concept overlap, the CKA chapter's table, the shared readers of ``chapters.common``,
the robustness guards and the summary's bookkeeping).

As in :mod:`test_chapter_oracles`, inputs are planted where a chapter reads models and data
(``helpers.engine.mixtures.evaluate``, ``pair_cka`` as imported by the CKA chapter, ``extract.activations``,
``extract.head``, ...), training checkpoints are real files written by the project's own writer
(:func:`helpers.models.save_classifier`, what :func:`helpers.training.loop.fit` calls) in the run layout
of :mod:`helpers.training.loop`, and every expected value is written out by hand (set algebra, Eq. 5
with ``math``, the paper's printed numbers) rather than computed by the code under test. No model
is built.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import write_profile
from helpers.engine import extract
from helpers.engine import probing as engine_probing
from helpers.study import results
from helpers.chapters import cka_layers, common, robustness, summary, wiseft
from helpers.config import EVAL_DATASETS, REPO_ROOT, SHIFTS, PoolEntry, Profile, load_profile
from helpers.engine.extract import Head
from helpers.models import save_classifier
from helpers import plots
from helpers.plots import PAPER_LABEL
from helpers.study import Study
from helpers.training.loop import CheckpointError, Recipe, epoch_path, resume_path, run_dir
from test_chapter_oracles import IDS, POOL, _check_call, er_by_hand, make_study

#: POOL plus a weak-pretraining pair (Figure 16's group) and a second supervised RN50
YFCC = [
    {"id": "RN50-yfcc15m", "arch": "RN50", "family": "robust_zeroshot_clip", "pretraining": "YFCC-15M",
     "model": "demo-RN50"},
    {"id": "RN50-yfcc15m-ft", "arch": "RN50", "family": "finetuned_clip", "pretraining": "YFCC-15M",
     "model": "demo-RN50", "finetuned_from": "RN50-yfcc15m"},
]


def study_of(tmp_path, section, pool, ids=None, **top) -> Study:
    P = load_profile(write_profile(tmp_path, pool=pool, **top))
    return Study(P, [e for e in P.pool if ids is None or e.id in ids], section)


# --------------------------------------------------------------------------------------------
# chapters.common: the readers and the pairings
# --------------------------------------------------------------------------------------------

def test_common_head_reads_the_engines_head_cache(tmp_path, monkeypatch):
    P = load_profile(write_profile(tmp_path, pool=POOL))
    W = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([0.5, -1.0], np.float32)
    heads = {"RN50-openai": Head(W.tolist(), None, True, "d0"), "RN50-supervised": Head(W, b.tolist(), False, "d1")}
    asked = []

    def cached_head(e, profile):
        _check_call(e, profile)
        asked.append(e.id)
        return heads[e.id]
    monkeypatch.setattr(extract, "head", cached_head)
    W0, b0, n0 = common.head(P.entry("RN50-openai"), P)
    assert isinstance(W0, np.ndarray) and W0.tolist() == W.tolist() and b0 is None and n0 is True
    W1, b1, n1 = common.head(P.entry("RN50-supervised"), P)
    assert isinstance(b1, np.ndarray) and b1.tolist() == [0.5, -1.0] and n1 is False
    np.testing.assert_array_equal(W1, W)
    assert asked == ["RN50-openai", "RN50-supervised"]


def test_common_embeddings_read_the_engines_cache(tmp_path, monkeypatch):
    P = load_profile(write_profile(tmp_path, pool=POOL))
    e = P.entry("RN50-openai-ft")
    one, many = [], []

    def activations(entry, dataset, profile):
        _check_call(entry, profile)
        one.append((entry.id, dataset))
        return f"acts {entry.id} {dataset}"

    def extract_datasets(entry, datasets, profile):
        _check_call(entry, profile)
        many.append((entry.id, datasets))
        return {d: f"acts {entry.id} {d}" for d in datasets}
    monkeypatch.setattr(extract, "activations", activations)
    monkeypatch.setattr(extract, "extract_datasets", extract_datasets)
    assert common.embeddings(e, P) == "acts RN50-openai-ft imagenet"  # ImageNet by default
    assert common.embeddings(e, P, "objectnet") == "acts RN50-openai-ft objectnet"
    assert one == [("RN50-openai-ft", "imagenet"), ("RN50-openai-ft", "objectnet")]
    got = common.embeddings_many(e, P, (d for d in ("imagenet-r", "imagenet")))  # any iterable, once
    assert got == {"imagenet-r": "acts RN50-openai-ft imagenet-r", "imagenet": "acts RN50-openai-ft imagenet"}
    assert many == [("RN50-openai-ft", ["imagenet-r", "imagenet"])] and isinstance(many[0][1], list)


def test_common_pairs_and_supervised_counterpart(tmp_path):
    P = load_profile(write_profile(tmp_path, pool=POOL + YFCC))
    pool = list(P.pool)
    pairs = [(zs.id, ft.id) for zs, ft in common.finetuning_pairs(pool)]
    assert pairs == [("RN50-openai", "RN50-openai-ft"), ("coca-ViT-B-32-laion2b", "coca-ViT-B-32-laion2b-ft"),
                     ("RN50-yfcc15m", "RN50-yfcc15m-ft")]  # in the order of the finetuned entries
    # both members must be in the slice
    assert common.finetuning_pairs([P.entry("RN50-openai-ft")]) == []
    assert [(z.id, f.id) for z, f in common.finetuning_pairs(pool[::-1])] == [
        ("RN50-yfcc15m", "RN50-yfcc15m-ft"), ("coca-ViT-B-32-laion2b", "coca-ViT-B-32-laion2b-ft"),
        ("RN50-openai", "RN50-openai-ft")]
    assert common.supervised_counterpart(pool, "RN50").id == "RN50-supervised"
    assert common.supervised_counterpart(pool, "coca_ViT-B-32") is None
    assert common.supervised_counterpart([], "RN50") is None
    # a zero-shot model of the backbone is not a supervised one; the first supervised one wins
    sup2 = PoolEntry("RN50-supervised-2", "RN50", "supervised", "ImageNet", "demo-RN50")
    assert common.supervised_counterpart([P.entry("RN50-openai"), sup2, P.entry("RN50-supervised")], "RN50") is sup2
    assert common.supervised_counterpart([P.entry("RN50-openai")], "RN50") is None


def test_wiseft_pairs_take_either_member_of_the_slice(tmp_path):
    full = study_of(tmp_path, wiseft.SECTION, POOL + YFCC)

    def ids(study):
        return [(zs.id, ft.id) for zs, ft in wiseft.pairs(study)]
    everything = [("RN50-openai", "RN50-openai-ft"), ("coca-ViT-B-32-laion2b", "coca-ViT-B-32-laion2b-ft"),
                  ("RN50-yfcc15m", "RN50-yfcc15m-ft")]
    assert ids(full) == everything
    for only in ("RN50-openai", "RN50-openai-ft"):  # the zero-shot or the finetuned member alone
        assert ids(Study(full.profile, [full.profile.entry(only)], wiseft.SECTION)) == everything[:1]
    assert ids(Study(full.profile, [full.profile.entry("RN50-supervised")], wiseft.SECTION)) == []
    two = Study(full.profile, [full.profile.entry("RN50-yfcc15m-ft"), full.profile.entry("coca-ViT-B-32-laion2b")],
                wiseft.SECTION)
    assert ids(two) == everything[1:]  # in the profile's pool order
    assert all(isinstance(z, PoolEntry) and isinstance(f, PoolEntry) for z, f in wiseft.pairs(full))


def test_shown_path_never_prints_a_machines_absolute_path():
    assert wiseft._shown_path(REPO_ROOT / "_cache" / "demo" / "checkpoints" / "x" / "final.pt") == \
        "_cache/demo/checkpoints/x/final.pt"
    assert wiseft._shown_path(str(REPO_ROOT / "final.pt")) == "final.pt"
    assert wiseft._shown_path("/scratch/user/runs/RN50-openai-ft/final.pt") == "runs/RN50-openai-ft/final.pt"
    assert wiseft._shown_path(Path("/data/a/b")) == "data/a/b"
    assert wiseft._shown_path("final.pt") == "final.pt"


# --------------------------------------------------------------------------------------------
# Training checkpoints in helpers.training.loop's layout, written by the project's own writer
# --------------------------------------------------------------------------------------------

def tiny_model(entry_id: str, seed: int = 0):
    """What save_classifier reads of a LoadedModel, with a 2 x 3 encoder (no architecture built)."""
    g = torch.Generator().manual_seed(seed)
    enc = torch.nn.Linear(3, 2)
    with torch.no_grad():
        enc.weight.copy_(torch.randn(2, 3, generator=g))
    return SimpleNamespace(entry=SimpleNamespace(id=entry_id, model="demo-RN50", source="open_clip"),
                           arch_kind="resnet", encoder=enc, head=torch.randn(4, 2, generator=g), bias=None,
                           normalize_features=True, image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25))


RECIPE = Recipe(epochs=3, batch_size=16, lr=3e-5, weight_decay=0.1, warmup_steps=2, schedule="cosine",
                lr_milestones=(), lr_decay=0.1, grad_clip=1.0, label_smoothing=0.0, crop_scale=(0.08, 1.0),
                interpolation="bicubic", hflip=True, seed=0)
LOSSES = [2.75, 1.5, 0.625]


def write_run(folder: Path, final: Path | None, entry_id: str, epochs=3, recipe=RECIPE, images=48, losses=LOSSES):
    """The files fit() leaves: epoch_<k>.pt per epoch, the last resume state, and the final classifier
    (each with epoch, step, identity and the history so far)."""
    identity = {"recipe": recipe.as_dict(), "images": images, "images_digest": "0" * 64}
    history = [{"epoch": k, "step": 3 * k, "loss": losses[k - 1], "lr": 1e-5} for k in range(1, epochs + 1)]
    for k in range(1, epochs + 1):
        save_classifier(tiny_model(entry_id, k), epoch_path(folder, k), entry=entry_id, epoch=k, step=3 * k,
                        identity=identity, world_size=1, history=history[:k])
    save_classifier(tiny_model(entry_id, epochs), resume_path(folder, epochs), entry=entry_id, epoch=epochs,
                    step=3 * epochs, identity=identity, world_size=1, history=history, optimizer={}, rng=[])
    if final is not None:
        save_classifier(tiny_model(entry_id, epochs), final, entry=entry_id, epoch=epochs, step=3 * epochs,
                        identity=identity, history=history)


def test_training_summary_reads_recipe_and_losses_from_the_checkpoints(tmp_path):
    elsewhere = tmp_path / "scratch" / "coca-run" / "weights.pt"
    pool = [dict(e) for e in POOL] + YFCC
    pool[4]["checkpoint"] = str(elsewhere)  # the CoCa finetuned entry names its own file
    study = study_of(tmp_path, wiseft.SECTION, pool, allow_random_init=True)
    P = study.profile
    ckpts = P.paths["checkpoints_dir"]
    write_run(run_dir(P, P.entry("RN50-openai-ft")), ckpts / "RN50-openai-ft" / "final.pt", "RN50-openai-ft")
    # a final file without a history or recipe (e.g. a converted checkpoint)
    save_classifier(tiny_model("coca-ViT-B-32-laion2b-ft"), elsewhere, entry="coca-ViT-B-32-laion2b-ft", epoch=1)
    # RN50-yfcc15m-ft: not trained yet (no file)
    df = wiseft.training_summary(study)
    assert list(df.columns) == ["pair", "zero-shot", "finetuned", "checkpoint", "epochs", "batch", "lr", "images",
                                "loss, first epoch", "loss, last epoch"]
    assert df["pair"].tolist() == ["RN50 / OpenAI", "coca_ViT-B-32 / LAION-2B", "RN50 / YFCC-15M"]
    assert df["zero-shot"].tolist() == ["RN50-openai", "coca-ViT-B-32-laion2b", "RN50-yfcc15m"]
    assert df["finetuned"].tolist() == ["RN50-openai-ft", "coca-ViT-B-32-laion2b-ft", "RN50-yfcc15m-ft"]
    # tmp_path is outside the repository: the last three parts only
    assert df["checkpoint"].tolist() == ["checkpoints/RN50-openai-ft/final.pt", "scratch/coca-run/weights.pt",
                                         "checkpoints/RN50-yfcc15m-ft/final.pt"]
    first = df.iloc[0]
    assert (first.epochs, first.batch, first.lr, first.images) == (3, 16, 3e-5, 48)
    assert (first["loss, first epoch"], first["loss, last epoch"]) == (2.75, 0.625)
    coca = df.iloc[1]
    assert all(pd.isna(coca[c]) for c in ("epochs", "batch", "lr", "images", "loss, first epoch", "loss, last epoch"))
    assert df.iloc[2][["epochs", "batch", "lr", "images", "loss, first epoch", "loss, last epoch"]].isna().all()
    # a slice with no pair: an empty table
    lone = Study(P, [P.entry("RN50-supervised")], wiseft.SECTION)
    assert wiseft.training_summary(lone).empty
    # a final file that is not a checkpoint: one error naming it
    broken = ckpts / "RN50-yfcc15m-ft" / "final.pt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match=r"RN50-yfcc15m-ft/final\.pt: cannot be read"):
        wiseft.training_summary(study)


# --------------------------------------------------------------------------------------------
# The WiSE-FT sweep: measure, table, figure
# --------------------------------------------------------------------------------------------

ALPHAS = [0.0, 0.5, 1.0]


def planted_sweep(zs_id, ft_id, alphas):
    """A sweep table per pair whose every value names its pair and alpha (no two cells alike)."""
    base = {"RN50-openai": 0.1, "coca-ViT-B-32-laion2b": 0.2, "RN50-yfcc15m": 0.3}[zs_id]
    return pd.DataFrame([{"alpha": a, "imagenet": base + 0.5 * a, "shifts_mean": base + 0.25 * a,
                          "er": base - 0.1 * a, "kurtosis": 10 * base + 3 - 2 * a,
                          "kurtosis_shifts": 10 * base + 2 - a, "unique_concepts": int(100 * base) - 4 * int(2 * a)}
                         for a in alphas])


def test_wiseft_measure_records_each_pair_under_the_finetuned_entry(tmp_path, monkeypatch):
    from helpers.engine import mixtures as engine

    calls = []

    def evaluate(profile, zs_id, ft_id, alphas):
        assert isinstance(profile, Profile) and profile.name == "tmp"
        calls.append((zs_id, ft_id, list(alphas)))
        return planted_sweep(zs_id, ft_id, alphas)
    monkeypatch.setattr(engine, "evaluate", evaluate)
    study = study_of(tmp_path, wiseft.SECTION, POOL + YFCC)
    run = wiseft.measure(study, ALPHAS)
    assert calls == [("RN50-openai", "RN50-openai-ft", ALPHAS), ("coca-ViT-B-32-laion2b", "coca-ViT-B-32-laion2b-ft",
                                                                  ALPHAS), ("RN50-yfcc15m", "RN50-yfcc15m-ft", ALPHAS)]
    assert run["entry"].tolist() == ["RN50-openai-ft"] * 3 + ["coca-ViT-B-32-laion2b-ft"] * 3 + ["RN50-yfcc15m-ft"] * 3
    meta = {"RN50-openai-ft": ("RN50", "finetuned_clip", "OpenAI", "RN50-openai", "RN50 / OpenAI", "Figure 15"),
            "coca-ViT-B-32-laion2b-ft": ("coca_ViT-B-32", "coca_finetuned", "LAION-2B", "coca-ViT-B-32-laion2b",
                                         "coca_ViT-B-32 / LAION-2B", "Figure 15"),
            "RN50-yfcc15m-ft": ("RN50", "finetuned_clip", "YFCC-15M", "RN50-yfcc15m", "RN50 / YFCC-15M", "Figure 16")}
    for ft, (backbone, family, pretraining, zs, pair, figure) in meta.items():
        rows = run[run.entry == ft]
        assert (rows.backbone == backbone).all() and (rows.family == family).all()
        assert (rows.pretraining == pretraining).all() and (rows.zeroshot == zs).all()
        assert (rows.pair == pair).all() and (rows.figure == figure).all() and (rows.section == "wiseft").all()
        expected = planted_sweep(zs, ft, ALPHAS)
        for c in expected.columns:
            np.testing.assert_allclose(rows[c].to_numpy(float), expected[c].to_numpy(float), rtol=1e-12, err_msg=c)
        # and the recorded table on disk says the same
        disk = results.load(study.profile, "wiseft", [ft])
        pd.testing.assert_frame_equal(disk, rows.reset_index(drop=True))
    # a slice with the zero-shot member only: that pair is measured, the table is the finetuned entry's
    calls.clear()
    one = Study(study.profile, [study.profile.entry("RN50-openai")], wiseft.SECTION)
    out = wiseft.measure(one, [0.25])
    assert calls == [("RN50-openai", "RN50-openai-ft", [0.25])]
    assert out["entry"].tolist() == ["RN50-openai-ft"] and out["alpha"].tolist() == [0.25]
    # Figure 16 holds both weak pretraining sets: a CC-12M pair too
    cc = [{**e, "id": e["id"].replace("yfcc15m", "cc12m"), "pretraining": "CC-12M",
           **({"finetuned_from": "RN50-cc12m"} if "finetuned_from" in e else {})} for e in YFCC]
    (tmp_path / "cc").mkdir()
    monkeypatch.setattr(engine, "evaluate", lambda P, z, f, a: planted_sweep("RN50-yfcc15m", f, a))
    cc_run = wiseft.measure(study_of(tmp_path / "cc", wiseft.SECTION, cc), [0.0])
    assert cc_run[["entry", "zeroshot", "pair", "figure"]].values.tolist() == [
        ["RN50-cc12m-ft", "RN50-cc12m", "RN50 / CC-12M", "Figure 16"]]
    monkeypatch.setattr(engine, "evaluate", evaluate)
    # no pair: nothing evaluated, an empty table
    calls.clear()
    none = wiseft.measure(Study(study.profile, [study.profile.entry("RN50-supervised")], wiseft.SECTION), ALPHAS)
    assert calls == [] and none.empty


def sweep_run(pairs=("RN50-openai", "coca-ViT-B-32-laion2b", "RN50-yfcc15m")):
    ft = {"RN50-openai": "RN50-openai-ft", "coca-ViT-B-32-laion2b": "coca-ViT-B-32-laion2b-ft",
          "RN50-yfcc15m": "RN50-yfcc15m-ft"}
    label = {"RN50-openai": "RN50 / OpenAI", "coca-ViT-B-32-laion2b": "coca_ViT-B-32 / LAION-2B",
             "RN50-yfcc15m": "RN50 / YFCC-15M"}
    frames = [planted_sweep(z, ft[z], [1.0, 0.0, 0.5]).assign(entry=ft[z], zeroshot=z, pair=label[z], section="wiseft")
              for z in pairs]  # alphas out of order: the figure sorts them
    return pd.concat(frames, ignore_index=True)


def test_sweep_table_keeps_the_headline_columns_in_order():
    run = sweep_run()
    t = wiseft.sweep_table(run)
    assert list(t.columns) == ["pair", "alpha", "imagenet", "shifts_mean", "er", "kurtosis", "kurtosis_shifts",
                               "unique_concepts"]
    pd.testing.assert_frame_equal(t, run[list(t.columns)])
    # ER and concepts absent (no five shifts, no Broden): those columns are left out, the rest kept
    part = wiseft.sweep_table(run.drop(columns=["er", "unique_concepts", "kurtosis_shifts"])[
        ["kurtosis", "alpha", "pair", "imagenet", "shifts_mean"]])
    assert list(part.columns) == ["pair", "alpha", "imagenet", "shifts_mean", "kurtosis"]
    assert part["kurtosis"].tolist() == run["kurtosis"].tolist()


def figure_pool(tmp_path):
    pool = [dict(e) for e in POOL] + YFCC
    # a stand-in: the CoCa finetuned entry is compared with the paper's ViT-L-14 one
    pool[4]["stands_in_for"] = "coca-ViT-L-14-laion2b-ft"
    return load_profile(write_profile(tmp_path, pool=pool))


#: the paper's values in the run's units (fractions), by paper id; RN50-yfcc15m-ft has none
PAPER = pd.DataFrame([
    {"entry": "RN50-openai", "imagenet": 0.60, "shifts_mean": 0.44, "er": 0.205},
    {"entry": "RN50-openai-ft", "imagenet": 0.76, "shifts_mean": 0.43, "er": 0.079},
    {"entry": "coca-ViT-B-32-laion2b", "imagenet": 0.64, "shifts_mean": 0.5, "er": 0.24},
    {"entry": "coca-ViT-B-32-laion2b-ft", "imagenet": 0.11, "shifts_mean": 0.12, "er": 0.13},  # not its paper model
    {"entry": "coca-ViT-L-14-laion2b-ft", "imagenet": 0.84, "shifts_mean": 0.6, "er": 0.21},
    {"entry": "RN50-yfcc15m", "imagenet": 0.32, "shifts_mean": 0.18, "er": 0.09},
])
PAPER_ENDS = {"RN50 / OpenAI": ("RN50-openai", "RN50-openai-ft"),
              "coca_ViT-B-32 / LAION-2B": ("coca-ViT-B-32-laion2b", "coca-ViT-L-14-laion2b-ft"),
              "RN50 / YFCC-15M": ("RN50-yfcc15m", None)}


def split_lines(ax):
    """(data lines, hollow paper markers, dashed reference lines) of a panel, in drawing order."""
    lines = ax.get_lines()
    data = [ln for ln in lines if not ln.get_label().startswith("_")]
    hollow = [ln for ln in lines if ln.get_linestyle() == "None" and ln.get_markerfacecolor() == "none"]
    ref = [ln for ln in lines if ln.get_linestyle() == "--"]
    assert len(data) + len(hollow) + len(ref) == len(lines)
    return data, hollow, ref


def legend_texts(fig):
    assert len(fig.legends) == 1
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_sweep_figure_draws_the_table_and_the_papers_endpoints(tmp_path):
    import matplotlib.pyplot as plt

    P = figure_pool(tmp_path)
    run = sweep_run()
    series = {"ImageNet": "imagenet", "mean of the 5 shifts": "shifts_mean"}
    fig = plots.sweep_figure(run, series, "top-1 (%)", "Figures 15-16", scale=100, paper=PAPER, profile=P)
    try:
        axes = fig.axes
        assert len(axes) == 4 and [ax.get_visible() for ax in axes] == [True, True, True, False]  # 2 x 2, one spare
        labels = ["RN50 / OpenAI", "coca_ViT-B-32 / LAION-2B", "RN50 / YFCC-15M"]
        assert [ax.get_title() for ax in axes[:3]] == labels  # the table's pair order
        paper = PAPER.set_index("entry")
        for ax, label in zip(axes, labels):
            assert ax.get_xlabel() == "α (0: zero-shot, 1: finetuned)" and ax.get_ylabel() == "top-1 (%)"
            data, hollow, ref = split_lines(ax)
            assert [ln.get_label() for ln in data] == ["ImageNet", "mean of the 5 shifts"] and ref == []
            sub = run[run.pair == label].sort_values("alpha")
            for ln, column in zip(data, ("imagenet", "shifts_mean")):
                x, y = ln.get_data()
                np.testing.assert_allclose(x, [0.0, 0.5, 1.0])
                np.testing.assert_allclose(y, 100 * sub[column].to_numpy(), rtol=1e-12)
            zs, ft = PAPER_ENDS[label]
            assert len(hollow) == 2
            for ln, column in zip(hollow, ("imagenet", "shifts_mean")):
                x, y = ln.get_data()
                assert list(x) == [0, 1] and ln.get_marker() == "o"  # a marker, or nothing would show
                want = [100 * paper.loc[zs, column], np.nan if ft is None else 100 * paper.loc[ft, column]]
                np.testing.assert_allclose(y, want, rtol=1e-12, equal_nan=True)
        assert legend_texts(fig) == ["ImageNet", "mean of the 5 shifts", PAPER_LABEL + ": α = 0 and 1 (Tables 1-5)"]
        key = fig.legends[0].legend_handles[-1]  # the paper's key: a hollow marker, no line
        assert key.get_linestyle() == "None" and key.get_markerfacecolor() == "none" and key.get_marker() == "o"
        assert all(axes[0].get_shared_x_axes().joined(axes[0], ax) for ax in axes)  # one alpha axis for all panels
        assert fig.get_suptitle() == "Figures 15-16"
    finally:
        plt.close(fig)

    # ER: a dashed reference at ref (in the plotted units: not scaled), no paper markers without paper
    two = run[run.pair != "RN50 / YFCC-15M"]
    fig = plots.sweep_figure(two, {"ER": "er"}, "ER (points)", "Figures 17-18", scale=100, ref=0)
    try:
        assert len(fig.axes) == 2 and all(ax.get_visible() for ax in fig.axes)
        for ax, label in zip(fig.axes, ["RN50 / OpenAI", "coca_ViT-B-32 / LAION-2B"]):
            data, hollow, ref = split_lines(ax)
            assert hollow == [] and len(ref) == 1 and list(ref[0].get_ydata()) == [0, 0]
            np.testing.assert_allclose(data[0].get_ydata(), 100 * two[two.pair == label].sort_values("alpha")["er"])
        assert legend_texts(fig) == ["ER"]
    finally:
        plt.close(fig)
    fig = plots.sweep_figure(run, {"ImageNet": "kurtosis"}, "kurtosis", "Figures 19-20", ref=3, paper=PAPER,
                              profile=P)
    try:
        for ax, label in zip(fig.axes[:3], ["RN50 / OpenAI", "coca_ViT-B-32 / LAION-2B", "RN50 / YFCC-15M"]):
            data, hollow, ref = split_lines(ax)
            assert list(ref[0].get_ydata()) == [3, 3]
            # scale 1: the table's own values; the paper frame has no kurtosis column: no markers
            np.testing.assert_allclose(data[0].get_ydata(), run[run.pair == label].sort_values("alpha")["kurtosis"])
            assert hollow == []
        assert legend_texts(fig)[-1].startswith(PAPER_LABEL)
    finally:
        plt.close(fig)


def test_sweep_figure_skips_missing_values_and_says_when_nothing_is_there(tmp_path):
    import matplotlib.pyplot as plt

    run = sweep_run(("RN50-openai", "coca-ViT-B-32-laion2b"))
    run.loc[run.pair == "coca_ViT-B-32 / LAION-2B", "unique_concepts"] = np.nan  # no Broden for that pair
    fig = plots.sweep_figure(run, {"unique concepts": "unique_concepts", "absent": "no_such_column"}, "n", "F21")
    try:
        first, second = fig.axes
        assert [ln.get_label() for ln in first.get_lines()] == ["unique concepts"]
        np.testing.assert_allclose(first.get_lines()[0].get_ydata(),
                                   run[run.pair == "RN50 / OpenAI"].sort_values("alpha")["unique_concepts"])
        assert second.get_lines() == [] and second.get_title() == "coca_ViT-B-32 / LAION-2B"
    finally:
        plt.close(fig)
    one = sweep_run(("RN50-openai",))
    fig = plots.sweep_figure(one, {"ER": "er"}, "ER", "one pair")
    try:
        assert len(fig.axes) == 1 and fig.axes[0].get_title() == "RN50 / OpenAI"
    finally:
        plt.close(fig)
    placeholder = "no (zero-shot, finetuned) pair with these values in this slice"
    for table in (pd.DataFrame(), run.drop(columns=["pair"]), run.iloc[:0], run[["pair", "alpha", "entry"]]):
        fig = plots.sweep_figure(table, {"ER": "er"}, "ER", "Figures 17-18")
        try:
            (ax,) = fig.axes
            assert [t.get_text() for t in ax.texts] == [placeholder] and not ax.axison and ax.get_lines() == []
            assert fig.get_suptitle() == "Figures 17-18" and fig.legends == []
        finally:
            plt.close(fig)
    # the paper's values need the profile to find each pair's paper models: without it, no markers
    fig = plots.sweep_figure(run, {"ImageNet": "imagenet"}, "top-1", "t", paper=PAPER)
    try:
        assert all(split_lines(ax)[1] == [] and len(split_lines(ax)[0]) == 1 for ax in fig.axes)
    finally:
        plt.close(fig)
    # no series drawn on the first panel (and no paper): no legend at all
    fig = plots.sweep_figure(run[run.pair == "coca_ViT-B-32 / LAION-2B"], {"u": "unique_concepts"}, "n", "t")
    try:
        assert fig.legends == []
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------------------------
# Figure 5: epoch checkpoints, Venn regions, the trajectory
# --------------------------------------------------------------------------------------------

def test_epoch_entries_follow_the_run_folder(tmp_path):
    pool = [dict(e) for e in POOL] + YFCC
    final = tmp_path / "weights" / "RN50-openai-ft.pt"
    pool[1]["checkpoint"] = str(final)
    P = load_profile(write_profile(tmp_path, pool=pool))
    ft = P.entry("RN50-openai-ft")
    folder = run_dir(P, ft)
    write_run(folder, final, ft.id)
    (folder / "epoch_last.pt").write_bytes(b"not an epoch")  # not numbered: not an epoch
    got = wiseft.epoch_entries(P, ft)
    assert [k for k, _ in got] == [1, 2, 3]
    # the last epoch's weights are the final checkpoint's: that epoch is the entry itself
    assert got[2][1] is ft
    for k, e in got[:2]:
        assert e == PoolEntry(**{**ft.__dict__, "id": f"RN50-openai-ft.epoch{k}",
                                 "checkpoint": str(folder / f"epoch_{k}.pt"), "pretrained": None})
        assert Path(e.checkpoint).is_file()
    # a final checkpoint of an earlier epoch (the run went on past it): only that epoch is the entry
    save_classifier(tiny_model(ft.id), final, entry=ft.id, epoch=2)
    got = wiseft.epoch_entries(P, ft)
    assert [e.id for _, e in got] == ["RN50-openai-ft.epoch1", "RN50-openai-ft", "RN50-openai-ft.epoch3"]
    # the final file missing: every epoch is its own entry
    final.unlink()
    assert [e.id for _, e in wiseft.epoch_entries(P, ft)] == [f"RN50-openai-ft.epoch{k}" for k in (1, 2, 3)]
    # an entry without `checkpoint:` does not load final.pt: it cannot stand for an epoch
    yft = P.entry("RN50-yfcc15m-ft")
    write_run(run_dir(P, yft), run_dir(P, yft) / "final.pt", yft.id, epochs=2, losses=[1.0, 0.5])
    got = wiseft.epoch_entries(P, yft)
    assert [(k, e.id, e.checkpoint) for k, e in got] == [
        (k, f"RN50-yfcc15m-ft.epoch{k}", str(run_dir(P, yft) / f"epoch_{k}.pt")) for k in (1, 2)]
    # no run folder: no epochs
    assert wiseft.epoch_entries(P, P.entry("coca-ViT-B-32-laion2b-ft")) == []
    # an unreadable final checkpoint: one error naming it, not a guess at the last epoch
    final.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"RN50-openai-ft\.pt: cannot be read"):
        wiseft.epoch_entries(P, ft)


def test_overlap_fractions_by_set_algebra():
    c_zero = {"a", "b", "c", "d", "z1"}
    c_sup = {"c", "d", "e", "f", "g", "s1"}
    # C_fine: a (zero only), c d (both), e f g (supervised only), h i j k (neither): 1, 2, 3, 4 of 10
    c_fine = {"a", "c", "d", "e", "f", "g", "h", "i", "j", "k"}
    got = wiseft.overlap_fractions(c_fine, c_zero, c_sup)
    assert list(got) == list(wiseft.REGIONS) == ["zero-shot only", "zero-shot and supervised", "supervised only",
                                                 "finetuned only"]
    assert got == {"zero-shot only": 0.1, "zero-shot and supervised": 0.2, "supervised only": 0.3,
                   "finetuned only": 0.4}
    assert wiseft.overlap_fractions({"a"}, c_zero, c_sup) == {"zero-shot only": 1.0, "zero-shot and supervised": 0.0,
                                                             "supervised only": 0.0, "finetuned only": 0.0}
    assert wiseft.overlap_fractions({"x", "c"}, set(), c_sup) == {
        "zero-shot only": 0.0, "zero-shot and supervised": 0.0, "supervised only": 0.5, "finetuned only": 0.5}
    empty = wiseft.overlap_fractions(set(), c_zero, c_sup)
    assert list(empty) == list(wiseft.REGIONS) and all(math.isnan(v) for v in empty.values())


#: 13 planted Broden concepts; the concept sets below are indices into them
TRAJ_CONCEPTS = [f"c{i}" for i in range(13)]
C_ZERO = {0, 1, 2, 3, 4, 5}
C_SUP = {4, 5, 6, 7, 8}
C_EPOCH1 = {0, 4, 5, 6, 7, 8, 9, 10, 11, 12}  # 1 zero-shot only, 2 shared, 3 supervised only, 4 new: of 10
C_FINAL = {4, 6, 9}                          # plus c1 at AP 0.85: in C_fine at threshold 0.85, not at 0.9


def planted_ap(concepts, weak=()):
    """A 3 x 13 AP matrix whose concept set at 0.9 is ``concepts``: each on one direction at 0.95,
    the rest at most 0.6 (NaN for concept 12 on every direction it does not reach)."""
    rng = np.random.default_rng(len(concepts))
    ap = rng.uniform(0.3, 0.6, size=(3, len(TRAJ_CONCEPTS)))
    ap[:, 12] = np.nan
    for c in concepts:
        ap[c % 3, c] = 0.95
    for c in weak:
        ap[1, c] = 0.85
    return ap


def trajectory_world(tmp_path, monkeypatch, **metrics):
    from helpers.engine import mixtures as engine

    pool = [dict(e) for e in POOL] + YFCC
    final = tmp_path / "weights" / "RN50-openai-ft.pt"
    pool[1]["checkpoint"] = str(final)
    study = study_of(tmp_path, wiseft.SECTION, pool, metrics={"concept_threshold": 0.85, **metrics})
    P = study.profile
    ft = P.entry("RN50-openai-ft")
    write_run(run_dir(P, ft), final, ft.id, epochs=2, losses=[1.0, 0.5])
    sets = engine_probing.BrodenSets(pd.DataFrame({"number": range(1, 14), "name": TRAJ_CONCEPTS,
                                                    "category": ["texture"] * 13}),
                                      np.zeros((4, 13), bool), np.ones((4, 13), bool), pd.DataFrame(), key="planted")
    cached = {"RN50-openai": planted_ap(C_ZERO), "RN50-supervised": planted_ap(C_SUP),
              "RN50-openai-ft": planted_ap(C_FINAL, weak=(1,)), "RN50-yfcc15m": planted_ap({0, 1, 7})}
    calls = {"ap_matrix": [], "transient": [], "loaded": []}

    def ap_matrix(e, profile, s):
        assert s is sets and isinstance(profile, Profile)
        # which profile: the study's own, or the one whose pool also holds the epoch entries
        calls["ap_matrix"].append((e.id, "RN50-openai-ft.epoch1" in {x.id for x in profile.pool}))
        return cached[e.id]

    def loaded_model(e, profile):
        assert e in profile.pool  # the epoch entry loads through a profile whose pool holds it
        calls["loaded"].append((e.id, e.checkpoint))
        return SimpleNamespace(entry=e)

    def transient_ap(profile, model, s):
        assert s is sets and model.entry in profile.pool
        calls["transient"].append(model.entry.id)
        return {"RN50-openai-ft.epoch1": planted_ap(C_EPOCH1), "RN50-yfcc15m-ft.epoch1": planted_ap({0, 7, 8}),
                "RN50-yfcc15m-ft.epoch2": planted_ap({8, 9})}[model.entry.id]
    monkeypatch.setattr(engine, "broden_available", lambda profile: profile is P)
    monkeypatch.setattr(engine_probing, "broden_sets", lambda profile: sets if profile is P else pytest.fail("P"))
    monkeypatch.setattr(engine_probing, "ap_matrix", ap_matrix)
    monkeypatch.setattr(engine, "transient_ap", transient_ap)
    monkeypatch.setattr(extract, "loaded_model", loaded_model)
    return study, calls


def regions_by_hand(c_fine):
    """Figure 5's four shares of C_fine, by set algebra on the planted indices."""
    n = len(c_fine)
    return [len(c_fine & C_ZERO - C_SUP) / n, len(c_fine & C_ZERO & C_SUP) / n, len(c_fine & C_SUP - C_ZERO) / n,
            len(c_fine - C_ZERO - C_SUP) / n]


def test_concept_trajectory_from_planted_concept_sets(tmp_path, monkeypatch):
    study, calls = trajectory_world(tmp_path, monkeypatch)
    P = study.profile
    table, notes = wiseft.concept_trajectory(study)  # the profile's threshold, 0.85
    assert notes == ["coca-ViT-B-32-laion2b-ft: no supervised model of backbone coca_ViT-B-32",
                     "RN50-yfcc15m-ft: no epoch checkpoints (train it with `clip-study finetune`)"]
    regions = list(wiseft.REGIONS)
    assert table["epoch"].tolist() == [0] * 4 + [1] * 4 + [2] * 4 and table["region"].tolist() == regions * 3
    final_set = C_FINAL | {1}  # c1 at 0.85 counts at the threshold 0.85 (inclusive)
    for epoch, c_fine in ((0, C_ZERO), (1, C_EPOCH1), (2, final_set)):
        rows = table[table.epoch == epoch]
        assert rows["fraction"].tolist() == pytest.approx(regions_by_hand(c_fine), abs=1e-12)
        assert (rows.n_fine == len(c_fine)).all()
    assert table[table.epoch == 1]["fraction"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert table[table.epoch == 2]["fraction"].tolist() == pytest.approx([0.25, 0.25, 0.25, 0.25])
    assert (table.n_zero == 6).all() and (table.n_sup == 5).all() and (table.threshold == 0.85).all()
    assert (table.supervised == "RN50-supervised").all() and (table.zeroshot == "RN50-openai").all()
    assert (table.entry == "RN50-openai-ft").all() and (table.pair == "RN50 / OpenAI").all()
    assert (table.backbone == "RN50").all() and (table.family == "finetuned_clip").all()
    assert (table.pretraining == "OpenAI").all()
    # the zero-shot and supervised sets and epoch 0 and the final epoch from the cached AP matrices (the final
    # one through the profile that holds the epoch entries); epoch 1 loaded from its file and probed in memory
    assert calls["ap_matrix"] == [("RN50-openai", False), ("RN50-supervised", False), ("RN50-openai", True),
                                  ("RN50-openai-ft", True)]
    assert calls["loaded"] == [("RN50-openai-ft.epoch1", str(run_dir(P, P.entry("RN50-openai-ft")) / "epoch_1.pt"))]
    assert calls["transient"] == ["RN50-openai-ft.epoch1"]
    # recorded under Figure 5's own section, per finetuned entry
    disk = results.load(P, wiseft.TRAJECTORY_SECTION)
    assert list(disk.columns) == ["profile", "section", "entry", "epoch", "region", "fraction", "n_fine", "n_zero",
                                  "n_sup", "supervised", "threshold", "backbone", "family", "pretraining", "zeroshot",
                                  "pair"]
    assert (disk.section == "finetuning_concepts").all() and (disk.entry == "RN50-openai-ft").all()
    pd.testing.assert_frame_equal(disk[list(table.columns)], table, check_dtype=False)
    assert results.load(P, "wiseft").empty  # not in the sweep's section

    # an explicit threshold: c1 (0.85) drops out of the final epoch's set
    table9, _ = wiseft.concept_trajectory(study, threshold=0.9)
    assert (table9.threshold == 0.9).all()
    rows = table9[table9.epoch == 2]
    assert rows["fraction"].tolist() == pytest.approx([0.0, 1 / 3, 1 / 3, 1 / 3]) and (rows.n_fine == 3).all()
    assert (table9.n_zero == 6).all()

    # the YFCC pair trained too (no `checkpoint:`: its epochs are all probed from their files): two pairs
    yft = P.entry("RN50-yfcc15m-ft")
    write_run(run_dir(P, yft), run_dir(P, yft) / "final.pt", yft.id, epochs=2, losses=[1.0, 0.5])
    both, notes = wiseft.concept_trajectory(study, threshold=0.9)
    assert notes == ["coca-ViT-B-32-laion2b-ft: no supervised model of backbone coca_ViT-B-32"]
    assert both.index.tolist() == list(range(24)) and both.entry.tolist() == ["RN50-openai-ft"] * 12 + [yft.id] * 12
    pd.testing.assert_frame_equal(both.iloc[:12], table9)
    y = both.iloc[12:]
    assert (y.pair == "RN50 / YFCC-15M").all() and (y.zeroshot == "RN50-yfcc15m").all() and (y.n_zero == 3).all()
    assert (y.pretraining == "YFCC-15M").all() and (y.supervised == "RN50-supervised").all()
    # C_zero = {0, 1, 7}, C_sup = {4, ..., 8}: epoch 1 {0, 7, 8} -> 1/3, 1/3, 1/3, 0; epoch 2 {8, 9} -> 0, 0, 1/2, 1/2
    assert y["fraction"].tolist() == pytest.approx([2 / 3, 1 / 3, 0, 0, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0.5, 0.5])
    assert results.load(P, wiseft.TRAJECTORY_SECTION)["entry"].unique().tolist() == ["RN50-openai-ft", yft.id]


def test_concept_trajectory_without_broden_or_pairs(tmp_path, monkeypatch):
    # no Broden folder in the profile: one note, no table (the real availability check)
    study = study_of(tmp_path, wiseft.SECTION, POOL)
    table, notes = wiseft.concept_trajectory(study)
    assert table.empty and notes == ["Broden is not on disk for this profile: no concept sets to compare."]
    study, calls = trajectory_world(tmp_path, monkeypatch)
    alone = Study(study.profile, [study.profile.entry("RN50-supervised")], wiseft.SECTION)
    table, notes = wiseft.concept_trajectory(alone)
    assert table.empty and notes == ["No (zero-shot, finetuned) pair in this slice."] and calls["ap_matrix"] == []
    coca = Study(study.profile, [study.profile.entry("coca-ViT-B-32-laion2b")], wiseft.SECTION)
    table, notes = wiseft.concept_trajectory(coca)
    assert table.empty and notes == ["coca-ViT-B-32-laion2b-ft: no supervised model of backbone coca_ViT-B-32"]
    assert results.load(study.profile, wiseft.TRAJECTORY_SECTION).empty


def hand_trajectory():
    """A long Figure 5 table: three pairs, epochs out of order, every fraction distinct."""
    rows, v = [], 0.01
    for pair, epochs in (("RN50 / OpenAI", [2, 0, 1]), ("ViT-B-32 / LAION-2B", [0, 3]), ("RN50 / CC-12M", [1, 0])):
        for epoch in epochs:
            for region in wiseft.REGIONS:
                rows.append({"pair": pair, "epoch": epoch, "region": region, "fraction": v, "n_fine": 10 + epoch})
                v += 0.01
    return pd.DataFrame(rows)


def test_trajectory_figure_and_wide_table_show_the_long_table():
    import matplotlib.pyplot as plt

    table = hand_trajectory()
    fig = plots.trajectory_figure(table)
    try:
        axes = fig.axes
        assert len(axes) == 4 and [ax.get_visible() for ax in axes] == [True, True, True, False]
        labels = ["RN50 / OpenAI", "ViT-B-32 / LAION-2B", "RN50 / CC-12M"]
        assert [ax.get_title() for ax in axes[:3]] == labels
        for ax, label in zip(axes, labels):
            sub = table[table.pair == label]
            epochs = sorted(sub.epoch.unique())
            assert [ln.get_label() for ln in ax.get_lines()] == list(wiseft.REGIONS)
            for ln, region in zip(ax.get_lines(), wiseft.REGIONS):
                assert ln.get_color() == plots.TRAJECTORY_REGIONS[region]  # the paper's colour of each region
                r = sub[sub.region == region].sort_values("epoch")
                np.testing.assert_allclose(ln.get_xdata(), epochs)
                np.testing.assert_allclose(ln.get_ydata(), 100 * r.fraction.to_numpy(), rtol=1e-12)
            assert list(ax.get_xticks()) == epochs
            assert ax.get_xlabel() == "finetuning epoch (0: zero-shot)" and ax.get_ylabel() == "% of finetuned concepts"
        assert legend_texts(fig) == list(wiseft.REGIONS)
        assert fig.get_suptitle().startswith("Figure 5: ")
    finally:
        plt.close(fig)
    fig = plots.trajectory_figure(table[table.pair == "RN50 / CC-12M"])
    try:
        assert len(fig.axes) == 1 and fig.axes[0].get_title() == "RN50 / CC-12M"
    finally:
        plt.close(fig)

    wide = wiseft.trajectory_wide(table)
    assert list(wide.columns) == ["pair", "epoch", "n_fine", *wiseft.REGIONS]
    assert len(wide) == 7 and not wide.duplicated(["pair", "epoch"]).any()
    # rows in the pairs' order (as the figure's panels), epochs ascending, a clean index
    assert list(zip(wide.pair, wide.epoch)) == [("RN50 / OpenAI", 0), ("RN50 / OpenAI", 1), ("RN50 / OpenAI", 2),
                                                ("ViT-B-32 / LAION-2B", 0), ("ViT-B-32 / LAION-2B", 3),
                                                ("RN50 / CC-12M", 0), ("RN50 / CC-12M", 1)]
    assert wide.index.tolist() == list(range(7))
    for _, row in wide.iterrows():
        cell = table[(table.pair == row.pair) & (table.epoch == row.epoch)].set_index("region")
        assert row.n_fine == 10 + row.epoch
        want = [100 * cell.loc[r, "fraction"] for r in wiseft.REGIONS]
        assert [row[r] for r in wiseft.REGIONS] == pytest.approx(want)
    # regions missing from the table are left out, the others keep Figure 5's order
    part = wiseft.trajectory_wide(table[table.region.isin(["finetuned only", "zero-shot only"])])
    assert list(part.columns) == ["pair", "epoch", "n_fine", "zero-shot only", "finetuned only"]


# --------------------------------------------------------------------------------------------
# CKA between zero-shot and finetuned layers (Appendix C)
# --------------------------------------------------------------------------------------------

#: the layers the engine gives per architecture, in network order ('.mean' rows: ViT mean patch token)
LAYERS = {"RN50": ["stem", "layer1", "layer2", "mean_pool", "layer4"],
          "coca_ViT-B-32": ["blocks.0.cls", "blocks.0.mean", "blocks.1.cls", "blocks.1.mean", "final.cls"]}


def planted_cka(arch, dataset, depth):
    """A distinct value per (backbone, dataset, depth)."""
    return round(0.99 - 0.1 * depth - 0.01 * EVAL_DATASETS.index(dataset) - (0.001 if arch == "RN50" else 0.0), 6)


class PlantedPair:
    def __init__(self, arch, dataset):
        self.arch, self.dataset = arch, dataset

    def same_layer(self):
        return {name: np.float32(planted_cka(self.arch, self.dataset, i)) for i, name in enumerate(LAYERS[self.arch])}


def test_cka_layers_records_every_layer_in_network_order(tmp_path, monkeypatch):
    calls = []

    def pair_cka(zs, ft, d, P, batch=None):
        _check_call(zs, P)
        _check_call(ft, P)
        calls.append((zs.id, ft.id, d, batch))
        return PlantedPair(ft.arch, d)
    monkeypatch.setattr(cka_layers, "pair_cka", pair_cka)
    study = make_study(tmp_path, cka_layers.SECTION)
    run = cka_layers.measure(study)
    pairs = [("RN50-openai", "RN50-openai-ft"), ("coca-ViT-B-32-laion2b", "coca-ViT-B-32-laion2b-ft")]
    assert calls == [(zs, ft, d, None) for zs, ft in pairs for d in EVAL_DATASETS]
    assert list(run.columns) == ["profile", "section", "entry", "backbone", "family", "pretraining", "zero_shot",
                                 "dataset", "layer", "depth", "cka"]
    expected = [(ft, arch, fam, pre, zs, d, name, i, planted_cka(arch, d, i))
                for (zs, ft), arch, fam, pre in zip(pairs, ["RN50", "coca_ViT-B-32"],
                                                    ["finetuned_clip", "coca_finetuned"], ["OpenAI", "LAION-2B"])
                for d in EVAL_DATASETS for i, name in enumerate(LAYERS[arch])]
    got = list(run[["entry", "backbone", "family", "pretraining", "zero_shot", "dataset", "layer", "depth"]]
               .itertuples(index=False, name=None))
    assert got == [e[:8] for e in expected]
    np.testing.assert_allclose(run.cka, [e[8] for e in expected], rtol=1e-6)
    assert (run.section == "cka_layers").all() and len(run) == 2 * 6 * 5

    # a slice: the datasets and minibatch size asked for; a pair needs both members in the slice
    calls.clear()
    (tmp_path / "b").mkdir()
    study2 = make_study(tmp_path / "b", cka_layers.SECTION,
                        ids=["RN50-openai", "RN50-openai-ft", "coca-ViT-B-32-laion2b"])
    out = cka_layers.measure(study2, datasets=("imagenet", "objectnet"), batch=16)
    assert calls == [("RN50-openai", "RN50-openai-ft", d, 16) for d in ("imagenet", "objectnet")]
    assert out.dataset.tolist() == ["imagenet"] * 5 + ["objectnet"] * 5 and out.depth.tolist() == [0, 1, 2, 3, 4] * 2
    assert out.cka.tolist() == pytest.approx([planted_cka("RN50", d, i) for d in ("imagenet", "objectnet")
                                              for i in range(5)], rel=1e-6)

    plot = cka_layers.for_plot(run)
    # the ViT's mean-patch-token rows are dropped (class token only); 'mean_pool' is a ResNet layer, kept
    assert not plot.layer.str.endswith(".mean").any() and (plot.layer == "mean_pool").sum() == 6
    kept = run[~run.layer.isin(["blocks.0.mean", "blocks.1.mean"])]
    assert len(plot) == len(run) - 2 * 6
    pd.testing.assert_frame_equal(plot.drop(columns=["where"]), kept)
    assert plot["where"].tolist() == ["ImageNet" if d == "imagenet" else "shifts" for d in kept.dataset]
    assert set(plot.loc[plot.dataset.isin(SHIFTS), "where"]) == {"shifts"}
    assert "where" not in run  # the recorded table is left as it is


# --------------------------------------------------------------------------------------------
# Robustness guards: the published-accuracy flag and the unreadable images
# --------------------------------------------------------------------------------------------

def test_flagged_lists_the_entries_off_their_published_accuracy(tmp_path, monkeypatch):
    from test_chapter_oracles import ACCS

    pool = [dict(e) for e in POOL]
    pool[0]["published_top1"] = 59.0   # measured 60: 1 point off, within the 1.5-point tolerance
    pool[1]["published_top1"] = 80.0   # measured 76: -4 points, flagged
    pool[3]["published_top1"] = 61.5   # measured 64: +2.5 points, flagged
    monkeypatch.setattr(extract, "accuracies", lambda e, P, datasets: {"imagenet": ACCS[e.id][0],
                                                                       **dict(zip(SHIFTS, ACCS[e.id][1]))})
    study = study_of(tmp_path, robustness.SECTION, pool)
    with pytest.warns(robustness.PublishedAccuracyWarning) as caught:
        robustness.measure(study)
    assert len(caught) == 2
    run = results.load(study.profile, "robustness")  # as the chapter reads it back
    flags = robustness.flagged(run)
    assert list(flags.columns) == ["entry", "backbone", "family", "published_top1", "measured", "top1_deviation"]
    assert flags.entry.tolist() == ["RN50-openai-ft", "coca-ViT-B-32-laion2b"]
    assert flags.backbone.tolist() == ["RN50", "coca_ViT-B-32"]
    assert flags.family.tolist() == ["finetuned_clip", "coca_zeroshot"]
    assert flags.published_top1.tolist() == [80.0, 61.5]
    assert flags.measured.tolist() == pytest.approx([76.0, 64.0])
    assert flags.top1_deviation.tolist() == pytest.approx([-4.0, 2.5])
    # flags as strings (a table written by another tool) count the same; no flag column: no row
    as_text = run.assign(published_flag=run.published_flag.map({True: "TRUE", False: "false"}))
    assert robustness.flagged(as_text).entry.tolist() == ["RN50-openai-ft", "coca-ViT-B-32-laion2b"]
    none = robustness.flagged(run.drop(columns=["published_flag"]))
    assert none.empty and list(none.columns) == [c for c in run.columns if c != "published_flag"]
    assert robustness.flagged(run.assign(published_flag=False)).empty


def test_skipped_files_gathers_the_manifests_of_the_slice(tmp_path, monkeypatch):
    skipped = {
        ("RN50-openai", "imagenet"): ["n01/bad.JPEG: cannot identify image file", "n02/cut.JPEG: truncated: 12 bytes"],
        ("RN50-openai", "objectnet"): ["chair/x.png: cannot identify image file"],
        ("RN50-openai-ft", "imagenet"): ["n01/bad.JPEG: cannot identify image file"],
        ("RN50-openai-ft", "imagenet-a"): ["no-reason.jpg"],
    }
    asked = []

    def activations(e, d, P):
        _check_call(e, P)
        asked.append((e.id, d))
        manifest = {"key": "k"} if (e.id, d) not in skipped else {"key": "k", "skipped": skipped[(e.id, d)]}
        return SimpleNamespace(manifest=manifest)
    monkeypatch.setattr(extract, "activations", activations)
    study = make_study(tmp_path, robustness.SECTION, ids=["RN50-openai", "RN50-openai-ft", "RN50-supervised"])
    out = robustness.skipped_files(study)
    assert asked == [(e, d) for e in ("RN50-openai", "RN50-openai-ft", "RN50-supervised") for d in EVAL_DATASETS]
    assert list(out.columns) == ["dataset", "file", "reason", "entries"]
    assert out.values.tolist() == [
        ["imagenet", "n01/bad.JPEG", "cannot identify image file", "RN50-openai, RN50-openai-ft"],
        ["imagenet", "n02/cut.JPEG", "truncated: 12 bytes", "RN50-openai"],
        ["objectnet", "chair/x.png", "cannot identify image file", "RN50-openai"],
        ["imagenet-a", "no-reason.jpg", "", "RN50-openai-ft"],
    ]
    asked.clear()
    only = robustness.skipped_files(study, datasets=("objectnet",))
    assert asked == [(e, "objectnet") for e in ("RN50-openai", "RN50-openai-ft", "RN50-supervised")]
    assert only.values.tolist() == [["objectnet", "chair/x.png", "cannot identify image file", "RN50-openai"]]
    (tmp_path / "c").mkdir()
    clean = robustness.skipped_files(make_study(tmp_path / "c", robustness.SECTION, ids=["RN50-supervised"]))
    assert clean.empty and list(clean.columns) == ["dataset", "file", "reason", "entries"]


# --------------------------------------------------------------------------------------------
# Summary: what the page lacks, and the paper's family means
# --------------------------------------------------------------------------------------------

def test_jobs_without_results_and_the_catalogue_name_missing_and_failed_tables(tmp_path):
    import hashlib

    study = make_study(tmp_path, summary.SECTION)
    P = study.profile
    for e in IDS:
        results.record(P, "robustness", e, {"imagenet": 0.5})
        if e != "RN50-openai":
            results.record(P, "privileged_directions", e, {"importance_ratio": 2.0})
    for e in ("RN50-openai", "RN50-supervised"):
        results.record(P, "outlier_features", e, {"kurtosis": 4.0})
    # a table left by a job that failed (written by that job, not by this process)
    stale = results.table_path(P, "privileged_directions", "RN50-openai")
    text = "profile,section,entry,importance_ratio\ntmp,privileged_directions,RN50-openai,9.0\n"
    stale.write_text(text)
    record = P.results_dir / "provenance" / "privileged_directions" / "RN50-openai.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"section": "privileged_directions", "slice": "RN50-openai", "status": "failed",
                                  "tables_written": {"tables/privileged_directions/RN50-openai.csv":
                                                     hashlib.sha256(text.encode()).hexdigest()}}))
    got = summary.jobs_without_results(study)
    assert list(got.columns) == ["section", "entry", "status", "job"]
    # the catalogue names the failed job beside the paper item its table would feed
    cat = summary.catalogue(study)
    assert list(cat.columns) == ["paper item", "models in this run", "chapter", "quantity", "paper reports",
                                 "failed (stale table ignored)"]
    cat = cat.set_index("paper item")
    assert cat.loc["Figure 2b", "failed (stale table ignored)"] == "RN50-openai (privileged_directions[RN50-openai])"
    assert cat.loc["Figure 2b", "models in this run"] == 4  # the failed job's table is not counted
    assert cat.loc["Figure 2b", ["chapter", "quantity"]].tolist() == ["privileged_directions", "importance ratio, Eq. (3)"]
    assert cat.loc["Table 1", "paper reports"] == "per model (%)" and cat.loc["Table 1", "failed (stale table ignored)"] == ""
    expected = ([("outlier_features", e, "missing", "") for e in IDS if e not in ("RN50-openai", "RN50-supervised")]
                + [("privileged_directions", "RN50-openai", "failed", "privileged_directions[RN50-openai]")]
                + [(s, e, "missing", "") for s in ("concept_probing", "wiseft", "cka_layers", "pruning", "coca")
                   for e in IDS])
    assert list(got.itertuples(index=False, name=None)) == expected
    assert got.index.tolist() == list(range(len(expected)))
    # chosen sections, in the order given; a slice sees only its entries
    some = summary.jobs_without_results(study, ["privileged_directions", "outlier_features", "robustness"])
    assert list(some.itertuples(index=False, name=None)) == expected[3:4] + expected[:3]
    part = Study(P, [P.entry("RN50-supervised"), P.entry("RN50-openai")], summary.SECTION)
    assert list(summary.jobs_without_results(part, ["outlier_features", "privileged_directions"])
                .itertuples(index=False, name=None)) == [expected[3]]
    assert summary.jobs_without_results(study, ["robustness"]).empty
    nothing = summary.jobs_without_results(study, (s for s in ()))  # sections that yield none
    assert nothing.empty and list(nothing.columns) == ["section", "entry", "status", "job"]
    # a second failed job of the same section: both named, in slice order
    text2 = "profile,section,entry,importance_ratio\ntmp,privileged_directions,RN50-supervised,8.0\n"
    results.table_path(P, "privileged_directions", "RN50-supervised").write_text(text2)
    (record.parent / "RN50-supervised.json").write_text(json.dumps(
        {"section": "privileged_directions", "slice": "RN50-supervised", "status": "failed",
         "tables_written": {"tables/privileged_directions/RN50-supervised.csv": hashlib.sha256(text2.encode()).hexdigest()}}))
    assert summary.catalogue(study).set_index("paper item").loc["Figure 2b", "failed (stale table ignored)"] == (
        "RN50-openai (privileged_directions[RN50-openai]), RN50-supervised (privileged_directions[RN50-supervised])")


#: Tables 1-2 as printed, (ImageNet %, mean of the 5 shifts %) per model, by family (written out by hand)
PRINTED = {
    "Robust zero-shot CLIP": [(60, 44), (32, 18), (36, 27), (62, 49), (34, 21), (68, 60), (67, 56), (70, 60), (63, 52),
                              (63, 50), (60, 48), (66, 54), (75, 72), (73, 64), (74, 66), (79, 76)],
    "Fine-tuned CLIP": [(76, 43), (69, 30), (69, 36), (78, 48), (72, 33), (81, 55), (80, 56), (81, 58), (78, 53),
                        (78, 45), (76, 48), (76, 48), (85, 67), (84, 64), (84, 66), (85, 71)],
    "Supervised": [(70, 30), (71, 31), (80, 41), (75, 35)],
    "Non-robust zero-shot CLIP (ImageNet-Captions)": [(25, 9), (27, 9), (28, 10)],
}
#: Table 3's printed CoCa ER (points), ViT-B-32 and ViT-L-14 (no shift accuracies: no %acc)
COCA_ER = {"CoCa zero-shot": [24, 34], "CoCa fine-tuned": [14, 21]}


def test_paper_by_family_means_by_hand():
    got = summary.paper_by_family()
    assert got.index.tolist() == list(PRINTED) + list(COCA_ER)  # the paper's family order, readable names
    assert list(got.columns) == ["er", "acc_ratio"]
    for family, models in PRINTED.items():
        er = [100 * er_by_hand(s / 100, i / 100) for i, s in models]
        ratio = [100 * s / i for i, s in models]
        assert got.loc[family, "er"] == pytest.approx(sum(er) / len(er), abs=1e-9), family
        assert got.loc[family, "acc_ratio"] == pytest.approx(sum(ratio) / len(ratio), abs=1e-9), family
    for family, er in COCA_ER.items():
        assert got.loc[family, "er"] == pytest.approx(sum(er) / 2) and math.isnan(got.loc[family, "acc_ratio"])
    # the headline of Figure 1: zero-shot CLIP well above finetuned, supervised about 0
    assert got.loc["Robust zero-shot CLIP", "er"] > got.loc["Fine-tuned CLIP", "er"] > 0
    assert abs(got.loc["Supervised", "er"]) < 1.0
