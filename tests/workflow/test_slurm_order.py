"""Slurm in dependency order (helpers.workflow.runner, executor='slurm'), under the fake Slurm of
test_slurm.py, whose sbatch holds a job with ``--dependency=afterok:...`` until its inputs completed:
the submitted dependency graph equals the sections' declared reads, and a failed input cancels its
readers with a message naming it."""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
import yaml

from helpers.config import load_profile
from helpers.workflow import runner
from test_slurm import NOTEBOOK, _scripts, fake_slurm, settled_states  # noqa: F401 (fixture)

SECTIONS = ("01_robustness", "07_coca", "09_summary")


@pytest.fixture
def jobs(tmp_path):
    nb = tmp_path / "notebooks"
    nb.mkdir()
    for stem in SECTIONS:
        section = stem.split("_", 1)[1]
        text = NOTEBOOK.replace('open_study("tiny"', f'open_study("{section}"').replace(
            "import os\n", f"import os\nif os.environ.get('FAIL_SECTION') == {section!r}:\n"
                           f"    raise RuntimeError('planted failure of {section}')\n")
        (nb / f"{stem}.md").write_text(text)
    raw = {"profile": "slurm-order", "allow_random_init": True,
           "paths": {"data_root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache"),
                     "results_dir": str(tmp_path / "results")},
           "datasets": {"imagenet": "{data_root}/imagenet/val"},
           "pool": [{"id": "m1", "arch": "ViT-B-32", "family": "supervised", "pretraining": "x",
                     "model": "demo-ViT-B-32"}]}
    (tmp_path / "profile.yml").write_text(yaml.safe_dump(raw))
    return runner.plan(load_profile(tmp_path / "profile.yml"), notebook_dir=nb)


def _submitted_graph(state: Path, jobs) -> dict[str, set[str]]:
    """section -> the sections of the jobs its sbatch script depends on (afterok)."""
    scripts = _scripts(state)
    folder = Path(jobs[0].log_dir) / "submitit"
    import pickle

    section_of = {i: pickle.loads((folder / f"{i}_submitted.pkl").read_bytes()).args[0]["section"] for i in scripts}
    graph = {}
    for i, text in scripts.items():
        m = re.search(r"^#SBATCH --dependency=afterok:([\d:]+)$", text, re.M)
        graph[section_of[i]] = {section_of[int(d)] for d in m.group(1).split(":")} if m else set()
    return graph


def test_readers_are_submitted_after_exactly_the_jobs_they_read(fake_slurm, jobs):
    lines = []
    summary = runner.run(jobs, executor="slurm", echo=lines.append, slurm={"slurm_partition": "gpu"})
    assert [o.status for o in summary.outcomes] == ["ran", "ran", "ran"], summary.report()
    graph = _submitted_graph(fake_slurm, jobs)
    # written out: coca reads robustness (the other two it reads are not in this run); summary reads
    # robustness and coca
    assert graph == {"robustness": set(), "coca": {"robustness"}, "summary": {"robustness", "coca"}}
    # and it is the declared reads restricted to the submitted sections
    here = {j.section for j in jobs}
    assert graph == {s: set(runner.READS.get(s, ())) & here for s in here}


def test_a_failed_input_cancels_its_readers_naming_it(fake_slurm, jobs, monkeypatch):
    monkeypatch.setenv("FAIL_SECTION", "robustness")
    lines = []
    summary = runner.run(jobs, executor="slurm", echo=lines.append, slurm={"slurm_partition": "gpu"})
    out = {o.job.section: o for o in summary.outcomes}
    assert out["robustness"].status == "failed" and "planted failure of robustness" in out["robustness"].error
    assert out["coca"].status == out["summary"].status == "failed"
    assert out["coca"].error == "cancelled: its input robustness[all] (job 4242) failed; fix that and run again"
    # summary reads both: the one that failed and the one cancelled in turn
    assert out["summary"].error.startswith("cancelled: its input robustness[all] (job 4242), coca[all] (job 4243)")
    # Slurm marked the notebook's job FAILED, and the readers were cancelled before they ran
    assert settled_states(fake_slurm) == {4242: "FAILED", 4243: "CANCELLED", 4244: "CANCELLED"}
    assert not Path(out["coca"].job.output).exists() and not Path(out["summary"].job.output).exists()
    assert "cancelled coca[all]: input robustness[all] (job 4242) failed" in lines


def test_submitit_local_waits_for_inputs_and_skips_readers_of_a_failed_one(jobs, monkeypatch):
    monkeypatch.setenv("FAIL_SECTION", "coca")
    summary = runner.run(jobs, executor="submitit-local", echo=lambda *_: None)
    assert [o.status for o in summary.outcomes] == ["ran", "failed", "failed"]
    assert summary.outcomes[2].error.startswith("cancelled: its input coca[all]")


def test_declared_reads_are_the_chapters_own_lists():
    from helpers.chapters import coca, diagnose, summary

    assert set(runner.READS["summary"]) == {s for _, s, _, _ in summary.CATALOGUE}
    assert runner.READS["diagnose"] == diagnose.POOL_SECTIONS
    loads = [n.args[1].value for n in ast.walk(ast.parse(inspect.getsource(coca)))
             if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "load" and len(n.args) > 1
             and isinstance(n.args[1], ast.Constant)]
    assert set(runner.READS["coca"]) == set(loads) and loads
