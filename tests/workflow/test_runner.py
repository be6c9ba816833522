"""The papermill runner on small notebooks: parameters reach them, a failing notebook is reported
while the others still run and its stale tables are not trusted, an unchanged job is skipped (also
after a plain papermill run), unknown parameters are refused before any job starts, jobs spread over
devices, the console stays quiet and each job has a log, and submitit's local executor runs the same
path as Slurm."""
import json
import os
import textwrap
import threading
import time
import uuid

import pytest

from helpers.study import provenance
from helpers.study import results
from helpers.workflow import runner
from helpers.config import REPO_ROOT, load_profile
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


def quiet(*a):
    pass


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
        fail = False  # fail after recording
        ```

        ```{{code-cell}} ipython3
        import json, os, pathlib, sys
        from helpers.study import open_study
        S = open_study("echo", profile, entry=entry, backbone=backbone, show_banner=False)
        pathlib.Path({str(out)!r}).mkdir(exist_ok=True)
        pathlib.Path({str(out)!r}, f"{{entry or backbone or 'all'}}.json").write_text(
            json.dumps({{"profile": profile, "entry": entry, "backbone": backbone,
                        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}}))
        for e in S.pool:
            S.record(e.id, {{"value": 1.0}})
        print("progress line to stderr", file=sys.stderr)
        if fail:
            raise RuntimeError("planted failure after recording")
        ```

        ```{{code-cell}} ipython3
        import matplotlib.pyplot as plt
        plt.plot([0, 1], [1, 0])
        plt.show()
        ```

        ```{{code-cell}} ipython3
        S.finish();
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
    summary = runner.run(jobs, echo=quiet)
    assert [o.status for o in summary.outcomes] == ["ran", "ran", "failed"]
    seen = json.loads((out / "m2.json").read_text())
    assert {k: seen[k] for k in ("profile", "entry", "backbone")} == {"profile": str(P.path), "entry": "m2",
                                                                      "backbone": None}
    # figures reach the executed notebook even when the caller runs headless (MPLBACKEND=Agg)
    assert "image/png" in (P.results_dir / "executed" / "echo" / "m1.ipynb").read_text()
    report = summary.report()
    assert "1 notebook(s) failed" in report and "planted failure in section two" in report
    # the failed notebook is kept for inspection, with the traceback in it
    failed = P.results_dir / "executed" / "broken" / "all.ipynb"
    assert "planted failure" in failed.read_text()
    assert provenance.read_record(P.results_dir / "provenance" / "broken" / "all.json")["status"] == "failed"


def test_unchanged_jobs_are_skipped_and_changes_rerun(study):
    P, nbdir, out = study
    jobs = runner.plan(P, sections=["echo"], notebook_dir=nbdir)
    assert runner.run(jobs, echo=quiet).outcomes[0].status == "ran"
    jobs = runner.plan(P, sections=["echo"], notebook_dir=nbdir)
    assert runner.stale_reason(jobs[0]) is None
    assert runner.run(jobs, echo=quiet).outcomes[0].status == "skipped"
    # the record says what the job read: its notebook's code, parameters, profile and modules
    rec = json.loads(jobs[0].record and open(jobs[0].record).read())
    assert rec["status"] == "complete" and rec["parameters"]["entry"] is None
    assert "helpers.study" in rec["modules"] and "helpers.workflow.runner" not in rec["modules"]
    assert rec["tables_written"] == {f"tables/echo/{e}.csv": provenance.scan_tables(P.results_dir, "echo", [e])[0]["sha256"]
                                     for e in ("m1", "m2")}
    # a different slice, a changed notebook, a changed parameter and --force all run again
    assert runner.stale_reason(runner.plan(P, sections=["echo"], backbone="RN50", notebook_dir=nbdir)[0]) == "never ran"
    assert runner.stale_reason(runner.plan(P, sections=["echo"], extra={"fail": False}, notebook_dir=nbdir)[0]) is None
    md = nbdir / "01_echo.md"
    md.write_text(md.read_text().replace("plt.plot([0, 1], [1, 0])", "plt.plot([0, 1], [0, 1])"))
    assert runner.stale_reason(runner.plan(P, sections=["echo"], notebook_dir=nbdir)[0]) == "notebook changed"
    assert runner.run(jobs, force=True, echo=quiet).outcomes[0].status == "ran"


