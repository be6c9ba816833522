import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# Imported at collection, once: profile validation imports open_clip lazily (seconds, with its CoCa
# module), and `make mutate` forks every mutant's test run from the collected process, so a lazy
# import would be paid once per mutant instead of once per run.
import open_clip  # noqa: E402,F401

# Under pytest-xdist (make test: two workers on two cores) each worker's torch gets its share of the
# cores: two workers with two intra-op threads each spin-wait on each other (a CLIP_benchmark
# comparison took 108 s instead of 11 s). The processes tests start (kernels, jobs) keep torch's
# default, so what they compute is what `make book` computes.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch  # noqa: E402

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

REPO = Path(__file__).resolve().parent.parent


def write_profile(tmp_path: Path, pool=None, **top) -> Path:
    """A minimal valid profile YAML in tmp_path (results and cache inside tmp_path)."""
    import yaml

    raw = {
        "profile": "tmp",
        "allow_random_init": True,
        "paths": {"data_root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache"),
                  "results_dir": str(tmp_path / "results")},
        "datasets": {"imagenet": "{data_root}/imagenet/val"},
        "pool": pool or [{"id": "m1", "arch": "RN50", "family": "robust_zeroshot_clip",
                          "pretraining": "x", "model": "demo-RN50"},
                         {"id": "m2", "arch": "ViT-B-32", "family": "supervised",
                          "pretraining": "x", "model": "demo-ViT-B-32"}],
    }
    raw.update(top)
    path = tmp_path / "profile.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def tmp_profile(tmp_path):
    return write_profile(tmp_path)


def refuses(exc, message: str):
    """``pytest.raises`` matching the whole message, not a part of it: the message is what a user
    reads when a notebook stops, so a test pins every word of it."""
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


@pytest.fixture(scope="session")
def demo_prepared():
    """The demo profile's data and training checkpoints, made once when missing, by the very
    commands ``make data`` runs: a test that loads the demo's finetuned or supervised entries runs on
    a fresh clone without the book having been built first. A subprocess, not a call: training in
    this process would inherit a test's thread count, and the weights (so the book's numbers) would
    differ in the last bits from what ``make data`` writes."""
    import fcntl
    import subprocess
    import sys

    from helpers.config import load_profile

    # one pytest-xdist worker prepares, the other waits and then finds everything made
    lock = REPO / "_cache" / ".demo-prepared.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        for command in ("demo-data", "prepare-demo"):
            subprocess.run([sys.executable, "-m", "helpers.workflow.cli", command, "--profile", "demo"],
                           cwd=REPO, check=True, capture_output=True)
    return load_profile("demo")
