"""The cross-node build claim of helpers.store (``build_claim``, held inside ``CacheEntry.lock``):
two processes never build at once without any flock between them, a stale claim (old heartbeat) is
taken over with a message naming its holder, a live claim's heartbeat is refreshed, and a fresh
claim is never taken over."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

from helpers import store


def _builder(claim: str, journal: str, tag: str) -> None:
    with store.build_claim(Path(claim), poll_s=0.02, heartbeat_s=0.05, say=lambda *_: None):
        with open(journal, "a") as f:
            f.write(f"start {tag}\n")
            f.flush()
        time.sleep(0.3)
        with open(journal, "a") as f:
            f.write(f"end {tag}\n")


def test_two_processes_take_turns_without_flock(tmp_path):
    claim, journal = tmp_path / ".claim", tmp_path / "journal.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_builder, args=(str(claim), str(journal), t)) for t in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = journal.read_text().split()
    events = list(zip(lines[::2], lines[1::2]))
    # start/end pairs never interleave: one build, then the other
    assert [e[0] for e in events] == ["start", "end", "start", "end"]
    assert events[0][1] == events[1][1] and events[2][1] == events[3][1] and events[0][1] != events[2][1]
    assert not claim.exists()  # released


def test_a_stale_claim_is_taken_over_naming_its_holder(tmp_path):
    claim = tmp_path / ".claim"
    claim.write_text(json.dumps({"host": "node17", "pid": 4321, "token": "dead"}))
    old = time.time() - 3600
    os.utime(claim, (old, old))
    said = []
    with store.build_claim(claim, stale_s=600, say=said.append):
        mine = json.loads(claim.read_text())
        assert mine["pid"] == os.getpid() and mine["token"] != "dead"
    assert len(said) == 1 and said[0].startswith(f"taking over the stale build claim {claim}: held by node17 pid 4321, "
                                                 "last heartbeat 3600 s ago")
    assert not claim.exists() and not list(tmp_path.glob(".claim.stale-*"))


def test_a_live_claim_waits_and_its_heartbeat_is_refreshed(tmp_path):
    claim = tmp_path / ".claim"
    with store.build_claim(claim, heartbeat_s=0.05, say=lambda *_: None):
        t0 = claim.stat().st_mtime
        os.utime(claim, (t0 - 100, t0 - 100))
        time.sleep(0.3)
        assert claim.stat().st_mtime > t0 - 50  # the heartbeat thread touched it again
        # a second builder (this thread, other token) waits for it rather than taking it over
        said, got = [], []
        import threading

        def second():
            with store.build_claim(claim, stale_s=5, poll_s=0.02, say=said.append):
                got.append(time.time())

        th = threading.Thread(target=second)
        th.start()
        time.sleep(0.3)
        assert not got and said and said[0].startswith(f"waiting: {tmp_path} is being built by ")
        released = time.time()
    th.join(10)
    assert got and got[0] >= released


def test_cache_entry_lock_holds_the_claim(tmp_path):
    entry = store.CacheEntry(tmp_path, "x", {"a": 1})
    with entry.lock():
        held = json.loads((entry.dir / ".claim").read_text())
        assert held["pid"] == os.getpid() and held["host"] == os.uname().nodename
    assert not (entry.dir / ".claim").exists()


def test_a_claim_of_a_dead_process_on_this_node_is_taken_over_at_once(tmp_path):
    """A builder killed mid-build (SIGKILL: no clean-up) leaves its claim; a resumed run on the same
    node takes it over at once instead of waiting out the heartbeat."""
    import json
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    claim = tmp_path / ".claim"
    claim.write_text(json.dumps({"host": os.uname().nodename, "pid": pid, "token": "old"}))
    said = []
    with store.build_claim(claim, stale_s=600, poll_s=0.01, say=said.append):
        assert json.loads(claim.read_text())["pid"] == os.getpid()
    assert len(said) == 1 and "a process that no longer runs on this node" in said[0], said
