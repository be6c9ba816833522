"""`clip-study diagnose` (issue #8): the paper's indicators for a model outside the pool, on a folder
of images, placed against the pool's results tables. Real open_clip demo models and a real
DataLoader over JPEGs written here; a tmp profile with its own Broden and results tables."""
import json

import numpy as np
import pytest
import torch
import yaml

from conftest import write_profile
from helpers import diagnose as dg
from helpers import models, results
from helpers.cli import main
from helpers.config import load_profile

POOL = [
    {"id": "p-zs", "arch": "ViT-B-32", "family": "robust_zeroshot_clip", "pretraining": "x", "model": "demo-ViT-B-32",
     "seed": 4},
    {"id": "p-ft", "arch": "ViT-B-32", "family": "finetuned_clip", "pretraining": "x", "model": "demo-ViT-B-32",
     "seed": 5},
    {"id": "p-sup", "arch": "RN50", "family": "supervised", "pretraining": "x", "model": "demo-RN50", "seed": 6},
    {"id": "p-cap", "arch": "RN50", "family": "imagenet_captions_clip", "pretraining": "x", "model": "demo-RN50",
     "seed": 7},
]
#: Made-up pool indicators, (ER, kurtosis, importance ratio, unique concepts): robust models have
#: outlier features, as in the paper.
POOL_VALUES = {"p-zs": (0.20, 40.0, 30.0, 600), "p-ft": (0.08, 6.0, 8.0, 450), "p-sup": (0.0, 3.1, 1.2, 300),
               "p-cap": (0.01, 3.3, 9.0, 580)}


def _jpegs(folder, n, size=(48, 40), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = folder / ("a" if i % 2 else "b/c")  # nested: the folder is searched recursively
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"img_{i:03d}.jpg", quality=90)
    return folder


def _record_pool(profile):
    for e in profile.pool:
        er, k, ir, uc = POOL_VALUES[e.id]
        meta = {"backbone": e.arch, "family": e.family, "pretraining": e.pretraining}
        results.record(profile, "robustness", e.id, {**meta, "imagenet": 0.5, "shifts_mean": 0.3, "er": er,
                                                     "acc_ratio": 0.6})
        results.record(profile, "outlier_features", e.id, {**meta, "dataset": "imagenet", "kurtosis": k})
        results.record(profile, "privileged_directions", e.id, {**meta, "direction": 1, "importance_ratio": ir})
        results.record(profile, "concept_probing", e.id, {**meta, "threshold": 0.9, "unique_concepts": uc})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A demo-like profile (random init allowed) with a small Broden, a pool with results tables,
    a folder of 32 JPEGs beside a text file, and a class names file."""
    from helpers.fixtures import write_broden

    tmp = tmp_path_factory.mktemp("diagnose")
    path = write_profile(tmp, pool=POOL, batch_size=16,
                         datasets={"imagenet": "{data_root}/imagenet/val", "broden": "{data_root}/broden1_224"},
                         metrics={"bootstrap": 100, "broden_min_positives": 4})
    write_broden(tmp / "data" / "broden1_224", n_images=40)
    profile = load_profile(path)
    _record_pool(profile)
    images = _jpegs(tmp / "images", 32)
    (images / "README.txt").write_text("not an image")
    classes = tmp / "classes.txt"
    classes.write_text("cat\n\ndog\nteapot\n")
    return {"tmp": tmp, "profile_path": path, "profile": profile, "images": images, "classes": classes}


def _cli(study, *extra, out="out"):
    return main(["diagnose", "--profile", str(study["profile_path"]), "--model", "demo-ViT-B-32",
                 "--images", str(study["images"]), "--classnames", str(study["classes"]),
                 "--out", str(study["tmp"] / out), *extra])


class _TinyEncoder(torch.nn.Module):
    """A plain torch image encoder: (B, 3, 32, 32) -> (B, 16), counting its forward passes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=8, stride=8)
        self.fc = torch.nn.Linear(8 * 16, 16)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _preprocess():
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor(),
                               transforms.Normalize([0.5] * 3, [0.25] * 3)])


