"""Forking the study: ``clip-study new-notebook <name>`` starts a new chapter from the template, and
:func:`layer_names` tells a fork which layer activations it can ask the engine for.

A fork is a notebook like the chapters: ``notebooks/NN_<name>.md`` with one parameters cell, run by
papermill or ``clip-study run --section <name>``, recording its numbers under its own section
(``<results_dir>/tables/<name>/``). :func:`new_notebook` copies ``notebooks/templates/new_hypothesis.md``
to the next free number and adds the chapter to ``_toc.yml`` under "Going further"; the template
shows each way to reach the data (final embeddings and heads, any layer's activations, the other
chapters' tables, the pool and its families).
"""
from __future__ import annotations

import re
from pathlib import Path

from helpers.config import REPO_ROOT, PoolEntry, load_profile
from helpers.store import atomic_write_text

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
TEMPLATE = NOTEBOOK_DIR / "templates" / "new_hypothesis.md"
TOC = REPO_ROOT / "_toc.yml"
#: The ``_toc.yml`` part a new notebook is listed under.
PART = "Going further"

_SECTION_IN_TEMPLATE = "new_hypothesis"
_TITLE_IN_TEMPLATE = "# A new hypothesis (template)"
_NAME = re.compile(r"[a-z][a-z0-9_]*")


class ForkError(ValueError):
    """A notebook :func:`new_notebook` cannot create; the message names the file or the name."""


def new_notebook(name: str, notebooks_dir: Path = NOTEBOOK_DIR, toc: Path = TOC,
                 template: Path = TEMPLATE) -> tuple[Path, str]:
    """Copy ``template`` to ``notebooks_dir/NN_<name>.md`` (NN: one above the highest number in use)
    with its section set to ``name``, and list it in ``toc`` at the end of the "Going further" part.

    Returns the new file and the ``_toc.yml`` line. Refuses a name that is not a lowercase
    identifier or that a notebook already has; checks everything before writing, so a refusal
    leaves nothing behind."""
    notebooks_dir, toc, template = Path(notebooks_dir), Path(toc), Path(template)
    if not _NAME.fullmatch(name):
        raise ForkError(f"notebook name {name!r}: expected a lowercase identifier (letters, digits, underscores, "
                        "starting with a letter), e.g. my_hypothesis; it becomes the section name")
    existing = {p.stem.split("_", 1)[1]: p for p in sorted(notebooks_dir.glob("[0-9][0-9]_*.md"))}
    if name in existing:
        raise ForkError(f"a notebook named {name!r} exists already: {existing[name]}; choose another name")
    number = max((int(p.name[:2]) for p in existing.values()), default=-1) + 1
    if number > 99:
        raise ForkError(f"{notebooks_dir} has no free two-digit number left for {name!r}")
    path = notebooks_dir / f"{number:02d}_{name}.md"
    if not template.is_file():
        raise ForkError(f"template {template} does not exist; expected the MyST notebook "
                        "notebooks/templates/new_hypothesis.md")
    text = template.read_text()
    if f'"{_SECTION_IN_TEMPLATE}"' not in text:
        raise ForkError(f"template {template} does not open its study as open_study(\"{_SECTION_IN_TEMPLATE}\", ...)")
    line = f"      - file: rendered/{path.stem}"
    toc_text = _with_chapter(toc, toc.read_text() if toc.is_file() else None, line)
    text = text.replace(f'"{_SECTION_IN_TEMPLATE}"', f'"{name}"')
    text = text.replace(_TITLE_IN_TEMPLATE, f"# {name.replace('_', ' ').capitalize()}")
    atomic_write_text(path, text)
    try:
        atomic_write_text(toc, toc_text)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, line.strip()


