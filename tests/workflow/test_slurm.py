"""The runner's Slurm branch (helpers.workflow.runner, executor='slurm', through submitit) against a fake
Slurm on PATH: ``sbatch``, ``srun``, ``sacct``, ``squeue`` and ``scancel`` are small scripts that
behave as submitit expects (read from submitit 1.5's slurm executor):

- ``sbatch FILE`` answers ``Submitted batch job N``, keeps a copy of FILE and runs it in the
  background with the SLURM_* variables a node would set (SLURM_JOB_ID, SLURM_NTASKS, ...);
- ``srun --unbuffered --output O --error E CMD...`` runs CMD with its output in O and E (``%j``,
  ``%t`` expanded), as the batch script's single step;
- ``sacct -o JobID,State,NodeList --parsable2 -j N ...`` prints the ``|``-separated table of the
  jobs' states (RUNNING, then COMPLETED or FAILED from the script's exit status);
- ``squeue`` lists nothing, ``scancel N`` marks N CANCELLED;
- a script with ``#SBATCH --dependency=afterok:A:B`` stays PENDING until A and B are COMPLETED, and
  for ever (until ``scancel``) when one of them is not.

The submitted script must carry the partition, GPUs, time and the job's command, and the job must
really run the notebook (papermill) inside the fake allocation.
"""
from __future__ import annotations

import os
import pickle
import re
import stat
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from helpers.workflow import runner
from helpers.config import load_profile

SBATCH = r'''
import os, re, shutil, subprocess, sys
state = os.environ["FAKE_SLURM_STATE"]
os.makedirs(state, exist_ok=True)
counter = os.path.join(state, "next_id")
job = int(open(counter).read()) if os.path.exists(counter) else 4242
open(counter, "w").write(str(job + 1))
script = sys.argv[-1]
# the job runs this copy, taken now, as Slurm does: submitit renames the file it passed as soon as
# sbatch answers, and a job started from the original path could find it gone (a race under load)
copy = os.path.join(state, f"sbatch-{job}.sh")
shutil.copy(script, copy)
with open(os.path.join(state, "sbatch-calls.txt"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")
status = os.path.join(state, f"{job}.state")


def replace_state(value):  # whole or not at all: a concurrent reader never sees an empty state
    open(status + ".tmp", "w").write(value)
    os.replace(status + ".tmp", status)


if os.environ.get("FAKE_SLURM_NODE_FAILS"):
    replace_state("NODE_FAIL")  # the node died before the job started: no result file
else:
    # --dependency=afterok:A:B: held PENDING until A and B completed; for ever if one did not
    # (Slurm's DependencyNeverSatisfied), until scancel
    deps = re.findall(r"^#SBATCH --dependency=afterok:([\d:]+)$", open(script).read(), re.M)
    deps = deps[0].split(":") if deps else []
    replace_state("PENDING" if deps else "RUNNING")
    env = dict(os.environ, SLURM_JOB_ID=str(job), SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0",
               SLURM_JOB_NODELIST="fake-node0", SLURM_PROCID="0", SLURM_LOCALID="0")
    # states are replaced whole (written beside, then renamed): a reader never sees an empty file,
    # which the hold loop would take for a failed dependency and never start the job
    put = lambda value: f"echo {value} > {status!r}.tmp && mv -f {status!r}.tmp {status!r}"
    hold = "".join(f"while :; do s=$(cat {os.path.join(state, d + '.state')!r}); case $s in COMPLETED) break;; "
                   f"PENDING|RUNNING|'') sleep 0.2;; *) exit 0;; esac; done; " for d in deps)
    hold += f"[ \"$(cat {status!r})\" = CANCELLED ] && exit 0; {put('RUNNING')}; "
    finish = hold + f"bash {copy!r}; rc=$?; if [ $rc = 0 ]; then s=COMPLETED; else s=FAILED; fi; {put('$s')}"
    subprocess.Popen(["bash", "-c", finish], env=env, start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"Submitted batch job {job}")
'''

