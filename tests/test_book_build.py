"""The build is a test: the demo book executes every notebook (papermill), renders with
`jupyter-book build -W -n --keep-going` (a warning fails), and a headless browser sees real pages:
no blank page, no missing image, no broken internal link."""
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from helpers.config import REPO_ROOT

pytestmark = pytest.mark.slow
HTML = REPO_ROOT / "_build" / "html"
BIN = Path(sys.executable).parent


def _run(*cmd, timeout=1800):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def built_book():
    """`make book` without make: demo data, every section, render, build with warnings as errors."""
    cli = [sys.executable, "-m", "helpers.cli"]
    _run(*cli, "demo-data", "--profile", "demo")
    _run(*cli, "prepare-demo", "--profile", "demo")
    _run(*cli, "run", "--profile", "demo")
    _run(*cli, "render", "--profile", "demo")
    _run(str(BIN / "jupyter-book"), "build", ".", "--builder", "html", "-W", "-n", "--keep-going")
    return HTML


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


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (make test installs it)")
@pytest.mark.parametrize("page", ["book/index.html", "rendered/01_robustness.html", "rendered/02_outlier_features.html"])
def test_browser_sees_a_real_page(built_book, page, tmp_path):
    from PIL import Image, ImageStat

    shot = tmp_path / "page.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600", "--hide-scrollbars",
                    f"--screenshot={shot}", (built_book / page).as_uri()],
                   check=True, capture_output=True, timeout=120)
    img = Image.open(shot).convert("L")
    stat = ImageStat.Stat(img)
    assert stat.stddev[0] > 10, f"{page} renders blank (pixel std {stat.stddev[0]:.1f})"
    # a rendered page has text and figures: many distinct grey levels, not a flat error page
    assert len(img.getcolors(maxcolors=256 * 256) or range(257)) > 50, f"{page} looks empty"


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
