"""Assemble the book's sources: the executed whole-pool notebooks and the model-pool page.

The book renders with ``execute_notebooks: "off"``; execution happened in :func:`helpers.workflow.runner.run`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from helpers.config import FAMILIES, REPO_ROOT, Profile, load_profile
from helpers.study import provenance
from helpers.workflow.sections import NOTEBOOK_DIR, notebooks

RENDER_DIR = REPO_ROOT / "rendered"


def render_sources(profile: Profile, sections: Iterable[str] | None = None, notebook_dir: Path = NOTEBOOK_DIR,
                   dest: Path = RENDER_DIR) -> list[Path]:
    """Copy each section's executed notebook where ``_toc.yml`` expects it, and write the pool page.

    The chapter is the whole-pool run (``executed/<section>/all.ipynb``); a section that ran only on
    slices (``--backbone``, ``--entry``, ``--per-entry``, or a papermill run brought in with
    :func:`adopt`) is rendered from its newest sliced notebook, with a note at the top naming the
    slice. A section that never ran is an error naming it: the build must not silently drop a
    chapter."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for section, md in notebooks(notebook_dir).items():
        if sections and section not in sections:
            continue
        src, label = executed_notebook(profile, section)
        target = dest / f"{md.stem}.ipynb"
        note = None if label == "all" else (
            f"This page shows the run on the slice `{label}` of the pool, not the whole pool: `clip-study run "
            f"--profile {profile.name} --section {section}` (no slice) renders the whole chapter.")
        _copy_hiding_injected_parameters(src, target, note)
        copied.append(target)
    pool = dest / "pool.md"
    pool.write_text(pool_page(profile))
    copied.append(pool)
    return copied


def executed_notebook(profile: Profile, section: str) -> tuple[Path, str]:
    """(the executed notebook a section's page is rendered from, its slice label)."""
    folder = profile.results_dir / "executed" / section
    whole = folder / "all.ipynb"
    if whole.is_file():
        return whole, "all"
    sliced = sorted(folder.glob("*.ipynb"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if sliced:
        return sliced[-1], sliced[-1].stem
    raise FileNotFoundError(
        f"section {section!r} has no executed notebook under {folder}; `clip-study run --profile {profile.name} "
        f"--section {section}` executes it there, and a notebook run directly with papermill is brought in with "
        f"`clip-study render --profile {profile.name} --notebook <papermill output>.ipynb`")


def adopt(profile: Profile, notebook: Path) -> Path:
    """Bring a notebook executed directly by papermill (a chapter or a fork, output anywhere) into
    ``<results_dir>/executed/<section>/<slice>.ipynb``, where :func:`render_sources` reads it. The
    section comes from papermill's record of the input notebook (``NN_<section>.ipynb``), the slice
    from its parameters. Refuses a notebook papermill did not finish."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    meta = nb.metadata.get("papermill") or {}
    source = Path(meta.get("input_path") or "")
    if not source.name or "_" not in source.stem or not source.stem[:2].isdigit():
        raise FileNotFoundError(f"{notebook}: not a papermill run of a chapter (metadata.papermill.input_path is "
                                f"{meta.get('input_path')!r}; expected notebooks/NN_<section>.ipynb)")
    if meta.get("exception") or not meta.get("end_time"):
        raise FileNotFoundError(f"{notebook}: papermill did not finish it (an exception, or no end time): "
                                "run it again, or `clip-study run --section ...`")
    section = source.stem.split("_", 1)[1]
    params = meta.get("parameters") or {}
    label = provenance.slice_label(params.get("entry"), params.get("backbone"))
    target = profile.results_dir / "executed" / section / f"{label}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target


def _copy_hiding_injected_parameters(src: Path, target: Path, note: str | None = None) -> None:
    """papermill's injected-parameters cell records how the run was called; the reader of the book
    learns that from the profile banner, so the cell is removed from the page (kept in the file).
    ``note``: said at the top of the page (a sliced run's)."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    if note is not None:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"```{{note}}\n{note}\n```"))
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
