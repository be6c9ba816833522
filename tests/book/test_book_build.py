"""The build is a test: the demo book executes every notebook (papermill), renders with
`jupyter-book build -W -n --keep-going` (a warning fails), and the pages hold what a reader needs: no
broken internal link, no absolute machine path, the paper's result beside this run's, tables without
raw pandas output. The browser checks are in tests/book/test_book_browser.py."""
import html
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from helpers.config import REPO_ROOT

#: one pytest-xdist worker runs every test that reads the built book: it is built once per worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("book")]
HTML = REPO_ROOT / "_build" / "html"
BIN = Path(sys.executable).parent


def _run(*cmd, timeout=1800):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc


_BUILT: list[Path] = []


def build_book() -> Path:
    """`make book` without make's environment step and its data step (the ``demo_prepared``
    fixture runs `make data`'s two commands): every section, render, MathJax for the offline
    book, and the build with warnings as errors. Once per test session; with
    ``CLIP_STUDY_BUILT_BOOK`` set, that already built book is used instead."""
    given = os.environ.get("CLIP_STUDY_BUILT_BOOK")
    if given:
        return Path(given).resolve()
    if not _BUILT:
        cli = [sys.executable, "-m", "helpers.workflow.cli"]
        _run(*cli, "run", "--profile", "demo", "--jobs", "2")  # as make book runs it
        _run(*cli, "render", "--profile", "demo")
        _run("make", "mathjax")
        _run(str(BIN / "jupyter-book"), "build", ".", "--builder", "html", "-W", "-n", "--keep-going")
        _BUILT.append(HTML)
    return _BUILT[0]


@pytest.fixture(scope="module")
def built_book(demo_prepared):
    return build_book()


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.imgs = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag == "img" and a.get("src"):
            self.imgs.append(a["src"])


def _parse(page: Path) -> _Links:
    p = _Links()
    p.feed(page.read_text(errors="replace"))
    return p


def test_every_chapter_rendered_with_figures(built_book):
    assert (built_book / "index.html").exists()
    for stem in ("01_robustness", "02_outlier_features", "03_privileged_directions", "04_concept_probing",
                 "05_pruning", "06_wiseft", "07_coca", "08_cka_layers", "09_summary", "10_forking", "11_diagnose"):
        page = built_book / "rendered" / f"{stem}.html"
        assert page.exists(), stem
        text = page.read_text()
        assert "Which run produced these numbers" in text, f"{stem} does not say which profile produced it"
        assert "Traceback" not in text, f"{stem} shows a traceback"
        if stem not in ("09_summary",):
            assert _parse(page).imgs, f"{stem} shows no figure"
    robustness = (built_book / "rendered" / "01_robustness.html").read_text()
    assert "untrained" in robustness  # the demo banner says what the numbers are
    assert "Table 1" in robustness and "Figure 1a" in robustness


def test_no_broken_internal_links_or_images(built_book):
    broken = []
    for page in built_book.rglob("*.html"):
        links = _parse(page)
        for ref in links.hrefs + links.imgs:
            url = urlparse(ref)
            if url.scheme or url.netloc or ref.startswith(("#", "mailto:", "javascript:")):
                continue
            target = (page.parent / unquote(url.path)).resolve()
            if url.path and not target.exists():
                broken.append(f"{page.relative_to(built_book)} -> {ref}")
    assert not broken, "broken internal links:\n" + "\n".join(broken[:20])


#: What an absolute machine path looks like in a page: the checkout's own root, a home or work
#: folder, or a cache/data folder written out in full.
ABSOLUTE = re.compile(r"(?<![\w.:/])/(?:work|home|tmp|Users|root|scratch|mnt)/[\w.-]+|[\w/]+/_(?:cache|data|results)/demo/")


def test_no_absolute_path_in_the_built_html(built_book):
    """A published page never shows where the book was built (checkpoints, data folders)."""
    found = []
    for page in sorted(built_book.rglob("*.html")):
        if "_static" in page.parts:
            continue
        text = page.read_text(errors="replace")
        hits = {m.group(0) for m in ABSOLUTE.finditer(text)} | ({str(REPO_ROOT)} if str(REPO_ROOT) in text else set())
        found += [f"{page.relative_to(built_book)}: {h}" for h in sorted(hits)]
    assert not found, "absolute paths in the book:\n" + "\n".join(found[:30])


def test_every_chapter_shows_the_paper_beside_this_run(built_book):
    """Each reproduced chapter tabulates the paper's claims with this run's count, and the summary
    reports how many paper numbers have a counterpart (the demo's stand-ins fill some)."""
    for stem in ("01_robustness", "02_outlier_features", "03_privileged_directions", "04_concept_probing",
                 "05_pruning", "06_wiseft", "07_coca", "08_cka_layers"):
        text = html.unescape((built_book / "rendered" / f"{stem}.html").read_text())
        assert "the paper's claim" in text, f"{stem} checks no claim of the paper"
        assert "paper" in text and "this run" in text, stem
    summary = html.unescape((built_book / "rendered" / "09_summary.html").read_text())
    m = re.search(r"counterparts: (\d+) of (\d+) paper numbers", summary)
    assert m, "the summary does not report its counterparts"
    assert int(m.group(1)) > 0 and int(m.group(2)) >= int(m.group(1))
    assert "untrained stand-in" in summary


def test_tables_have_no_index_and_no_raw_floats(built_book):
    """Results tables of the reproduction chapters (00-09): no bare 0..n index column, no 6-decimal
    floats, no "nan"."""
    bad = []
    for page in sorted((built_book / "rendered").glob("0*.html")):
        text = page.read_text()
        for table in re.findall(r"<table.*?</table>", text, re.S):
            if re.search(r">\s*-?\d+\.\d{6}\s*<", table):
                bad.append(f"{page.name}: raw float")
            if re.search(r">\s*nan\s*<", table):
                bad.append(f"{page.name}: nan")
            if 'class="row_heading' in table or "<th>0</th>" in table.replace(" ", ""):
                bad.append(f"{page.name}: index column")
    assert not bad, "\n".join(sorted(set(bad)))


def test_executed_notebooks_print_no_warning(built_book):
    """The book hides stderr (progress bars), so warnings are checked here instead."""
    import json

    from helpers.config import load_profile

    executed = load_profile("demo").results_dir / "executed"
    found = []
    for nb_path in sorted(executed.glob("*/all.ipynb")):
        for cell in json.loads(nb_path.read_text())["cells"]:
            for out in cell.get("outputs", []):
                text = "".join(out.get("text", ""))
                if out.get("output_type") == "stream" and ("Warning" in text or "warn(" in text):
                    found.append(f"{nb_path.parent.name}: {text.strip().splitlines()[0][:200]}")
    assert not found, "warnings printed while executing the book:\n" + "\n".join(found)
