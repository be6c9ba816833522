"""Provenance follows the code a job runs: a comment or docstring edit leaves a job up to date, an
edit to a module the job never imports too, and a change to code it runs makes it due.

The job test runs the runner of a copy of ``helpers`` (edited there, never here) on a tiny notebook,
in a child process whose ``PYTHONPATH`` starts at the copy."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from helpers.study.provenance import module_code_digest
from tests.conftest import REPO, write_profile
from tests.workflow.test_runner import _notebook

MODULE = '''\
"""A module docstring."""
import math


class Scale:
    """A class docstring."""

    factor = 2.0

    def apply(self, x):
        """A method docstring."""
        return x * self.factor  # a comment


async def later(x):
    """An async docstring."""
    return math.sqrt(x)


def label():
    return "a string that is not a docstring"
'''

SAME_CODE = {
    "comments": MODULE.replace("# a comment", "# another comment, longer") + "# a trailing comment\n",
    "docstrings": MODULE.replace('"""A module docstring."""', '"""Rewritten,\n\nover three lines."""')
                        .replace("A class docstring.", "Another class docstring.")
                        .replace("A method docstring.", "Another method docstring.")
                        .replace("An async docstring.", "Another async docstring."),
    "blank lines and wrapping": MODULE.replace("        return x * self.factor",
                                               "\n\n        return (x *\n                self.factor)"),
}
OTHER_CODE = {
    "a constant": MODULE.replace("factor = 2.0", "factor = 3.0"),
    "an operator": MODULE.replace("x * self.factor", "x / self.factor"),
    "a string that is a value": MODULE.replace("that is not a docstring", "that is a value"),
    "a docstring turned into code": MODULE.replace('        """A method docstring."""\n', "        x = -x\n"),
    "a statement removed": MODULE.replace("import math\n", ""),
}


@pytest.mark.parametrize("edit", SAME_CODE)
def test_a_comment_docstring_or_layout_edit_keeps_the_code_digest(tmp_path, edit):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text(MODULE)
    b.write_text(SAME_CODE[edit])
    assert a.read_bytes() != b.read_bytes()
    assert module_code_digest(a) == module_code_digest(b)


@pytest.mark.parametrize("edit", OTHER_CODE)
def test_a_code_edit_changes_the_code_digest(tmp_path, edit):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text(MODULE)
    b.write_text(OTHER_CODE[edit])
    assert module_code_digest(a) != module_code_digest(b)


def test_a_file_that_does_not_parse_is_digested_by_its_bytes(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def broken(:\n")
    b.write_text("def broken(:\n# comment\n")
    assert module_code_digest(a) != module_code_digest(b)


TINY = """
    # Tiny

    ```{code-cell} ipython3
    :tags: [parameters]
    profile = "demo"  # profile
    ```

    ```{code-cell} ipython3
    from helpers.metrics import robustness
    from helpers.study import open_study
    S = open_study("tiny", profile, show_banner=False)
    S.record("all", {"ratio": float(robustness.accuracy_ratio(0.4, 0.8)), "slope": robustness.PAPER_SLOPE})
    ```

    ```{code-cell} ipython3
    S.finish();
    ```
    """

# In the child: plan the job, say why it is due (or null), run it, print both as JSON.
RUN = textwrap.dedent("""\
    import json, sys
    from pathlib import Path
    from helpers.config import load_profile
    from helpers.workflow import runner
    jobs = runner.plan(load_profile(sys.argv[1]), notebook_dir=Path(sys.argv[2]))
    reasons = [runner.stale_reason(j) for j in jobs]
    out = runner.run(jobs, echo=lambda *a: None)
    print(json.dumps({"reasons": reasons, "status": [o.status for o in out.outcomes], "report": out.report()}))
    """)


@pytest.mark.slow
def test_a_job_reruns_only_when_code_it_runs_changes(tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(REPO / "helpers", root / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _notebook(nbdir, "01_tiny.md", TINY)
    profile = write_profile(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(root))

    def run():
        child = subprocess.run([sys.executable, "-c", RUN, str(profile), str(nbdir)], cwd=root, env=env,
                               capture_output=True, text=True, timeout=300)
        assert child.returncode == 0, child.stderr[-3000:]
        got = json.loads(child.stdout.strip().splitlines()[-1])
        assert "failed" not in got["status"], got["report"]
        return got["reasons"][0], got["status"][0]

    def edit(rel, old, new):
        path = root / "helpers" / rel
        text = path.read_text()
        assert old in text, (rel, old)
        path.write_text(text.replace(old, new, 1))

    assert run() == ("never ran", "ran")
    record = json.loads((tmp_path / "results" / "provenance" / "tiny" / "all.json").read_text())
    modules = set(record["modules"])
    assert {"helpers.metrics.robustness", "helpers.study", "helpers.config"} <= modules
    # the job builds no model: the engine and model modules (torch, open_clip) are not among its inputs
    assert not {m for m in modules if m.startswith(("helpers.models", "helpers.engine", "helpers.training"))}
    assert run() == (None, "skipped")

    edit("metrics/robustness.py", '"""logit^{-1}, the logistic sigmoid."""',
         '"""The logistic sigmoid,\n    logit^{-1}: a docstring rewritten over two lines."""  # and a comment')
    edit("metrics/robustness.py", "\ndef logit(p):", "\n# a comment above a function\n\ndef logit(p):")
    edit("study/results.py", '"""Results tables:', '"""The results tables (docstring edited):')
    assert run() == (None, "skipped")

    edit("models/loading.py", "\nimport numpy as np\n", "\nimport numpy as np\n\nNEVER_IMPORTED_BY_THE_JOB = 1\n")
    edit("engine/extract.py", "\nimport numpy as np\n", "\nimport numpy as np\n\nNEVER_IMPORTED_BY_THE_JOB = 1\n")
    assert run() == (None, "skipped")

    edit("metrics/robustness.py", "PAPER_SLOPE = 0.76", "PAPER_SLOPE = 0.75")
    assert run() == ("module helpers.metrics.robustness changed", "ran")
    assert run() == (None, "skipped")
