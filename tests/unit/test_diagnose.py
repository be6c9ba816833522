"""`clip-study diagnose` (issue #8): the paper's indicators for a model outside the pool, on a folder
of images, placed against the pool's results tables. Real open_clip demo models and a real
DataLoader over JPEGs written here; a tmp profile with its own Broden and results tables."""
import json

import numpy as np
import pytest
import torch
import yaml

from conftest import write_profile
from helpers.chapters import diagnose as dg
from helpers import models, plots
from helpers.study import results
from helpers.workflow.cli import main
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
    from helpers.demo.fixtures import write_broden

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


def _images_of(folder):
    """The images a folder dataset lists (sorted paths, recursively), read independently of it."""
    from helpers.data.base import IMAGE_EXTENSIONS

    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def _forward_each(files, transform, encode):
    """h of each file, one image at a time: PIL -> the model's own transform -> encoder. The oracle
    path shares nothing with the engine's uint8 store and batched pass."""
    from PIL import Image

    with torch.no_grad():
        return np.concatenate([encode(transform(Image.open(f).convert("RGB"))[None]).float().numpy() for f in files])


def _importance_ratio(W, h):
    """Eq. (2)-(3) written out: sigma_i / sum sigma * mean_n |cos(v_i, h_n)|, max over mean, i <= rank(W)."""
    _, sigma, Vt = np.linalg.svd(np.asarray(W, dtype=np.float64), full_matrices=False)
    r = np.linalg.matrix_rank(np.asarray(W, dtype=np.float32))
    sigma, Vt = sigma[:r], Vt[:r]
    cos = np.abs(h @ Vt.T) / np.linalg.norm(h, axis=1, keepdims=True)
    imp = sigma / sigma.sum() * cos.mean(axis=0)
    return imp.max() / imp.mean()


def _unique_concepts(h_broden, W, sets, threshold):
    """Eq. (4) with sklearn: AP of +-v_i on each balanced concept set, concepts reaching threshold."""
    from sklearn.metrics import average_precision_score

    r = np.linalg.matrix_rank(np.asarray(W, dtype=np.float32))
    Vt = np.linalg.svd(np.asarray(W, dtype=np.float64), full_matrices=False)[2][:r]
    proj = h_broden @ Vt.T
    hit = set()
    for c in sets.probed:
        rows = sets.selection[:, c]
        y = sets.presence[rows, c]
        for i in range(r):
            if max(average_precision_score(y, proj[rows, i]), average_precision_score(y, -proj[rows, i])) >= threshold:
                hit.add(int(c))
    return len(hit)


def _pool_oracles(summary, new):
    """Spearman (scipy), percentile (scipy's percentileofscore, ties counted half) and the 3 nearest
    pool models of each indicator, from POOL_VALUES."""
    from scipy.stats import percentileofscore, spearmanr

    er = np.array([v[0] for v in POOL_VALUES.values()])
    for k, col in enumerate(("kurtosis", "importance_ratio", "unique_concepts"), start=1):
        x = np.array([v[k] for v in POOL_VALUES.values()], dtype=float)
        assert summary["pool"]["correlations_with_er"][col]["spearman"] == pytest.approx(spearmanr(x, er)[0])
        place = summary["pool"]["placement"][col]
        assert place["percentile"] == pytest.approx(percentileofscore(x, new[col], kind="mean"))
        dist = np.abs(np.log(x) - np.log(new[col])) if col != "unique_concepts" else np.abs(x - new[col])
        assert [n["entry"] for n in place["nearest"]] == [list(POOL_VALUES)[i] for i in np.argsort(dist)[:3]]


