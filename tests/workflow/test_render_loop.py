"""The README's loop end to end: a chapter run directly with papermill (output anywhere) or on a
slice reaches the book's sources through `clip-study render`; a section that never ran is named
with a command that does something."""
import jupytext
import nbformat
import papermill
import pytest

from helpers.config import load_profile
from helpers.study import provenance
from helpers.workflow import book, cli, runner
from tests.conftest import write_profile
from tests.workflow.test_runner import _notebook, quiet

BODY = """
    # Tiny

    ```{code-cell} ipython3
    :tags: [parameters]
    profile = "demo"  # profile
    entry = None  # entry id
    backbone = None  # backbone
    ```

    ```{code-cell} ipython3
    from helpers.study import open_study
    S = open_study("tiny", profile, entry=entry, backbone=backbone, show_banner=False)
    for e in S.pool:
        S.record(e.id, {"value": 1.0})
    print("ran on", [e.id for e in S.pool])
    S.finish()
    ```
    """


@pytest.fixture
def loop(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    md = _notebook(nbdir, "01_tiny.md", BODY)
    monkeypatch.setenv(provenance.NOTEBOOK_ENV, str(md))  # outside the repository: where the MyST source is
    return load_profile(write_profile(tmp_path)), nbdir, md, tmp_path


def test_a_direct_papermill_run_reaches_the_books_sources(loop):
    P, nbdir, md, tmp = loop
    ipynb = nbdir / "01_tiny.ipynb"
    nbformat.write(jupytext.read(md), ipynb)
    out = tmp / "anywhere" / "out.ipynb"
    out.parent.mkdir()
    papermill.execute_notebook(str(ipynb), str(out), parameters={"profile": str(P.path)}, kernel_name="python3",
                               progress_bar=False)
    with pytest.raises(FileNotFoundError, match="--notebook <papermill output>.ipynb"):
        book.render_sources(P, notebook_dir=nbdir, dest=tmp / "rendered")
    book.adopt(P, out)
    rendered = book.render_sources(P, notebook_dir=nbdir, dest=tmp / "rendered")
    assert [p.name for p in rendered] == ["01_tiny.ipynb", "pool.md"]
    page = nbformat.read(rendered[0], as_version=4)
    assert any("ran on" in str(c.get("outputs", "")) for c in page.cells)
    # and the runner sees it as up to date: it was run, and it is renderable
    assert runner.stale_reason(runner.plan(P, notebook_dir=nbdir)[0]) is None


def test_a_sliced_run_is_rendered_with_a_note_naming_its_slice(loop):
    P, nbdir, _, tmp = loop
    jobs = runner.plan(P, backbone="RN50", notebook_dir=nbdir)
    assert runner.run(jobs, echo=quiet).outcomes[0].status == "ran"
    (page,) = [p for p in book.render_sources(P, notebook_dir=nbdir, dest=tmp / "rendered") if p.suffix == ".ipynb"]
    first = nbformat.read(page, as_version=4).cells[0]
    assert first.cell_type == "markdown" and "the slice `backbone-RN50` of the pool" in first.source
    assert f"`clip-study run --profile {P.name} --section tiny` (no slice)" in first.source


def test_render_on_the_command_line_names_a_section_that_never_ran(loop, capsys, monkeypatch):
    P, nbdir, _, _ = loop
    monkeypatch.setattr(book, "notebooks", lambda folder=nbdir: runner.notebooks(nbdir))
    assert cli.main(["render", "--profile", str(P.path)]) == 2
    err = capsys.readouterr().err
    assert f"`clip-study run --profile {P.name} --section tiny` executes it there" in err
