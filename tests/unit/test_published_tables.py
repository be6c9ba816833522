"""The vendored published tables (OpenCLIP's results and model profile, the ImageNet testbed's
top-1 table and model types): their loaders against the files, the refusal of a changed header,
and the baseline of Eq. (5) refitted on the testbed (Appendix A) against an independent fit."""
from __future__ import annotations

import csv
import hashlib
import math
import runpy
import shutil

import numpy as np
import pytest
from scipy import stats

from helpers.chapters import robustness
from helpers.config import ConfigError, load_profile
from helpers.metrics import effective_robustness, fit_baseline_table
from helpers.paper import published
from tests.conftest import refuses, write_profile

SIX = ["val", "imagenetv2-matched-frequency-format-val", "imagenet-r", "imagenet-sketch",
       "objectnet-1.0-beta", "imagenet-a"]


def _raw_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_vendored_files_are_the_recorded_bytes():
    """SOURCES.md records each file's sha256; a file edited by hand no longer matches."""
    text = (published.REFERENCE_DIR / "SOURCES.md").read_text()
    for name in ("openclip_results.csv", "openclip_model_profile.csv", "testbed_robustness_top1s.csv",
                 "testbed_model_types.py.txt"):
        digest = hashlib.sha256((published.REFERENCE_DIR / name).read_bytes()).hexdigest()
        assert digest in text, name


def test_openclip_results_loader_against_the_raw_file():
    df = published.openclip_results()
    assert df.shape == (121, 43)
    raw = _raw_rows(published.OPENCLIP_RESULTS)
    assert list(df.columns) == list(raw[0].keys())
    row = df[(df.name == "ViT-B-32-quickgelu") & (df.pretrained == "laion400m_e32")].iloc[0]
    assert row["ImageNet 1k"] == 0.6293  # read in the CSV: QuickGELU row
    plain = df[(df.name == "ViT-B-32") & (df.pretrained == "laion400m_e32")].iloc[0]
    assert plain["ImageNet 1k"] == 0.6024  # the same weights with plain GELU
    cc12m = df[(df.name == "RN50-quickgelu") & (df.pretrained == "cc12m")].iloc[0]
    assert (cc12m["ImageNet 1k"], cc12m["ObjectNet"], cc12m["ImageNet-A"]) == (0.3647, 0.2320, 0.0759)


def test_openclip_model_profile_loader():
    df = published.openclip_model_profile()
    assert len(df) == len(_raw_rows(published.OPENCLIP_PROFILE)) == 85
    row = df.set_index("model").loc["ViT-B-32"]
    assert (row["mparams"], row["gflops"]) == (151.28, 14.78)


def test_testbed_loader_against_the_raw_file():
    df = published.testbed_top1s()
    assert df.shape == (338, 214)
    resnet50 = df.set_index("model").loc["resnet50"]
    assert resnet50["val"] == pytest.approx(76.1300048828125)
    assert resnet50["imagenet-a"] == 0.0
    acc = published.testbed_accuracies().set_index("model")
    assert len(acc) == 329  # rows with all six accuracies
    assert acc.loc["resnet50", "imagenet"] == pytest.approx(0.761300048828125)
    assert acc.loc["resnet50", "objectnet"] == pytest.approx(0.3575132332289079)
    assert acc.loc["resnet50", "type"] == "STANDARD"


def test_model_types_parsed_as_python_runs_them():
    """The ast reading of model_types.py against the file executed (on a copy, in a sandbox dict)."""
    ns = runpy.run_path(str(published.TESTBED_MODEL_TYPES), run_name="model_types")
    ran = {k: v.name for k, v in ns["model_types_map"].items()}
    assert published.testbed_model_types() == ran
    assert ran["resnet18_50k_7_epochs"] == "LOW_ACCURACY_CNN"


