"""The package's import graph: loading a profile stays light, and no helpers module imports,
at module level, a module that imports it back."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.config import ConfigError, load_profile
from tests.conftest import REPO, write_profile

HELPERS = REPO / "helpers"


def test_loading_a_profile_imports_neither_torch_nor_open_clip():
    # a fresh interpreter: the test session has imported both already (tests/conftest.py)
    code = ("import helpers.config as c, sys; c.load_profile('demo'); "
            "heavy = [m for m in ('torch', 'open_clip') if m in sys.modules]; "
            "assert not heavy, f'load_profile imported {heavy}'")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(body: list[ast.stmt]):
    """Import statements executed when the module is imported: module and class bodies, ``if`` /
    ``try`` / ``with`` blocks; not function bodies nor ``if TYPE_CHECKING:`` blocks."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _top_level_imports(node.body)
            yield from _top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _top_level_imports(block)
        elif isinstance(node, (ast.With, ast.ClassDef, ast.For, ast.While)):
            yield from _top_level_imports(node.body)


def _every_import(body: list[ast.stmt]):
    """Every import statement of a module, inside functions included."""
    for node in body:
        yield from (n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))


def _graph(imports=_top_level_imports) -> dict[str, set[str]]:
    """helpers module -> the helpers modules it imports (by default at module level). ``from pkg
    import name`` points at ``pkg.name`` when that is a module, else at ``pkg``; the implicit import
    of a parent package's ``__init__`` is not an edge (every package would otherwise be a cycle)."""
    files = {_module_name(p): p for p in HELPERS.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = graph.setdefault(name, set())
        for node in imports(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            edges.update(t for t in targets if t in files and t != name)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A depth-first search that keeps the current path; a back edge closes a cycle."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_helpers_modules_at_module_level():
    graph = _graph()
    assert "helpers.config" in graph and "helpers.study.results" in graph
    assert "helpers.study.provenance" in graph["helpers.study.results"]  # the scan sees real edges
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle at module level: " + " -> ".join(cycle)


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:7", "cuda:10", "cuda:2147483647",
                                    "cuda:2147483648", "cuda:00", "cuda:07", "cuda:-1", "cuda: 1", "cuda:1\n",
                                    "gpu", "CUDA", "cuda:x", "mps", "cpu:0", ""])
def test_the_device_check_without_torch_agrees_with_torch_device(tmp_path, device):
    import torch

    try:
        torch.device(device)
        torch_accepts = True
    except (RuntimeError, ValueError):
        torch_accepts = False
    # a profile names a CPU or a CUDA device (not mps, not cpu:N), without a trailing newline
    in_scope = (device in ("cpu", "cuda") or device.startswith("cuda:")) and not device.endswith("\n")
    try:
        load_profile(write_profile(tmp_path), overrides={"device": device})
        loads = True
    except ConfigError as exc:
        assert "device: expected a torch device: cpu, cuda or cuda:N" in str(exc)
        loads = False
    assert loads == (torch_accepts and in_scope)


def test_the_study_layer_has_no_import_cycle_even_inside_functions():
    # results reads the tables the provenance records vouch for; provenance never imports results
    # back, not even lazily, so the two can be read (and changed) one after the other
    study = {m: {t for t in edges if t.startswith("helpers.study")}
             for m, edges in _graph(_every_import).items() if m.startswith("helpers.study")}
    assert "helpers.study.provenance" in study["helpers.study.results"]
    cycle = _find_cycle(study)
    assert cycle is None, "import cycle in helpers.study: " + " -> ".join(cycle)


@pytest.mark.parametrize("room, upper", [
    # the workflow drives the notebooks; nothing it drives imports it back (not even lazily)
    (("helpers.chapters", "helpers.engine", "helpers.models", "helpers.data", "helpers.metrics", "helpers.study",
      "helpers.paper", "helpers.training", "helpers.demo", "helpers.plots", "helpers.store", "helpers.config"),
     "helpers.workflow"),
    # the engine and what sits under it compute for the chapters and never call a chapter
    (("helpers.engine", "helpers.models", "helpers.data", "helpers.metrics", "helpers.store", "helpers.config",
      "helpers.study", "helpers.paper"), "helpers.chapters"),
])
def test_lower_rooms_never_import_upper_ones(room, upper):
    graph = _graph(_every_import)
    offenders = sorted(f"{m} -> {t}" for m, edges in graph.items() if m.startswith(room)
                       for t in edges if t.startswith(upper))
    assert not offenders, offenders
    assert any(t.startswith(upper) for m, edges in graph.items() if not m.startswith(room) for t in edges)
