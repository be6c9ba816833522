"""Mistakes found before any GPU time (issue 11.5, 12.3-12.5): the published-accuracy guard, every
unreadable image named (or skipped and listed), and ``clip-study plan``."""
import re
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

from helpers.workflow import cli
from helpers.demo import fixtures
from helpers.workflow import preflight
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
    fixtures.write_broden(root / "broden1_224", n_images=6)
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
                        for k, v in demo.datasets.items() if k != "imagenet-train"},
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
    from helpers.engine import extract
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


EVAL_IMAGES = 50_000 + 10_000 + 30_000 + 50_889 + 18_574 + 7_500  # the published sizes (book/methods.md)


def test_plan_for_the_paper_profile_here_lists_what_is_missing_within_80_gb(capsys):
    rc = cli.main(["plan", "--profile", "paper"])
    out = capsys.readouterr().out
    total = re.fullmatch(r"total cache: (\d+) GB", out.strip().splitlines()[-1])
    assert total and int(total.group(1)) <= 80
    if not Path("/data/imagenet/val").exists():
        assert rc == 1
        assert "datasets.imagenet: imagenet: /data/imagenet/val does not exist; expected <root>/<wnid>/*.JPEG" in out
    assert "produced by: clip-study finetune --profile paper --entry RN50-openai-ft" in out
    assert "pool[37] (ViT-B-16-supervised).checkpoint: checkpoint file" in out  # nothing here produces it
    for stage in ("stores", "heads", "extraction", "CKA", "finetuning", "WiSE-FT", "Broden probing"):
        assert re.search(rf"^  {stage} +\S+ (GB|MB|kB) ", out, re.M), stage


def test_plan_cache_bytes_follow_the_per_image_formula():
    """One ViT-B-32 (d_H 512) over the six evaluation sets of their published sizes: 224 x 224 x 3
    uint8 pixels + an int64 label and index per image in the store, 4 x 512 float32 bytes of h + an
    int64 label per image, a 1,000 x 512 float32 head (twice: zero-shot ``heads/`` and ``linear_heads/``)."""
    report = preflight.check("paper", sections=["robustness"], entry="ViT-B-32-openai")
    stages = {s.name: s for s in report.stages}
    assert stages["stores"].cache_bytes == (224 * 224 * 3 + 8 + 8) * EVAL_IMAGES
    assert stages["extraction"].cache_bytes == (4 * 512 + 8) * EVAL_IMAGES
    assert stages["heads"].cache_bytes == 2 * 1000 * 512 * 4
    assert stages["extraction"].gpu_hours == pytest.approx(8.82e9 / 100e12 * EVAL_IMAGES / 3600)
    assert stages["Broden probing"].cache_bytes == stages["CKA"].cache_bytes == 0
    assert report.total_cache_bytes == sum(s.cache_bytes for s in report.stages)


def test_plan_passes_on_a_complete_demo_slice(tmp_path, data, capsys):
    P = _profile(tmp_path, data)
    report = preflight.check(P, sections=["robustness", "concept_probing"])
    assert report.ok and report.ready and not report.todo, report.problems
    rows = {r["dataset"]: r for r in report.datasets}
    assert rows["imagenet"]["images"] == 4 and rows["imagenet"]["classes"] == 2
    assert rows["objectnet"]["images"] == 4 and rows["broden"]["images"] == 6
    assert rows["broden"]["classes"] == len(fixtures.BRODEN_CONCEPTS)
    assert cli.main(["plan", "--profile", str(P.path), "--section", "robustness"]) == 0
    assert capsys.readouterr().out.strip().endswith("total cache: 0 GB")


def test_plan_compares_a_paper_kind_profile_with_the_published_sizes(tmp_path, data):
    report = preflight.check(_profile(tmp_path, data, kind="paper"), sections=["robustness"])
    assert not report.ok
    text = "\n".join(report.problems)
    assert (f"datasets.imagenet ({data / 'imagenet' / 'val'}): expected 50,000 images in 1,000 classes "
            "(the published size), found 4 in 2") in text
    assert "datasets.objectnet" in text and "expected about 18,574 images in 113 classes" in text


