"""What every results table was computed from, recorded by the notebook that computed it.

A *job* is one (section, slice) execution of a chapter notebook, by ``clip-study run`` or by a
plain ``papermill`` call. The notebook's kernel records, in this process-level recorder:

- the code that ran: a digest of the executed code cells (the parameters cell included, papermill's
  injected-parameters cell excluded) and the effective parameter values;
- the profile: the name or path it was loaded from, the overrides and the validated digest;
- every ``helpers`` module imported at the end of the job (``sys.modules``, so transitively),
  each with the digest of its code (:func:`module_code_digest`: the syntax tree without docstrings,
  so a comment or docstring edit is not a change), and the package's data files
  (``helpers/reference/``) by sha256;
- every dataset opened (:func:`note_dataset`: a signature over every file at any depth of its
  root), every weights file (:func:`note_file`), the extraction cache keys it used
  (``note("cache", name, key)``, derived from the recorded inputs, kept for inspection);
- the tables it read (each query of :func:`helpers.study.results.load`) and wrote, by content hash.

:func:`finish` (the last cell of every chapter, ``S.finish()``) writes the record to
``<results_dir>/provenance/<section>/<slice>.json`` with ``status: complete``; :func:`begin` (called
by :func:`helpers.study.open_study`) first marks it ``running``, so a job that dies leaves a record
that is not complete and the tables it claimed are not trusted (:func:`scan_tables`).
The runner (:func:`check`) re-hashes each recorded input and skips the job only if all are unchanged;
a new, unused module in ``helpers/`` changes nothing.
"""
from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from helpers.config import load_profile
from helpers.store import atomic_write_text

