"""Assemble the book's sources: the executed whole-pool notebooks and the model-pool page.

The book renders with ``execute_notebooks: "off"``; execution happened in :func:`helpers.workflow.runner.run`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from helpers.config import FAMILIES, REPO_ROOT, Profile, load_profile
from helpers.workflow.runner import NOTEBOOK_DIR, notebooks

RENDER_DIR = REPO_ROOT / "rendered"


def render_sources(profile: Profile, sections: Iterable[str] | None = None, notebook_dir: Path = NOTEBOOK_DIR,
                   dest: Path = RENDER_DIR) -> list[Path]:
    """Copy each section's executed whole-pool notebook where ``_toc.yml`` expects it, and write
    the pool page. A section that never ran is an error naming it: the build must not silently
    drop a chapter."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for section, md in notebooks(notebook_dir).items():
        if sections and section not in sections:
            continue
        src = profile.results_dir / "executed" / section / "all.ipynb"
        if not src.exists():
            raise FileNotFoundError(f"section {section!r} has no executed notebook at {src}; "
                                    f"run `clip-study run --profile {profile.name} --section {section}` first")
        target = dest / f"{md.stem}.ipynb"
        _copy_hiding_injected_parameters(src, target)
        copied.append(target)
    pool = dest / "pool.md"
    pool.write_text(pool_page(profile))
    copied.append(pool)
    return copied


def _copy_hiding_injected_parameters(src: Path, target: Path) -> None:
    """papermill's injected-parameters cell records how the run was called; the reader of the book
    learns that from the profile banner, so the cell is removed from the page (kept in the file)."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(nb, target)


def _pool_table(profile: Profile) -> str:
    stand_ins = any(e.stands_in_for for e in profile.pool)
    notes = any(e.note for e in profile.pool)  # a Note column only where some entry has one
    second = " Untrained stand-in for |" if stand_ins else ""
    rows = ["| Entry |" + second + " Backbone | Family | Pretraining data | Weights |" + (" Note |" if notes else ""),
            "| --- |" + (" --- |" if stand_ins else "") + " --- | --- | --- | --- |" + (" --- |" if notes else "")]
    for e in profile.pool:
        weights = f"`{e.model}` / `{e.pretrained}`" if e.pretrained else (
            f"`{e.model}` / checkpoint `{Path(e.checkpoint).name}`" if e.checkpoint else f"`{e.model}` / random init, seed {e.seed}")
        note = e.note.replace("|", "/")
        # ids as plain text: they break at their hyphens in a narrow column, code would not
        stand_in = (f" {e.stands_in_for} |" if e.stands_in_for else " – |") if stand_ins else ""
        rows.append(f"| {e.id} |{stand_in} {e.arch} | {FAMILIES[e.family]} | {e.pretraining} | {weights} |"
                    + (f" {note} |" if notes else ""))
    return "\n".join(rows)


def _in_sentence(name: str) -> str:
    """A family's display name inside a sentence: the first letter lowered unless the first word
    is a name (CoCa) or an acronym (CLIP)."""
    first = name.split()[0]
    return name[0].lower() + name[1:] if len(first) > 1 and first[1:].islower() else name


def pool_page(profile: Profile) -> str:
    """The model-pool chapter, built from the configuration so it cannot drift from it."""
    paper = profile if profile.name == "paper" else load_profile("paper")
    counts = {f: sum(e.family == f for e in paper.pool) for f in FAMILIES}
    parts = [
        "# The model pool", "",
        f"This book was built with the **`{profile.name}`** profile (`{profile.path.relative_to(REPO_ROOT) if profile.path.is_relative_to(REPO_ROOT) else profile.path}`).",
        "",
    ]
    if profile.name != "paper":
        parts += [f"## The `{profile.name}` pool (this build)", "",
                  "One small randomly initialised model per family, standing in for the backbone it is grouped under. "
                  "They take the same code paths as the real architectures; their numbers carry no meaning. Each names the "
                  "paper model it stands in for: every chapter sets the paper's published value for that model beside "
                  "the stand-in's, marked as an untrained stand-in.", "",
                  _pool_table(profile), ""]
    parts += ["## The paper's pool (`paper` profile)", "",
              "Section 3 and Appendix D: " + ", ".join(f"{n} {_in_sentence(FAMILIES[f])}" for f, n in counts.items() if n)
              + f" ({len(paper.pool)} models). Entries with a checkpoint are produced by this study's finetuning and "
              "training commands or supplied by their authors (see the reproducing page).", "",
              _pool_table(paper), ""]
    return "\n".join(parts)
