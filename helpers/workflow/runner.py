"""Execute the chapter notebooks with papermill, per pool slice: locally, spread over the GPUs of
one node (``gpus``), or on Slurm via submitit.

A *job* is one (section, slice) pair: the slice is the whole pool of the profile (``all``), one
backbone or one entry. Its executed notebook goes to ``<results_dir>/executed/<section>/<slice>.ipynb``,
its log (every line the kernel, papermill and the notebook print; it grows while the job runs) to
``<results_dir>/logs/<section>/<slice>.log``, and the notebook itself records one results table per
(section, entry) through :mod:`helpers.study.results` and its provenance through :mod:`helpers.study.provenance`
(``<results_dir>/provenance/<section>/<slice>.json``).

A job is skipped when its provenance record is complete and every input it recorded is unchanged:
the code that ran, the parameters, the profile, the ``helpers`` modules it imported, every file of
the datasets it opened, the weights files, and the tables it read and wrote. A plain ``papermill``
run of ``notebooks/<chapter>.ipynb`` writes the same record, so the runner sees it. jupyter-cache
alone would miss a change in ``helpers/`` (it keys on code cells only: book/methods.md, Facts the
study relies on), hence our own records.

Each job runs in a child process (``python -m helpers.workflow.runner``): the runner writes all its output to
the job's log and shows the progress on the terminal (cells, tqdm rates), without the kernel's
start-up warnings.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

# helpers.engine, .models, .data and .training import torch (about 2 s): they are imported inside the
# functions that use them, so `clip-study --help`, a refused flag and the job loop start without it
from helpers.study import provenance
from helpers.study import PROFILE_PARAMETERS as PROFILE_OVERRIDE_KEYS
from helpers.study import ParameterError, check_parameters  # noqa: F401 - the one parameter rule
from helpers.study import profile_overrides  # the profile keys a notebook's parameters override (as open_study)
from helpers.config import REPO_ROOT, Profile, load_profile
from helpers.workflow.sections import (NOTEBOOK_DIR, PAIR_SECTIONS, READS, SECTION_DATASETS, close_sections,
                                       notebooks, store_reads)

#: Console lines that are kept in the job log but not shown: the kernel's start-up notice,
#: papermill's parameter-parsing notices, and ipykernel's shutdown message on a finished job.
QUIET = re.compile(r"Kernel is running over TCP without encryption|Unable to parse line|"
                   r"KeyboardInterrupt caught in kernel|\[IPKernelApp\] WARNING|Passed unknown parameter|"
                   r"Black is not installed|Input notebook does not contain a cell with tag")
_LOG_ONLY = "\x01"  # child -> parent: a line for the log only (cell outputs)




def _declared_parameters(md_path: Path) -> dict[str, Any]:
    """Parameter name -> default of a notebook (its cell tagged ``parameters``)."""
    return provenance.declared_parameters(md_path)


def _to_ipynb(md_path: Path, folder: Path) -> Path:
    """jupytext MyST → .ipynb (papermill reads only .ipynb; the parameters tag survives)."""
    import jupytext
    import nbformat

    nb = jupytext.read(md_path)
    out = folder / (md_path.stem + ".ipynb")
    nbformat.write(nb, out)
    return out


@dataclass
class Job:
    section: str
    notebook: str
    slice: str
    parameters: dict[str, Any]  # what papermill passes (declared names only)
    output: str
    record: str = ""
    log: str = ""
    effective: dict[str, Any] = field(default_factory=dict)  # every declared parameter's value
    code_sha256: str = ""
    results_dir: str = ""
    cache_dir: str = ""
    device: str | None = None  # CUDA_VISIBLE_DEVICES of the job's process
    threads: int | None = None  # CPU threads of the job's process (``--jobs``: the cores shared out)
    time_limit_s: float | None = None  # killed and failed after this long (job_time_limit_minutes)

    @property
    def name(self) -> str:
        return f"{self.section}[{self.slice}]"

    @property
    def log_dir(self) -> str:
        return str(Path(self.results_dir) / "logs")


@dataclass
class Outcome:
    job: Job
    status: str  # ran | skipped | failed
    seconds: float = 0.0
    error: str = ""
    reason: str = ""


@dataclass
class RunSummary:
    outcomes: list[Outcome] = field(default_factory=list)
    #: ``--gpus`` devices set aside after a job on them died of a CUDA error -> that job and error
    set_aside: dict[str, str] = field(default_factory=dict)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def report(self) -> str:
        lines = [f"{o.status:>7}  {o.job.name:<40} {o.seconds:7.1f} s" for o in self.outcomes]
        if self.failures:
            lines.append(f"\n{len(self.failures)} notebook(s) failed:")
            lines += [f"  {o.job.name}: {o.error.strip().splitlines()[-1] if o.error.strip() else 'error'}"
                      f"\n    executed notebook: {o.job.output}\n    log: {o.job.log}" for o in self.failures]
        if self.set_aside:
            lines.append(f"\nGPU(s) set aside for the rest of the run after a CUDA error: "
                         + "; ".join(f"{d} ({why})" for d, why in self.set_aside.items()))
        return "\n".join(lines)


def _profile_arg(profile: Profile) -> str:
    # a named profile is passed by name, so executed notebooks do not carry local paths
    named = profile.path.parent == REPO_ROOT / "configs" and profile.path.stem == profile.name
    return profile.name if named else str(profile.path)


def _empty_slice_message(profile: Profile, entry: str | None, backbone: str | None) -> str | None:
    if entry and backbone:
        try:
            e = profile.entry(entry)
        except KeyError as exc:
            return exc.args[0]
        if e.arch != backbone:
            return (f"entry {entry!r} has backbone {e.arch!r}, not {backbone!r}: --entry and --backbone "
                    f"together select nothing (give one of them)")
    return None





def plan(profile: Profile, sections: Iterable[str] | None = None, entry: str | None = None,
         backbone: str | None = None, per_entry: bool = False, extra: dict[str, Any] | None = None,
         notebook_dir: Path = NOTEBOOK_DIR) -> list[Job]:
    """The jobs for a slice of the study: every requested section × (the slice, or each entry).

    Checked here, before any job starts: section names, the slice, every ``-p`` name (declared by
    some selected notebook) and the profile as each job will load it (its overrides applied)."""
    available = notebooks(notebook_dir)
    wanted = list(available) if not sections else list(dict.fromkeys(sections))
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise KeyError(f"unknown section(s) {', '.join(unknown)}{close_sections(unknown, available)}; "
                       f"sections: {', '.join(available)}")
    wanted = [s for s in available if s in wanted]  # paper order: a reader runs after what it reads
    why = _empty_slice_message(profile, entry, backbone)
    if why:
        raise KeyError(why)
    entries = profile.select(entry=entry, backbone=backbone)
    if per_entry:
        slices = [({"entry": e.id}) for e in entries]
    elif entry:
        slices = [{"entry": entry}]
    elif backbone:
        slices = [{"backbone": backbone}]
    else:
        slices = [{}]
    extra = dict(extra or {})
    declared = {s: _declared_parameters(available[s]) for s in wanted}
    check_parameters(extra, {available[s].name: d for s, d in declared.items()})
    profiles: dict[str, Profile] = {}
    jobs = []
    for section in wanted:
        md, decl = available[section], declared[section]
        # a notebook that takes no slice (synthetic data) runs once, whatever the slice
        own_slices = slices if {"entry", "backbone"} & set(decl) else [{}]
        code = provenance.notebook_digest(md)
        for sl in own_slices:
            params = {"profile": _profile_arg(profile)} | sl | extra
            params = {k: v for k, v in params.items() if k in decl}
            effective = {**decl, **params}
            ov = profile_overrides(effective)
            pkey = json.dumps([effective.get("profile", _profile_arg(profile)), ov], sort_keys=True, default=str)
            if pkey not in profiles:  # a bad -p value fails here, naming the -p, before any job
                blame = {PROFILE_OVERRIDE_KEYS[k]: f"-p {k}" for k in extra if k in PROFILE_OVERRIDE_KEYS}
                profiles[pkey] = load_profile(effective.get("profile", _profile_arg(profile)), overrides=ov,
                                              blame=blame)
            P = profiles[pkey]
            label = provenance.slice_label(sl.get("entry"), sl.get("backbone"))
            rd = P.results_dir
            jobs.append(Job(section, str(md), label, params, str(rd / "executed" / section / f"{label}.ipynb"),
                            str(provenance.record_path(rd, section, label)),
                            str(rd / "logs" / section / f"{label}.log"), effective, code, str(rd), str(P.cache_dir)))
    return jobs


_PROFILE_MEMO: dict[str, str] = {}


def _profile_loader(name, overrides):
    key = json.dumps([name, overrides], sort_keys=True, default=str)

    class _D:  # the digest is all the check needs
        def __init__(self, d):
            self._d = d

        def digest(self):
            return self._d

    if key not in _PROFILE_MEMO:
        _PROFILE_MEMO[key] = load_profile(name, overrides=overrides).digest()
    return _D(_PROFILE_MEMO[key])


def stale_reason(job: Job) -> str | None:
    """Why ``job`` must run (None: its record is complete and every recorded input unchanged)."""
    reason = provenance.check(provenance.read_record(Path(job.record)), notebook_digest_=job.code_sha256,
                              parameters=job.effective, load_profile=_profile_loader, cache_dir=Path(job.cache_dir))
    return reason or _unrenderable(job)


def _unrenderable(job: Job) -> str | None:
    """Up to date means renderable: a job whose record is current but whose executed notebook is
    not where ``clip-study render`` reads it (a direct papermill run writes its own output path)
    runs again."""
    if Path(job.output).is_file():
        return None
    return f"no executed notebook at {job.output} for the book (a direct papermill run wrote its own elsewhere)"


def is_current(job: Job) -> bool:
    return stale_reason(job) is None


# ---------------------------------------------------------------- one job, in a child process

@contextlib.contextmanager
def _job_tmp(job: Job):
    """A scratch folder under ``<results_dir>/.tmp`` (removed on exit; leftovers of a killed run
    are removed when the next run starts)."""
    tmp = Path(job.results_dir) / ".tmp" / f"{job.section}-{job.slice}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Console:
    """Shows a job's output on the terminal: cell progress, tqdm bars (at most one update per
    ``every`` seconds per bar, and the last one), errors; drops QUIET lines."""

    def __init__(self, name: str, echo: Callable[[str], None], n_cells: int | list[int | None], every: float = 5.0):
        # n_cells: papermill's cell number (all cells, 1-based) -> code-cell ordinal (None: markdown)
        self.numbers = n_cells if isinstance(n_cells, list) else None
        self.name, self.echo, self.every = name, echo, every
        self.n_cells = n_cells if isinstance(n_cells, int) else sum(x is not None for x in n_cells)
        self.last: float = 0.0
        self.pending: str | None = None

    def line(self, text: str, final: bool) -> None:
        text = text.rstrip()
        if not text.strip() or QUIET.search(text):
            return
        m = re.match(r"Executing Cell (\d+)-*$", text.strip())
        if m:
            self.flush()
            k = int(m.group(1))
            if self.numbers is not None:  # papermill numbers every cell: show code cells, counted as such
                if k > len(self.numbers) or self.numbers[k - 1] is None:
                    return
                k = self.numbers[k - 1]
            self.echo(f"  {self.name}  cell {k}/{self.n_cells}")
            return
        if re.match(r"Ending Cell \d+-*$", text.strip()) or text.startswith(("Input Notebook:", "Output Notebook:",
                                                                              "Working directory:", "Executing notebook with kernel")):
            return
        if not final:  # a tqdm update (ends with \r): throttle
            now = time.monotonic()
            if now - self.last < self.every:
                self.pending = text
                return
            self.last = now
        self.pending = None
        self.echo(f"  {self.name}  {text.strip()}")

    def flush(self):
        if self.pending:
            self.echo(f"  {self.name}  {self.pending.strip()}")
            self.pending = None


def _code_cell_numbers(cells, injected: bool) -> list[int | None]:
    """For each cell papermill executes (its 1-based "Executing Cell N" counts markdown cells too),
    its ordinal among the code cells, None for a markdown cell; ``injected``: papermill adds its
    parameters cell after the cell tagged ``parameters`` (first, without one)."""
    kinds = [c.cell_type == "code" for c in cells]
    if injected:
        tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
        kinds.insert(tagged[0] + 1 if tagged else 0, True)
    out, k = [], 0
    for is_code in kinds:
        k += is_code
        out.append(k if is_code else None)
    return out


def _last_seconds(job: Job) -> float | None:
    """How long the job's previous run took (its provenance record's start and finish)."""
    import datetime as dt

    r = provenance.read_record(Path(job.record)) or {}
    try:
        return (dt.datetime.fromisoformat(r["finished"]) - dt.datetime.fromisoformat(r["started"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def _time_left(jobs: list[Job], last: dict[str, float | None]) -> str:
    """The estimate of the time the jobs still due take, from their previous runs' timings."""
    known = [last.get(j.name) for j in jobs if last.get(j.name) is not None]
    unknown = len(jobs) - len(known)
    if not jobs:
        return "nothing left"
    if not known:
        return f"time left unknown ({len(jobs)} job(s) never ran; `clip-study plan` estimates the hours)"
    est = sum(known)
    text = f"about {est / 60:.1f} min left" if est >= 60 else f"about {est:.0f} s left"
    return text + (f" + {unknown} job(s) with no previous timing" if unknown else "") + " (the last run's timings)"


