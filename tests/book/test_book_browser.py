"""Every page of the built book as a reader's browser shows it (headless Chromium, the book served
over HTTP as GitHub Pages serves it): math typeset by the MathJax the book ships, every image
decoded in a numbered figure, no table wider than the text column and no cut cell, no code name in
a table header, every reproduction chapter with a displayed equation and its closing verdict, no
blank page. Screenshots of
every page are kept under ``_build/screenshots/`` (CI uploads them as an artefact).

Set ``CLIP_STUDY_BUILT_BOOK`` to a built ``_build/html`` to check it without rebuilding."""
import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from helpers.config import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("book"),
              pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                                 reason="headless Chromium is not installed (make test installs Debian's)")]
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
def book(demo_prepared):
    given = os.environ.get("CLIP_STUDY_BUILT_BOOK")
    if given:
        return Path(given).resolve()
    from test_book_build import build_book

    return build_book()


@pytest.fixture(scope="module")
def server(book):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(book))
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


def test_every_page_reads_well_in_a_browser(book, server):
    """What a reader sees at 1400 px (and, for the tables, at 1000 px): math typeset, every image
    decoded and shown as a numbered, captioned figure, no table wider than the text column and no
    cell whose text is cut, no code name in a table header; each reproduction chapter shows a
    displayed equation and ends with its verdict box. Two pages at a time (a browser launch is
    mostly waiting on its own processes)."""
    from concurrent.futures import ThreadPoolExecutor

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages = _pages(book)
    assert len(pages) >= 15, f"only {len(pages)} pages in {book}"
    with ThreadPoolExecutor(2) as pool:
        problems = [p for found in pool.map(lambda page: _page_problems(book, server, page), pages) for p in found]
    assert not problems, "\n".join(problems)


def test_math_is_served_by_the_book(book):
    """MathJax comes from the build (book/_ext/offline_mathjax.py), not from a CDN."""
    page = (book / "rendered" / "01_robustness.html").read_text()
    assert "_static/mathjax/tex-chtml.js" in page and "cdn.jsdelivr" not in page
    assert (book / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert (book / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
