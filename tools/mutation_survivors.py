"""List the mutants of a `make mutate` run with the line each one changed, read from ``mutants/``.

mutmut keeps every mutant of a function beside its original (``x_<name>__mutmut_<k>`` and
``x_<name>__mutmut_orig``) in the mutated copy of each source file, and each mutant's exit code in
the ``.meta`` file next to it (0: survived, 1: killed, 33: no test reached it). Printing the
changed line beside the name is what reviewing a survivor needs, and ``mutmut show`` gives it one
mutant at a time.

    python tools/mutation_survivors.py            # survivors
    python tools/mutation_survivors.py 0,33       # survivors and mutants no test reached
"""
from __future__ import annotations

import ast
import difflib
import json
import re
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code  # mutmut's own reading of its exit codes


def changed_lines(original: list[str], mutant: list[str]) -> str:
    added = [line[1:].strip() for line in difflib.unified_diff(original, mutant, lineterm="", n=0)
             if line.startswith("+") and not line.startswith("+++")]
    return " / ".join(added)


def mutants(root: Path, codes: set[int]):
    """(mutant name, status, changed line) for every mutant whose exit code is in ``codes``."""
    for meta in sorted(root.glob("**/*.py.meta")):
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        keys = [k for k, v in exit_codes.items() if v in codes]
        if not keys:
            continue
        lines = meta.with_suffix("").read_text().splitlines()
        # the whole function, its def line included (a default value is mutated there), under one name
        bodies = {node.name: [lines[node.lineno - 1].replace(node.name, "f", 1), *lines[node.lineno:node.end_lineno]]
                  for node in ast.walk(ast.parse("\n".join(lines)))
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for key in keys:
            name = key.split(".")[-1]
            original = bodies.get(re.sub(r"__mutmut_\d+$", "", name) + "__mutmut_orig")
            mutant = bodies.get(name)
            change = changed_lines(original, mutant) if original and mutant else "?"
            yield key, status_by_exit_code[exit_codes[key]], change


if __name__ == "__main__":
    wanted = {int(c) for c in (sys.argv[1] if len(sys.argv) > 1 else "0").split(",")}
    for key, status, change in mutants(Path("mutants"), wanted):
        print(f"{key}\t{status}\t{change}")
