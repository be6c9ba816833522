"""The build is a test: the demo book executes every notebook (papermill), renders with
`jupyter-book build -W -n --keep-going` (a warning fails), and the pages hold what a reader needs: no
broken internal link, no absolute machine path, the paper's result beside this run's, tables without
raw pandas output.

Then every page as a reader's browser shows it (headless Chromium, the book served over HTTP as
GitHub Pages serves it): math typeset by the MathJax the book ships, every image decoded in a
numbered figure, no table wider than the text column and no cut cell, no code name in a table
header, every reproduction chapter with a displayed equation and its closing verdict, no blank page.
Screenshots of every page are kept under ``_build/screenshots/`` (CI uploads them as an artefact).

One file, so that one pytest-xdist worker (``make test``: ``--dist loadfile``) builds the book once
for all of these tests. Set ``CLIP_STUDY_BUILT_BOOK`` to a built ``_build/html`` to check it
without rebuilding.
"""
import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from helpers.config import REPO_ROOT

pytestmark = pytest.mark.slow
needs_chromium = pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                                    reason="headless Chromium is not installed (make test installs Debian's)")
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


# --------------------------------------------------------------------------------------------
# In a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = REPO_ROOT / "_build" / "screenshots"
SKIP_PAGES = {"genindex.html", "search.html"}

#: Chapters that reproduce a part of the paper: each ends with its verdict and shows an equation.
CHAPTERS = ("01_robustness", "02_outlier_features", "03_privileged_directions", "04_concept_probing",
            "05_pruning", "06_wiseft", "07_coca", "08_cka_layers")
#: A code name in a table header: snake_case words (importance_ratio, shifts_mean, er_percent).
CODE_NAME = re.compile(r"\b[a-z0-9]+(?:_[a-z0-9]+)+\b")

#: Injected into a copy of each page: once MathJax has typeset it, write what the reader sees.
PROBE = """<script>
window.addEventListener('load', function () {
  function report() {
    var article = document.querySelector('article') || document.body;
    var box = article.getBoundingClientRect();
    var tables = Array.from(article.querySelectorAll('table')).map(function (t) {
      var r = t.getBoundingClientRect();
      var cut = Array.from(t.querySelectorAll('td, th')).filter(function (c) {
        return c.scrollWidth > c.clientWidth + 1;
      }).map(function (c) { return c.innerText.slice(0, 40); });
      return {caption: (t.caption ? t.caption.innerText : t.innerText.slice(0, 60)),
              fits: r.right <= box.right + 2 && t.scrollWidth <= t.clientWidth + 1, cut: cut,
              headers: Array.from(t.querySelectorAll('thead th')).map(function (h) {
                // a profile key or path named in a code span is the reader's to type, not a code name
                var c = h.cloneNode(true);
                c.querySelectorAll('code').forEach(function (k) { k.remove(); });
                return c.textContent; })};
    });
    var images = Array.from(document.images).filter(function (i) { return i.closest('article'); })
      .map(function (i) {
        var fig = i.closest('figure');
        var cap = fig && fig.querySelector('figcaption');
        return {src: (i.getAttribute('src') || '').slice(0, 60), loaded: i.complete && i.naturalWidth > 0,
                numbered: !!(cap && cap.querySelector('.caption-number') && cap.innerText.trim().length > 12)};
      });
    var verdicts = article.querySelectorAll('div.admonition.verdict');
    var lastVerdict = verdicts.length ? verdicts[verdicts.length - 1] : null;
    var after = 0;
    if (lastVerdict) {
      var walker = document.createTreeWalker(article, NodeFilter.SHOW_ELEMENT);
      var seen = false, n;
      while ((n = walker.nextNode())) {
        if (n === lastVerdict) { seen = true; continue; }
        if (seen && !lastVerdict.contains(n) && /^(P|TABLE|FIGURE|IMG|PRE|H2|H3)$/.test(n.tagName)) { after++; }
      }
    }
    var text = article.innerText;
    var out = {mjx: document.querySelectorAll('mjx-container').length,
               display_math: article.querySelectorAll('mjx-container[display="true"]').length,
               math: article.querySelectorAll('.math').length,
               raw_tex: (text.match(/\\\\\\[|\\\\\\(|\\$\\$/g) || []).length,
               verdict: lastVerdict ? lastVerdict.querySelector('.admonition-title').innerText : null,
               after_verdict: after,
               tables: tables, images: images, chars: text.length};
    var pre = document.createElement('pre');
    pre.id = 'book-probe';
    pre.style.display = 'none';  // in the DOM dump, not in the screenshot taken in the same launch
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(report, report);
  } else { report(); }
});
</script>"""