def test_cli_writes_report_and_summary(study):
    assert _cli(study) == 0
    out = study["tmp"] / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert {"model", "images", "profile", "kurtosis", "importance_ratio", "unique_concepts", "concepts", "pool",
            "warnings", "notes", "files"} <= set(summary)
    assert summary["images"]["n_images"] == 32 and summary["images"]["n_skipped"] == 0
    k = summary["kurtosis"]
    assert k["estimate"] >= 1 and k["low"] <= k["estimate"] <= k["high"]
    assert summary["importance_ratio"] >= 1
    assert isinstance(summary["unique_concepts"], int) and summary["concepts"]["probed_concepts"] > 0
    assert summary["model"]["model"] == "demo-ViT-B-32" and summary["model"]["weights_digest"]
    assert "3 class names" in summary["model"]["head"]
    # placed against the pool's tables: rank correlations with ER and a percentile
    corr = summary["pool"]["correlations_with_er"]
    assert set(corr) == {"kurtosis", "importance_ratio", "unique_concepts"}
    assert corr["kurtosis"]["models"] == 4 and -1 <= corr["kurtosis"]["spearman"] <= 1
    place = summary["pool"]["placement"]["kurtosis"]
    assert 0 <= place["percentile"] <= 100 and len(place["nearest"]) == 3
    assert not any("too few" in w for w in summary["warnings"])
    assert any("untrained" in w for w in summary["warnings"])  # random init allowed: a demo-like profile
    report = (out / "report.md").read_text()
    assert "Eq. (1)" in report and "kurtosis_distribution.png" in report and "kurtosis_vs_er.png" in report
    for png in ("kurtosis_distribution.png", "kurtosis_vs_er.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".*.tmp*"))  # atomic writes leave no temporary file behind


def test_rerun_reads_the_cache_without_loading_or_forward(study, monkeypatch):
    first = dg.diagnose(study["images"], model="demo-ViT-B-32", classnames=study["classes"],
                        profile=study["profile"], write=False)

    def refuse(*args, **kwargs):
        raise AssertionError("a cached diagnosis must not load or run the model")

    monkeypatch.setattr(models, "load", refuse)
    monkeypatch.setattr(dg, "_encode_files", refuse)
    assert _cli(study, out="rerun") == 0
    again = json.loads((study["tmp"] / "rerun" / "summary.json").read_text())
    assert again["kurtosis"]["estimate"] == pytest.approx(first.kurtosis.estimate)
    assert again["unique_concepts"] == first.unique_concepts


def test_default_out_is_under_the_results_dir(study):
    d = dg.diagnose(study["images"], model="demo-ViT-B-32", classnames=study["classes"], profile=study["profile"],
                    concepts=False)
    assert d.out == study["profile"].results_dir / "diagnose" / "demo-ViT-B-32-random-seed0"
    assert d.summary_path.exists() and d.report_path.exists()


def test_weights_digest_without_loading_matches_models_load(study, tmp_path):
    import open_clip

    P = study["profile"]
    entry, _ = dg._entry_for("demo-ViT-B-32", None, P, seed=3)
    assert dg._weights_digest(entry, P) == models.load(entry, classnames=["a", "b"]).weights_digest
    # an open_clip state dict given as --pretrained <path>
    ckpt = tmp_path / "weights.pt"
    torch.save(open_clip.create_model("demo-ViT-B-32").state_dict(), ckpt)
    entry, own_head = dg._entry_for("demo-ViT-B-32", str(ckpt), P, seed=0)
    assert not own_head and entry.checkpoint == str(ckpt)
    assert dg._weights_digest(entry, P) == models.load(entry, classnames=["a", "b"]).weights_digest
    d = dg.diagnose(study["images"], model="demo-ViT-B-32", pretrained=str(ckpt), classnames=study["classes"],
                    profile=P, concepts=False, write=False)
    assert d.description["checkpoint"] == str(ckpt) and d.importance_ratio >= 1


def test_plain_torch_encoder_with_head_is_cached_by_its_parameters(study):
    net, W = _TinyEncoder(), torch.randn(5, 16)
    kw = dict(encoder=net, preprocess=_preprocess(), head=W, profile=study["profile"],
              out=study["tmp"] / "plain")
    d = dg.diagnose(study["images"], **kw)
    assert net.calls > 0 and d.kurtosis.estimate >= 1 and d.importance_ratio >= 1
    assert d.unique_concepts is not None and d.description["kind"] == "callable"
    calls = net.calls
    again = dg.diagnose(study["images"], **kw)
    assert net.calls == calls and again.kurtosis.estimate == pytest.approx(d.kurtosis.estimate)
    with torch.no_grad():
        net.fc.bias.add_(1.0)  # new weights, new digest: computed again
    dg.diagnose(study["images"], **kw)
    assert net.calls > calls


def test_plain_function_without_name_or_head(study):
    net = _TinyEncoder()
    calls = []

    def encode(x):
        calls.append(len(x))
        return net(x)

    kw = dict(encoder=encode, preprocess=_preprocess(), profile=study["profile"], write=False)
    d = dg.diagnose(study["images"], **kw)
    assert d.importance_ratio is None and d.unique_concepts is None
    assert any("not cached" in n for n in d.notes) and any("no linear head" in n for n in d.notes)
    n = len(calls)
    dg.diagnose(study["images"], **kw)
    assert len(calls) == 2 * n  # no name: never cached
    dg.diagnose(study["images"], name="tiny-fn", **kw)
    dg.diagnose(study["images"], name="tiny-fn", **kw)
    assert len(calls) == 3 * n  # named: the second call is a cache hit


def test_without_results_tables_says_which_command_produces_them(tmp_path):
    path = write_profile(tmp_path, pool=POOL)
    images = _jpegs(tmp_path / "imgs", 4)
    d = dg.diagnose(images, encoder=_TinyEncoder(), preprocess=_preprocess(), profile=path, out=tmp_path / "o")
    note = next(n for n in d.notes if "no results yet" in n)
    assert "clip-study run --profile" in note and "--section outlier_features" in note
    assert d.pool.empty and "kurtosis_vs_er" not in d.figures and (tmp_path / "o" / "report.md").exists()
    # too few images for a stable kurtosis: said in the summary and the report, interval still given
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert any("too few for a stable kurtosis" in w for w in summary["warnings"])
    assert "too few for a stable kurtosis" in (tmp_path / "o" / "report.md").read_text()
    k = summary["kurtosis"]
    assert k["low"] <= k["estimate"] <= k["high"]


def test_unreadable_images_are_named_or_skipped_and_counted(study, tmp_path):
    images = _jpegs(tmp_path / "imgs", 6)
    (images / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    kw = dict(encoder=_TinyEncoder(), preprocess=_preprocess(), profile=study["profile"], write=False)
    with pytest.raises(dg.DiagnoseError, match=r"broken\.jpg.*skip-unreadable"):
        dg.diagnose(images, **kw)
    d = dg.diagnose(images, skip_unreadable=True, **kw)
    assert d.n_images == 6 and [s[0] for s in d.skipped] == ["a/broken.jpg"]
    assert d.summary["images"]["n_skipped"] == 1
    with pytest.raises(dg.DiagnoseError, match=r"broken\.jpg"):  # also when read from the cache
        dg.diagnose(images, **kw)


@pytest.mark.parametrize("case, match", [
    ("missing", r"images folder .*nowhere does not exist"),
    ("empty", r"images folder .*empty is empty"),
    ("no_images", r"holds 2 file\(s\) but no image: 'notes\.txt', 'table\.csv'"),
])
def test_bad_image_folders(study, tmp_path, case, match):
    folder = tmp_path / {"missing": "nowhere", "empty": "empty", "no_images": "docs"}[case]
    if case != "missing":
        folder.mkdir()
    if case == "no_images":
        (folder / "notes.txt").write_text("x")
        (folder / "table.csv").write_text("x")
    with pytest.raises(dg.DiagnoseError, match=match):
        dg.diagnose(folder, model="demo-ViT-B-32", profile=study["profile"], write=False)


@pytest.mark.parametrize("model, pretrained, match", [
    ("ViT-B-23", None, r"open_clip does not know the model 'ViT-B-23'; close names: .*ViT-B-32"),
    ("ViT-B-32", "opanai", r"no pretrained tag 'opanai' for model 'ViT-B-32'; its tags: .*openai"),
    ("demo-ViT-B-32", "/no/such/weights.pt", r"checkpoint /no/such/weights\.pt does not exist"),
])
def test_bad_models_name_what_is_wrong(study, model, pretrained, match):
    with pytest.raises(dg.DiagnoseError, match=match):
        dg.diagnose(study["images"], model=model, pretrained=pretrained, profile=study["profile"], write=False)


def test_random_init_only_where_the_profile_allows_it(tmp_path):
    raw = yaml.safe_load(write_profile(tmp_path, pool=[{**POOL[0], "checkpoint": "w.pt"}]).read_text())
    raw["allow_random_init"] = False
    (tmp_path / "strict.yml").write_text(yaml.safe_dump(raw))
    with pytest.raises(dg.DiagnoseError, match=r"random initialisation is allowed only .* profile 'tmp'"):
        dg.diagnose(tmp_path, model="demo-ViT-B-32", profile=tmp_path / "strict.yml", write=False)


def test_bad_classnames_and_arguments(study, tmp_path):
    P = study["profile"]
    with pytest.raises(dg.DiagnoseError, match=r"class names file .*missing\.txt does not exist"):
        dg.diagnose(study["images"], model="demo-ViT-B-32", classnames=tmp_path / "missing.txt", profile=P)
    (tmp_path / "one.txt").write_text("cat\n")
    with pytest.raises(dg.DiagnoseError, match=r"at least 2 class names"):
        dg.diagnose(study["images"], model="demo-ViT-B-32", classnames=tmp_path / "one.txt", profile=P)
    with pytest.raises(dg.DiagnoseError, match=r"either model= .* or encoder="):
        dg.diagnose(study["images"], profile=P)
    with pytest.raises(dg.DiagnoseError, match=r"needs preprocess="):
        dg.diagnose(study["images"], encoder=_TinyEncoder(), profile=P)
    with pytest.raises(dg.DiagnoseError, match=r"head W is 5 x 7 but the encoder gives d = 16"):
        dg.diagnose(study["images"], encoder=_TinyEncoder(), preprocess=_preprocess(), head=np.ones((5, 7)),
                    profile=P, write=False)


def test_cli_reports_bad_input_in_one_line(study, capsys):
    rc = main(["diagnose", "--profile", str(study["profile_path"]), "--model", "ViT-B-32", "--pretrained", "opanai",
               "--images", str(study["images"])])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("clip-study diagnose: error:") and "openai" in err and "\n" not in err


def test_command_line_matches_the_cli():
    cmd = dg.command_line("/data/val", "ViT-B-32-quickgelu", "openai", "paper", batch_size=256, limit=None,
                          skip_unreadable=True)
    assert cmd == ("clip-study diagnose --profile paper --model ViT-B-32-quickgelu --pretrained openai "
                   "--images /data/val --batch-size 256 --skip-unreadable")


def test_agrees_with_the_outlier_features_chapter(tmp_path):
    """Diagnosing a pool entry's own weights on the profile's ImageNet folder gives the kurtosis the
    chapter records for it: the same quantity, measured by a second code path."""
    from helpers.chapters import outlier_features
    from helpers.fixtures import DEMO_CLASSES, write_imagenet
    from helpers.study import open_study

    # A supervised family gives the random encoder a random linear head: no zero-shot head to build.
    entry = {"id": "p", "arch": "ViT-B-32", "family": "supervised", "pretraining": "x", "model": "demo-ViT-B-32",
             "seed": 4}
    path = write_profile(tmp_path, pool=[entry], metrics={"bootstrap": 50})
    val = write_imagenet(tmp_path / "data" / "imagenet", "val", classes=DEMO_CLASSES[:4], per_class=8)
    S = open_study("outlier_features", str(path), show_banner=False)
    recorded = outlier_features.measure(S).set_index("entry").loc["p"]
    d = dg.diagnose(val, model="demo-ViT-B-32", seed=4, classnames=["a", "b"], profile=S.profile, concepts=False,
                    write=False)
    assert d.n_images == recorded["n_images"] == 32
    assert d.kurtosis.estimate == pytest.approx(recorded["kurtosis"], rel=1e-4)
