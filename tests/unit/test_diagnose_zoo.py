"""`clip-study diagnose --accuracies`: a new model's six accuracies read and checked (both forms, every
bad input named before any model is built), its ER placed among the OpenCLIP zoo against a hand
computation on the vendored CSV rows (Eq. 5 with numpy and scipy.special), the accuracies-only
mode building no model, and the placement figure drawing the new point."""
from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from scipy.special import expit, logit

from helpers import plots
from helpers.chapters import diagnose as dg
from helpers.chapters import openclip_zoo as zc
from helpers.paper import published
from helpers.workflow.cli import main
from tests.conftest import refuses, write_profile

KEYS = ("imagenet", "imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet", "imagenet-a")
COLS = ("ImageNet 1k", "ImageNet v2", "ImageNet-R", "ImageNet Sketch", "ObjectNet", "ImageNet-A")
#: A made-up model, in percent, as a user types it.
NEW = {"imagenet": 62.0, "imagenet-v2": 55.0, "imagenet-r": 69.0, "imagenet-sketch": 42.0, "objectnet": 44.0,
       "imagenet-a": 31.0}
NEW_KV = ",".join(f"{k}={v:g}" for k, v in NEW.items())
EXPECTED = "expected the six keys imagenet, imagenet-v2, imagenet-r, imagenet-sketch, objectnet, imagenet-a"
ACC = "expected a top-1 accuracy as a fraction in [0, 1] or a percentage in [0, 100]"


def _zoo_rows():
    """The vendored OpenCLIP rows with all six accuracies, one per model: where a tag is listed as
    both X-quickgelu and X, the -quickgelu row (the QuickGELU rule, written out here)."""
    with open(published.OPENCLIP_RESULTS, newline="") as f:
        rows = {(r["name"], r["pretrained"]): r for r in csv.DictReader(f) if all(r[c].strip() for c in COLS)}
    keep = [(n, t) for n, t in rows if (n + "-quickgelu", t) not in rows]
    return [(n, t, np.array([float(rows[(n, t)][c]) for c in COLS])) for n, t in keep]


def _er(six, b1, b0):
    """Eq. (5): ER = ACC(S) - sigmoid(b1 logit ACC(I) + b0), ACC(S) the mean of the five shifts."""
    six = np.asarray(six, dtype=float)
    return six[1:].mean() - expit(b1 * logit(six[0]) + b0)


def _testbed_six():
    tb = published.testbed_accuracies()
    return tb.loc[tb["imagenet_only"], list(KEYS)].to_numpy(dtype=float)


def _placement_by_hand(six, b1, b0):
    ers = np.array([_er(r, b1, b0) for _, _, r in _zoo_rows()])
    names = [(n, t) for n, t, _ in _zoo_rows()]
    er = _er(six, b1, b0)
    tb = np.array([_er(r, b1, b0) for r in _testbed_six()])
    nearest = [names[i] for i in np.argsort(np.abs(ers - er), kind="stable")[:5]]
    return {"er": er, "acc_ratio": np.mean(six[1:]) / six[0], "rank": 1 + int((ers > er).sum()), "of": len(ers),
            "percentile": 100 * (ers < er).sum() / len(ers), "zoo_above": int((ers > er).sum()),
            "testbed_above": int((tb > er).sum()), "testbed": len(tb), "nearest": nearest}


def _check(zoo: dict, hand: dict):
    assert zoo["er"] == pytest.approx(hand["er"], abs=1e-12)
    assert zoo["acc_ratio"] == pytest.approx(hand["acc_ratio"], abs=1e-12)
    for k in ("rank", "of", "zoo_above", "testbed_above", "testbed"):
        assert zoo[k] == hand[k], k
    assert zoo["percentile"] == pytest.approx(hand["percentile"])
    assert [(n["name"], n["pretrained"]) for n in zoo["nearest"]] == hand["nearest"]


@pytest.fixture
def no_model(monkeypatch):
    """Building, loading or running any model fails the test."""
    from helpers.engine import extract
    from helpers.models import loading

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was built or run")

    monkeypatch.setattr(loading, "load", forbidden)
    monkeypatch.setattr(extract, "extract_many", forbidden)
    monkeypatch.setattr(dg, "_subject_for", forbidden)
    monkeypatch.setattr(dg, "_images_for", forbidden)