def test_plan_lists_every_bad_value_and_missing_folder(tmp_path, data, capsys):
    P = _profile(tmp_path, data)
    raw = yaml.safe_load(P.path.read_text())
    raw.update(device="gpu", metrics={"bootstrap": "many"})
    P.path.write_text(yaml.safe_dump(raw))
    assert cli.main(["plan", "--profile", str(P.path)]) == 1
    out = capsys.readouterr().out
    assert f"{P.path}: device: expected a torch device" in out and f"{P.path}: metrics.bootstrap: " in out

    P = _profile(tmp_path / "b", data)
    raw = yaml.safe_load(P.path.read_text())
    raw["datasets"]["imagenet-sketch"] = str(tmp_path / "no-sketch")
    del raw["datasets"]["broden"]
    P.path.write_text(yaml.safe_dump(raw))
    report = preflight.check(load_profile(P.path))
    text = "\n".join(report.problems)
    assert f"datasets.imagenet-sketch: imagenet-sketch: {tmp_path / 'no-sketch'} does not exist" in text
    assert "datasets.broden: not set, but concept_probing" in text


def test_plan_refuses_a_run_that_would_not_fit_on_disk(tmp_path, data, monkeypatch):
    P = _profile(tmp_path, data)
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 1000))
    report = preflight.check(P, sections=["robustness"])
    assert any("paths.cache_dir" in p and "not enough disk" in p and " bytes still to write, 1,000 bytes free on " in p
               and "0.0 GB" not in p for p in report.problems)


def test_plan_names_checkpoints_to_produce_and_to_supply(tmp_path, data):
    P = _profile(tmp_path, data, kind="smoke")
    raw = yaml.safe_load(P.path.read_text())
    raw["pool"] = [
        {"id": "zs", "arch": "RN50", "family": "robust_zeroshot_clip", "pretraining": "x", "model": "demo-RN50"},
        {"id": "ft", "arch": "RN50", "family": "finetuned_clip", "pretraining": "x", "model": "demo-RN50",
         "finetuned_from": "zs", "checkpoint": "{checkpoints_dir}/ft/final.pt"},
        {"id": "tv", "arch": "ViT-B-32", "family": "supervised", "pretraining": "x", "source": "torchvision",
         "model": "demo_vit_b_32", "checkpoint": str(tmp_path / "tv.pth")}]
    P.path.write_text(yaml.safe_dump(raw))
    report = preflight.check(load_profile(P.path), sections=["robustness"])
    assert report.pending == [f"produced by: clip-study finetune --profile {P.path} --entry ft (into "
                              f"{tmp_path / 'cache' / 'checkpoints' / 'ft' / 'final.pt'})"]
    assert any(f"pool[2] (tv).checkpoint: checkpoint file {tmp_path / 'tv.pth'} not found" in p for p in report.problems)
    assert not report.ready


def test_quickgelu_trap_of_a_local_checkpoint_is_seen_in_its_training_params(tmp_path, data):
    """A plain-GELU open_clip training run (params.txt: model RN50) loaded under a QuickGELU model name."""
    run = tmp_path / "logs" / "captions-run"
    (run / "checkpoints").mkdir(parents=True)
    import torch

    torch.save({"w": torch.zeros(1)}, run / "checkpoints" / "epoch_32.pt")  # a readable checkpoint: plan loads it
    (run / "params.txt").write_text("batch_size: 256\nforce_quick_gelu: False\nmodel: RN50\n")
    P = _profile(tmp_path, data)
    raw = yaml.safe_load(P.path.read_text())
    raw["pool"] = [{"id": "cap", "arch": "RN50", "family": "imagenet_captions_clip", "pretraining": "x",
                    "model": "demo-RN50", "checkpoint": str(run / "checkpoints" / "epoch_32.pt")}]
    P.path.write_text(yaml.safe_dump(raw))
    report = preflight.check(load_profile(P.path), sections=["robustness"])
    [problem] = [p for p in report.problems if "(cap).model" in p]
    assert "was trained with plain GELU" in problem and "runs QuickGELU" in problem and str(run / "params.txt") in problem
    (run / "params.txt").write_text("force_quick_gelu: True\nmodel: RN50\n")  # trained with --force-quick-gelu
    assert not [p for p in preflight.check(load_profile(P.path), sections=["robustness"]).problems if "(cap)" in p]