def test_record_checks_each_input(study):
    P, nbdir, _ = study
    jobs = runner.plan(P, sections=["echo"], notebook_dir=nbdir)
    runner.run(jobs, echo=quiet)
    path = jobs[0].record
    good = json.loads(open(path).read())
    for edit, reason in [
        (lambda r: r["modules"]["helpers.study"].update(code_sha256="0" * 64), "module helpers.study changed"),
        (lambda r: r["profile"].update(digest="x"), "profile changed"),
        (lambda r: r["parameters"].update(entry="m1"), "parameters changed (entry)"),
        (lambda r: r.update(status="running"), "last run running"),
    ]:
        r = json.loads(json.dumps(good))
        edit(r)
        provenance.write_record(path, r)
        assert runner.stale_reason(jobs[0]) == reason
    provenance.write_record(path, good)
    assert runner.stale_reason(jobs[0]) is None
    # a table the job wrote, overwritten by someone else: the job is out of date
    (P.results_dir / "tables" / "echo" / "m1.csv").write_text("profile,section,entry,value\ntmp,echo,m1,2.0\n")
    assert "tables/echo/m1.csv changed" in runner.stale_reason(jobs[0])


def test_a_new_unused_helpers_module_leaves_jobs_up_to_date(study):
    P, nbdir, _ = study
    jobs = runner.plan(P, sections=["echo"], notebook_dir=nbdir)
    runner.run(jobs, echo=quiet)
    extra = REPO_ROOT / "helpers" / f"_test_fork_utils_{uuid.uuid4().hex[:8]}.py"
    try:
        extra.write_text("")
        assert runner.stale_reason(runner.plan(P, sections=["echo"], notebook_dir=nbdir)[0]) is None
    finally:
        extra.unlink()


def test_a_plain_papermill_run_records_the_same_provenance(study, monkeypatch):
    import jupytext
    import nbformat
    import papermill

    P, nbdir, _ = study
    job = runner.plan(P, sections=["echo"], notebook_dir=nbdir)[0]
    ipynb = nbdir / "01_echo.ipynb"
    nbformat.write(jupytext.read(nbdir / "01_echo.md"), ipynb)
    # outside the repository the kernel cannot find the MyST source by section name: say where it is
    monkeypatch.setenv(provenance.NOTEBOOK_ENV, str(nbdir / "01_echo.md"))
    papermill.execute_notebook(str(ipynb), str(nbdir / "out.ipynb"), parameters={"profile": str(P.path)},
                               kernel_name="python3", progress_bar=False)
    # up to date means renderable: the record is current, but the notebook is not where render reads it
    assert runner.stale_reason(job) == (f"no executed notebook at {job.output} for the book (a direct papermill run "
                                        "wrote its own elsewhere)")
    from helpers.workflow import book

    assert book.adopt(P, nbdir / "out.ipynb") == __import__("pathlib").Path(job.output)
    assert runner.stale_reason(job) is None
    assert runner.run([job], echo=quiet).outcomes[0].status == "skipped"


def test_failed_job_is_not_current_and_its_stale_tables_are_not_read(study):
    P, nbdir, _ = study
    ok = runner.plan(P, sections=["echo"], notebook_dir=nbdir)
    runner.run(ok, echo=quiet)
    assert list(results.load(P, "echo").entry) == ["m1", "m2"]
    # the same job fails after rewriting its tables: they are stale, and nothing reads them
    bad = runner.plan(P, sections=["echo"], extra={"fail": True}, notebook_dir=nbdir)
    assert runner.run(bad, echo=quiet).outcomes[0].status == "failed"
    assert not runner.is_current(bad[0]) and not runner.is_current(ok[0])
    assert results.load(P, "echo").empty
    st = results.status(P, "echo", ["m1", "m2", "m3"])
    assert list(st.status) == ["failed", "failed", "missing"] and set(st.job[:2]) == {"echo[all]"}
    assert runner.run(bad, echo=quiet).outcomes[0].status == "failed"