@pytest.mark.parametrize("loader, path, old, new", [
    (published.openclip_results, published.OPENCLIP_RESULTS, "ImageNet v2", "ImageNetV2"),
    (published.openclip_model_profile, published.OPENCLIP_PROFILE, "gflops", "GFLOPs"),
    (published.testbed_top1s, published.TESTBED_TOP1S, "objectnet-1.0-beta", "objectnet-1.0"),
])
def test_a_renamed_column_is_refused_naming_it_and_the_file(tmp_path, loader, path, old, new):
    copy = tmp_path / path.name
    lines = path.read_text().split("\n")
    header = lines[0].split(",")
    header[header.index(old)] = new
    copy.write_text("\n".join([",".join(header), *lines[1:]]))
    n = len(published.EXPECTED_COLUMNS[{published.OPENCLIP_RESULTS: "openclip_results",
                                        published.OPENCLIP_PROFILE: "openclip_model_profile",
                                        published.TESTBED_TOP1S: "testbed_top1s"}[path]])
    with refuses(published.PublishedTableError,
                 f"{copy}: missing column(s) '{old}'; unexpected column(s) '{new}' (expected the {n}-column "
                 "header of the version read on 2026-12-07; see helpers/reference/SOURCES.md)"):
        loader(copy)


def test_a_dropped_column_is_refused(tmp_path):
    copy = tmp_path / "model_profile.csv"
    shutil.copy(published.OPENCLIP_PROFILE, copy)
    rows = [line.split(",") for line in copy.read_text().splitlines()]
    copy.write_text("\n".join(",".join(r[:-1]) for r in rows) + "\n")
    with refuses(published.PublishedTableError,
                 f"{copy}: missing column(s) 'text_gflops' (expected the 11-column header of the version read on "
                 "2026-12-07; see helpers/reference/SOURCES.md)"):
        published.openclip_model_profile(copy)


def _independent_testbed_rows():
    """The rows Appendix A's fit uses, selected without the loaders: every testbed model with the six
    accuracies whose type (model_types.py, executed) is not "Trained with more data"."""
    types = runpy.run_path(str(published.TESTBED_MODEL_TYPES))["model_types_map"]
    rows = [r for r in _raw_rows(published.TESTBED_TOP1S) if all(r[c] != "" for c in SIX)]
    keep = [r for r in rows if types[r["model"]].name != "MORE_DATA"]
    dropped = [r["model"] for r in rows if types[r["model"]].name == "MORE_DATA"]
    return keep, dropped


def test_the_excluded_rows_are_the_models_trained_with_more_data():
    keep, dropped = _independent_testbed_rows()
    assert len(keep) == 287 and len(dropped) == 42
    extra = ("instagram", "clip", "jft", "noisystudent", "swsl", "_ssl", "21k", "11k", "tencent", "BiT-M")
    kept = [r["model"] for r in keep]
    assert not [m for m in kept if any(w in m for w in extra)]  # no extra-data name is kept
    named = [m for m in dropped if any(w in m for w in extra)]
    # every excluded model is named for its extra data, except FixRes on Instagram's ResNeXt, the
    # ImageNet-21k ViTs and the DPNs (ImageNet-5k), labelled "Trained with more data" by the testbed itself
    assert sorted(set(dropped) - set(named)) == sorted(
        ["FixResNeXt101_32x48d", "FixResNeXt101_32x48d_v2", "dpn107", "dpn68b", "dpn92", "vit_base_patch16_224", "vit_base_patch16_384", "vit_base_patch32_384",
         "vit_large_patch16_224", "vit_large_patch16_384", "vit_large_patch32_384"])


def test_refit_against_an_independent_linregress():
    keep, _ = _independent_testbed_rows()
    x = np.array([float(r["val"]) / 100 for r in keep])
    # ACC(S): the plain mean of the five shift accuracies, before the logit
    y = np.array([sum(float(r[c]) for c in SIX[1:]) / 5 / 100 for r in keep])
    lx, ly = np.log(x / (1 - x)), np.log(y / (1 - y))
    want = stats.linregress(lx, ly)
    fit = robustness.testbed_baseline()
    assert fit.n == len(keep)
    assert fit.slope == pytest.approx(want.slope, abs=1e-10)
    assert fit.intercept == pytest.approx(want.intercept, abs=1e-10)
    assert fit.r == pytest.approx(want.rvalue, abs=1e-10)
    line = robustness.testbed_refit_line(fit)
    assert line.startswith(f"baseline refit on {len(keep)} testbed models: slope {want.slope:.2f}, "
                           f"intercept {want.intercept:.2f}, r {want.rvalue:.3f}")


