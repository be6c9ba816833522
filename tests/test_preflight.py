"""Mistakes found before any GPU time (issue 11.5, 12.3-12.5): the published-accuracy guard, every
unreadable image named (or skipped and listed), and ``clip-study plan``."""
import shutil
import warnings

import pytest
import yaml

from helpers import fixtures
from helpers.config import load_profile
from helpers.store import DecodeError
from helpers.study import Study

CLASSES = fixtures.DEMO_CLASSES[:2]
SIZE = (64, 48)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The six evaluation sets in their real layouts, 2 classes x 2 images each (ObjectNet: 2 folders)."""
    root = tmp_path_factory.mktemp("preflight") / "data"
    per = dict(per_class=2, size=SIZE)
    fixtures.write_imagenet(root / "imagenet", "val", classes=CLASSES, **per)
    fixtures.write_imagenet_v2(root / fixtures.DEMO_LAYOUT["imagenet-v2"], classes=CLASSES, **per)
    fixtures.write_imagenet_r(root / "imagenet-r", classes=CLASSES, **per)
    fixtures.write_imagenet_sketch(root / "sketch", classes=CLASSES, **per)
    fixtures.write_imagenet_a(root / "imagenet-a", classes=CLASSES, **per)
    fixtures.write_objectnet(root / "objectnet-1.0", folders=("tie", "broom", "coaster"), **per)
    return root


def _profile(tmp_path, data, published_top1=None, **top):
    demo = load_profile("demo")
    entry = {"id": "planted", "arch": "ViT-B-32", "family": "supervised", "pretraining": "test",
             "model": "demo-ViT-B-32", "seed": 1}
    if published_top1 is not None:
        entry["published_top1"] = published_top1
    raw = {"profile": "planted", "allow_random_init": True, "batch_size": 4,
           "paths": {"data_root": str(data), "cache_dir": str(tmp_path / "cache"),
                     "results_dir": str(tmp_path / "results")},
           "datasets": {k: "{data_root}/" + str(v.relative_to(demo.paths["data_root"]))
                        for k, v in demo.datasets.items() if k not in ("broden", "imagenet-train")},
           "pool": [entry], **top}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "planted.yml"
    path.write_text(yaml.safe_dump(raw))
    return load_profile(path)


def test_planted_published_accuracy_is_flagged_with_its_causes(tmp_path, data, capsys):
    from helpers.chapters import robustness

    P = _profile(tmp_path, data, published_top1=91.5)  # an untrained model: nowhere near 91.5 %
    with pytest.warns(robustness.PublishedAccuracyWarning) as caught:
        run = robustness.measure(Study(P, list(P.pool), robustness.SECTION))
    measured = 100 * float(run.loc[0, "imagenet"])
    text = str(caught[0].message)
    assert "entry 'planted'" in text and "expected 91.50 %" in text and f"{measured:.2f} % measured" in text
    assert f"deviation {measured - 91.5:+.2f} points" in text
    for cause in ("QuickGELU", "normalisation", "preprocessing", "wrong checkpoint"):
        assert cause in text
    assert f"WARNING: {text}" in capsys.readouterr().err  # the run's terminal sees it, not only the notebook
    rows = robustness.flagged(run)
    assert rows.entry.tolist() == ["planted"] and rows.published_top1.tolist() == [91.5]
    assert rows.top1_deviation.iloc[0] == pytest.approx(measured - 91.5)
    # the recorded table carries the flag too (the summary and the book read tables back)
    assert robustness.flagged(Study(P, list(P.pool), robustness.SECTION).table()).entry.tolist() == ["planted"]

    # the same model with its true accuracy as the expectation passes silently
    P2 = _profile(tmp_path / "ok", data, published_top1=measured + 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", robustness.PublishedAccuracyWarning)
        run2 = robustness.measure(Study(P2, list(P2.pool), robustness.SECTION))
    assert robustness.flagged(run2).empty and run2.loc[0, "top1_deviation"] == pytest.approx(-1.0)


def test_every_unreadable_image_is_named_then_skipped_and_listed(tmp_path, data):
    from helpers import extract
    from helpers.chapters import robustness

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    files = sorted((copy / "imagenet" / "val").rglob("*.JPEG"))
    bad = [files[0], files[-1]]  # first and last: a pass that stopped at the first would miss one
    for f in bad:
        f.write_bytes(f.read_bytes()[:200])
    P = _profile(tmp_path, copy)
    with pytest.raises(DecodeError) as err:
        extract.activations("planted", "imagenet", P)
    msg = str(err.value)
    assert "2 image(s) cannot be decoded" in msg and all(str(f) in msg for f in bad)
    assert "skip_unreadable: true" in msg

    P = _profile(tmp_path, copy, skip_unreadable=True)  # the profile key sets extraction's default
    a = extract.activations("planted", "imagenet", P)
    assert a.h.shape[0] == len(files) - 2 and len(a.manifest["skipped"]) == 2
    listed = robustness.skipped_files(Study(P, list(P.pool), robustness.SECTION), datasets=["imagenet"])
    assert sorted(listed.file) == sorted(map(str, bad))
    assert set(listed.dataset) == {"imagenet"} and set(listed.entries) == {"planted"}