# ------------------------------------------------------------------------------------------------
# Reading the accuracies


def _files(tmp_path):
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(NEW) + "\n" + ",".join(f"{v:g}" for v in NEW.values()) + "\n")
    long = tmp_path / "long.csv"
    long.write_text("dataset,accuracy\n" + "".join(f"{k},{v / 100}\n" for k, v in NEW.items()))
    js = tmp_path / "acc.json"
    js.write_text(json.dumps({k: v / 100 for k, v in NEW.items()}))
    yml = tmp_path / "acc.yaml"
    yml.write_text("".join(f"{c}: {v}\n" for c, v in zip(COLS, NEW.values())))  # OpenCLIP's headers
    return wide, long, js, yml


def test_both_forms_read_the_same_fractions(tmp_path):
    want = {k: v / 100 for k, v in NEW.items()}
    got = dg.read_accuracies(NEW_KV)
    assert got.values == pytest.approx(want) and list(got.values) == list(KEYS)
    assert (got.units, got.why, got.source) == ("percent", "read as percent because imagenet = 62 is above 1",
                                                "the command line")
    wide, long, js, yml = _files(tmp_path)
    for path, units in ((wide, "percent"), (long, "fraction"), (js, "fraction"), (yml, "percent")):
        a = dg.read_accuracies(str(path))
        assert a.values == pytest.approx(want) and a.units == units and a.source == str(path), path
    assert dg.read_accuracies(str(long)).why == ("read as fractions because no value is above 1 "
                                                 "(--accuracy-units percent reads them as percent)")
    # keys are case-insensitive, "_" reads as "-"; a mapping is accepted as is
    assert dg.read_accuracies("ImageNet=0.5,IMAGENET_V2=0.4,imagenet-r=0.5,imagenet_sketch=0.3,objectnet=0.3,"
                              "imagenet-a=0.1").values["imagenet-v2"] == 0.4
    odd = tmp_path / "run=1.csv"  # a file whose name has "=" is still a file
    odd.write_text(wide.read_text())
    assert dg.read_accuracies(str(odd)).values == pytest.approx(want)
    small = dg.read_accuracies({k: 0.5 for k in KEYS}, units="percent")
    assert small.values["imagenet"] == pytest.approx(0.005) and small.why == ("read as percent, as "
                                                                               "--accuracy-units percent asks")
    assert small.source == "the mapping passed in"


@pytest.mark.parametrize("spec, message", [
    ("imagenet=0.6,imagenet-v2=0.5,imagenet-r=0.6,imagenet-sketch=0.3,imagenet-a=0.2",
     f"accuracies: no accuracy for objectnet; {EXPECTED} (ImageNet top-1 and the five shifts of Section 3)"),
    ("imagenet=0.6,imagenet-v2=0.5,imagenet-r=0.6,imagenet-sktch=0.3,objectnet=0.3,imagenet-a=0.2",
     f"accuracies: unknown key 'imagenet-sktch'; the closest known name is 'imagenet-sketch' ({EXPECTED})"),
    ("imagenet=0.6,imagenetv2=0.5",
     f"accuracies: unknown key 'imagenetv2'; the closest known name is 'imagenet-v2' ({EXPECTED})"),
    ("imagenet=0.6,imagenet=0.5", "accuracies: imagenet is given twice"),
    ("imagenet=160,imagenet-v2=50,imagenet-r=60,imagenet-sketch=30,objectnet=30,imagenet-a=20",
     "accuracies: imagenet = 160 is outside [0, 1] (fractions) and [0, 100] (percent); expected a top-1 accuracy"),
    ("imagenet=0.6,imagenet-v2=-0.1,imagenet-r=0.6,imagenet-sketch=0.3,objectnet=0.3,imagenet-a=0.2",
     "accuracies: imagenet-v2 = -0.1 is outside [0, 1] (fractions) and [0, 100] (percent); expected a top-1 "
     "accuracy"),
    ("imagenet=0.6,imagenet-v2=nan,imagenet-r=0.6,imagenet-sketch=0.3,objectnet=0.3,imagenet-a=0.2",
     f"accuracies: imagenet-v2 = nan is not finite; {ACC}"),
    ("imagenet=0.6,imagenet-v2=inf", f"accuracies: imagenet-v2 = inf is not finite; {ACC}"),
    ("imagenet=0.6,imagenet-v2=high", f"accuracies: imagenet-v2 = 'high' is not a number; {ACC}"),
    ("imagenet=0.6,imagenet-v2", "accuracies: 'imagenet-v2' is not key=value; expected "
     "imagenet=0.62,imagenet-v2=0.55,imagenet-r=0.69,imagenet-sketch=0.42,objectnet=0.44,imagenet-a=0.31"),
])
def test_bad_accuracies_name_the_key_and_what_was_expected(spec, message):
    with refuses(dg.DiagnoseError, message):
        dg.read_accuracies(spec)


