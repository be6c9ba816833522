"""Fail closed, as a user meets it: a misspelt parameter given to papermill directly is refused
before any work like ``clip-study run -p`` refuses it, a bad ``-p`` value is blamed on the ``-p``,
and a table is trusted only when a readable, complete record of its job vouches for its exact bytes
(a deleted, truncated or inconsistent record after a failed chapter leaves its rows out)."""
import json
import os
import subprocess
import sys

import jupytext
import nbformat
import pytest

from helpers.config import ConfigError
from helpers.study import provenance, results
from helpers.workflow import runner
from tests.conftest import REPO
from tests.workflow.test_runner import quiet, study  # noqa: F401 - the fixture

PAPERMILL = [sys.executable, "-m", "papermill"]


def _papermill(src, out, *params, env_extra=None):
    """The papermill command line a user types; returns (exit status, stderr)."""
    args = [a for k, v in params for a in ("-p", k, v)]
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    r = subprocess.run(PAPERMILL + [str(src), str(out), *args, "--no-progress-bar"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr


def test_papermill_refuses_a_misspelt_parameter_before_any_work_and_writes_no_record(study, tmp_path):
    P, nbdir, seen = study
    ipynb = tmp_path / "01_echo.ipynb"
    nbformat.write(jupytext.read(nbdir / "01_echo.md"), ipynb)
    rc, err = _papermill(ipynb, tmp_path / "out.ipynb", ("profile", str(P.path)), ("devce", "cuda"),
                         env_extra={provenance.NOTEBOOK_ENV: str(nbdir / "01_echo.md")})
    print(err[-600:])
    assert rc != 0
    assert ("ParameterError: unknown notebook parameter(s) 'devce'; parameters of 01_echo.md: "
            "backbone, entry, fail, profile") in err
    assert not seen.exists()  # the notebook's work did not start
    assert not (P.results_dir / "provenance").exists()  # no record, complete or not
    assert results.load(P, "echo").empty


def test_papermill_on_a_real_chapter_names_the_misspelt_parameter(tmp_path, tmp_profile):
    ipynb = tmp_path / "02_outlier_features.ipynb"
    nbformat.write(jupytext.read(REPO / "notebooks" / "02_outlier_features.md"), ipynb)
    rc, err = _papermill(ipynb, tmp_path / "out.ipynb", ("profile", str(tmp_profile)), ("devce", "cuda"))
    print(err[-600:])
    assert rc != 0
    assert ("unknown notebook parameter(s) 'devce'; parameters of 02_outlier_features.md: backbone, batch_size, "
            "data_root, device, entry, limit, num_workers, precision, profile, skip_unreadable") in err
    assert not (tmp_path / "results" / "provenance").exists()


def test_a_bad_value_is_blamed_on_the_parameter_that_gave_it(study, tmp_path):
    P, nbdir, _ = study
    job_nb = tmp_path / "01_bs.md"
    job_nb.write_text((nbdir / "01_echo.md").read_text().replace('fail = False  # fail after recording',
                                                                 'batch_size = None  # images per batch'))
    with pytest.raises(ConfigError, match=r"^-p batch_size: batch_size: expected a positive integer, got -3$"):
        runner.plan(P, notebook_dir=tmp_path, extra={"batch_size": -3})
    with pytest.raises(runner.ParameterError, match=r"^parameter 'batch_size': expected a finite number, got nan$"):
        runner.plan(P, notebook_dir=tmp_path, extra={"batch_size": float("nan")})
    # the same value through papermill: blamed on the notebook parameter, not on the profile file
    ipynb = tmp_path / "bs.ipynb"
    nbformat.write(jupytext.read(job_nb), ipynb)
    rc, err = _papermill(ipynb, tmp_path / "out.ipynb", ("profile", str(P.path)), ("batch_size", "-3"),
                         env_extra={provenance.NOTEBOOK_ENV: str(job_nb)})
    print(err[-400:])
    assert rc != 0 and "parameter batch_size: batch_size: expected a positive integer, got -3" in err


def _fail_after_success(P, nbdir):
    ok = runner.plan(P, sections=["echo"], notebook_dir=nbdir)
    assert runner.run(ok, echo=quiet).outcomes[0].status == "ran"
    bad = runner.plan(P, sections=["echo"], extra={"fail": True}, notebook_dir=nbdir)
    assert runner.run(bad, echo=quiet).outcomes[0].status == "failed"
    assert results.load(P, "echo").empty  # the stale tables are not trusted while the record says failed
    return ok[0], provenance.record_path(P.results_dir, "echo", "all")


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage"])
def test_a_damaged_record_after_a_failed_chapter_trusts_none_of_its_stale_rows(study, damage):
    P, nbdir, _ = study
    job, record = _fail_after_success(P, nbdir)
    text = record.read_text()
    if damage == "delete":
        record.unlink()
    elif damage == "truncate":
        record.write_text(text[:len(text) // 2])
    else:
        record.write_bytes(b"\x00\xff not json")
    assert results.load(P, "echo").empty
    assert list(results.status(P, "echo", ["m1", "m2"]).status) == ["unvouched", "unvouched"]
    assert runner.stale_reason(job) == "never ran"  # its job is due


def test_a_complete_record_vouching_for_other_bytes_trusts_nothing(study):
    P, nbdir, _ = study
    job = runner.plan(P, sections=["echo"], notebook_dir=nbdir)
    assert runner.run(job, echo=quiet).outcomes[0].status == "ran"
    assert list(results.load(P, "echo").entry) == ["m1", "m2"]
    table = results.table_path(P, "echo", "m1")
    table.write_text(table.read_text().replace("1.0", "7.0"))  # edited after its job completed
    assert list(results.load(P, "echo").entry) == ["m2"]
    st = results.status(P, "echo", ["m1", "m2"])
    assert list(st.status) == ["unvouched"] and list(st.job) == ["echo[all]"]
    assert runner.stale_reason(job[0]).startswith("table tables/echo/m1.csv changed")
    # and a complete record claiming tables the summary reads: the same check
    rec = json.loads(provenance.record_path(P.results_dir, "echo", "all").read_text())
    assert rec["status"] == "complete" and "tables/echo/m1.csv" in rec["tables_written"]