def test_fit_baseline_table_averages_before_the_logit():
    """A model at 0 % on ImageNet-A still enters the fit: its mean shift accuracy is not 0."""
    import pandas as pd

    t = pd.DataFrame({"imagenet": [0.5, 0.6, 0.7, 0.8], "imagenet-v2": [0.4, 0.5, 0.6, 0.7],
                      "imagenet-r": [0.3, 0.35, 0.4, 0.5], "imagenet-sketch": [0.2, 0.25, 0.3, 0.35],
                      "objectnet": [0.2, 0.3, 0.35, 0.4], "imagenet-a": [0.0, 0.02, 0.05, 0.1]})
    fit = fit_baseline_table(t)
    y = t.iloc[:, 1:].mean(axis=1).to_numpy()
    want = np.polyfit(np.log(t.imagenet / (1 - t.imagenet)), np.log(y / (1 - y)), 1)
    assert (fit.slope, fit.intercept) == pytest.approx(tuple(want), abs=1e-12)
    # the shifts a caller names are the ones averaged (here two, without ImageNet-A's zero)
    two = fit_baseline_table(t, shifts=["imagenet-r", "objectnet"])
    y2 = t[["imagenet-r", "objectnet"]].mean(axis=1).to_numpy()
    want2 = np.polyfit(np.log(t.imagenet / (1 - t.imagenet)), np.log(y2 / (1 - y2)), 1)
    assert (two.slope, two.intercept) == pytest.approx(tuple(want2), abs=1e-12)


def test_fit_baseline_table_names_every_missing_column():
    import pandas as pd

    t = pd.DataFrame({"imagenet": [0.5, 0.6], "imagenet-v2": [0.4, 0.5], "imagenet-r": [0.3, 0.35],
                      "imagenet-sketch": [0.2, 0.25]})
    with pytest.raises(KeyError) as refused:
        fit_baseline_table(t)
    assert refused.value.args == ("fit_baseline_table: no column objectnet, imagenet-a",)


@pytest.mark.parametrize("choice", ["paper", "refit"])
def test_er_under_each_baseline_choice(tmp_path, choice):
    P = load_profile(write_profile(tmp_path, metrics={"baseline": choice}))
    slope, intercept = robustness.er_coefficients(P)
    if choice == "paper":
        assert (slope, intercept) == (0.76, -1.49)
    else:
        keep, _ = _independent_testbed_rows()
        x = np.array([float(r["val"]) / 100 for r in keep])
        y = np.array([sum(float(r[c]) for c in SIX[1:]) / 500 for r in keep])
        want = stats.linregress(np.log(x / (1 - x)), np.log(y / (1 - y)))
        assert (slope, intercept) == pytest.approx((want.slope, want.intercept), abs=1e-10)
    # ViT-B-32-quickgelu laion400m_e32 from OpenCLIP's CSV: I, V2, R, Sketch, ObjectNet, A
    acc_i, shifts = 0.6293, [0.5506, 0.7342, 0.4939, 0.4389, 0.2172]
    acc_s = sum(shifts) / 5
    z = slope * (math.log(acc_i) - math.log(1 - acc_i)) + intercept
    assert effective_robustness(acc_s, acc_i, slope, intercept) == pytest.approx(acc_s - 1 / (1 + math.exp(-z)),
                                                                                 abs=1e-12)


def test_the_baseline_key_is_validated(tmp_path):
    path = write_profile(tmp_path, metrics={"baseline": "fit"})
    with refuses(ConfigError, f"{path}: metrics.baseline: expected 'paper' or 'refit', got 'fit'"):
        load_profile(path)