def test_a_first_run_that_fails_after_writing_leaves_no_trusted_table(study):
    P, nbdir, _ = study
    bad = runner.plan(P, sections=["echo"], entry="m1", extra={"fail": True}, notebook_dir=nbdir)
    assert runner.run(bad, echo=quiet).outcomes[0].status == "failed"
    assert (P.results_dir / "tables" / "echo" / "m1.csv").exists()
    assert results.load(P, "echo").empty
    assert list(results.status(P, "echo", ["m1"]).status) == ["failed"]


def test_unknown_parameter_is_refused_before_any_job(study):
    P, nbdir, out = study
    with pytest.raises(runner.ParameterError, match=r"'devce'.*01_echo.md: backbone, entry, fail, profile"):
        runner.plan(P, sections=["echo"], extra={"devce": "cuda"}, notebook_dir=nbdir)
    assert not out.exists()


def test_empty_slice_says_why(study):
    P, nbdir, _ = study
    with pytest.raises(KeyError, match="entry 'm1' has backbone 'RN50', not 'ViT-B-32'"):
        runner.plan(P, entry="m1", backbone="ViT-B-32", notebook_dir=nbdir)


def test_unknown_section_is_named(study):
    P, nbdir, _ = study
    with pytest.raises(KeyError, match="unknown section.*nope.*echo, broken"):
        runner.plan(P, sections=["nope"], notebook_dir=nbdir)


def test_gpus_give_each_job_its_device_and_a_log(study):
    P, nbdir, out = study
    jobs = runner.plan(P, sections=["echo"], per_entry=True, notebook_dir=nbdir)
    summary = runner.run(jobs, gpus=["3", "5"], echo=quiet)
    assert [o.status for o in summary.outcomes] == ["ran", "ran"]
    devices = {json.loads((out / f"{e}.json").read_text())["cuda"] for e in ("m1", "m2")}
    assert devices <= {"3", "5"} and None not in devices
    for e in ("m1", "m2"):
        log = (P.results_dir / "logs" / "echo" / f"{e}.log").read_text()
        assert "progress line to stderr" in log and "Executing Cell" in log


def test_console_is_quiet_and_the_log_keeps_everything(study):
    P, nbdir, _ = study
    lines = []
    jobs = runner.plan(P, sections=["echo"], notebook_dir=nbdir)
    runner.run(jobs, echo=lines.append)
    shown = "\n".join(lines)
    assert "progress line to stderr" in shown and "cell 2/5" in shown  # progress reaches the terminal
    # code cells counted as such (4 and papermill's parameters cell; the markdown title is not one)
    assert "cell 5/5" in shown and "cell 6/" not in shown
    assert not runner.QUIET.search(shown)
    log = (P.results_dir / "logs" / "echo" / "all.log").read_text()
    assert "Executing Cell 4" in log
    # kernel notices are kept out of the console (lines as the kernel and papermill print them)
    console = runner._Console("x", lines.append, 3)
    n = len(lines)
    for text in ("[IPKernelApp] WARNING | Kernel is running over TCP without encryption. Anyone ...",
                 "Unable to parse line 4 'n_classes = 512 # K'.", "KeyboardInterrupt caught in kernel"):
        console.line(text, final=True)
    assert len(lines) == n
    # a second, fully up-to-date run prints one line per job and no warning
    again = []
    runner.run(runner.plan(P, sections=["echo"], notebook_dir=nbdir), echo=again.append)
    assert again == ["up to date  echo[all]"]
    assert not (P.results_dir / ".tmp").exists()


def test_a_second_run_on_the_same_results_waits(study):
    P, _, _ = study
    said = []
    order = []
    with runner.run_lock(P.results_dir, echo=said.append):
        def second():
            with runner.run_lock(P.results_dir, echo=said.append):
                order.append("second")
        t = threading.Thread(target=second)
        t.start()
        for _ in range(200):
            if said:
                break
            time.sleep(0.05)
        order.append("first done")
    t.join()
    assert order == ["first done", "second"]
    assert said and said[0].startswith("waiting: another clip-study run (pid ")