SRUN = r'''
import os, sys
args, out, err = sys.argv[1:], None, None
while args and args[0].startswith("-"):
    flag = args.pop(0)
    if flag in ("--output", "-o"):
        out = args.pop(0)
    elif flag in ("--error", "-e"):
        err = args.pop(0)
    elif flag == "--unbuffered" or "=" in flag:
        pass
    else:
        args.pop(0)
expand = lambda p: p.replace("%j", os.environ["SLURM_JOB_ID"]).replace("%t", "0")
if out:
    fd = os.open(expand(out), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
if err:
    fd = os.open(expand(err), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 2)
os.execvp(args[0], args)
'''

SACCT = r'''
import os, sys
state = os.environ["FAKE_SLURM_STATE"]
with open(os.path.join(state, "sacct-calls.txt"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")
args = sys.argv[1:]
jobs = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
print("JobID|State|NodeList")
for job in jobs:
    path = os.path.join(state, f"{job}.state")
    s = open(path).read().strip() if os.path.exists(path) else "PENDING"
    print(f"{job}|{s}|fake-node0")
    print(f"{job}.batch|{s}|fake-node0")
'''

SQUEUE = r'''
print("JOBID PARTITION NAME USER ST TIME NODES NODELIST(REASON)")
'''

SCANCEL = r'''
import os, sys
state = os.environ["FAKE_SLURM_STATE"]
for job in sys.argv[1:]:
    path = os.path.join(state, f"{job}.state")
    open(path + ".tmp", "w").write("CANCELLED")
    os.replace(path + ".tmp", path)  # whole: the job's hold loop never reads an empty state
'''

NOTEBOOK = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Tiny section

```{code-cell} ipython3
:tags: [parameters]
profile = "demo"
entry = None
```

```{code-cell} ipython3
import os
from helpers.study import open_study
S = open_study("tiny", profile, entry=entry, show_banner=False)  # starts the job's provenance record
print("job", os.environ.get("SLURM_JOB_ID"), "node", os.environ.get("SLURM_JOB_NODELIST"), "entry", entry)
```

```{code-cell} ipython3
S.finish();  # the record the runner's up-to-date check reads
```
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir, state = tmp_path / "fake-slurm-bin", tmp_path / "fake-slurm-state"
    bin_dir.mkdir()
    for name, body in (("sbatch", SBATCH), ("srun", SRUN), ("sacct", SACCT), ("squeue", SQUEUE),
                       ("scancel", SCANCEL)):
        p = bin_dir / name
        p.write_text(f"#!{sys.executable}\n{body}")
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_STATE", str(state))
    # the job's python must import this checkout's helpers, as a cluster job would from its repo
    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    # submitit caches Slurm states per job id in one process-wide watcher, and finished jobs are
    # never asked again; the fake's ids restart at 4242 in every test, so an earlier test's
    # COMPLETED 4242 must not answer for this test's 4242 (a real cluster never reuses an id)
    from submitit.slurm.slurm import SlurmJob

    SlurmJob.watcher.clear()
    yield state
    SlurmJob.watcher.clear()


def settled_states(state: Path, timeout: float = 20.0) -> dict[int, str]:
    """Job id -> the fake Slurm's state, once no job reads RUNNING: the fake's batch script records
    the exit status just after submitit's result file, which the runner may have read already."""
    deadline = time.monotonic() + timeout
    while any(p.read_text().strip() == "RUNNING" for p in state.glob("*.state")) and time.monotonic() < deadline:
        time.sleep(0.1)
    return {int(p.stem): p.read_text().strip() for p in state.glob("*.state")}


@pytest.fixture
def jobs(tmp_path):
    nb = tmp_path / "notebooks"
    nb.mkdir()
    (nb / "01_tiny.md").write_text(NOTEBOOK)
    raw = {"profile": "slurm-test", "allow_random_init": True,
           "paths": {"data_root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache"),
                     "results_dir": str(tmp_path / "results")},
           "datasets": {"imagenet": "{data_root}/imagenet/val"},
           "pool": [{"id": "m1", "arch": "ViT-B-32", "family": "supervised", "pretraining": "x",
                     "model": "demo-ViT-B-32"},
                    {"id": "m2", "arch": "RN50", "family": "supervised", "pretraining": "x", "model": "demo-RN50"}]}
    (tmp_path / "profile.yml").write_text(yaml.safe_dump(raw))
    P = load_profile(tmp_path / "profile.yml")
    return runner.plan(P, sections=["tiny"], per_entry=True, notebook_dir=nb)