@pytest.mark.parametrize("name, content, units, message", [
    ("acc.txt", "imagenet 0.6", "auto", "{path}: expected a .csv, .json, .yaml, .yml file (or key=value pairs), "
     "got .txt"),
    ("bad.json", "[0.6, 0.5]", "auto", "{path}: expected a mapping of dataset key to accuracy (imagenet: 0.62, ...), "
     "got list"),
    ("rows.csv", "imagenet,imagenet-v2,imagenet-r\n0.6,0.5,0.4\n0.7,0.6,0.5\n", "auto", "{path}: expected a header "
     "row of the six dataset keys and one row of values, or two columns (dataset, accuracy); got 3 row(s) of [3] "
     "column(s)"),
    ("over.yaml", "".join(f"{k}: {1.5 if k == 'imagenet-a' else 0.5}\n" for k in KEYS), "fraction",
     "{path}: imagenet-a = 1.5 is outside [0, 1] (fraction, as asked); expected a top-1 accuracy"),
])
def test_bad_files_are_named(tmp_path, name, content, units, message):
    path = tmp_path / name
    path.write_text(content)
    with refuses(dg.DiagnoseError, message.format(path=f"accuracies file {path}")):
        dg.read_accuracies(str(path), units=units)


def test_missing_or_broken_file_and_bad_units(tmp_path):
    missing = tmp_path / "nope.csv"
    with refuses(dg.DiagnoseError, f"accuracies file {missing} does not exist; expected a CSV, JSON or YAML file "
                 "of the six accuracies, or key=value pairs such as imagenet=0.62,imagenet-v2=0.55,imagenet-r=0.69,"
                 "imagenet-sketch=0.42,objectnet=0.44,imagenet-a=0.31"):
        dg.read_accuracies(str(missing))
    broken = tmp_path / "broken.json"
    broken.write_text("{imagenet: ")
    with pytest.raises(dg.DiagnoseError, match="^" + re.escape(f"accuracies file {broken}: not valid JSON (")):
        dg.read_accuracies(str(broken))
    with refuses(dg.DiagnoseError, "accuracy units 'percentage': expected one of auto, fraction, percent"):
        dg.read_accuracies(NEW_KV, units="percentage")