def test_interrupted_runs_leave_no_temporary_folders(study):
    P, nbdir, _ = study
    left = P.results_dir / ".tmp" / "echo-all-deadbeef"
    left.mkdir(parents=True)
    runner.run(runner.plan(P, sections=["echo"], notebook_dir=nbdir), echo=quiet)
    assert not (P.results_dir / ".tmp").exists()


def test_submitit_local_executor_runs_the_slurm_path(study):
    P, nbdir, out = study
    jobs = runner.plan(P, notebook_dir=nbdir, entry="m1")
    summary = runner.run(jobs, executor="submitit-local", echo=quiet)
    assert [o.status for o in summary.outcomes] == ["ran", "failed"]
    assert json.loads((out / "m1.json").read_text())["entry"] == "m1"
    assert list((P.results_dir / "logs" / "submitit").glob("*_log.out"))
    assert (P.results_dir / "logs" / "echo" / "m1.log").exists()


def test_cli_refuses_an_unknown_parameter_naming_it(capsys):
    from helpers.workflow import cli

    assert cli.main(["run", "--profile", "demo", "-p", "devce=cuda"]) == 2
    err = capsys.readouterr().err
    assert "'devce'" in err and "device" in err and "batch_size" in err


def test_cli_lists_the_slice_options_and_explains_an_empty_slice(capsys):
    from helpers.workflow import cli

    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = capsys.readouterr().out
    assert "robustness" in out and "summary" in out and "ViT-B-32: demo-vit-zeroshot" in out
    assert cli.main(["run", "--entry", "demo-rn-zeroshot", "--backbone", "ViT-B-32"]) == 2
    assert "has backbone 'RN50', not 'ViT-B-32'" in capsys.readouterr().err


def test_cli_passes_skip_unreadable_and_gpus(monkeypatch):
    import sys

    from helpers.workflow import cli

    from helpers.workflow import preflight

    seen = {}
    # the run's own checks (clip-study plan's) are tested in test_preflight.py: here a ready slice
    monkeypatch.setattr(preflight, "check", lambda P, **kw: preflight.Report(P))
    monkeypatch.setattr(runner, "plan", lambda P, **kw: seen.update(kw) or [])
    monkeypatch.setattr(runner, "run", lambda jobs, **kw: seen.update(kw) or runner.RunSummary())
    assert cli.main(["run", "--skip-unreadable", "--gpus", "0,1", "-p", "limit=8"]) == 0
    assert seen["extra"] == {"skip_unreadable": True, "limit": 8} and seen["gpus"] == ["0", "1"]


def test_run_refuses_a_slice_the_plan_finds_would_fail(monkeypatch, capsys):
    """`clip-study run` runs `clip-study plan`'s checks first and starts no job when they fail."""
    from helpers.workflow import cli
    from helpers.workflow import preflight

    def check(P, **kw):
        return preflight.Report(P, problems=["datasets.objectnet: folder /nowhere does not exist"],
                                pending=["produced by: clip-study finetune --profile demo --entry x"])

    monkeypatch.setattr(preflight, "check", check)
    monkeypatch.setattr(runner, "run", lambda jobs, **kw: pytest.fail("a job was started"))
    assert cli.main(["run", "--section", "robustness"]) == 2
    err = capsys.readouterr().err
    assert "not started" in err and "folder /nowhere does not exist" in err and "clip-study finetune" in err


def test_the_banner_follows_the_declared_kind(study):
    from dataclasses import fields, replace

    from helpers.study import banner_text

    P, _, _ = study

    def kind(k):  # the profile key `kind` (the Profile field too, where config.py declares one)
        return replace(P, raw={**P.raw, "kind": k}, **({"kind": k} if "kind" in {f.name for f in fields(P)} else {}))

    assert P.allow_random_init
    assert "Profile `demo`" not in banner_text(kind("paper"), list(P.pool))  # random weights, full size
    assert "carry no meaning" in banner_text(kind("demo"), list(P.pool))
    assert "smoke test" in banner_text(kind("smoke"), list(P.pool))