def test_paper_profile_published_top1_equals_openclip_quickgelu_rows():
    """Every pool entry whose published_top1 cites OpenCLIP's table equals that table's row (the
    ``-quickgelu`` row for QuickGELU weights; OpenAI's weights are listed under the plain name)."""
    raw = {(r["name"], r["pretrained"]): float(r["ImageNet 1k"]) for r in _raw_rows(published.OPENCLIP_RESULTS)}
    P = load_profile("paper")
    checked = 0
    for e in P.pool:
        if e.pretrained is None:
            continue
        value = raw.get((e.model, e.pretrained), raw.get((e.model.removesuffix("-quickgelu"), e.pretrained)))
        assert value is not None, e.id
        assert e.published_top1 == pytest.approx(100 * value, abs=1e-9), e.id
        checked += 1
    assert checked == 18


@pytest.mark.parametrize("choice", ["paper", "refit"])
def test_the_robustness_chapter_and_pruning_use_the_chosen_line(tmp_path, monkeypatch, choice):
    """measure() (Section 3) records ER under the profile's metrics.baseline; written-out Eq. (5)."""
    from helpers.engine import extract
    from helpers.study import Study

    accs = {"imagenet": 0.60, "imagenet-v2": 0.50, "imagenet-r": 0.45, "imagenet-sketch": 0.40,
            "objectnet": 0.35, "imagenet-a": 0.30}
    monkeypatch.setattr(extract, "accuracies", lambda e, P, datasets: dict(accs))
    P = load_profile(write_profile(tmp_path, metrics={"baseline": choice}))
    (er,) = robustness.measure(Study(P, P.pool[:1], robustness.SECTION))["er"]
    if choice == "paper":
        b1, b0 = 0.76, -1.49
    else:
        keep, _ = _independent_testbed_rows()
        x = np.array([float(r["val"]) / 100 for r in keep])
        y = np.array([sum(float(r[c]) for c in SIX[1:]) / 500 for r in keep])
        fit = stats.linregress(np.log(x / (1 - x)), np.log(y / (1 - y)))
        b1, b0 = fit.slope, fit.intercept
    acc_s = (0.50 + 0.45 + 0.40 + 0.35 + 0.30) / 5
    assert er == pytest.approx(acc_s - 1 / (1 + math.exp(-(b1 * math.log(0.60 / 0.40) + b0))), abs=1e-12)


def test_testbed_subset_fits_against_an_independent_linregress():
    """The robustness chapter's table of refits on subsets of the testbed, each row against scipy's
    linregress on the raw CSV rows, the subsets chosen by the testbed's own model types."""
    types = runpy.run_path(str(published.TESTBED_MODEL_TYPES))["model_types_map"]
    rows = [r for r in _raw_rows(published.TESTBED_TOP1S) if all(r[c] != "" for c in SIX)]
    kind = {r["model"]: types[r["model"]].name for r in rows}
    subsets = [("all trained on ImageNet alone (the refit)", lambda t: t != "MORE_DATA"),
               ("  without the low-accuracy checkpoints", lambda t: t not in ("MORE_DATA", "LOW_ACCURACY_CNN")),
               ("  standard training only", lambda t: t == "STANDARD"),
               ("  standard training and low-accuracy checkpoints", lambda t: t in ("STANDARD", "LOW_ACCURACY_CNN")),
               ("trained with more data (excluded)", lambda t: t == "MORE_DATA")]
    table = robustness.testbed_subset_fits()
    assert list(table.columns) == ["testbed models", "n", "ImageNet top-1 range (%)", "slope", "intercept", "r"]
    assert list(table["testbed models"]) == [label for label, _ in subsets]
    for (label, keep), (_, got) in zip(subsets, table.iterrows()):
        chosen = [r for r in rows if keep(kind[r["model"]])]
        x = np.array([float(r["val"]) / 100 for r in chosen])
        y = np.array([sum(float(r[c]) for c in SIX[1:]) / 500 for r in chosen])
        want = stats.linregress(np.log(x / (1 - x)), np.log(y / (1 - y)))
        assert got["n"] == len(chosen), label
        assert (got["slope"], got["intercept"], got["r"]) == pytest.approx((want.slope, want.intercept, want.rvalue), abs=1e-10)
        assert got["ImageNet top-1 range (%)"] == f"{100 * x.min():.0f}-{100 * x.max():.0f}", label
    assert table["n"].iloc[0] == 287 and table["n"].iloc[-1] == 42
