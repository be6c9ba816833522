"""Provenance on copies of fixture data in the real layouts: a dataset signature sees every change
at any depth (added, removed, replaced, truncated images two levels down, an edited mapping file),
and the runner re-executes exactly the jobs that read the changed input, whose tables then equal a
``--force`` run; an aggregating job follows the tables it read."""
import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest

from helpers.study import provenance
from helpers.study import results
from helpers.workflow import runner
from helpers.config import load_profile
from helpers.demo.fixtures import write_broden, write_imagenet, write_objectnet
from tests.conftest import REPO, write_profile
from tests.workflow.test_runner import _notebook


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    write_imagenet(root / "imagenet", "val", per_class=2, size=(40, 30))
    write_objectnet(root / "objectnet-1.0", per_class=2, size=(40, 30))
    write_broden(root / "broden1_224", n_images=12)
    return root


@pytest.fixture
def data(pristine, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(pristine, dst)  # copy2: sizes and mtimes preserved, like the real copy would be
    return dst


def _first(folder: Path, pattern: str) -> Path:
    return sorted(folder.glob(pattern))[0]


def _add_objectnet_image(d):  # images/<class>/ gains a file
    src = _first(d / "objectnet-1.0" / "images", "*/*.png")
    shutil.copy(src, src.parent / "0000added.png")


def _replace_imagenet_in_place(d):  # the same name, other bytes (cp over it: the folder's mtime stays)
    a, b = sorted((d / "imagenet" / "val").glob("*/*.JPEG"))[:2]
    with open(a, "r+b") as f:
        f.write(b.read_bytes())
        f.truncate()


def _truncate_broden_image(d):
    p = _first(d / "broden1_224" / "images", "*/*.jpg")
    p.write_bytes(p.read_bytes()[:100])


def _edit_mapping(d):  # one class no longer mapped to ImageNet: its images leave the test set
    p = d / "objectnet-1.0" / "mappings" / "objectnet_to_imagenet_1k.json"
    m = json.loads(p.read_text())
    del m[sorted(m)[0]]
    p.write_text(json.dumps(m))


def _remove_broden_image(d):
    _first(d / "broden1_224" / "images", "*/*.jpg").unlink()


MUTATIONS = {"objectnet": [_add_objectnet_image, _edit_mapping], "imagenet": [_replace_imagenet_in_place],
             "broden": [_truncate_broden_image, _remove_broden_image]}
ROOTS = {"imagenet": "imagenet/val", "objectnet": "objectnet-1.0", "broden": "broden1_224"}


@pytest.mark.parametrize("dataset,mutate", [(d, m) for d, ms in MUTATIONS.items() for m in ms],
                         ids=lambda x: getattr(x, "__name__", x))
def test_signature_sees_every_change_at_any_depth(data, dataset, mutate):
    before = {n: provenance.tree_signature(data / r) for n, r in ROOTS.items()}
    assert provenance.tree_signature(data / ROOTS[dataset]) == before[dataset]  # stable
    mutate(data)
    after = {n: provenance.tree_signature(data / r) for n, r in ROOTS.items()}
    assert after[dataset] != before[dataset]
    assert {n: s for n, s in after.items() if n != dataset} == {n: s for n, s in before.items() if n != dataset}


def test_signature_ignores_hidden_files_and_names_missing_roots(data):
    before = provenance.tree_signature(data / "imagenet" / "val")
    (data / "imagenet" / "val" / ".DS_Store").write_text("finder")
    assert provenance.tree_signature(data / "imagenet" / "val") == before
    assert provenance.tree_signature(data / "nope") is None


def test_file_digest_is_by_content_and_cached_by_size_and_mtime(tmp_path):
    import hashlib

    f = tmp_path / "w.pt"
    f.write_bytes(b"weights")
    assert provenance.file_digest(f, tmp_path / "cache") == hashlib.sha256(b"weights").hexdigest()
    assert json.loads((tmp_path / "cache" / "provenance" / "file-digests.json").read_text())
    f.write_bytes(b"other weights")
    assert provenance.file_digest(f, tmp_path / "cache") == hashlib.sha256(b"other weights").hexdigest()
    assert provenance.file_digest(tmp_path / "missing.pt") is None


READER = """
    # Read {name}

    ```{{code-cell}} ipython3
    :tags: [parameters]
    profile = "demo"  # profile
    entry = None  # entry id
    backbone = None  # backbone
    ```

    ```{{code-cell}} ipython3
    import hashlib
    from helpers.data import open_dataset
    from helpers.study import open_study
    S = open_study("{section}", profile, entry=entry, backbone=backbone, show_banner=False)
    ds = open_dataset("{name}", S.profile.dataset_root("{name}"))
    h = hashlib.sha256()
    for f in ds.files:
        h.update(f.read_bytes())
    classes = getattr(ds, "classnames", None) or getattr(ds, "concepts", None)
    S.record("all", {{"images": len(ds), "content": h.hexdigest(), "classes": str(classes)[:2000]}})
    ```

    ```{{code-cell}} ipython3
    S.finish();
    ```
    """

AGGREGATOR = """
    # Aggregate

    ```{code-cell} ipython3
    :tags: [parameters]
    profile = "demo"  # profile
    entry = None  # entry id
    backbone = None  # backbone
    ```

    ```{code-cell} ipython3
    from helpers.study import results
    from helpers.study import open_study
    S = open_study("agg", profile, entry=entry, backbone=backbone, show_banner=False)
    t = results.load(S.profile, "objnet", ["all"])
    S.record("all", {"objectnet_images": int(t.images.sum()) if not t.empty else -1})
    ```

    ```{code-cell} ipython3
    S.finish();
    ```
    """


def _tables(P):
    return {p.relative_to(P.results_dir).as_posix(): p.read_text()
            for p in sorted((P.results_dir / "tables").rglob("*.csv"))}


@pytest.mark.slow
def test_a_changed_input_reruns_exactly_the_jobs_that_read_it(data, tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for i, (section, name) in enumerate([("inet", "imagenet"), ("objnet", "objectnet"), ("brod", "broden")], 1):
        _notebook(nbdir, f"0{i}_{section}.md", READER.format(section=section, name=name))
    _notebook(nbdir, "04_agg.md", AGGREGATOR)
    prof = write_profile(tmp_path, datasets={n: str(data / r) for n, r in ROOTS.items()})
    P = load_profile(prof)

    def run(force=False):
        out = runner.run(runner.plan(P, notebook_dir=nbdir), force=force, echo=lambda *a: None)
        assert not out.failures, out.report()
        return {o.job.section: o.status for o in out.outcomes}

    assert set(run().values()) == {"ran"}
    assert set(run().values()) == {"skipped"}
    expected = {  # the aggregator follows objectnet's table when its content changes
        _add_objectnet_image: {"objnet", "agg"}, _edit_mapping: {"objnet", "agg"},
        _replace_imagenet_in_place: {"inet"}, _truncate_broden_image: {"brod"},
    }
    for mutate, rerun in expected.items():
        provenance._TREE_MEMO.clear()  # a new `clip-study run` is a new process
        mutate(data)
        assert {s for s, st in run().items() if st == "ran"} == rerun, mutate.__name__
    # one forced run after every change: a job wrongly skipped along the way would have left a
    # table that differs from recomputing everything (forcing after each change ran 12 more jobs)
    incremental = _tables(P)
    run(force=True)
    assert _tables(P) == incremental
    agg = results.load(P, "agg")
    assert agg.objectnet_images.iloc[0] == results.load(P, "objnet").images.iloc[0]


@pytest.mark.slow
def test_real_chapters_follow_their_data_and_a_failed_job_never_reaches_the_summary(tmp_path):
    """The robustness and summary chapters on the demo layouts, one demo model: an image added two
    levels down in ObjectNet makes robustness due, naming the dataset; an unreadable ImageNet image
    fails robustness, and the summary then reads no robustness numbers and names the failed job."""
    import yaml

    from helpers.chapters import summary as summary_chapter
    from helpers.demo.fixtures import write_demo_data
    from helpers.study import Study

    data = write_demo_data(tmp_path / "data")
    raw = yaml.safe_load((REPO / "configs" / "demo.yml").read_text())
    raw["paths"] = {"data_root": str(data), "cache_dir": str(tmp_path / "cache"),
                    "results_dir": str(tmp_path / "results"), "checkpoints_dir": str(tmp_path / "ckpt")}
    raw["pool"] = raw["pool"][:1]
    raw["profile"] = "real-check"
    (tmp_path / "p.yml").write_text(yaml.safe_dump(raw))
    P = load_profile(tmp_path / "p.yml")
    sections = ["robustness", "summary"]

    def run(force=False):
        out = runner.run(runner.plan(P, sections=sections), force=force, echo=lambda *a: None)
        return {o.job.section: o.status for o in out.outcomes}, out

    assert run()[0] == {"robustness": "ran", "summary": "ran"}
    assert run()[0] == {"robustness": "skipped", "summary": "skipped"}
    images = data / "objectnet-1.0" / "images"
    a, b = sorted(images.iterdir())[:2]
    shutil.copy(sorted(b.iterdir())[0], a / "0000added.png")  # another class's image, two levels down
    provenance._TREE_MEMO.clear()
    robustness = runner.plan(P, sections=["robustness"])[0]
    assert runner.stale_reason(robustness).startswith("dataset objectnet changed"), runner.stale_reason(robustness)
    # (that it then reruns exactly its readers, and equals --force: test_a_changed_input_reruns_exactly_the_jobs_that_read_it)
    # an unreadable image: robustness fails, its stale table is not read, the summary says so
    bad = sorted((data / "imagenet" / "val").glob("*/*.JPEG"))[0]
    bad.write_bytes(b"not a jpeg")
    provenance._TREE_MEMO.clear()
    status, out = run()
    assert status == {"robustness": "failed", "summary": "ran"}
    assert results.load(P, "robustness").empty
    cat = summary_chapter.catalogue(Study(P, list(P.pool), "summary")).set_index("paper item")
    assert cat.loc["Table 1", "models in this run"] == 0
    assert P.pool[0].id in cat.loc["Table 1", "failed (stale table ignored)"]
