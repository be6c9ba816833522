"""``clip-study run --gpus`` survives faults: the real scheduler (helpers.workflow.runner.run with
``gpus``) on tiny notebooks standing in for jobs that die of a CUDA error, hang, or run out of
memory. A hung job is killed at the per-job time limit and failed; the device of a job that died of
a CUDA error gets no further job and is named in the summary; out of memory is not a device fault."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers.config import ConfigError, load_profile, run_setting
from helpers.workflow import runner
from test_slurm import NOTEBOOK as SLURM_NOTEBOOK

# the fake-Slurm notebook's front matter, then a body standing in for each fault
NOTEBOOK = SLURM_NOTEBOOK.split("# Tiny section")[0] + """
```{code-cell} ipython3
:tags: [parameters]
profile = "demo"
entry = None
```

```{code-cell} ipython3
import os, time
print("device", os.environ.get("CUDA_VISIBLE_DEVICES"), "entry", entry)
if entry == "fault":
    raise RuntimeError("CUDA error: an illegal memory access was encountered")
if entry == "hang":
    time.sleep(600)
if entry == "oom":
    raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
```
"""


def _jobs(tmp_path, ids):
    nb = tmp_path / "notebooks"
    nb.mkdir()
    (nb / "01_tiny.md").write_text(NOTEBOOK)
    raw = {"profile": "faults", "allow_random_init": True, "job_time_limit_minutes": 0.4,
           "paths": {"data_root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache"),
                     "results_dir": str(tmp_path / "results")},
           "datasets": {"imagenet": "{data_root}/imagenet/val"},
           "pool": [{"id": i, "arch": "RN50", "family": "supervised", "pretraining": "x", "model": "demo-RN50"}
                    for i in ids]}
    (tmp_path / "profile.yml").write_text(yaml.safe_dump(raw))
    P = load_profile(tmp_path / "profile.yml")
    return P, runner.plan(P, per_entry=True, notebook_dir=nb)


def _device_of(job) -> str:
    first = Path(job.log).read_text().splitlines()[0]
    return first.rsplit("CUDA_VISIBLE_DEVICES=", 1)[1]


def test_a_hung_job_is_killed_and_a_faulted_gpu_is_set_aside(tmp_path):
    P, jobs = _jobs(tmp_path, ["fault", "hang", "oom", "ok"])
    lines = []
    summary = runner.run(jobs, gpus=["0", "1"], echo=lines.append,
                         time_limit_s=60 * run_setting(P, "job_time_limit_minutes"))
    out = {o.job.slice: o for o in summary.outcomes}
    assert {k: o.status for k, o in out.items()} == {"fault": "failed", "hang": "failed", "oom": "failed", "ok": "ran"}
    assert out["hang"].error == "killed after the per-job time limit of 0.4 min (profile key job_time_limit_minutes)"
    assert 24 <= out["hang"].seconds < 60
    # device 0 ran the faulting job and nothing after it; out of memory did not set device 1 aside
    assert _device_of(out["fault"].job) == "0" and _device_of(out["hang"].job) == "1"
    assert _device_of(out["oom"].job) == "1" and _device_of(out["ok"].job) == "1"
    assert list(summary.set_aside) == ["0"]
    assert summary.set_aside["0"].startswith("tiny[fault]: ") and "CUDA error" in summary.set_aside["0"]
    report = summary.report()
    assert "GPU(s) set aside for the rest of the run after a CUDA error: 0 (tiny[fault]: " in report
    assert any(line.startswith("device 0 set aside for the rest of the run: tiny[fault] died of a CUDA error")
               for line in lines)


def test_when_every_gpu_faulted_the_rest_is_failed_unrun(tmp_path):
    _, jobs = _jobs(tmp_path, ["fault", "ok"])
    summary = runner.run(jobs, gpus=["7"], echo=lambda *_: None)
    out = {o.job.slice: o for o in summary.outcomes}
    assert out["fault"].status == "failed" and out["ok"].status == "failed"
    assert out["ok"].error == "not run: every device was set aside after a CUDA error (7)"
    assert not Path(out["ok"].job.log).exists()


@pytest.mark.parametrize("line, fault", [
    ("RuntimeError: CUDA error: an illegal memory access was encountered", True),
    ("RuntimeError: CUDA error: device-side assert triggered", True),
    ("RuntimeError: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm( handle, ...)`", True),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", False),
    ("RuntimeError: CUDA error: out of memory", False),
    ("ValueError: unknown entry", False),
    ('    raise RuntimeError("CUDA error: an illegal memory access")', False),  # source shown in a traceback
    ("tiny[x] failed: RuntimeError: CUDA error: unspecified launch failure", True),
])
def test_what_counts_as_a_device_fault(tmp_path, line, fault):
    job = runner.Job("s", "nb", "all", {}, "out", log=str(tmp_path / "missing.log"))
    assert (runner.cuda_fault(runner.Outcome(job, "failed", 0.0, line)) is not None) == fault
    assert runner.cuda_fault(runner.Outcome(job, "ran", 0.0, line)) is None


def test_the_time_limit_key_is_validated(tmp_path):
    from helpers.config import profile_path

    raw = yaml.safe_load(profile_path("demo").read_text())
    for bad in (0, -1, "ten"):
        (tmp_path / "p.yml").write_text(yaml.safe_dump({**raw, "job_time_limit_minutes": bad}))
        with pytest.raises(ConfigError, match="job_time_limit_minutes: expected a positive number of minutes"):
            load_profile(tmp_path / "p.yml")
    assert run_setting(load_profile("demo"), "job_time_limit_minutes") is None