FORMAT = 1
HELPERS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = HELPERS_DIR.parent
#: Set by the runner in the kernel's environment: the MyST source of the job's notebook.
NOTEBOOK_ENV = "CLIP_STUDY_NOTEBOOK"
RECORD_DIR = "provenance"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canon(obj: Any) -> Any:
    """JSON round trip, so tuples and lists, ints and floats compare as they are stored."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- slices and record paths

def slice_label(entry: str | None = None, backbone: str | None = None) -> str:
    """The slice a job runs on, as the runner names it: an entry id, ``backbone-<arch>`` or ``all``."""
    if entry:
        return str(entry)
    if backbone:
        return f"backbone-{backbone}"
    return "all"


def record_path(results_dir: Path, section: str, label: str) -> Path:
    return Path(results_dir) / RECORD_DIR / section / f"{label}.json"


def read_record(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_record(path: Path, record: dict) -> None:
    atomic_write_text(Path(path), json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")


def all_records(results_dir: Path) -> list[tuple[Path, dict]]:
    folder = Path(results_dir) / RECORD_DIR
    out = []
    for p in sorted(folder.glob("*/*.json")) if folder.exists() else []:
        r = read_record(p)
        if r is not None:
            out.append((p, r))
    return out


# ---------------------------------------------------------------- which tables the records vouch for

def table_claims(results_dir: Path) -> dict[str, list[tuple[str, str, str]]]:
    """Table path (relative to results_dir) -> [(status, sha256, job)] of every record claiming it."""
    out: dict[str, list] = {}
    for p, r in all_records(results_dir):
        job = f"{r.get('section')}[{r.get('slice')}]"
        for rel, sha in (r.get("tables_written") or {}).items():
            out.setdefault(rel, []).append((r.get("status"), sha, job))
    return out


def scan_tables(results_dir: Path, section: str, entries: Iterable[str] | None = None) -> list[dict]:
    """Every table of a section (optionally only some entries) with its trust status:
    ``ok`` (vouched for by a readable, complete record of the job that wrote it, for exactly these
    bytes, or written by this process), ``failed`` (claimed by a job that failed or did not finish:
    stale) or ``unvouched`` (no readable record claims it, or a complete record claims other bytes:
    a missing, truncated or inconsistent record trusts nothing)."""
    results_dir = Path(results_dir)
    folder = results_dir / "tables" / section
    wanted = None if entries is None else set(entries)
    claims = table_claims(results_dir) if folder.exists() else {}
    written = RECORDER.written
    rows = []
    for csv in sorted(folder.glob("*.csv")) if folder.exists() else []:
        if wanted is not None and csv.stem not in wanted:
            continue
        data = csv.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        rel = csv.relative_to(results_dir).as_posix()
        cl = claims.get(rel, [])
        if written.get(str(csv.resolve())) == sha or any(s == "complete" and h == sha for s, h, _ in cl):
            status, job = "ok", next((j for s, h, j in cl if s == "complete" and h == sha), "")
        elif any(s != "complete" for s, _, _ in cl):
            status, job = "failed", next(j for s, _, j in cl if s != "complete")
        else:
            status, job = "unvouched", next((j for _, _, j in cl), "")
        rows.append({"entry": csv.stem, "path": csv, "sha256": sha, "status": status, "job": job})
    return rows


def tables_digest(results_dir: Path, section: str, entries: Iterable[str] | None) -> str:
    """What a :func:`helpers.study.results.load` of these tables returns, as a digest (the provenance
    of a reader: a job that read them is out of date when it changes)."""
    ok = [f"{r['entry']}\t{r['sha256']}" for r in scan_tables(results_dir, section, entries) if r["status"] == "ok"]
    return hashlib.sha256("\n".join(ok).encode()).hexdigest()


def mark_failed(path: Path, error: str, section: str, label: str) -> None:
    """A job that failed: its record says so (the runner calls this), so the tables it claims,
    from this run or the previous one, are no longer trusted."""
    r = read_record(path) or {"format": FORMAT, "section": section, "slice": label, "tables_written": {}}
    r.update(status="failed", finished=_now(), error=error[-2000:])
    write_record(path, r)


# ---------------------------------------------------------------- notebooks and parameters

def parameters_cell(md_or_nb) -> str | None:
    """Source of the cell tagged ``parameters`` of a MyST/ipynb notebook (path or nbformat node)."""
    import jupytext

    nb = jupytext.read(md_or_nb) if isinstance(md_or_nb, (str, Path)) else md_or_nb
    for c in nb.cells:
        if c.cell_type == "code" and "parameters" in c.metadata.get("tags", []):
            return c.source
    return None


def parse_assignments(source: str | None) -> dict[str, Any]:
    """``name = literal`` lines of a parameters (or papermill injected-parameters) cell; a value
    that is not a literal is kept as its source text."""
    out: dict[str, Any] = {}
    for node in ast.parse(source or "").body:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    try:
                        out[t.id] = ast.literal_eval(node.value)
                    except ValueError:
                        out[t.id] = ast.get_source_segment(source, node.value)
    return out


def declared_parameters(md: Path) -> dict[str, Any]:
    """Parameter name -> default value of a notebook."""
    return parse_assignments(parameters_cell(md))


def code_digest(sources: Iterable[str]) -> str:
    """Digest of a notebook's code as it runs: the non-empty code cells in order (nbclient skips
    empty ones), papermill's injected-parameters cell left out."""
    h = hashlib.sha256()
    for s in sources:
        if s.strip() and not is_injected(s):
            h.update(s.encode())
            h.update(b"\0")
    return h.hexdigest()


def is_injected(source: str) -> bool:
    return source.startswith("# Parameters\n")


def notebook_digest(md: Path) -> str:
    """:func:`code_digest` of a MyST source, as papermill would execute its ``.ipynb`` pair."""
    import jupytext

    nb = jupytext.read(md)
    return code_digest(c.source for c in nb.cells if c.cell_type == "code")