def test_cli_refuses_bad_accuracies_in_one_line_before_any_model(tmp_path, capsys, no_model):
    """With --model and --images given, a typo in --accuracies still stops the command first."""
    rc = main(["diagnose", "--profile", str(write_profile(tmp_path)), "--model", "demo-ViT-B-32", "--images",
               str(tmp_path), "--accuracies", NEW_KV.replace("objectnet", "objectnt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err == ("clip-study diagnose: error: accuracies: unknown key 'objectnt'; the closest known name is "
                   f"'objectnet' ({EXPECTED})")


@pytest.mark.parametrize("args, message", [
    ([], "give --model with --images (the paper's indicators), --accuracies (the placement among the OpenCLIP "
         "zoo), or both"),
    (["--model", "demo-ViT-B-32"], "--model demo-ViT-B-32 needs --images, the folder of in-distribution images "
                                   "to measure on"),
    (["--accuracies", NEW_KV, "--images", "x"], "images: only with a model to run (model= / --model, or encoder=); "
     "without one, diagnose places the accuracies given among the OpenCLIP zoo and measures nothing"),
    (["--accuracies", NEW_KV, "--pretrained", "openai", "--limit", "3"], "pretrained, limit: only with a model to "
     "run (model= / --model, or encoder=); without one, diagnose places the accuracies given among the OpenCLIP "
     "zoo and measures nothing"),
])
def test_cli_argument_combinations(tmp_path, capsys, no_model, args, message):
    rc = main(["diagnose", "--profile", str(write_profile(tmp_path)), "--out", str(tmp_path / "out"), *args])
    assert rc == 2 and capsys.readouterr().err.strip() == f"clip-study diagnose: error: {message}"
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# The placement


def test_placement_against_a_hand_computation_paper_coefficients(tmp_path, no_model):
    d = dg.diagnose(accuracies=NEW_KV, profile=write_profile(tmp_path), write=False)
    six = np.array(list(NEW.values())) / 100
    _check(d.zoo, _placement_by_hand(six, 0.76, -1.49))
    assert d.zoo["coefficients"]["label"] == ("the paper's, Appendix A (metrics.baseline: paper): beta_1 = 0.76, "
                                              "beta_0 = -1.49")
    assert d.zoo["of"] == 113 and not d.measured and d.kurtosis is None


def test_placement_under_the_refit_by_hand(tmp_path, no_model):
    """metrics.baseline: refit moves the line: Eq. (5) with a least-squares fit written out here on the
    testbed's ImageNet-only rows (logit of the mean shift accuracy on logit ImageNet)."""
    six_tb = _testbed_six()
    b1, b0 = np.polyfit(logit(six_tb[:, 0]), logit(six_tb[:, 1:].mean(axis=1)), 1)
    P = write_profile(tmp_path, metrics={"baseline": "refit"})
    d = dg.diagnose(accuracies={k: v / 100 for k, v in NEW.items()}, profile=P, write=False)
    six = np.array(list(NEW.values())) / 100
    assert d.zoo["coefficients"]["slope"] == pytest.approx(b1, abs=1e-9)
    assert d.zoo["coefficients"]["intercept"] == pytest.approx(b0, abs=1e-9)
    _check(d.zoo, _placement_by_hand(six, b1, b0))
    assert d.zoo["coefficients"]["label"].startswith("the ImageNet testbed refit (metrics.baseline: refit): beta_1 = ")


def test_a_zoo_model_placed_by_its_own_accuracies_is_tied_with_itself(tmp_path, no_model):
    """OpenCLIP's own ViT-L-14 openai row: its nearest zoo model is itself (ER distance 0), and the
    rank counts only strictly higher ERs."""
    name, tag, six = next(r for r in _zoo_rows() if r[:2] == ("ViT-L-14", "openai"))
    d = dg.diagnose(accuracies=dict(zip(KEYS, six)), profile=write_profile(tmp_path), write=False)
    _check(d.zoo, _placement_by_hand(six, 0.76, -1.49))
    assert (d.zoo["nearest"][0]["name"], d.zoo["nearest"][0]["pretrained"]) == (name, tag)
    assert d.zoo["nearest"][0]["er"] == pytest.approx(_er(six, 0.76, -1.49), abs=1e-12)


def test_accuracies_alone_build_no_model_and_write_the_report(tmp_path, capsys, no_model):
    _, _, js, _ = _files(tmp_path)
    out = tmp_path / "out"
    assert main(["diagnose", "--profile", str(write_profile(tmp_path)), "--accuracies", str(js),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "acc among the OpenCLIP zoo: accuracies read as fractions because no value is above 1" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "accuracies only" and summary["version"] == dg.DIAGNOSE_VERSION
    assert not {"images", "kurtosis", "pool"} & set(summary)
    assert summary["model"]["label"] == "acc" and summary["files"]["zoo_placement"] == "zoo_placement.png"
    _check(summary["zoo"], _placement_by_hand(np.array(list(NEW.values())) / 100, 0.76, -1.49))
    assert summary["zoo"]["accuracies"]["units"] == "fraction" and summary["zoo"]["accuracies"]["source"] == str(js)
    report = (out / "report.md").read_text()
    z = summary["zoo"]
    assert f"## {dg.ZOO_HEADING}" in report and "![acc among the OpenCLIP zoo](zoo_placement.png)" in report
    assert f"**Effective robustness, Eq. (5): {100 * z['er']:.1f} points**" in report
    assert f"**Rank {z['rank']} of 113** OpenCLIP models by ER" in report
    assert f"{z['zoo_above']} of 113 zoo models and {z['testbed_above']} of {z['testbed']} ImageNet testbed" in report
    assert "real published numbers" in report and "CLIP_benchmark's variant" in report
    assert "## Indicators" not in report
    assert (out / "zoo_placement.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".*.tmp*"))


def test_imagenet_accuracy_zero_has_no_acc_ratio(tmp_path, no_model):
    d = dg.diagnose(accuracies={k: 0.0 for k in KEYS}, profile=write_profile(tmp_path), out=tmp_path / "o", name="x")
    ers = np.array([_er(r, 0.76, -1.49) for _, _, r in _zoo_rows()])
    assert d.zoo["er"] == 0 and np.isnan(d.zoo["acc_ratio"]) and d.zoo["rank"] == 1 + (ers > 0).sum()
    assert json.loads(d.summary_path.read_text())["zoo"]["acc_ratio"] is None
    assert "%acc – %" in d.report_path.read_text()


def test_model_and_accuracies_give_both_sections(tmp_path):
    """A real (random-init demo) model on a few JPEGs, with accuracies: the indicators and the zoo
    placement in one report."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(images / f"{i}.jpg")
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    out = tmp_path / "out"
    assert main(["diagnose", "--profile", str(write_profile(tmp_path)), "--model", "demo-ViT-B-32", "--images",
                 str(images), "--classnames", str(classes), "--no-concepts", "--accuracies", NEW_KV,
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "indicators" and summary["kurtosis"]["estimate"] > 0
    _check(summary["zoo"], _placement_by_hand(np.array(list(NEW.values())) / 100, 0.76, -1.49))
    report = (out / "report.md").read_text()
    assert report.index("## Indicators") < report.index(f"## {dg.ZOO_HEADING}") < report.index("## How to read this")
    assert {"kurtosis_distribution", "zoo_placement"} <= set(summary["files"])


# ------------------------------------------------------------------------------------------------
# The figure


def test_figure_draws_the_new_point_on_both_panels():
    import matplotlib.pyplot as plt

    zoo, testbed = zc.zoo_frame(0.76, -1.49), zc.testbed_frame(0.76, -1.49)
    new = {"imagenet": 0.62, "er": 0.2361, "acc_ratio": 0.777}
    fig = plots.zoo_placement_figure(zoo, testbed, 0.76, -1.49, new, "my model")
    try:
        for ax, y in zip(fig.axes[:2], (23.61, 77.7)):
            hits = [c for c in ax.collections
                    if len(c.get_offsets()) == 1 and np.allclose(c.get_offsets(), [[62.0, y]])]
            assert len(hits) == 1 and hits[0].get_label() == "the diagnosed model"
            assert [t.get_text() for t in ax.texts] == ["my model"]
            assert ax.texts[0].xy == pytest.approx((62.0, y))
        # the zoo itself is drawn as in the zoo chapter: every zoo model, and the testbed in grey
        drawn = sum(len(c.get_offsets()) for c in fig.axes[0].collections if c.get_label() in set(zoo["family"]))
        assert drawn == len(zoo)
        grey = [c for c in fig.axes[0].collections if c.get_label() == "testbed, trained on ImageNet alone"]
        assert len(grey[0].get_offsets()) == len(testbed)
    finally:
        plt.close(fig)
    fig = plots.zoo_placement_figure(zoo, testbed, 0.76, -1.49, {**new, "acc_ratio": float("nan")}, "x")
    try:
        assert [t.get_text() for t in fig.axes[0].texts] == ["x"] and len(fig.axes[1].texts) == 0
    finally:
        plt.close(fig)
