"""The runner's progress: code cells counted as code cells, the time left from the last run."""
import json

import jupytext

from helpers.workflow import runner


def test_cell_counter_counts_code_cells_only(tmp_path):
    md = runner.notebooks()["robustness"]
    cells = jupytext.read(md).cells
    numbers = runner._code_cell_numbers(cells, injected=True)
    n_code = sum(c.cell_type == "code" for c in cells) + 1  # + papermill's injected parameters cell
    assert len(numbers) == len(cells) + 1 and max(x for x in numbers if x) == n_code
    shown = []
    console = runner._Console("robustness[all]", shown.append, numbers)
    for k in range(1, len(numbers) + 1):  # papermill: "Executing Cell N" for every cell
        console.line(f"Executing Cell {k}" + "-" * 20, final=True)
    assert shown == [f"  robustness[all]  cell {i}/{n_code}" for i in range(1, n_code + 1)]
    tagged = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    assert numbers[tagged + 1] == numbers[tagged] + 1  # the injected cell follows the parameters cell


def test_time_left_from_the_last_runs_records(tmp_path):
    jobs = []
    for k, (start, end) in enumerate([("2026-01-01T00:00:00+00:00", "2026-01-01T00:01:30+00:00"), (None, None)]):
        rec = tmp_path / f"r{k}.json"
        if start:
            rec.write_text(json.dumps({"status": "complete", "started": start, "finished": end}))
        jobs.append(runner.Job(f"s{k}", "nb", "all", {}, "out", record=str(rec)))
    last = {j.name: runner._last_seconds(j) for j in jobs}
    assert last == {"s0[all]": 90.0, "s1[all]": None}
    assert runner._time_left(jobs, last) == ("about 1.5 min left + 1 job(s) with no previous timing "
                                             "(the last run's timings)")
    assert runner._time_left(jobs[1:], last).startswith("time left unknown (1 job(s) never ran")