def kernel_sources() -> list[str] | None:
    """The code cells this IPython kernel executed so far, as typed (raw history)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    ip = get_ipython()
    if ip is None or getattr(ip, "history_manager", None) is None:
        return None
    return [s for s in ip.history_manager.input_hist_raw if s]


def kernel_namespace() -> dict | None:
    """The variables of the IPython kernel this code runs in (None outside one): where a
    notebook's parameters are read as they are when the job starts."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    ip = get_ipython()
    return None if ip is None else ip.user_ns


def find_notebook(section: str) -> Path | None:
    """The MyST source of a section: the runner says which (environment), else ``notebooks/NN_<section>.md``."""
    env = os.environ.get(NOTEBOOK_ENV)
    if env and Path(env).exists():
        return Path(env)
    for p in sorted((REPO_ROOT / "notebooks").glob(f"[0-9][0-9]_{section}.md")):
        return p
    return None


# ---------------------------------------------------------------- inputs: files and datasets

_FILE_MEMO: dict[tuple, str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, memoised in this process per (resolved path, size, mtime): the one
    file hash of the package (also the weights digest :func:`helpers.models.file_sha256` gives a
    checkpoint), so a weights file a job loads and records is read once."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _FILE_MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
        _FILE_MEMO[key] = h.hexdigest()
    return _FILE_MEMO[key]


def file_digest(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str | None:
    """sha256 of a file's bytes (None if absent), remembered by (path, size, mtime): a weights file
    is read once, not at every check. ``cache_dir`` keeps the memo across processes."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key in _FILE_MEMO:
        return _FILE_MEMO[key]
    disk = Path(cache_dir) / RECORD_DIR / "file-digests.json" if cache_dir else None
    table = read_record(disk) or {} if disk else {}
    k = "\t".join(map(str, key))
    if k in table:
        _FILE_MEMO[key] = table[k]
        return table[k]
    digest = sha256_file(p)
    if disk:
        fresh = read_record(disk) or {}  # another process may have added entries meanwhile
        fresh[k] = digest
        write_record(disk, fresh)
    return digest


def _list_dir(folder: str) -> tuple[list[str], list[tuple[str, int, int]]]:
    dirs, files = [], []
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith("."):
                continue  # the loaders ignore hidden files too (.DS_Store, .ipynb_checkpoints)
            if e.is_dir():
                dirs.append(e.path)
            else:
                st = e.stat()
                files.append((e.name, st.st_size, st.st_mtime_ns))
    return dirs, files


_TREE_MEMO: dict[str, str | None] = {}
#: What the dataset loaders (helpers.data) read besides images: Broden's CSVs, ObjectNet's JSON
#: mappings and the lemma list in its ``mappings/`` folder. A README, a licence or notes beside the
#: data are read by none, so they change no signature.
_MAPPING_SUFFIXES = (".csv", ".json")


def loader_reads(rel_dir: str, name: str) -> bool:
    """Whether a dataset loader reads the file ``name`` in the folder ``rel_dir`` (relative to the
    dataset's root): an image, a CSV / JSON mapping, or any file under a ``mappings`` folder."""
    from helpers.data.base import IMAGE_EXTENSIONS  # lazy: helpers.data imports torch, this module must not

    low = name.lower()
    return (low.endswith(IMAGE_EXTENSIONS) or low.endswith(_MAPPING_SUFFIXES)
            or "mappings" in Path(rel_dir).parts)


def tree_signature(root: str | os.PathLike, memo: bool = False) -> str | None:
    """sha256 over every file a loader reads (:func:`loader_reads`) at any depth under ``root``:
    relative path, size, modification time.

    Adding, removing, renaming, replacing (in place or not) or truncating any image, or editing a
    mapping or index file, changes it; a README or licence beside the data does not. It reads no image bytes: one ``stat`` per file, spread over
    threads (a directory's mtime alone would miss a file rewritten in place; see
    ``benchmarks/provenance.py`` for the cost). ``memo``: reuse the value computed earlier in this
    process (the runner checks many jobs against the same datasets).
    """
    root = os.path.abspath(root)
    if memo and root in _TREE_MEMO:
        return _TREE_MEMO[root]
    if not os.path.exists(root):
        sig = None
    elif os.path.isfile(root):
        st = os.stat(root)
        sig = _sha(f"{st.st_size}\t{st.st_mtime_ns}".encode())
    else:
        rows: list[str] = []
        with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) * 4)) as pool:
            pending = [root]
            while pending:
                listed = list(pool.map(_list_dir, pending))
                nxt = []
                for folder, (dirs, files) in zip(pending, listed):
                    rel = os.path.relpath(folder, root)
                    files = [f for f in files if loader_reads(rel, f[0])]
                    rows += [f"{rel}/{n}\t{size}\t{mtime}" for n, size, mtime in files]
                    rows.append(f"{rel}/\t{len(dirs)}\t{len(files)}")
                    nxt += dirs
                pending = nxt
        rows.sort()
        sig = _sha("\n".join(rows).encode())
    _TREE_MEMO[root] = sig
    return sig


