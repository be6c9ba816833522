"""Serve MathJax from the built book itself, so equations typeset on air-gapped clusters.

`make mathjax` unpacks npm's ``mathjax@3`` into ``_vendor/mathjax`` (git-ignored). When that copy
exists, this extension adds ``_vendor`` to the static paths (Sphinx copies it to
``_build/html/_static/mathjax``) and points ``mathjax_path`` at it. When it is missing the build
stops with the command to run, unless ``offline_mathjax_cdn_fallback: true`` is set in
``_config.yml`` (``sphinx.config``), in which case the CDN default of Sphinx stays.
(The copy lives outside ``_static`` because Jupyter Book links every ``.js`` file under
``_static`` into every page.)
"""
from __future__ import annotations

from pathlib import Path

from sphinx.errors import ConfigError
from sphinx.util import logging

LOG = logging.getLogger(__name__)
ENTRY = "tex-chtml.js"


def _configure(app, config) -> None:
    vendor = Path(app.confdir) / config.offline_mathjax_dir
    if (vendor / "mathjax" / ENTRY).is_file():
        config.html_static_path = [*config.html_static_path, str(vendor)]
        config.mathjax_path = f"mathjax/{ENTRY}"
        return
    if config.offline_mathjax_cdn_fallback:
        LOG.info("offline_mathjax: no local MathJax under %s; pages load it from %s", vendor, config.mathjax_path)
        return
    raise ConfigError(f"MathJax is not in {vendor / 'mathjax'}: run `make mathjax` (npm's mathjax@3), "
                      "or set offline_mathjax_cdn_fallback: true under sphinx.config in _config.yml to load it from a CDN")


def setup(app):
    app.add_config_value("offline_mathjax_dir", "_vendor", "html")
    app.add_config_value("offline_mathjax_cdn_fallback", False, "html")
    app.connect("config-inited", _configure)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