def _with_chapter(toc: Path, text: str | None, line: str) -> str:
    """``text`` with ``line`` after the last chapter of the :data:`PART` part, comments and layout
    kept (the file is edited as text, not re-dumped)."""
    if text is None:
        raise ForkError(f"table of contents {toc} does not exist; expected the book's _toc.yml")
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if re.match(rf"\s*- caption:\s*{re.escape(PART)}\s*$", ln)), None)
    if start is None:
        raise ForkError(f"{toc} has no part with caption {PART!r}; expected one to list the new notebook under")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"\s*- caption:", lines[i])), len(lines))
    last = max((i for i in range(start + 1, end) if re.match(r"\s+- file:", lines[i])), default=None)
    if last is None:
        raise ForkError(f"{toc}: part {PART!r} lists no chapter to add the new notebook after")
    if not lines[last].endswith("\n"):
        lines[last] += "\n"
    return "".join(lines[:last + 1] + [line + "\n"] + lines[last + 1:])


# --------------------------------------------------------------------------------------------
# Layer names, without loading weights


def layer_names(entry: PoolEntry) -> list[str]:
    """The names :func:`helpers.engine.extract.layer_activations` accepts for ``entry``, in network order,
    read from the architecture's configuration (no weights loaded): ``layer1`` .. ``layer4`` for
    the CLIP ResNets; ``blockNN.cls`` and ``blockNN.mean`` (class token, mean of the patch tokens)
    for every transformer block; ``embedding`` (h) last. The same as
    :func:`helpers.engine.extract.layer_names` on the loaded model."""
    if entry.source == "torchvision":
        from helpers.models import build_architecture

        blocks = len(build_architecture(entry, device="meta").encoder.layers)
    else:
        import open_clip

        from helpers.demo.archs import register_demo_models

        register_demo_models()
        cfg = open_clip.get_model_config(entry.model)
        if cfg is None:
            raise ForkError(f"entry {entry.id!r}: open_clip has no model config {entry.model!r}")
        layers = cfg["vision_cfg"]["layers"]
        if isinstance(layers, (list, tuple)):  # a modified ResNet: blocks per stage
            return [f"layer{i}" for i in range(1, 5)] + ["embedding"]
        blocks = int(layers)
    width = len(str(blocks - 1))
    return [f"block{i:0{width}d}.{p}" for i in range(blocks) for p in ("cls", "mean")] + ["embedding"]


def penultimate_layer(entry: PoolEntry) -> str:
    """The last layer before h: ``layer4`` of a ResNet (the attention pool then gives h), the class
    token of the last block of a ViT (then the final LayerNorm, and for open_clip the projection).

    For the torchvision ViTs h *is* that class token after the encoder's final LayerNorm, so its
    kurtosis differs from Eq. (1)'s only through the LayerNorm's per-coordinate gain and bias (the
    standardisation leaves a vector's kurtosis unchanged)."""
    names = layer_names(entry)
    return names[-2] if names[-2].startswith("layer") else names[-3]


def layer_table(pool):
    """One row per entry: its backbone, family, number of layer outputs, first name, the penultimate
    layer and every name as a list (what a fork passes to ``layer_activations(..., layers=[...])``),
    as a DataFrame."""
    import pandas as pd

    rows = []
    for e in pool:
        names = layer_names(e)
        rows.append({"entry": e.id, "backbone": e.arch, "family": e.family, "layers": len(names),
                     "first": names[0], "last before h": penultimate_layer(e), "names": names})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Command line (``clip-study new-notebook``)


def add_arguments(p) -> None:
    p.add_argument("name", help="section name of the new notebook, a lowercase identifier (e.g. my_hypothesis)")


def run_cli(args) -> int:
    path, line = new_notebook(args.name)
    rel = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    print(f"created {rel} from {TEMPLATE.relative_to(REPO_ROOT)} (section {args.name!r})")
    print(f"added `{line}` to {TOC.name} under {PART!r}")
    ipynb = rel.with_suffix(".ipynb")
    results = load_profile("demo").results_dir
    executed = results / "executed" / args.name / "all.ipynb"
    shown = executed.relative_to(REPO_ROOT) if executed.is_relative_to(REPO_ROOT) else executed
    print(f"run it:   .venv/bin/clip-study run --profile demo --section {args.name}")
    print(f"or:       .venv/bin/jupytext --to ipynb --output {ipynb} {rel} && mkdir -p {shown.parent} && "
          f".venv/bin/papermill {ipynb} {shown}")
    print("then:     .venv/bin/clip-study render --profile demo   # the executed notebook into the book's sources")
    return 0