# ---------------------------------------------------------------- the recorder

_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_CODE_MEMO: dict[tuple, str] = {}


def module_code_digest(path: str | os.PathLike) -> str:
    """sha256 of a module's code as Python runs it: its syntax tree with every docstring removed,
    dumped without line and column numbers (comments are not in the tree). A comment, docstring,
    blank-line or line-wrapping edit leaves it unchanged; any change to a statement or expression
    changes it. A file that does not parse is digested by its bytes. Memoised in this process per
    (path, size, mtime): the runner checks many jobs against the same modules."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _CODE_MEMO:
        data = p.read_bytes()
        try:
            tree = ast.parse(data)
        except (SyntaxError, ValueError):
            _CODE_MEMO[key] = _sha(b"unparsed\0" + data)
        else:
            for node in ast.walk(tree):
                if isinstance(node, _DOCUMENTED) and node.body and isinstance(node.body[0], ast.Expr) \
                        and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str):
                    node.body = node.body[1:]
            _CODE_MEMO[key] = _sha(ast.dump(tree, include_attributes=False).encode())
    return _CODE_MEMO[key]


def module_digests() -> dict[str, dict[str, str]]:
    """Every ``helpers`` module this process imported (transitively), with :func:`module_code_digest`
    of its file: a job depends on the code it imported, not on modules it never loaded nor on their
    comments and docstrings."""
    out = {}
    for name, mod in sorted(sys.modules.items()):
        if name != "helpers" and not name.startswith("helpers."):
            continue
        f = getattr(mod, "__file__", None)
        if not f or not Path(f).resolve().is_relative_to(HELPERS_DIR):
            continue
        out[name] = {"path": Path(f).resolve().relative_to(REPO_ROOT).as_posix(), "code_sha256": module_code_digest(f)}
    return out


def package_data_digests() -> dict[str, str]:
    """The package's data files (class lists, the paper's values, model configs) by sha256."""
    out = {}
    for p in sorted((HELPERS_DIR / "reference").rglob("*")):
        if p.is_file():
            out[p.relative_to(REPO_ROOT).as_posix()] = _sha(p.read_bytes())
    return out


class Recorder:
    """The current job of this process (one notebook kernel runs one job)."""

    def __init__(self):
        self.job: dict | None = None
        self.path: Path | None = None
        self.results_dir: Path | None = None
        self.cache_dir: Path | None = None
        self.written: dict[str, str] = {}  # absolute table path -> sha256, written by this process
        self.pending: dict[str, str] = {}  # tables the running job's record claims (previous run's and new)
        self.reset_inputs()

    def reset_inputs(self):
        self.datasets: dict[str, dict] = {}
        self.files: dict[str, dict] = {}
        self.caches: dict[str, str] = {}
        self.queries: dict[str, dict] = {}
        self.other: dict[str, str] = {}

    def note(self, kind: str, name: str, digest: Any) -> None:
        """Record one input: ``dataset`` (name -> {root, signature}), ``checkpoint``/``file``
        (path -> sha256), ``cache`` (entry name -> key), ``table_written`` (path -> sha256),
        ``table_query`` (section:entries -> query); any other kind is kept as is."""
        if kind == "dataset":
            self.datasets[name] = digest
        elif kind in ("checkpoint", "file"):
            self.files[name] = {"kind": kind, "sha256": digest}
        elif kind == "cache":
            self.caches[name] = digest
        elif kind == "table_written":
            self.written[name] = digest
            if self.job is not None and self.path is not None:  # claimed at once: a crash leaves it untrusted
                base = self.results_dir.resolve()
                if Path(name).is_relative_to(base):
                    self.pending[Path(name).relative_to(base).as_posix()] = digest
                    write_record(self.path, {**self.job, "tables_written": self.pending})
        elif kind == "table_query":
            self.queries[name] = digest
        else:
            self.other[f"{kind}:{name}"] = digest


RECORDER = Recorder()


def note(kind: str, name: str, digest: Any) -> None:
    """Record one input of the current job (see :meth:`Recorder.note`). Cheap, and a no-op
    outside a job apart from remembering tables written by this process."""
    RECORDER.note(kind, name, digest)


def note_dataset(name: str, root: str | os.PathLike) -> None:
    """A dataset the job reads: its root's :func:`tree_signature` (once per root and process)."""
    if RECORDER.job is None:  # not in a notebook job (training commands, tests): nothing to record
        return
    root = os.path.abspath(root)
    RECORDER.note("dataset", name, {"root": root, "signature": tree_signature(root, memo=True)})


