"""The papermill runner on small notebooks: parameters reach them, a failing notebook is reported
while the others still run, an unchanged job is skipped, and submitit's local executor runs the
same path as Slurm."""
import json
import textwrap

import pytest

from helpers import runner
from helpers.config import load_profile
from tests.conftest import write_profile

HEADER = textwrap.dedent("""\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
        format_version: 0.13
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---
    """)


def _notebook(folder, name, body):
    path = folder / name
    path.write_text(HEADER + textwrap.dedent(body))
    return path


@pytest.fixture
def study(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    out = tmp_path / "seen"
    _notebook(nbdir, "01_echo.md", f"""
        # Echo

        ```{{code-cell}} ipython3
        :tags: [parameters]
        profile = "demo"  # profile
        entry = None  # entry id
        backbone = None  # backbone
        ```

        ```{{code-cell}} ipython3
        import json, pathlib
        pathlib.Path({str(out)!r}).mkdir(exist_ok=True)
        pathlib.Path({str(out)!r}, f"{{entry or backbone or 'all'}}.json").write_text(
            json.dumps({{"profile": profile, "entry": entry, "backbone": backbone}}))
        ```

        ```{{code-cell}} ipython3
        import matplotlib.pyplot as plt
        plt.plot([0, 1], [1, 0])
        plt.show()
        ```
        """)
    _notebook(nbdir, "02_broken.md", """
        # Broken

        ```{code-cell} ipython3
        :tags: [parameters]
        profile = "demo"  # profile
        ```

        ```{code-cell} ipython3
        raise RuntimeError("planted failure in section two")
        ```
        """)
    return load_profile(write_profile(tmp_path)), nbdir, out


def test_sections_are_named_in_paper_order(study):
    _, nbdir, _ = study
    assert list(runner.notebooks(nbdir)) == ["echo", "broken"]


def test_parameters_reach_the_notebook_and_failures_are_reported(study):
    P, nbdir, out = study
    jobs = runner.plan(P, notebook_dir=nbdir, per_entry=True)
    # a notebook that declares no slice parameter (broken) runs once, whatever the slice
    assert [j.name for j in jobs] == ["echo[m1]", "echo[m2]", "broken[all]"]
    assert "entry" not in jobs[2].parameters  # only declared parameters are passed
    summary = runner.run(jobs, echo=lambda *a: None)
    assert [o.status for o in summary.outcomes] == ["ran", "ran", "failed"]
    seen = json.loads((out / "m2.json").read_text())
    assert seen == {"profile": str(P.path), "entry": "m2", "backbone": None}
    # figures reach the executed notebook even when the caller runs headless (MPLBACKEND=Agg)
    assert "image/png" in (P.results_dir / "executed" / "echo" / "m1.ipynb").read_text()
    report = summary.report()
    assert "1 notebook(s) failed" in report and "planted failure in section two" in report
    # the failed notebook is kept for inspection, with the traceback in it
    failed = P.results_dir / "executed" / "broken" / "all.ipynb"
    assert "planted failure" in failed.read_text()


def test_unchanged_jobs_are_skipped_and_changes_rerun(study):
    P, nbdir, out = study
    jobs = runner.plan(P, sections=["echo"], notebook_dir=nbdir)
    assert runner.run(jobs, echo=lambda *a: None).outcomes[0].status == "ran"
    jobs = runner.plan(P, sections=["echo"], notebook_dir=nbdir)
    assert runner.run(jobs, echo=lambda *a: None).outcomes[0].status == "skipped"
    # a different slice, a changed notebook, and --force all run again
    assert runner.plan(P, sections=["echo"], backbone="RN50", notebook_dir=nbdir)[0].key != jobs[0].key
    md = nbdir / "01_echo.md"
    md.write_text(md.read_text() + "\n")
    assert runner.plan(P, sections=["echo"], notebook_dir=nbdir)[0].key != jobs[0].key
    assert runner.run(jobs, force=True, echo=lambda *a: None).outcomes[0].status == "ran"


def test_failed_job_is_not_marked_current(study):
    P, nbdir, _ = study
    jobs = runner.plan(P, sections=["broken"], notebook_dir=nbdir)
    runner.run(jobs, echo=lambda *a: None)
    assert not runner.is_current(jobs[0])
    assert runner.run(jobs, echo=lambda *a: None).outcomes[0].status == "failed"


def test_unknown_section_is_named(study):
    P, nbdir, _ = study
    with pytest.raises(KeyError, match="unknown section.*nope.*echo, broken"):
        runner.plan(P, sections=["nope"], notebook_dir=nbdir)


def test_submitit_local_executor_runs_the_slurm_path(study):
    P, nbdir, out = study
    jobs = runner.plan(P, notebook_dir=nbdir, entry="m1")
    summary = runner.run(jobs, executor="submitit-local", echo=lambda *a: None)
    assert [o.status for o in summary.outcomes] == ["ran", "failed"]
    assert json.loads((out / "m1.json").read_text())["entry"] == "m1"
    assert list((P.results_dir / "logs" / "submitit").glob("*_log.out"))
