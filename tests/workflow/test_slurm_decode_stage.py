"""The decode stage on Slurm (helpers.workflow.runner, executor='slurm'), under the fake Slurm of
test_slurm.py: one CPU-only job, submitted first, that every extraction job depends on
(``afterok``); a failed decode cancels them, naming it and the file; nothing to decode, no job."""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import yaml

from helpers.config import load_profile
from helpers.demo import fixtures
from helpers.workflow import runner
from test_slurm import NOTEBOOK, _scripts, fake_slurm, settled_states  # noqa: F401 (fixture)

POOL = [{"id": f"rn{i}", "arch": "RN50", "family": "supervised", "pretraining": "x", "model": "demo-RN50", "seed": i}
        for i in range(3)]


@pytest.fixture
def jobs(tmp_path):
    data = tmp_path / "data"
    fixtures.write_imagenet(data / "imagenet", "val", classes=fixtures.DEMO_CLASSES[:2], per_class=2, size=(120, 90))
    nb = tmp_path / "notebooks"
    nb.mkdir()
    for stem in ("01_robustness", "02_outlier_features", "07_coca"):
        (nb / f"{stem}.md").write_text(NOTEBOOK.replace('open_study("tiny"', f'open_study("{stem[3:]}"'))
    raw = {"profile": "slurm-decode", "allow_random_init": True, "num_workers": 2,
           "paths": {"data_root": str(data), "cache_dir": str(tmp_path / "cache"),
                     "results_dir": str(tmp_path / "results")},
           "datasets": {"imagenet": "{data_root}/imagenet/val"}, "pool": POOL}
    (tmp_path / "profile.yml").write_text(yaml.safe_dump(raw))
    return runner.plan(load_profile(tmp_path / "profile.yml"), notebook_dir=nb)


def _flags(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script, flags=re.M))


def _submitted(jobs, job_id: int):
    return pickle.loads((Path(jobs[0].log_dir) / "submitit" / f"{job_id}_submitted.pkl").read_bytes())


def test_the_decode_job_goes_first_without_gpus_and_every_extraction_waits_for_it(fake_slurm, jobs):
    lines = []
    summary = runner.run(jobs, executor="slurm", echo=lines.append,
                         slurm={"slurm_partition": "gpu", "gpus_per_node": 2, "decode_slurm_partition": "cpu"})
    assert [o.status for o in summary.outcomes] == ["ran", "ran", "ran"], summary.report()
    scripts = _scripts(fake_slurm)
    assert sorted(scripts) == [4242, 4243, 4244, 4245]
    decode = _flags(scripts[4242])
    assert _submitted(jobs, 4242).function is runner._decode_for_submitit
    assert decode["job-name"] == "clip-study-decode" and decode["partition"] == "cpu"  # decode_slurm_partition
    # no GPU asked for; the profile's two DataLoader workers and the main process
    assert not any("gpu" in k or "gres" in k for k in decode) and decode["cpus-per-task"] == "3"
    deps = {_submitted(jobs, i).args[0]["section"]: re.search(r"^#SBATCH --dependency=afterok:([\d:]+)$", s, re.M)
            for i, s in scripts.items() if i != 4242}
    assert deps["robustness"].group(1) == "4242" and deps["outlier_features"].group(1) == "4242"
    # coca reads no images: it waits for the two tables it reads, not for the decode
    assert deps["coca"].group(1) == "4243:4244"
    assert all(_flags(scripts[i])["gpus-per-node"] == "2" and _flags(scripts[i])["partition"] == "gpu"
               for i in scripts if i != 4242)
    assert any(line.startswith("submitted the decode stage (job 4242, CPU only, 3 CPU(s)): 1 store(s) to decode "
                               "for 2 extraction job(s)") for line in lines)
    # the stage ran in its job: the store is committed, its log says how long it took
    stores = list((Path(jobs[0].cache_dir) / "stores").glob("imagenet-224-bicubic-shortest-*/manifest.json"))
    assert len(stores) == 1
    log = Path(jobs[0].log_dir) / "submitit" / "4242_0_log.out"
    assert "decode stage [1/1] imagenet 224-bicubic-shortest: 4 images, decoded in " in log.read_text()
    # every store committed: a forced run submits no decode job
    again = runner.run(jobs[:1], executor="slurm", echo=lines.append, force=True, slurm={"slurm_partition": "gpu"})
    assert [o.status for o in again.outcomes] == ["ran"]
    (new,) = [s for i, s in _scripts(fake_slurm).items() if i not in scripts]
    assert _flags(new)["job-name"] == "clip-study" and "--dependency" not in new


def test_a_failed_decode_cancels_the_extraction_jobs_naming_it_and_the_file(fake_slurm, jobs):
    bad = sorted(Path(load_profile(jobs[0].effective["profile"]).dataset_root("imagenet")).rglob("*.JPEG"))[1]
    bad.write_bytes(b"not a jpeg")
    lines = []
    summary = runner.run(jobs, executor="slurm", echo=lines.append, slurm={"slurm_partition": "gpu"})
    out = {o.job.section: o for o in summary.outcomes}
    assert [o.status for o in summary.outcomes] == ["failed", "failed", "failed"]
    for section in ("robustness", "outlier_features"):
        error = out[section].error
        assert error.startswith("cancelled: its input decode stage (job 4242) failed (decode stage: no job started; "
                                "imagenet: 1 image(s) cannot be decoded"), error
        assert str(bad) in error and error.endswith("; fix that and run again")
    assert out["coca"].error == ("cancelled: its input robustness[all] (job 4243), outlier_features[all] (job 4244) "
                                 "failed; fix that and run again")
    assert settled_states(fake_slurm) == {4242: "FAILED", 4243: "CANCELLED", 4244: "CANCELLED", 4245: "CANCELLED"}
    assert not any(Path(j.output).exists() for j in jobs)  # no notebook ran
    assert any(line.startswith("decode stage failed (job 4242") and str(bad) in line for line in lines)


def test_submitit_local_decodes_first_and_skips_the_extractions_of_a_failed_decode(jobs):
    bad = sorted(Path(load_profile(jobs[0].effective["profile"]).dataset_root("imagenet")).rglob("*.JPEG"))[0]
    bad.write_bytes(b"")
    summary = runner.run(jobs, executor="submitit-local", echo=lambda *_: None)
    assert [o.status for o in summary.outcomes] == ["failed", "failed", "failed"]
    assert summary.outcomes[0].error.startswith("cancelled: its input decode stage (job ")
    assert str(bad) in summary.outcomes[0].error and "You can check full logs" not in summary.outcomes[0].error
    assert not any(Path(j.output).exists() for j in jobs)
