"""The table of contents, the notebooks and the configuration cannot drift apart."""
import re

import jupytext
import yaml

from helpers.workflow import runner
from helpers.config import REPO_ROOT, load_profile

TOC = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
CONFIG = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())


def _toc_files():
    return [c["file"] for part in TOC["parts"] for c in part["chapters"]]


def test_every_notebook_is_a_chapter_and_every_chapter_exists():
    files = _toc_files()
    rendered = [f.split("/", 1)[1] for f in files if f.startswith("rendered/") and f != "rendered/pool"]
    stems = [p.stem for p in runner.notebooks().values()]
    assert rendered == stems, "chapters under rendered/ must list notebooks/ in paper order"
    for f in [TOC["root"]] + [f for f in files if f.startswith("book/")]:
        assert (REPO_ROOT / f"{f}.md").exists(), f


def test_book_renders_without_executing():
    # papermill executes; jupyter-cache would miss changes in helpers/ (book/methods.md, facts)
    assert CONFIG["execute"]["execute_notebooks"] == "off"
    assert CONFIG["only_build_toc_files"] is True


def test_notebooks_have_one_parameters_cell_with_commented_names():
    for section, md in runner.notebooks().items():
        nb = jupytext.read(md)
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(cells) == 1, f"{md.name}: expected one cell tagged parameters"
        for line in cells[0].source.splitlines():
            if line.strip():
                assert re.match(r"^\w+ = .+  # .+", line), f"{md.name}: parameter line without comment: {line!r}"


def test_profile_notebooks_take_the_profile_and_a_slice():
    for section, md in runner.notebooks().items():
        if section == "validating_the_probes":  # synthetic data, no pool
            continue
        params = runner._declared_parameters(md)
        assert {"profile", "entry", "backbone"} <= set(params), md.name


def test_methods_page_cites_every_choice_key_of_the_profiles():
    methods = (REPO_ROOT / "book" / "methods.md").read_text()
    for name in ("demo", "paper"):
        P = load_profile(name)
        for e in P.pool:
            if e.note:
                tag = e.pretrained or e.model
                assert tag in methods, f"{name}: entry {e.id} has a note but methods.md never mentions {tag}"


def test_papermill_pairs_match_their_myst_sources():
    """``make env`` writes notebooks/<chapter>.ipynb (papermill reads only .ipynb); a pair that
    exists runs the same code as its MyST source, and the provenance digest of the code that
    runs is the same from either (so a plain papermill run is recognised by the runner)."""
    import nbformat

    from helpers.study import provenance

    for section, md in runner.notebooks().items():
        pair = md.with_suffix(".ipynb")
        if not pair.exists():
            continue
        nb = nbformat.read(pair, as_version=4)
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        assert provenance.code_digest(code) == provenance.notebook_digest(md), \
            f"{pair.name} is out of date with {md.name}: run `make notebooks`"
        assert provenance.parameters_cell(nb) == provenance.parameters_cell(md), pair.name


def test_makefile_writes_the_papermill_pairs():
    make = (REPO_ROOT / "Makefile").read_text()
    assert "notebooks/%.ipynb: notebooks/%.md" in make and "jupytext" in make
    assert re.search(r"^env: .*notebooks", make, re.M)
    assert "/notebooks/*.ipynb" in (REPO_ROOT / ".gitignore").read_text()
    assert "notebooks/*" in CONFIG["exclude_patterns"]  # the book renders from rendered/, not the pairs


def test_every_chapter_ends_by_recording_its_provenance():
    for section, md in runner.notebooks().items():
        nb = jupytext.read(md)
        last = [c for c in nb.cells if c.cell_type == "code"][-1]
        assert "finish(" in last.source and "remove-cell" in last.metadata.get("tags", []), md.name