def _stream(proc: subprocess.Popen, log, console: _Console) -> None:
    """Copy the child's output to the log (everything, flushed at once) and the console."""
    buf = b""
    while True:
        chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(4096)
        if not chunk:
            break
        buf += chunk
        while True:
            m = re.search(rb"[\r\n]", buf)
            if not m:
                break
            raw, sep, buf = buf[:m.start()], buf[m.start():m.end()], buf[m.end():]
            text = raw.decode("utf-8", "replace")
            log_only = text.startswith(_LOG_ONLY)
            text = text.lstrip(_LOG_ONLY)
            log.write(text + ("\n" if sep == b"\n" else "\r"))
            log.flush()
            if not log_only:
                console.line(text, final=sep == b"\n")
    if buf:
        log.write(buf.decode("utf-8", "replace").lstrip(_LOG_ONLY) + "\n")
    console.flush()
    log.flush()


def _kill_session(proc) -> None:
    """SIGKILL every process of the job's session (it was started in its own: the job and the
    kernel papermill started); the job alone when the session is already gone."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def execute(job: Job, echo: Callable[[str], None] = print) -> Outcome:
    """Run one job with papermill in a child process; on failure keep the partial notebook for
    inspection and mark the job's record failed (its tables are then not trusted)."""
    t0 = time.time()
    out, log_path = Path(job.output), Path(job.log)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    import jupytext

    n_cells = _code_cell_numbers(jupytext.read(job.notebook).cells, injected=bool(job.parameters))
    with job_lock(job, echo) as (lock, waited), _job_tmp(job) as tmp:
        if waited and stale_reason(job) is None:  # an earlier run's live job finished it meanwhile
            return Outcome(job, "skipped", time.time() - t0)
        (tmp / "job.json").write_text(json.dumps(asdict(job), default=str))
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
            [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        if job.device is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(job.device)
        if job.threads:  # torch's intra-op pool and the BLAS libraries read these at start
            env.update({k: str(job.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
        with open(log_path, "w") as log:
            log.write(f"# {job.name}: {job.notebook} parameters={json.dumps(job.parameters, default=str)}"
                      f"{'' if job.device is None else f' CUDA_VISIBLE_DEVICES={job.device}'}\n")
            log.flush()
            env[_PARENT_ENV] = str(os.getpid())
            # its own session (a Ctrl-C reaches the runner, which stops the job), holding the job's
            # lock (the inherited descriptor) for as long as it lives, and dying with the runner
            proc = subprocess.Popen([sys.executable, "-m", "helpers.workflow.runner", str(tmp / "job.json")], cwd=REPO_ROOT,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, pass_fds=(lock.fileno(),))
            expired = threading.Event()
            # past the time limit the job's whole session goes (the job and its kernel)
            timer = threading.Timer(job.time_limit_s or 0, lambda: (expired.set(), _kill_session(proc)))
            timer.daemon = True
            if job.time_limit_s:
                timer.start()
            try:
                _stream(proc, log, _Console(job.name, echo, n_cells))
                rc = proc.wait()
                timer.cancel()
            except BaseException:  # Ctrl-C: stop the child (and its kernel) before leaving
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                proc.kill()
                raise
        res = provenance.read_record(tmp / "result.json") or {"status": "failed",
                                                               "error": f"job process exited with status {rc}"}
        if expired.is_set():
            res = {"status": "failed", "error": f"killed after the per-job time limit of {job.time_limit_s / 60:g} min "
                                                f"(profile key job_time_limit_minutes)"}
    if res["status"] != "ran":
        provenance.mark_failed(Path(job.record), res.get("error", ""), job.section, job.slice)
    return Outcome(job, res["status"], time.time() - t0, res.get("error", ""))


def _child(job_file: str) -> int:
    """The job's process: convert, execute with papermill, report to ``result.json`` beside ``job_file``."""
    import logging

    import papermill

    _die_with_parent(int(os.environ.get(_PARENT_ENV, "0")))
    job = Job(**json.loads(Path(job_file).read_text()))
    tmp = Path(job_file).parent

    class Handler(logging.Handler):
        at_line_start = True

        def emit(self, record):
            msg = record.getMessage()
            # the kernel's stderr stream (tqdm bars, warnings) is passed through as written, so a
            # bar's "\r" updates stay updates; cell progress goes to the console too; other cell
            # output (stdout, displayed values) to the log only
            if record.levelno >= logging.WARNING and record.name == "papermill":
                text = msg
            else:
                shown = msg.startswith(("Executing Cell", "Ending Cell")) or record.levelno >= logging.WARNING
                text = "".join(("" if shown else _LOG_ONLY) + ln + "\n" for ln in msg.splitlines())
                if not Handler.at_line_start:
                    text = "\n" + text
            if text:
                sys.stdout.write(text)
                sys.stdout.flush()
                Handler.at_line_start = text.endswith("\n")

    log = logging.getLogger("papermill")
    log.handlers[:] = [Handler()]
    log.setLevel(logging.INFO)
    log.propagate = False
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # figures into the notebook
    os.environ[provenance.NOTEBOOK_ENV] = str(job.notebook)
    src = _to_ipynb(Path(job.notebook), tmp)
    partial = tmp / "executed.ipynb"
    try:
        papermill.execute_notebook(str(src), str(partial), parameters=job.parameters, kernel_name="python3",
                                   cwd=str(REPO_ROOT), progress_bar=False, log_output=True)
        res = {"status": "ran", "error": ""}
    except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
        res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(f"{job.name} failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}\n")
    if partial.exists():
        shutil.move(str(partial), job.output)
    (tmp / "result.json").write_text(json.dumps(res))
    return 0


class JobFailed(RuntimeError):
    """A notebook that failed inside a submitit job. Raised, not returned, so that Slurm marks the
    job FAILED and the ``afterok`` dependencies of the jobs that read its tables never hold."""


def _execute_for_submitit(job_dict: dict) -> dict:
    outcome = execute(Job(**job_dict))
    if outcome.status == "failed":
        last = outcome.error.strip().splitlines()[-1] if outcome.error.strip() else "error"
        raise JobFailed(f"{outcome.job.name} failed after {outcome.seconds:.1f} s: {last}")
    return {"status": outcome.status, "seconds": outcome.seconds, "error": outcome.error}


# ---------------------------------------------------------------- no orphans

#: The runner's pid, in a job process's environment: the job ends when that process does.
_PARENT_ENV = "CLIP_STUDY_RUNNER_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def job_lock_path(results_dir: Path | str, section: str, label: str) -> Path:
    return Path(results_dir) / ".locks" / section / f"{label}.lock"


@contextlib.contextmanager
def job_lock(job: Job, echo=print):
    """The job's exclusive lock, yielded with whether it had to wait. The job's process inherits
    the descriptor, so the lock lives as long as the job does, even past a killed runner: a resumed
    run waits for a live job of an earlier run instead of running it a second time beside it."""
    path = job_lock_path(job.results_dir, job.section, job.slice)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        waited = False
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            echo(f"waiting: {job.name} is still running ({f.read().strip() or 'another process'}) ...")
            fcntl.flock(f, fcntl.LOCK_EX)
            waited = True
        f.seek(0)
        f.truncate()
        f.write(f"run pid {os.getpid()} on {os.uname().nodename}")
        f.flush()
        yield f, waited


def _live(job_dir: Path) -> bool:
    """Whether the job whose scratch folder this is still runs (its lock is held)."""
    try:
        j = json.loads((job_dir / "job.json").read_text())
        path = job_lock_path(j["results_dir"], j["section"], j["slice"])
    except (OSError, ValueError, KeyError):
        return False
    try:
        with open(path) as f:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


def _clear_tmp(results_dir: Path) -> None:
    """Remove what killed runs left in ``<results_dir>/.tmp``, except a live job's folder."""
    for d in sorted((Path(results_dir) / ".tmp").glob("*")):
        if not _live(d):
            shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(OSError):
        (Path(results_dir) / ".tmp").rmdir()


def _die_with_parent(parent: int) -> None:
    """In the job's process: end the job (its kernel included) when the runner dies, however it
    dies (``PR_SET_PDEATHSIG`` on Linux: SIGKILL of the runner sends this process SIGTERM), or
    when the runner stops it (SIGTERM, SIGINT)."""
    import ctypes
    import signal

    signal.signal(signal.SIGTERM, _end_job)
    signal.signal(signal.SIGINT, _end_job)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent and os.getppid() != parent:  # the runner died before the signal was armed
        _end_job()


def _end_job(*_args) -> None:
    """Kill every process this job started (the kernel, its DataLoader workers), wait until they
    are gone, then exit. The wait matters: this process holds the job's lock until it exits, and a
    SIGKILLed kernel with a large address space takes a moment to die, so without it a resumed
    run could start its kernel beside the dying one."""
    import psutil

    killed = []
    with contextlib.suppress(psutil.Error):
        for p in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                p.kill()
                killed.append(p)
    deadline = time.monotonic() + 10
    while any(_still_running(p) for p in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    os._exit(143)


def _still_running(process) -> bool:
    """Whether a killed process still runs (a zombie has released its memory and GPU: gone)."""
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# ---------------------------------------------------------------- many jobs

@contextlib.contextmanager
def run_lock(results_dir: Path, echo=print):
    """One ``clip-study run`` per results folder at a time: a second one waits, saying so. The
    holder clears what killed runs left in ``<results_dir>/.tmp``."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / ".run.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            echo(f"waiting: another clip-study run ({holder}) is using {results_dir} ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename}")
        f.flush()
        _clear_tmp(results_dir)
        try:
            yield
        finally:
            _clear_tmp(results_dir)
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def reads(job: Job) -> set[str]:
    """The sections whose tables ``job`` reads: its section's :data:`READS`, and any other section
    its last provenance record says it read."""
    r = provenance.read_record(Path(job.record)) or {}
    recorded = {q.get("section") for q in (r.get("tables_read") or {}).values()}
    return (set(READS.get(job.section, ())) | recorded) - {job.section, None}


def _aggregates(job: Job) -> bool:
    return bool(reads(job))


def inputs_of(job: Job, jobs: list[Job]) -> list[Job]:
    """The jobs among ``jobs`` whose tables ``job`` reads: those of the sections it reads, on its
    slice (or on any slice when either is the whole pool, ``all``)."""
    wanted = reads(job)
    return [j for j in jobs if j.section in wanted and (j.slice == job.slice or "all" in (j.slice, job.slice))]


# ---------------------------------------------------------------- the decode stage

def extracts(job: Job) -> bool:
    """Whether ``job``'s section decodes dataset images (:func:`helpers.workflow.sections.store_reads`)."""
    return job.section in SECTION_DATASETS or job.section in PAIR_SECTIONS


def _job_profile(job: Job, memo: dict) -> Profile:
    """The profile as ``job`` loads it: its notebook's profile parameter and overrides (as :func:`plan`)."""
    name = job.effective.get("profile") or job.parameters.get("profile")
    ov = profile_overrides(job.effective)
    key = json.dumps([name, ov], sort_keys=True, default=str)
    if key not in memo:
        memo[key] = load_profile(name, overrides=ov)
    return memo[key]


def stage_stores(jobs: list[Job]) -> list[tuple[Profile, list]]:
    """The uint8 stores the extractions of ``jobs`` open, each once, grouped by the profile the jobs
    load: per job, the datasets its section reads through its slice's entries
    (:func:`helpers.workflow.sections.store_reads`) that are on disk (a missing one is the job's to
    report, and ``clip-study plan``'s), as :func:`helpers.engine.extract.stores_needed` finds them
    without weights (kept geometries only). Each dataset is opened once per profile."""
    from helpers.engine import extract

    profiles: dict = {}
    wanted: dict[str, tuple[Profile, dict]] = {}  # profile key -> (profile, {(dataset, skip): {entry id: entry}})
    for job in jobs:
        P = _job_profile(job, profiles)
        pool = P.select(entry=job.effective.get("entry"), backbone=job.effective.get("backbone"))
        reads = wanted.setdefault(P.digest(), (P, {}))[1]
        for r in store_reads(job.section, pool, P):
            for d in r.datasets:
                if d in P.datasets and Path(P.dataset_root(d)).is_dir():
                    reads.setdefault((d, r.skip_unreadable), {}).update({e.id: e for e in r.entries})
    out = []
    for P, reads in wanted.values():
        specs = {}
        for (d, skip), entries in reads.items():
            for spec in extract.stores_needed(P, entries.values(), [d], skip_unreadable=skip):
                specs.setdefault(spec.entry(P.cache_dir).dir, spec)
        if specs:
            out.append((P, list(specs.values())))
    return out


def build_stage(jobs: list[Job], echo=print) -> list[dict]:
    """The decode stage: open or decode every store :func:`stage_stores` lists for ``jobs``
    (:func:`helpers.engine.extract.build_stores`: one line per store, with the rate and time left),
    before any of them starts. Nothing to list: no stage, nothing printed. An unreadable image
    raises :class:`helpers.store.DecodeError` naming every bad file, before any job."""
    groups = stage_stores(jobs)
    if not groups:
        return []
    from helpers.engine import extract

    t0 = time.time()
    n = sum(len(specs) for _, specs in groups)
    echo(f"decode stage: {n} store(s) that {len(jobs)} extraction job(s) read, decoded before any job starts "
         "(CPU work; `clip-study run --no-decode-stage` leaves them to the jobs)")
    records = []
    for P, specs in groups:
        records += extract.build_stores(P, specs, echo=echo)
    decoded = [r for r in records if not r["cached"]]
    echo(f"decode stage done in {time.time() - t0:.1f} s: {len(decoded)} store(s) decoded "
         f"({sum(r['images'] for r in decoded):,} images), {len(records) - len(decoded)} cached")
    return records


def _decode_for_submitit(job_dicts: list[dict]) -> dict:
    """The decode stage's Slurm job: :func:`build_stage` of the extraction jobs (a
    :class:`helpers.store.DecodeError` fails it, and the jobs waiting on it are cancelled)."""
    records = build_stage([Job(**d) for d in job_dicts])
    return {"stores": len(records), "decoded": sum(not r["cached"] for r in records)}


def _submit_stage(jobs: list[Job], executor: str, log_dir: Path, slurm: dict, echo):
    """Submit the decode stage of ``jobs`` as one CPU-only job when some store they read is not
    committed yet; None when none is (no extra job). Its parameters: the jobs' ``slurm`` ones without
    those asking for GPUs, then the ``decode_``-prefixed ones (``decode_slurm_partition=cpu``);
    ``cpus_per_task`` given, else the profiles' DataLoader workers + 1."""
    groups = stage_stores(jobs) if jobs else []
    missing = [(P, s) for P, specs in groups for s in specs if not s.committed(P.cache_dir)]
    if not missing:
        return None
    params = {**{k: v for k, v in slurm.items() if not k.startswith(DECODE_PREFIX)},
              **{k[len(DECODE_PREFIX):]: v for k, v in slurm.items() if k.startswith(DECODE_PREFIX)}}
    cpus = params.setdefault("cpus_per_task", max(P.num_workers for P, _ in groups) + 1)
    ex = _executor(executor, log_dir, params, name="clip-study-decode", cpu_only=True)
    handle = ex.submit(_decode_for_submitit, [asdict(j) for j in jobs])
    echo(f"submitted the decode stage (job {handle.job_id}, CPU only, {cpus} CPU(s)): {len(missing)} store(s) to "
         f"decode for {len(jobs)} extraction job(s), which wait for it; log {handle.paths.stdout}")
    return handle


def _stage_result(handle, echo) -> dict | None:
    """Wait for the decode stage's job: None when it completed, else what :func:`_cancelled` says
    of the extraction jobs waiting on it (the job, and the files it could not decode)."""
    try:
        handle.result()
        echo(f"decode stage done (job {handle.job_id})")
        return None
    except Exception as exc:  # noqa: BLE001 - submitit re-raises the job's error, or reports its loss
        text = str(exc)
        m = re.search(r"DecodeError: (.*?)(?:\n-{5,}|\Z)", text, re.S)  # up to submitit's own footer
        why = m.group(1).strip() if m else f"{text.strip().splitlines()[-1] if text.strip() else type(exc).__name__}" \
            f" [scheduler state: {_scheduler_state(handle)}]"
        why = " ".join(line.strip() for line in why.splitlines() if line.strip())
        echo(f"decode stage failed (job {handle.job_id}, log {handle.paths.stdout}): {why}")
        return {"named": f"decode stage (job {handle.job_id})", "why": why}


def run(jobs: list[Job], executor: str = "local", force: bool = False, slurm: dict | None = None,
        echo=print, gpus: list[str] | None = None, time_limit_s: float | None = None,
        decode_stage: bool = True, cpu_jobs: int = 1) -> RunSummary:
    """Run the jobs that are out of date; keep going past failures and report them at the end.

    First the decode stage (``decode_stage``, :func:`build_stage`): every uint8 store the due
    extraction jobs will read is decoded before any of them starts, so no GPU waits on a decode:
    here, in the runner's process (CPU work), locally and with ``gpus``, where an unreadable image
    stops the run before any job (:class:`helpers.store.DecodeError`, naming the file); on Slurm as
    one CPU-only job that every extraction job depends on (:func:`_run_submitit`).

    Each job is checked just before it would start, so a section that reads tables sees those
    that ran before it. ``gpus``: run up to one job per listed device at a time (each job's
    process sees only its device, ``CUDA_VISIBLE_DEVICES``); sections that read other sections'
    tables run afterwards. ``executor='slurm'`` submits one submitit job per (section, slice)
    with the ``slurm`` parameters; ``'submitit-local'`` runs that path with submitit's local
    executor (used by the tests). ``time_limit_s`` (``gpus``, ``cpu_jobs``): each job's wall-clock
    limit; a device whose job died of a CUDA error is set aside (``RunSummary.set_aside``).
    ``cpu_jobs`` (CPU profiles, no ``gpus``): up to that many jobs at a time, in the same order as
    with ``gpus``, each process given an equal share of the cores (``OMP_NUM_THREADS``): a job's
    start-up (its kernel, the imports, reading caches) is mostly one core's work, so two jobs on two
    cores overlap it (the demo book: 163 s -> 121 s on 2 cores).
    """
    if executor not in ("local", "slurm", "submitit-local"):
        raise ValueError(f"unknown executor {executor!r}: expected local, slurm or submitit-local")
    summary = RunSummary()
    if not jobs:
        return summary
    with contextlib.ExitStack() as stack:
        for rd in sorted({j.results_dir for j in jobs}):
            stack.enter_context(run_lock(Path(rd), echo))

        checked: dict[str, str | None] = {}  # the decode stage's checks of the extraction jobs, reused

        def reason_of(job: Job) -> str | None:
            if job.name not in checked:
                return "forced" if force else stale_reason(job)
            return checked.pop(job.name)

        def due(job: Job) -> bool:
            reason = reason_of(job)
            if reason is None:
                summary.outcomes.append(Outcome(job, "skipped"))
                echo(f"up to date  {job.name}")
                return False
            job_reason[job.name] = reason
            return True

        job_reason: dict[str, str] = {}
        if executor == "local" and decode_stage:
            # an extraction job's staleness does not depend on the jobs before it (it reads no
            # tables), so its check here stands when its turn comes
            checked.update({j.name: reason_of(j) for j in jobs if extracts(j)})
            build_stage([j for j in jobs if extracts(j) and checked[j.name] is not None], echo)
        if executor != "local":
            todo = [j for j in jobs if due(j)]
            summary.outcomes += _run_submitit(todo, executor, slurm or {}, echo, decode_stage=decode_stage)
        elif not gpus and cpu_jobs > 1:
            summary.outcomes += _run_in_slots(jobs, [f"cpu{i + 1}" for i in range(cpu_jobs)], due, echo, job_reason,
                                              set_aside=summary.set_aside, time_limit_s=time_limit_s,
                                              threads=max(1, (os.cpu_count() or 1) // cpu_jobs))
        elif not gpus:
            last = {j.name: _last_seconds(j) for j in jobs}
            for i, job in enumerate(jobs, 1):
                if due(job):
                    if i == 1 or all(o.status == "skipped" for o in summary.outcomes):  # the first job due
                        echo(f"clip-study run: {len(jobs) - i + 1} job(s) left, each run unless up to date; "
                             f"{_time_left(jobs[i - 1:], last)}")
                    echo(f"[{i}/{len(jobs)}] running {job.name} ({job_reason[job.name]}); log {job.log}")
                    outcome = execute(job, echo)
                    echo(f"[{i}/{len(jobs)}] {outcome.status} {job.name} in {outcome.seconds:.1f} s; "
                         f"{_time_left(jobs[i:], last)}")
                    summary.outcomes.append(outcome)
        else:
            summary.outcomes += _run_in_slots(jobs, gpus, due, echo, job_reason, set_aside=summary.set_aside,
                                              time_limit_s=time_limit_s)
    order = {j.name: i for i, j in enumerate(jobs)}
    summary.outcomes.sort(key=lambda o: order.get(o.job.name, 0))
    return summary


#: What a job's log or error says when its GPU faulted (the device is then set aside); running out of
#: memory is the job's size, not the device's fault, and is excluded.
CUDA_FAULT = re.compile(r"CUDA error|CUBLAS_STATUS_\w+|CUDNN_STATUS_\w+|device-side assert|"
                        r"illegal memory access|unspecified launch failure|Xid \d+|uncorrectable ECC")

_EXCEPTION_LINE = re.compile(r"^\s*(\S+ failed: )?[\w.]*(Error|Exception|Failure)\w*: ")


def cuda_fault(outcome: Outcome, tail_bytes: int = 65536) -> str | None:
    """The first line of a failed job's error or log tail that names a CUDA fault (None: none, or
    only an out-of-memory error)."""
    if outcome.status != "failed":
        return None
    text = outcome.error
    with contextlib.suppress(OSError):
        with open(outcome.job.log, "rb") as f:
            f.seek(max(0, os.path.getsize(outcome.job.log) - tail_bytes))
            text += "\n" + f.read().decode("utf-8", "replace")
    for line in text.splitlines():
        # an exception's own line (``RuntimeError: CUDA error: ...``), not the source shown beside it
        if _EXCEPTION_LINE.match(line) and CUDA_FAULT.search(line) and "out of memory" not in line.lower():
            return line.strip()[:200]
    return None


def _run_in_slots(jobs: list[Job], slots: list[str], due, echo, reasons: dict[str, str], **kw) -> list[Outcome]:
    """The jobs that read no other section's tables over the slots (GPUs, or CPU shares), then those
    that do, one at a time in paper order (coca before summary, summary before diagnose), each
    checked when its turn comes so that it sees the tables written before it."""
    outcomes = _run_on_devices([j for j in jobs if not _aggregates(j) and due(j)], slots, echo, reasons, **kw)
    for job in [j for j in jobs if _aggregates(j)]:
        if due(job):
            outcomes += _run_on_devices([job], slots, echo, reasons, **kw)
    return outcomes


def _run_on_devices(jobs: list[Job], gpus: list[str], echo, reasons: dict[str, str],
                    set_aside: dict[str, str] | None = None, time_limit_s: float | None = None,
                    threads: int | None = None) -> list[Outcome]:
    """One job per device at a time, each in its own process with ``CUDA_VISIBLE_DEVICES`` set
    (``threads`` given: ``gpus`` are CPU slots, and each process gets that many threads instead).
    The extraction cache's entries are locked, so jobs sharing an input wait for its builder. A job
    runs at most ``time_limit_s`` (then it is killed and failed); a device whose job died of a CUDA
    error (:func:`cuda_fault`) is put in ``set_aside`` and given no further job; when every device
    is set aside the remaining jobs fail, saying so."""
    set_aside = {} if set_aside is None else set_aside
    free = [g for g in gpus if g not in set_aside]
    queue = list(jobs)
    outcomes: list[Outcome] = []
    cond = threading.Condition()
    lock = threading.Lock()
    running = [0]

    def say(msg):
        with lock:
            echo(msg)

    def work(job: Job, dev: str):
        fault = None
        try:
            job.device, job.threads = (None, threads) if threads else (dev, None)
            job.time_limit_s = time_limit_s
            where = f"{dev} ({threads} thread(s))" if threads else f"device {dev}"
            say(f"running {job.name} on {where} ({reasons.get(job.name, '')}); log {job.log}")
            try:
                o = execute(job, say)
            except Exception as exc:
                o = Outcome(job, "failed", 0.0, f"{type(exc).__name__}: {exc}")
            say(f"{o.status} {job.name} on {'' if threads else 'device '}{dev} in {o.seconds:.1f} s")
            outcomes.append(o)
            fault = cuda_fault(o)
            if fault:
                say(f"device {dev} set aside for the rest of the run: {job.name} died of a CUDA error ({fault})")
        finally:
            with cond:
                if fault:
                    set_aside[dev] = f"{job.name}: {fault}"
                else:
                    free.append(dev)
                running[0] -= 1
                cond.notify_all()

    workers = []
    while queue:
        with cond:
            while not free and running[0]:
                cond.wait()
            if not free:  # every device faulted
                break
            dev = free.pop(0)
            running[0] += 1
        t = threading.Thread(target=work, args=(queue.pop(0), dev), daemon=True)
        t.start()
        workers.append(t)
    for t in workers:
        t.join()
    for job in queue:
        error = f"not run: every device was set aside after a CUDA error ({', '.join(set_aside)})"
        provenance.mark_failed(Path(job.record), error, job.section, job.slice)
        outcomes.append(Outcome(job, "failed", 0.0, error))
    return outcomes


def _scheduler_state(submitted) -> str:
    """The state Slurm reports for a submitit job now (submitit caches ``.state`` between polls)."""
    try:
        submitted.watcher.update()
    except Exception:  # no scheduler to ask (the local executor): the cached state
        pass
    try:
        return str(submitted.state)
    except Exception:
        return "unknown"


#: The submitit parameters of a job that are not given (``--slurm KEY=VALUE``).
SLURM_DEFAULTS = {"timeout_min": 240, "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 64}
#: submitit parameters that ask Slurm for GPUs: left out of the decode stage's CPU-only job.
_GPU_PARAMETER = re.compile(r"gpu|gres", re.I)
#: ``--slurm decode_<key>=<value>``: a parameter of the decode stage's job only (e.g. a CPU partition).
DECODE_PREFIX = "decode_"


def _executor(executor: str, log_dir: Path, slurm: dict, name: str = "clip-study", cpu_only: bool = False):
    import submitit

    if executor == "slurm":
        ex = submitit.AutoExecutor(folder=str(log_dir), cluster="slurm")
        params = {**SLURM_DEFAULTS, **slurm}
        if cpu_only:
            params = {k: v for k, v in params.items() if not _GPU_PARAMETER.search(k)}
        ex.update_parameters(name=name, **params)
    else:
        ex = submitit.LocalExecutor(folder=str(log_dir))
        ex.update_parameters(timeout_min=int(slurm.get("timeout_min", 60)))
    return ex


def _run_submitit(jobs: list[Job], executor: str, slurm: dict, echo, decode_stage: bool = True) -> list[Outcome]:
    if not jobs:
        return []
    log_dir = Path(jobs[0].log_dir) / "submitit"
    ex = _executor(executor, log_dir, {k: v for k, v in slurm.items() if not k.startswith(DECODE_PREFIX)})
    outcomes: dict[str, Outcome] = {}
    handles: dict[str, Any] = {}
    # the decode stage: one CPU-only job before the extraction jobs, which wait for it (afterok)
    decode = _submit_stage([j for j in jobs if extracts(j)], executor, log_dir, slurm, echo) if decode_stage else None
    stage_error = _stage_result(decode, echo) if decode is not None and executor != "slurm" else None

    def collect(job: Job) -> Outcome:
        if job.name not in outcomes:
            outcomes[job.name] = _submitit_outcome(job, handles[job.name])
            echo(f"{outcomes[job.name].status} {job.name} (job {handles[job.name].job_id}, log {job.log})")
        return outcomes[job.name]

    for job in jobs:  # paper order: a job's inputs are submitted before it
        inputs = [j for j in inputs_of(job, jobs) if j.name in handles or j.name in outcomes]
        if executor == "slurm":  # Slurm holds the job until every input completed (afterok)
            ids = [str(handles[j.name].job_id) for j in inputs if j.name in handles]
            if decode is not None and extracts(job):
                ids.insert(0, str(decode.job_id))
            ex.update_parameters(slurm_dependency="afterok:" + ":".join(ids) if ids else None)
        else:  # the local executor knows no dependencies: the runner waits for the inputs itself
            if stage_error and extracts(job):
                outcomes[job.name] = _cancelled(job, [], handles, echo, **stage_error)
                continue
            failed = [j for j in inputs if collect(j).status == "failed"]
            if failed:
                outcomes[job.name] = _cancelled(job, failed, handles, echo)
                continue
        handles[job.name] = ex.submit(_execute_for_submitit, asdict(job))
    submitted = sum(j.name in handles for j in jobs)
    echo(f"submitted {submitted} job(s); logs in {log_dir}; per-job logs under {jobs[0].log_dir}")
    if decode is not None and executor == "slurm":
        stage_error = _stage_result(decode, echo)
    for job in jobs:
        if job.name in outcomes:
            continue
        if stage_error and extracts(job):  # pending for ever behind the failed decode job: cancel it
            handles[job.name].cancel(check=False)
            outcomes[job.name] = _cancelled(job, [], handles, echo, **stage_error)
            continue
        # an input that failed leaves its readers pending for ever (afterok never holds): cancel them
        failed = [j for j in inputs_of(job, jobs) if j.name in outcomes and outcomes[j.name].status == "failed"]
        if failed:
            handles[job.name].cancel(check=False)
            outcomes[job.name] = _cancelled(job, failed, handles, echo)
        else:
            collect(job)
    return [outcomes[j.name] for j in jobs]


def _submitit_outcome(job: Job, sj) -> Outcome:
    try:
        res = sj.result()
        return Outcome(job, res["status"], res["seconds"], res["error"])
    except Exception as exc:
        failed = re.search(r"JobFailed: (.*)", str(exc))
        if failed:  # the notebook failed (its record is marked already)
            return Outcome(job, "failed", 0.0, failed.group(1))
        # the job itself died (node failure, timeout): the scheduler's own word on the job (NODE_FAIL, TIMEOUT, OUT_OF_MEMORY, ...), asked anew
        state = _scheduler_state(sj)
        error = f"{type(exc).__name__}: {exc}" + (f" [scheduler state: {state}]" if state not in str(exc) else "")
        provenance.mark_failed(Path(job.record), error, job.section, job.slice)
        return Outcome(job, "failed", 0.0, error)


def _cancelled(job: Job, failed: list[Job], handles: dict, echo, named: str = "", why: str = "") -> Outcome:
    """The outcome of a reader whose input failed: not run, its record marked failed, naming the
    input (``failed``, or ``named``: the decode stage) and, when given, ``why`` it failed."""
    named = named or ", ".join(f"{j.name}" + (f" (job {handles[j.name].job_id})" if j.name in handles else "")
                               for j in failed)
    error = f"cancelled: its input {named} failed{f' ({why})' if why else ''}; fix that and run again"
    provenance.mark_failed(Path(job.record), error, job.section, job.slice)
    echo(f"cancelled {job.name}: input {named} failed")
    return Outcome(job, "failed", 0.0, error)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
