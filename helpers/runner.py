"""Execute the chapter notebooks with papermill, per pool slice, locally or on Slurm via submitit.

A *job* is one (section, slice) pair: the slice is the whole pool of the profile (``all``), one
backbone or one entry. Its executed notebook goes to
``<results_dir>/executed/<section>/<slice>.ipynb`` and the notebook itself records one results
table per (section, entry) through :mod:`helpers.results`.

A job is skipped when its *run key* is unchanged: a hash of the notebook text, the parameters,
every file of the ``helpers`` package, the validated profile and a cheap signature of the inputs
(dataset roots and checkpoint files: path, size, modification time). jupyter-cache alone would miss
a change in ``helpers/`` (facts.md), hence our own key. The key is written only after success, so a
failed or interrupted job runs again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .config import REPO_ROOT, Profile

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
HELPERS_DIR = Path(__file__).resolve().parent
#: Sections that read every other section's tables: their key covers those tables too.
READS_ALL_TABLES = {"summary", "coca"}


def notebooks(folder: Path = NOTEBOOK_DIR) -> dict[str, Path]:
    """Section name → MyST notebook, in paper order (``01_robustness.md`` → ``robustness``)."""
    out = {}
    for p in sorted(folder.glob("[0-9][0-9]_*.md")):
        out[p.stem.split("_", 1)[1]] = p
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def helpers_digest() -> str:
    """Hash of every source and data file of the package: any edit to helpers/ re-runs the book."""
    h = hashlib.sha256()
    for p in sorted(HELPERS_DIR.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(HELPERS_DIR)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _stat_signature(p: Path) -> list:
    if not p.exists():
        return [str(p), None]
    st = p.stat()
    sig = [str(p), st.st_size, st.st_mtime_ns]
    if p.is_dir():  # one level down: an added or replaced class folder changes the signature
        sig.append(sorted((c.name, c.stat().st_mtime_ns) for c in p.iterdir()))
    return sig


def inputs_signature(profile: Profile, section: str) -> str:
    sig: list[Any] = [_stat_signature(r) for r in profile.datasets.values()]
    sig += [_stat_signature(Path(e.checkpoint)) for e in profile.pool if e.checkpoint]
    if section in READS_ALL_TABLES:
        tables = profile.results_dir / "tables"
        for csv in sorted(tables.rglob("*.csv")) if tables.exists() else []:
            if csv.parent.name != section:
                sig.append([str(csv.relative_to(tables)), _sha(csv.read_bytes())])
    return _sha(json.dumps(sig, default=str).encode())


@dataclass
class Job:
    section: str
    notebook: str
    slice: str
    parameters: dict[str, Any]
    output: str
    key: str = ""
    log_dir: str = ""

    @property
    def name(self) -> str:
        return f"{self.section}[{self.slice}]"


@dataclass
class Outcome:
    job: Job
    status: str  # ran | skipped | failed
    seconds: float = 0.0
    error: str = ""


@dataclass
class RunSummary:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def report(self) -> str:
        lines = [f"{o.status:>7}  {o.job.name:<40} {o.seconds:7.1f} s" for o in self.outcomes]
        if self.failures:
            lines.append(f"\n{len(self.failures)} notebook(s) failed:")
            lines += [f"  {o.job.name}: {o.error.strip().splitlines()[-1] if o.error.strip() else 'error'}"
                      f"\n    executed notebook: {o.job.output}" for o in self.failures]
        return "\n".join(lines)


def _declared_parameters(md_path: Path) -> dict[str, Any]:
    import papermill

    with tempfile.TemporaryDirectory() as tmp:
        ipynb = _to_ipynb(md_path, Path(tmp))
        return papermill.inspect_notebook(str(ipynb))


def _to_ipynb(md_path: Path, folder: Path) -> Path:
    """jupytext MyST → .ipynb (papermill reads only .ipynb; the parameters tag survives)."""
    import jupytext
    import nbformat

    nb = jupytext.read(md_path)
    out = folder / (md_path.stem + ".ipynb")
    nbformat.write(nb, out)
    return out


def plan(profile: Profile, sections: Iterable[str] | None = None, entry: str | None = None,
         backbone: str | None = None, per_entry: bool = False, extra: dict[str, Any] | None = None,
         notebook_dir: Path = NOTEBOOK_DIR) -> list[Job]:
    """The jobs for a slice of the study: every requested section × (the slice, or each entry)."""
    available = notebooks(notebook_dir)
    wanted = list(available) if not sections else list(sections)
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise KeyError(f"unknown section(s) {', '.join(unknown)}; sections: {', '.join(available)}")
    entries = profile.select(entry=entry, backbone=backbone)
    if per_entry:
        slices = [(e.id, {"entry": e.id}) for e in entries]
    elif entry:
        slices = [(entry, {"entry": entry})]
    elif backbone:
        slices = [(f"backbone-{backbone}", {"backbone": backbone})]
    else:
        slices = [("all", {})]
    h_digest, p_digest = helpers_digest(), profile.digest()
    jobs = []
    for section in wanted:
        md = available[section]
        declared = _declared_parameters(md)
        # a notebook that takes no slice (synthetic data) runs once, whatever the slice
        own_slices = slices if {"entry", "backbone"} & set(declared) else [("all", {})]
        for label, sl in own_slices:
            # a named profile is passed by name, so executed notebooks do not carry local paths
            named = profile.path.parent == REPO_ROOT / "configs" and profile.path.stem == profile.name
            params = {"profile": profile.name if named else str(profile.path)} | sl | (extra or {})
            params = {k: v for k, v in params.items() if k in declared}
            out = profile.results_dir / "executed" / section / f"{label}.ipynb"
            key = _sha(json.dumps({
                "notebook": _sha(md.read_bytes()), "parameters": params, "helpers": h_digest,
                "profile": p_digest, "inputs": inputs_signature(profile, section),
            }, sort_keys=True, default=str).encode())
            jobs.append(Job(section, str(md), label, params, str(out), key,
                            str(profile.results_dir / "logs")))
    return jobs


def _key_path(job: Job) -> Path:
    return Path(job.output).with_suffix(".key")


def is_current(job: Job) -> bool:
    kp = _key_path(job)
    return kp.exists() and Path(job.output).exists() and kp.read_text().strip() == job.key


@contextlib.contextmanager
def _inline_figures():
    """Kernels inherit the environment: a headless MPLBACKEND=Agg (CI, tests) would make
    ``plt.show()`` draw nothing into the notebook, so kernels get the inline backend."""
    old = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = old


def execute(job: Job) -> Outcome:
    """Run one job with papermill; on failure keep the partial notebook for inspection."""
    import papermill

    t0 = time.time()
    out = Path(job.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    _key_path(job).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp, _inline_figures():
        src = _to_ipynb(Path(job.notebook), Path(tmp))
        partial = Path(tmp) / "executed.ipynb"
        try:
            papermill.execute_notebook(str(src), str(partial), parameters=job.parameters,
                                       kernel_name="python3", cwd=str(REPO_ROOT), progress_bar=False,
                                       log_output=False)
            status, error = "ran", ""
        except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        if partial.exists():
            shutil.move(str(partial), out)
    if status == "ran":
        _key_path(job).write_text(job.key)
    return Outcome(job, status, time.time() - t0, error)


def _execute_for_submitit(job_dict: dict) -> dict:
    outcome = execute(Job(**job_dict))
    return {"status": outcome.status, "seconds": outcome.seconds, "error": outcome.error}


def run(jobs: list[Job], executor: str = "local", force: bool = False, slurm: dict | None = None,
        echo=print) -> RunSummary:
    """Run the jobs that are out of date; keep going past failures and report them at the end.

    ``executor='slurm'`` submits one submitit job per (entry, section) with the ``slurm``
    parameters (partition, gpus, timeout, ...); ``'submitit-local'`` runs the same path with
    submitit's local executor (used by the tests).
    """
    summary = RunSummary()
    todo = []
    for job in jobs:
        if not force and is_current(job):
            summary.outcomes.append(Outcome(job, "skipped"))
            echo(f"up to date  {job.name}")
        else:
            todo.append(job)
    if executor == "local":
        for i, job in enumerate(todo, 1):
            echo(f"[{i}/{len(todo)}] running {job.name} ...")
            outcome = execute(job)
            echo(f"[{i}/{len(todo)}] {outcome.status} {job.name} in {outcome.seconds:.1f} s")
            summary.outcomes.append(outcome)
    elif executor in ("slurm", "submitit-local"):
        summary.outcomes += _run_submitit(todo, executor, slurm or {}, echo)
    else:
        raise ValueError(f"unknown executor {executor!r}: expected local, slurm or submitit-local")
    return summary


def _run_submitit(jobs: list[Job], executor: str, slurm: dict, echo) -> list[Outcome]:
    import submitit

    if not jobs:
        return []
    log_dir = Path(jobs[0].log_dir) / "submitit"
    if executor == "slurm":
        ex = submitit.AutoExecutor(folder=str(log_dir), cluster="slurm")
        params = {"timeout_min": 240, "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 64}
        params.update(slurm)
        ex.update_parameters(name="clip-study", **params)
    else:
        ex = submitit.LocalExecutor(folder=str(log_dir))
        ex.update_parameters(timeout_min=int(slurm.get("timeout_min", 60)))
    submitted = [(job, ex.submit(_execute_for_submitit, asdict(job))) for job in jobs]
    echo(f"submitted {len(submitted)} job(s); logs in {log_dir}")
    outcomes = []
    for job, sj in submitted:
        try:
            res = sj.result()
            outcomes.append(Outcome(job, res["status"], res["seconds"], res["error"]))
        except Exception as exc:  # the job itself died (node failure, timeout)
            outcomes.append(Outcome(job, "failed", 0.0, f"{type(exc).__name__}: {exc}"))
        echo(f"{outcomes[-1].status} {job.name} (job {sj.job_id}, log {sj.paths.stdout})")
    return outcomes
