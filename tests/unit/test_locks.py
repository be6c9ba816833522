"""The extraction cache's lock across real processes: two Python processes (multiprocessing, spawn)
asking for one cache key at the same moment compute it once and read the same run.

This replaces the thread-based "two processes" test of test_extract.py: threads share one
interpreter, so they cannot show that the on-disk lock works between jobs on a node."""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers.demo import fixtures  # noqa: E402

CLASSES = fixtures.DEMO_CLASSES[:2]
N = 8  # images: 2 classes x 4


def _work(profile_path: str, decodes: str, barrier, out) -> None:
    """One job: count every real decode in a shared file (O_APPEND, one line per image), wait for
    the other process, then ask for the activations."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from helpers.engine import extract
    from helpers.config import load_profile
    from helpers.data import ImageDataset

    original = ImageDataset.load_image

    def counting(ds, i):
        fd = os.open(decodes, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{os.getpid()} {i}\n".encode())
        finally:
            os.close(fd)
        time.sleep(0.2)  # widens the window in which an unlocked second process would decode too
        return original(ds, i)

    ImageDataset.load_image = counting
    P = load_profile(profile_path)
    barrier.wait(timeout=120)
    a = extract.activations("t-vit", "imagenet", P)
    out.put((os.getpid(), a.manifest["run"], a.h.shape[0]))


def test_two_processes_asking_for_one_key_compute_it_once(tmp_path: Path):
    data = tmp_path / "data"
    fixtures.write_imagenet(data / "imagenet", "val", classes=CLASSES, per_class=4, size=(80, 60))
    cfg = {"profile": "locks", "device": "cpu", "batch_size": 2, "num_workers": 0, "precision": "fp32",
           "allow_random_init": True,
           "paths": {"data_root": str(data), "cache_dir": str(tmp_path / "cache"),
                     "results_dir": str(tmp_path / "results")},
           "datasets": {"imagenet": "{data_root}/imagenet/val"},
           "pool": [{"id": "t-vit", "arch": "ViT-B-32", "family": "supervised", "pretraining": "test",
                     "model": "demo-ViT-B-32", "seed": 0}]}
    path = tmp_path / "locks.yml"
    path.write_text(yaml.safe_dump(cfg))
    decodes = tmp_path / "decodes.txt"

    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_work, args=(str(path), str(decodes), barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]  # neither crashed on the other's half-written files
    results = [out.get(timeout=10) for _ in procs]
    pids = {pid for pid, _, _ in results}
    assert pids == {p.pid for p in procs}  # two distinct processes, both answered
    runs = {run for _, run, _ in results}
    assert len(runs) == 1 and [n for _, _, n in results] == [N, N]
    # every image decoded once in all, by whichever process held the lock
    lines = decodes.read_text().splitlines()
    assert len(lines) == N and sorted(int(line.split()[1]) for line in lines) == list(range(N))
    assert len(list((tmp_path / "cache" / "activations" / "t-vit").glob("imagenet-*/run-*"))) == 1