@pytest.fixture(scope="module")
def server(built_book):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _pages(book: Path) -> list[Path]:
    return sorted(p for p in book.rglob("*.html") if not {"_static", "_sources", "_images"} & set(p.parts)
                  and p.name not in SKIP_PAGES and ".probe" not in p.name
                  and 'http-equiv="refresh"' not in p.read_text(errors="replace")[:2000].lower())  # the root redirect


def _chromium(*args, timeout=120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                               "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args],
                              capture_output=True, text=True, timeout=timeout)


def _probe(book: Path, server: str, page: Path, width: int = 1400, screenshot: Path | None = None) -> dict:
    """What the page shows at ``width`` px (the PROBE's report), and its screenshot in the same
    browser launch when ``screenshot`` is given."""
    copy = page.with_name(page.stem + f".probe{width}.html")
    copy.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    shot = [f"--screenshot={screenshot}"] if screenshot else []
    try:
        dom = _chromium(f"--window-size={width},2400", *shot, "--dump-dom",
                        f"{server}/{copy.relative_to(book).as_posix()}").stdout
    finally:
        copy.unlink()
    found = re.search(r'<pre id="book-probe"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, f"{page.relative_to(book)}: the probe did not run (no load event?)"

    return json.loads(html.unescape(found.group(1)))


def _page_problems(book: Path, server: str, page: Path) -> list[str]:
    """Every way ``page`` reads badly (see the test's docstring); its screenshot is kept."""
    from PIL import Image, ImageStat

    problems = []
    rel = page.relative_to(book).as_posix()
    shot = SCREENSHOTS / (rel.replace("/", "__").removesuffix(".html") + ".png")
    shot.unlink(missing_ok=True)
    r = _probe(book, server, page, screenshot=shot)
    text = page.read_text()
    if '<span class="math' in text or '<div class="math' in text:
        if r["mjx"] == 0:
            problems.append(f"{rel}: math present but not typeset (no mjx-container)")
    if r["raw_tex"]:
        problems.append(f"{rel}: {r['raw_tex']} raw TeX delimiters in the visible text")
    for img in r["images"]:
        if not img["loaded"]:
            problems.append(f"{rel}: image not decoded: {img['src']}")
        if not img["numbered"]:
            problems.append(f"{rel}: image outside a numbered, captioned figure: {img['src']}")
    for width, probe in ((1400, r), (1000, _probe(book, server, page, width=1000))):
        for t in probe["tables"]:
            if not t["fits"]:
                problems.append(f"{rel} at {width} px: table wider than the text column: {t['caption'][:60]!r}")
            if t["cut"]:
                problems.append(f"{rel} at {width} px: cell text cut in {t['caption'][:40]!r}: {t['cut'][:3]}")
    for t in r["tables"]:
        codes = [h for h in t["headers"] if CODE_NAME.search(h)]
        if codes:
            problems.append(f"{rel}: code names in the headers of {t['caption'][:40]!r}: {codes}")
    if Path(rel).stem in CHAPTERS:
        if not r["display_math"]:
            problems.append(f"{rel}: no displayed equation")
        if r["verdict"] != "What this run shows" or r["after_verdict"]:
            problems.append(f"{rel}: does not end with its verdict box (last: {r['verdict']!r}, "
                            f"{r['after_verdict']} elements after it)")
    if not shot.exists():
        return problems + [f"{rel}: no screenshot"]
    img = Image.open(shot).convert("L")
    if ImageStat.Stat(img).stddev[0] < 10 or r["chars"] < 200:
        problems.append(f"{rel}: renders blank")
    return problems


@needs_chromium
def test_every_page_reads_well_in_a_browser(built_book, server):
    """What a reader sees at 1400 px (and, for the tables, at 1000 px): math typeset, every image
    decoded and shown as a numbered, captioned figure, no table wider than the text column and no
    cell whose text is cut, no code name in a table header; each reproduction chapter shows a
    displayed equation and ends with its verdict box. Two pages at a time (a browser launch is
    mostly waiting on its own processes)."""
    from concurrent.futures import ThreadPoolExecutor

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages = _pages(built_book)
    assert len(pages) >= 15, f"only {len(pages)} pages in {built_book}"
    with ThreadPoolExecutor(2) as pool:
        problems = [p for found in pool.map(lambda page: _page_problems(built_book, server, page), pages) for p in found]
    assert not problems, "\n".join(problems)


def test_math_is_served_by_the_book(built_book):
    """MathJax comes from the build (book/_ext/offline_mathjax.py), not from a CDN."""
    page = (built_book / "rendered" / "01_robustness.html").read_text()
    assert "_static/mathjax/tex-chtml.js" in page and "cdn.jsdelivr" not in page
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert (built_book / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