def _scripts(state: Path) -> dict[int, str]:
    return {int(re.search(r"sbatch-(\d+)\.sh", p.name).group(1)): p.read_text()
            for p in sorted(state.glob("sbatch-*.sh"))}


def test_slurm_jobs_carry_partition_gpus_time_and_run_the_notebook(fake_slurm, jobs):
    lines = []
    summary = runner.run(jobs, executor="slurm", echo=lines.append,
                         slurm={"slurm_partition": "gpu-a100", "gpus_per_node": 2, "timeout_min": 90})
    assert [o.status for o in summary.outcomes] == ["ran", "ran"], summary.report()
    scripts = _scripts(fake_slurm)
    assert sorted(scripts) == [4242, 4243]  # one sbatch per (section, entry)
    folder = Path(jobs[0].log_dir) / "submitit"
    for job_id, script in scripts.items():
        assert script.startswith("#!/bin/bash")
        flags = dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script, flags=re.M))
        assert flags["partition"] == "gpu-a100"
        assert flags["gpus-per-node"] == "2"
        assert flags["time"] == "90"
        # the runner's defaults for what was not given
        assert flags["cpus-per-task"] == "8" and flags["mem"] == "64GB" and flags["job-name"] == "clip-study"
        # the job's command: one srun step running submitit's entry point on this run's folder
        step = [line for line in script.splitlines() if line.startswith("srun ")]
        assert len(step) == 1 and f"-u -m submitit.core._submit {folder}" in step[0]
        assert sys.executable in step[0]
    # what each job runs: the pickled call of the runner on one job (section, slice, notebook)
    submitted = {}
    for job_id in scripts:
        delayed = pickle.loads((folder / f"{job_id}_submitted.pkl").read_bytes())
        assert delayed.function is runner._execute_for_submitit
        submitted[job_id] = delayed.args[0]
    assert {(j["section"], j["slice"], j["notebook"]) for j in submitted.values()} == \
        {(j.section, j.slice, j.notebook) for j in jobs}
    # the notebooks really ran inside the (fake) allocation, each with its own job id and entry
    import nbformat

    for job_id, job in submitted.items():
        nb = nbformat.read(job["output"], as_version=4)
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        assert f"job {job_id} node fake-node0 entry {job['slice']}" in text
        assert runner.is_current(runner.Job(**job))
    assert any("submitted 2 job(s)" in line for line in lines)
    assert any("ran tiny[m1] (job 424" in line for line in lines)
    # a second run finds both up to date and submits nothing
    again = runner.run(jobs, executor="slurm", echo=lines.append, slurm={"slurm_partition": "gpu-a100"})
    assert [o.status for o in again.outcomes] == ["skipped", "skipped"] and sorted(_scripts(fake_slurm)) == [4242, 4243]


def test_a_job_lost_by_slurm_is_reported_failed_with_its_state(fake_slurm, jobs, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_NODE_FAILS", "1")
    summary = runner.run(jobs[:1], executor="slurm", echo=lambda *_: None, slurm={"slurm_partition": "gpu"})
    (outcome,) = summary.outcomes
    assert outcome.status == "failed"
    assert "UncompletedJobError" in outcome.error and "NODE_FAIL" in outcome.error, outcome.error
    # sacct was asked about that job id
    assert "-j 4242" in (fake_slurm / "sacct-calls.txt").read_text()
    assert "tiny[m1]" in summary.report() and "1 notebook(s) failed" in summary.report()


def test_slurm_executor_refuses_a_machine_without_slurm(jobs, monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(RuntimeError, match='Could not detect "srun"'):
        runner.run(jobs[:1], executor="slurm", echo=lambda *_: None)


def test_unknown_executor_is_named():
    with pytest.raises(ValueError, match="unknown executor 'pbs': expected local, slurm or submitit-local"):
        runner.run([], executor="pbs")