def note_file(kind: str, path: str | os.PathLike) -> None:
    """A weights file (checkpoint) the job reads, by content (cached by size and mtime)."""
    if RECORDER.job is None:
        return
    p = str(Path(path).resolve())
    RECORDER.note(kind, p, file_digest(p, RECORDER.cache_dir))


def begin(section: str, profile, parameters: dict[str, Any], source: dict[str, Any],
          label: str) -> Path:
    """Start recording a job of ``section`` on slice ``label`` (called by ``open_study``).

    ``profile``: the validated Profile; ``source``: how it was loaded ({"name", "overrides"});
    ``parameters``: the open_study arguments, completed from the kernel's namespace with every
    parameter the notebook declares. The record on disk is marked ``running`` at once and keeps
    the tables of its previous run listed, so they are untrusted until this run completes.
    """
    R = RECORDER
    R.reset_inputs()
    R.results_dir, R.cache_dir = Path(profile.results_dir), Path(profile.cache_dir)
    md = find_notebook(section)
    params = dict(parameters)
    ns = kernel_namespace()
    if md is not None and ns is not None:  # a notebook: exactly its declared parameters, as they are now
        params = {name: ns.get(name, default) for name, default in declared_parameters(md).items()}
    R.path = record_path(R.results_dir, section, label)
    previous = read_record(R.path) or {}
    R.job = {
        "format": FORMAT, "section": section, "slice": label, "status": "running", "started": _now(),
        "notebook": {"source": md.relative_to(REPO_ROOT).as_posix() if md and md.is_relative_to(REPO_ROOT)
                     else (str(md) if md else None)},
        "parameters": _canon(params),
        "profile": {"name": source.get("name"), "overrides": _canon(source.get("overrides") or {}),
                    "digest": profile.digest()},
        "results_dir": str(R.results_dir),
        "host": os.uname().nodename, "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    R.pending = dict(previous.get("tables_written") or {})
    R.written = {}
    write_record(R.path, {**R.job, "tables_written": R.pending})
    return R.path


def finish(section: str | None = None, profile: str | None = None) -> Path | None:
    """Complete the current job's record (the notebook's last cell). A notebook that never called
    ``open_study`` (the probe-validation page) names its section and profile here."""
    R = RECORDER
    if R.job is None:
        if section is None:
            return None
        P = load_profile(profile or "demo")
        begin(section, P, {"profile": profile or "demo"}, {"name": profile or "demo", "overrides": {}}, "all")
    sources = kernel_sources()
    job = dict(R.job)
    job["notebook"] = dict(job["notebook"], code_sha256=code_digest(sources) if sources is not None else None)
    job["modules"] = module_digests()
    job["package_data"] = package_data_digests()
    job["datasets"] = dict(R.datasets)
    job["files"] = dict(R.files)
    job["caches"] = dict(R.caches)
    job["other"] = dict(R.other)
    # table queries are re-evaluated now, after this job's own writes (see tables_digest)
    job["tables_read"] = {k: dict(q, digest=tables_digest(R.results_dir, q["section"], q["entries"]))
                          for k, q in sorted(R.queries.items())}
    base = R.results_dir.resolve()
    job["tables_written"] = {Path(a).relative_to(base).as_posix(): _sha(Path(a).read_bytes())
                             for a in sorted(R.written) if Path(a).is_relative_to(base) and Path(a).exists()}
    job.update(status="complete", finished=_now())
    write_record(R.path, job)
    R.job = None
    return R.path


# ---------------------------------------------------------------- the runner's check

def check(record: dict | None, *, notebook_digest_: str, parameters: dict[str, Any], load_profile=None,
          cache_dir: Path | None = None) -> str | None:
    """Why a job is out of date (None: up to date). ``record``: the job's record;
    ``notebook_digest_``: :func:`notebook_digest` of its source; ``parameters``: the effective
    values the runner would pass. Every recorded input is re-hashed."""
    if record is None:
        return "never ran"
    if record.get("status") != "complete":
        return f"last run {record.get('status', 'unfinished')}"
    if record.get("format") != FORMAT:
        return "recorded by another version of the recorder"
    if record.get("notebook", {}).get("code_sha256") != notebook_digest_:
        return "notebook changed"
    if record.get("parameters") != _canon(parameters):
        diff = sorted(k for k in set(record.get("parameters", {})) | set(parameters)
                      if _canon(record.get("parameters", {}).get(k)) != _canon(parameters.get(k)))
        return f"parameters changed ({', '.join(diff) or 'names'})"
    prof = record.get("profile", {})
    if load_profile is not None:
        try:
            digest = load_profile(prof.get("name"), prof.get("overrides") or {}).digest()
        except Exception as exc:  # a profile that no longer loads is not up to date
            return f"profile does not load ({exc})"
        if digest != prof.get("digest"):
            return "profile changed"
    for name, m in record.get("modules", {}).items():
        p = REPO_ROOT / m["path"]
        if not p.exists() or module_code_digest(p) != m.get("code_sha256"):  # a record without one: changed
            return f"module {name} changed"
    for rel, sha in record.get("package_data", {}).items():
        p = REPO_ROOT / rel
        if not p.exists() or _sha(p.read_bytes()) != sha:
            return f"package data {rel} changed"
    for name, d in record.get("datasets", {}).items():
        if tree_signature(d["root"], memo=True) != d["signature"]:
            return f"dataset {name} changed ({d['root']})"
    for path, f in record.get("files", {}).items():
        if file_digest(path, cache_dir) != f["sha256"]:
            return f"{f.get('kind', 'file')} {path} changed"
    base = Path(record.get("results_dir", "."))
    for rel, sha in record.get("tables_written", {}).items():
        p = base / rel
        if not p.exists() or _sha(p.read_bytes()) != sha:
            return f"table {rel} changed or removed since this job wrote it"
    for key, q in record.get("tables_read", {}).items():
        if tables_digest(Path(q["results_dir"]), q["section"], q["entries"]) != q["digest"]:
            return f"tables read from {q['section']} changed"
    return None