def test_cli_writes_report_and_summary(study):
    """The command's numbers against oracles: h recomputed image by image by the models helper's own
    transform and encoder, kurtosis by scipy, the importance ratio by an SVD written here, the
    placement by scipy on the planted pool values."""
    from scipy.stats import kurtosis

    assert _cli(study) == 0
    out = study["tmp"] / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert {"model", "images", "profile", "kurtosis", "importance_ratio", "unique_concepts", "concepts", "pool",
            "warnings", "notes", "files"} <= set(summary)
    assert summary["images"]["n_images"] == 32 and summary["images"]["n_skipped"] == 0
    entry, _ = dg._entry_for("demo-ViT-B-32", None, study["profile"], seed=0)
    lm = models.load(entry, classnames=["cat", "dog", "teapot"])
    h = _forward_each(_images_of(study["images"]), lm.preprocess, lm.encode)
    k = summary["kurtosis"]
    assert k["estimate"] == pytest.approx(kurtosis(h, axis=1, fisher=False).mean(), rel=1e-5)
    assert k["low"] <= k["estimate"] <= k["high"]
    W = lm.head.detach().numpy()
    assert W.shape[0] == 3 and summary["importance_ratio"] == pytest.approx(_importance_ratio(W, h), rel=1e-4)
    assert summary["model"]["model"] == "demo-ViT-B-32" and summary["model"]["weights_digest"] == lm.weights_digest
    assert "3 class names" in summary["model"]["head"]
    assert summary["concepts"]["probed_concepts"] > 0
    _pool_oracles(summary, {c: summary[c] if c != "kurtosis" else k["estimate"]
                            for c in ("kurtosis", "importance_ratio", "unique_concepts")})
    assert not any("too few" in w for w in summary["warnings"])
    assert any("untrained" in w for w in summary["warnings"])  # random init allowed: a demo-like profile
    report = (out / "report.md").read_text()
    assert "Eq. (1)" in report and "kurtosis_distribution.png" in report and "kurtosis_vs_er.png" in report
    for png in ("kurtosis_distribution.png", "kurtosis_vs_er.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".*.tmp*"))  # atomic writes leave no temporary file behind


class _PlantedEncoder(torch.nn.Module):
    """A plain encoder with a planted outlier feature: component 0 of h is 40x the others
    (Section 4's outliers, so the kurtosis is far above 3). Records the size of every batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=8, stride=8)
        self.fc = torch.nn.Linear(8 * 16, 16)
        scale = torch.ones(16)
        scale[0] = 40.0
        self.register_buffer("scale", scale)
        self.batches = []

    def forward(self, x):
        self.batches.append(len(x))
        return self.fc(torch.relu(self.conv(x)).flatten(1)) * self.scale


def test_indicators_match_independent_oracles_on_planted_inputs(study):
    """Planted outlier features and a head with one dominant direction: kurtosis (scipy), importance
    ratio (SVD here), unique concepts (sklearn AP on the balanced Broden sets) and the placement
    (scipy) all recomputed from embeddings computed here, image by image."""
    from scipy.stats import kurtosis

    from helpers.engine.probing import broden_sets
    from helpers.data import open_broden

    P = study["profile"]
    net, prep = _PlantedEncoder(), _preprocess()
    W = 0.1 * torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    W[:, 0] += torch.tensor([3.0, -2.0, 1.0, 2.0, -1.0])  # a privileged direction along outlier feature 0
    d = dg.diagnose(study["images"], encoder=net, preprocess=prep, head=W, profile=P, out=study["tmp"] / "planted")
    h = _forward_each(_images_of(study["images"]), prep, net)
    per_image = kurtosis(h, axis=1, fisher=False)
    assert per_image.mean() > 8  # the planted outlier shows (a Gaussian vector gives 3)
    assert d.kurtosis.estimate == pytest.approx(per_image.mean(), rel=1e-5)
    np.testing.assert_allclose(d.per_image_kurtosis, per_image, rtol=1e-5)
    assert d.importance_ratio == pytest.approx(_importance_ratio(W.numpy(), h), rel=1e-5)
    assert d.importance_ratio > 2
    broden = open_broden(P.dataset_root("broden"))
    h_broden = _forward_each(broden.files, prep, net)
    assert d.unique_concepts == _unique_concepts(h_broden, W.numpy(), broden_sets(P), P.metrics["concept_threshold"])
    summary = json.loads(d.summary_path.read_text())
    _pool_oracles(summary, {"kurtosis": d.kurtosis.estimate, "importance_ratio": d.importance_ratio,
                            "unique_concepts": d.unique_concepts})


def _memo_and_manifests(cache):
    files = [*cache.glob("models/diagnose-*.json"), *cache.glob("activations/diagnose-*/*/manifest.json"),
             *cache.glob("stores/*/manifest.json")]
    return {p: p.stat().st_mtime_ns for p in files}


def test_diagnose_runs_through_the_engine_and_its_cache(study, monkeypatch):
    """No second pipeline: the folder's uint8 store and the model's activations sit in the engine's
    layout (stores/, activations/<entry id>/, models/<entry id>.json), nothing under a diagnose cache,
    and a second call is a cache hit that builds no model and rewrites no manifest."""
    P = study["profile"]
    kw = dict(model="demo-ViT-B-32", classnames=study["classes"], profile=P, write=False)
    first = dg.diagnose(study["images"], **kw)
    cache, entry_id = P.cache_dir, first.description["entry"]
    assert entry_id == "diagnose-demo-ViT-B-32-random-seed0" and entry_id not in [e.id for e in P.pool]
    assert list(cache.glob("stores/folder-224-bicubic-shortest-*/manifest.json"))
    assert list(cache.glob(f"activations/{entry_id}/folder-*/manifest.json"))
    assert list(cache.glob(f"activations/{entry_id}/broden-*/manifest.json"))  # concepts: the same engine
    assert (cache / "models" / f"{entry_id}.json").is_file()
    assert not (cache / "diagnose").exists()
    before = _memo_and_manifests(cache)

    loads = []
    real_load = models.load

    def counting_load(*args, **kwargs):
        loads.append(args[0].id if args else kwargs.get("entry"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(models, "load", counting_load)
    again = dg.diagnose(study["images"], **kw)
    assert loads == []
    assert _memo_and_manifests(cache) == before
    assert again.kurtosis.estimate == first.kurtosis.estimate
    assert again.importance_ratio == first.importance_ratio and again.unique_concepts == first.unique_concepts


def test_default_out_is_under_the_results_dir(study):
    d = dg.diagnose(study["images"], model="demo-ViT-B-32", classnames=study["classes"], profile=study["profile"],
                    concepts=False)
    assert d.out == study["profile"].results_dir / "diagnose" / "demo-ViT-B-32-random-seed0"
    assert d.summary_path.exists() and d.report_path.exists()


def test_open_clip_state_dict_given_as_pretrained_path(study, tmp_path):
    from scipy.stats import kurtosis

    import open_clip

    P = study["profile"]
    ckpt = tmp_path / "weights.pt"
    torch.manual_seed(11)
    torch.save(open_clip.create_model("demo-ViT-B-32").state_dict(), ckpt)
    entry, own_head = dg._entry_for("demo-ViT-B-32", str(ckpt), P, seed=0)
    assert not own_head and entry.checkpoint == str(ckpt)
    d = dg.diagnose(study["images"], model="demo-ViT-B-32", pretrained=str(ckpt), classnames=study["classes"],
                    profile=P, concepts=False, write=False)
    assert d.description["checkpoint"] == str(ckpt)
    lm = models.load(entry, classnames=["cat", "dog", "teapot"])
    h = _forward_each(_images_of(study["images"]), lm.preprocess, lm.encode)
    assert d.description["weights_digest"] == lm.weights_digest
    assert d.kurtosis.estimate == pytest.approx(kurtosis(h, axis=1, fisher=False).mean(), rel=1e-5)
    assert d.importance_ratio == pytest.approx(_importance_ratio(lm.head.detach().numpy(), h), rel=1e-4)


def test_classifier_checkpoint_brings_its_own_head(study, tmp_path):
    """A classifier checkpoint of this project: its own head W, read from the file (no class names),
    and the importance ratio of that W on h recomputed here."""
    P = study["profile"]
    zs = dg._entry_for("demo-ViT-B-32", None, P, seed=2)[0]
    ckpt = models.save_classifier(models.load(zs, classnames=["a", "b", "c", "d"]), tmp_path / "clf.pt")
    d = dg.diagnose(study["images"], model="demo-ViT-B-32", pretrained=str(ckpt), classnames=study["classes"],
                    profile=P, concepts=False, write=False)
    entry, own_head = dg._entry_for("demo-ViT-B-32", str(ckpt), P, seed=0)
    assert own_head and entry.family == "finetuned_clip"
    clf = models.load(entry)
    h = _forward_each(_images_of(study["images"]), clf.preprocess, clf.encode)
    assert clf.head.shape[0] == 4 and d.description["head"] == "the classifier checkpoint's own head"
    assert d.importance_ratio == pytest.approx(_importance_ratio(clf.head.detach().numpy(), h), rel=1e-4)
    assert any("own head: the class names were not used" in n for n in d.notes)
    W = models.head_without_model(entry, clf.weights_digest, P.cache_dir)  # read from the file, no build
    assert torch.equal(W, clf.head.detach())


def test_plain_torch_encoder_with_head_is_cached_by_its_parameters(study):
    net, W = _PlantedEncoder(), torch.randn(5, 16)
    kw = dict(encoder=net, preprocess=_preprocess(), head=W, profile=study["profile"], concepts=False,
              out=study["tmp"] / "plain")
    d = dg.diagnose(study["images"], **kw)
    assert sum(net.batches) > 32 and d.description["kind"] == "callable"
    seen = len(net.batches)
    again = dg.diagnose(study["images"], **kw)
    # a cache hit: only diagnose's one-image probe of d, no pass over the images
    assert net.batches[seen:] == [1] and again.kurtosis.estimate == d.kurtosis.estimate
    with torch.no_grad():
        net.fc.bias.add_(1.0)  # new weights, new digest: computed again
    seen = len(net.batches)
    dg.diagnose(study["images"], **kw)
    assert sum(net.batches[seen:]) > 32


def test_plain_function_without_name_or_head(study):
    net = _PlantedEncoder()

    def encode(x):
        return net(x)

    kw = dict(encoder=encode, preprocess=_preprocess(), profile=study["profile"], write=False)
    d = dg.diagnose(study["images"], **kw)
    assert d.importance_ratio is None and d.unique_concepts is None
    assert any("recomputed on every call" in n for n in d.notes) and any("no linear head" in n for n in d.notes)
    seen = len(net.batches)
    dg.diagnose(study["images"], **kw)
    assert sum(net.batches[seen:]) > 32  # no name: never a cache hit
    dg.diagnose(study["images"], name="tiny-fn", **kw)
    seen = len(net.batches)
    dg.diagnose(study["images"], name="tiny-fn", **kw)
    assert net.batches[seen:] == [1]  # named: the second call is a cache hit


def test_preprocess_the_store_cannot_hold_is_refused(study):
    from torchvision import transforms

    odd = transforms.Compose([transforms.RandomCrop(32), transforms.ToTensor()])
    with pytest.raises(dg.DiagnoseError, match=r"preprocess must be torchvision transforms.Compose\(\[Resize.*"
                                                r"got RandomCrop -> ToTensor"):
        dg.diagnose(study["images"], encoder=_TinyEncoder(), preprocess=odd, profile=study["profile"], write=False)


def test_image_folder_dataset(tmp_path):
    """Recursive, sorted, hidden entries and non-images left out; labels are positions; limit keeps
    a fixed-seed subset that a larger limit contains."""
    from helpers.data import open_dataset
    from helpers.data.folder import ImageFolderDataset

    root = _jpegs(tmp_path / "imgs", 9)
    (root / ".hidden").mkdir()
    _jpegs(root / ".hidden", 2)
    (root / "b" / ".x.jpg").write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    ds = open_dataset("folder", root)
    visible = [p for p in _images_of(root) if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    assert isinstance(ds, ImageFolderDataset) and ds.files == visible
    assert len(ds) == 9 and list(ds.labels) == list(range(9))
    small, large = ImageFolderDataset(root, limit=3), ImageFolderDataset(root, limit=6)
    assert len(small) == 3 and set(small.files) <= set(large.files) and small.files == sorted(small.files)
    assert ImageFolderDataset(root, limit=3).files == small.files and small.digest() != ds.digest()


def test_scatter_labels_do_not_overprint():
    """A crowded cluster of pool models: every label box is clear of every other label and point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    x = np.array([3.0, 3.05, 3.1, 3.1, 3.15, 3.2, 8.0, 40.0])
    y = np.array([0.0, 0.2, 0.1, 0.3, 0.0, 0.15, 8.0, 20.0])
    ax.scatter(x, y, s=40)
    ax.set_xscale("log")
    labels = [f"pool-model-{i}" for i in range(len(x))]
    plots.label_points(fig, ax, x, y, labels)
    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [plots.text_box(t, renderer) for t in ax.texts]
    assert all(b.width > 20 for b in boxes)
    assert [t.get_text() for t in ax.texts] == [labels[i] for i in np.argsort(-y, kind="stable")]
    for i, a in enumerate(boxes):
        assert not any(a.overlaps(b) for b in boxes[i + 1:])
    points = ax.transData.transform(np.column_stack([x, y]))
    for a in boxes:
        assert not any(a.x0 < px < a.x1 and a.y0 < py < a.y1 for px, py in points)


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
    from helpers.demo.fixtures import DEMO_CLASSES, write_imagenet
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
