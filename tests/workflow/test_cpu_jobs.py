"""``clip-study run --jobs N`` on a CPU profile: jobs that read no other section's tables run N at a
time, each process with its share of the cores; a section that reads tables starts after them."""
import json

import pytest

from helpers.config import load_profile
from helpers.workflow import cli, runner
from tests.conftest import write_profile
from tests.workflow.test_runner import _notebook

TIMED = """
    # {section}

    ```{{code-cell}} ipython3
    :tags: [parameters]
    profile = "demo"  # profile
    entry = None  # entry id
    backbone = None  # backbone
    ```

    ```{{code-cell}} ipython3
    import json, os, pathlib, time
    from helpers.study import open_study
    S = open_study("{section}", profile, entry=entry, backbone=backbone, show_banner=False)
    start = time.time()
    time.sleep({sleep})
    for e in S.pool:
        S.record(e.id, {{"value": 1.0}})
    pathlib.Path({out!r}, "{section}.json").write_text(json.dumps(
        {{"start": start, "end": time.time(), "threads": os.environ.get("OMP_NUM_THREADS"),
          "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}}))
    ```

    ```{{code-cell}} ipython3
    S.finish();
    ```
    """


def test_two_cpu_jobs_overlap_with_their_share_of_the_cores_and_a_reader_waits(tmp_path, monkeypatch):
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 4)
    nbdir, out = tmp_path / "notebooks", tmp_path / "seen"
    nbdir.mkdir()
    out.mkdir()
    for i, section in enumerate(("alpha", "beta"), 1):
        _notebook(nbdir, f"0{i}_{section}.md", TIMED.format(section=section, sleep=3, out=str(out)))
    _notebook(nbdir, "09_summary.md", TIMED.format(section="summary", sleep=0, out=str(out)))  # reads tables
    P = load_profile(write_profile(tmp_path))
    lines = []
    summary = runner.run(runner.plan(P, notebook_dir=nbdir), cpu_jobs=2, echo=lines.append)
    assert [o.status for o in summary.outcomes] == ["ran", "ran", "ran"], summary.report()
    seen = {s: json.loads((out / f"{s}.json").read_text()) for s in ("alpha", "beta", "summary")}
    a, b, s = seen["alpha"], seen["beta"], seen["summary"]
    assert a["start"] < b["end"] and b["start"] < a["end"]  # the two ran at the same time
    assert s["start"] > max(a["end"], b["end"])  # the reader of their tables after both
    assert {v["threads"] for v in seen.values()} == {"2"} and {v["cuda"] for v in seen.values()} == {None}
    assert any(line.startswith("running alpha[all] on cpu") and "(2 thread(s))" in line for line in lines)
    # and again: every job up to date, none started
    again = runner.run(runner.plan(P, notebook_dir=nbdir), cpu_jobs=2, echo=lines.append)
    assert [o.status for o in again.outcomes] == ["skipped"] * 3


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_jobs_must_be_a_whole_number_of_at_least_one(value, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--jobs", value])
    assert f"expected a whole number of at least 1, got {value!r}" in capsys.readouterr().err
