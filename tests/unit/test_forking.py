"""Forking (issue 14): `clip-study new-notebook <name>` on a copy of notebooks/ and _toc.yml, and the
layer names a fork can ask for, against the engine's own names on loaded models."""
import shutil

import jupytext
import pytest
import yaml

from helpers.engine import extract
from helpers.workflow import forking
from helpers import models
from helpers.workflow import runner
from helpers.workflow.cli import build_parser
from helpers.config import REPO_ROOT, PoolEntry


@pytest.fixture
def book(tmp_path):
    """A copy of the notebooks folder (with its template) and of _toc.yml."""
    nb = tmp_path / "notebooks"
    shutil.copytree(REPO_ROOT / "notebooks", nb, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    shutil.copy(REPO_ROOT / "_toc.yml", tmp_path / "_toc.yml")
    return {"notebooks": nb, "toc": tmp_path / "_toc.yml", "template": nb / "templates" / "new_hypothesis.md"}


def _new(book, name):
    return forking.new_notebook(name, notebooks_dir=book["notebooks"], toc=book["toc"], template=book["template"])


def _chapters(toc_path):
    toc = yaml.safe_load(toc_path.read_text())
    return {part["caption"]: [c["file"] for c in part["chapters"]] for part in toc["parts"]}


def test_new_notebook_takes_the_next_number_and_its_toc_line(book):
    before = runner.notebooks(book["notebooks"])
    top = max(int(p.name[:2]) for p in before.values())
    path, line = _new(book, "my_test")
    assert path == book["notebooks"] / f"{top + 1:02d}_my_test.md" and path.is_file()
    assert line == f"- file: rendered/{top + 1:02d}_my_test"
    going = _chapters(book["toc"])["Going further"]
    assert going[-1] == f"rendered/{path.stem}" and going[:-1] == _chapters(REPO_ROOT / "_toc.yml")["Going further"]
    # the rule tests/book/test_book_layout.py checks on the real book holds on the copy
    rendered = [f.split("/", 1)[1] for part in _chapters(book["toc"]).values() for f in part
                if f.startswith("rendered/") and f != "rendered/pool"]
    assert rendered == [p.stem for p in runner.notebooks(book["notebooks"]).values()]
    # a chapter of its own: section my_test, one commented parameters cell, the template's cells
    assert runner.notebooks(book["notebooks"])["my_test"] == path
    text = path.read_text()
    assert 'open_study("my_test"' in text and "new_hypothesis" not in text.replace("templates/new_hypothesis", "")
    assert "# My test" in text.splitlines()
    nb = jupytext.read(path)
    assert [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert {"profile", "entry", "backbone"} <= set(runner._declared_parameters(path))
    # the comments and layout of _toc.yml are kept: only the one line is new
    old, new = (REPO_ROOT / "_toc.yml").read_text().splitlines(), book["toc"].read_text().splitlines()
    assert [ln for ln in new if ln not in old] == [f"      {line}"] and len(new) == len(old) + 1


def test_a_name_in_use_is_refused_and_named(book):
    path, _ = _new(book, "my_test")
    toc = book["toc"].read_text()
    with pytest.raises(forking.ForkError, match=rf"a notebook named 'my_test' exists already: .*{path.name}"):
        _new(book, "my_test")
    with pytest.raises(forking.ForkError, match=r"'diagnose' exists already: .*11_diagnose\.md"):
        _new(book, "diagnose")
    assert book["toc"].read_text() == toc
    assert sorted(p.name for p in book["notebooks"].glob("*_my_test.md")) == [path.name]


@pytest.mark.parametrize("name", ["My-Test", "12_x", "", "a b"])
def test_bad_names_write_nothing(book, name):
    files = sorted(book["notebooks"].iterdir())
    with pytest.raises(forking.ForkError, match="lowercase identifier"):
        _new(book, name)
    assert sorted(book["notebooks"].iterdir()) == files


def test_a_toc_without_the_part_writes_nothing(book):
    book["toc"].write_text(book["toc"].read_text().replace("caption: Going further", "caption: Elsewhere"))
    files = sorted(book["notebooks"].iterdir())
    with pytest.raises(forking.ForkError, match=r"_toc\.yml has no part with caption 'Going further'"):
        _new(book, "my_test")
    assert sorted(book["notebooks"].iterdir()) == files


def test_the_cli_has_the_subcommand():
    args = build_parser().parse_args(["new-notebook", "my_test"])
    assert args.name == "my_test" and callable(args.func)


# Supervised-family entries get a random linear head: loading them builds no zero-shot head.
ENTRIES = [
    PoolEntry(id="rn", arch="RN50", family="supervised", pretraining="x", model="demo-RN50", seed=1),
    PoolEntry(id="vit", arch="ViT-B-32", family="supervised", pretraining="x", model="demo-ViT-B-32", seed=1),
    PoolEntry(id="coca", arch="coca_ViT-B-32", family="supervised", pretraining="x", model="demo-coca_ViT-B-32",
              seed=1),
    PoolEntry(id="tv", arch="ViT-B-32", family="supervised", pretraining="x", model="demo_vit_b_32",
              source="torchvision", seed=1, image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225)),
]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.id for e in ENTRIES])
def test_layer_names_without_weights_match_the_engine(entry):
    names = forking.layer_names(entry)
    assert names == extract.layer_names(models.load(entry))
    last = forking.penultimate_layer(entry)
    assert last == ("layer4" if entry.id == "rn" else names[-3]) and last in names and names[-1] == "embedding"
    if entry.id != "rn":
        assert last.endswith(".cls") and last.startswith(f"block{names[-3][5:-4]}")


def test_layer_table_lists_the_slice():
    table = forking.layer_table(ENTRIES)
    assert list(table["entry"]) == [e.id for e in ENTRIES]
    assert list(table["last before h"]) == [forking.penultimate_layer(e) for e in ENTRIES]
    assert list(table["layers"]) == [len(forking.layer_names(e)) for e in ENTRIES]
