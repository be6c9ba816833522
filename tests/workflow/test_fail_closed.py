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


SLOW = """
    # Slow

    ```{{code-cell}} ipython3
    :tags: [parameters]
    profile = "demo"  # profile
    entry = None  # entry id
    backbone = None  # backbone
    ```

    ```{{code-cell}} ipython3
    import json, os, pathlib, time
    import psutil
    from helpers.study import open_study
    S = open_study("slow", profile, entry=entry, backbone=backbone, show_banner=False)
    log = pathlib.Path({log!r})
    earlier = [json.loads(line)["pid"] for line in log.read_text().splitlines()] if log.exists() else []
    alive = [p for p in earlier if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    with open(log, "a") as f:
        f.write(json.dumps({{"pid": os.getpid(), "alive": alive}}) + "\\n")
    time.sleep(8)
    for e in S.pool:
        S.record(e.id, {{"value": 1.0}})
    ```

    ```{{code-cell}} ipython3
    S.finish();
    ```
    """


def _gone(p) -> bool:
    import psutil

    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("sig,gpus", [("SIGKILL", None), ("SIGTERM", ["0", "1"]), ("SIGINT", None)])
def test_killing_the_runner_mid_job_ends_the_job_and_a_resume_never_runs_beside_it(tmp_path, sig, gpus):
    import signal
    import time

    import psutil

    from helpers.config import load_profile
    from tests.conftest import write_profile
    from tests.workflow.test_runner import _notebook

    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    log = tmp_path / "kernels.jsonl"
    _notebook(nbdir, "01_slow.md", SLOW.format(log=str(log)))
    prof = write_profile(tmp_path)
    P = load_profile(prof)
    code = (f"import pathlib\nfrom helpers.config import load_profile\nfrom helpers.workflow import runner\n"
            f"P = load_profile({str(prof)!r})\n"
            f"runner.run(runner.plan(P, notebook_dir=pathlib.Path({str(nbdir)!r})), gpus={gpus!r})\n")
    # SIGINT as a terminal delivers it: a test run started in the background (CI, `cmd &`) inherits
    # SIGINT ignored, and a Python started with it ignored never raises KeyboardInterrupt
    first = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().strip()):
        assert time.monotonic() < deadline and first.poll() is None, "the first run's job never started"
        time.sleep(0.2)
    job_procs = psutil.Process(first.pid).children(recursive=True)  # the job's process and its kernel
    assert len(job_procs) >= 2
    first.send_signal(getattr(signal, sig))
    first.wait(30)
    said = []
    out = runner.run(runner.plan(P, notebook_dir=nbdir), echo=said.append, gpus=gpus)  # resumed at once
    print(sig, gpus, said)
    assert [o.status for o in out.outcomes] == ["ran"], out.report()
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(runs) == 2 and runs[1]["alive"] == []  # the killed run's kernel was gone when the resume's started
    assert all(_gone(p) for p in job_procs)  # no orphan
    assert list(results.load(P, "slow").entry) == ["m1", "m2"]
    assert json.loads(provenance.record_path(P.results_dir, "slow", "all").read_text())["status"] == "complete"
    assert not (P.results_dir / ".tmp").exists()


def test_a_resumed_run_keeps_a_live_jobs_folder_and_clears_a_dead_ones(study):
    P, nbdir, _ = study
    [job] = runner.plan(P, sections=["echo"], notebook_dir=nbdir)
    live = P.results_dir / ".tmp" / "echo-all-live"
    live.mkdir(parents=True)
    (live / "job.json").write_text(json.dumps({"results_dir": job.results_dir, "section": "echo", "slice": "all"}))
    dead = P.results_dir / ".tmp" / "echo-all-dead"
    dead.mkdir()
    with runner.job_lock(job, echo=quiet):  # what a live job of a killed run holds
        with runner.run_lock(P.results_dir, echo=quiet):
            assert live.exists() and not dead.exists()
    with runner.run_lock(P.results_dir, echo=quiet):
        assert not live.exists()


def test_a_readme_or_licence_in_a_dataset_folder_changes_no_signature_but_an_image_does(tmp_path):
    from helpers.demo.fixtures import write_broden, write_imagenet, write_objectnet

    write_imagenet(tmp_path / "imagenet", "val", per_class=1, size=(40, 30))
    write_objectnet(tmp_path / "objectnet-1.0", per_class=1, size=(40, 30))
    write_broden(tmp_path / "broden1_224", n_images=4)
    roots = {"imagenet": tmp_path / "imagenet" / "val", "objectnet": tmp_path / "objectnet-1.0",
             "broden": tmp_path / "broden1_224"}
    before = {n: provenance.tree_signature(r) for n, r in roots.items()}
    for r in roots.values():
        (r / "README.md").write_text("how this copy was made")
        (r / "LICENSE").write_text("terms")
        sub = next(d for d in sorted(r.rglob("*")) if d.is_dir() and d.name != "mappings")
        (sub / "notes.txt").write_text("seen")
    assert {n: provenance.tree_signature(r) for n, r in roots.items()} == before
    lemmas = next((roots["objectnet"] / "mappings").glob("*.txt"), None)
    if lemmas is not None:  # a text file a loader does read still counts
        lemmas.write_text(lemmas.read_text() + "\n")
        assert provenance.tree_signature(roots["objectnet"]) != before["objectnet"]
    img = sorted(roots["imagenet"].rglob("*.JPEG"))[0]
    img.write_bytes(img.read_bytes()[:-10])
    assert provenance.tree_signature(roots["imagenet"]) != before["imagenet"]
