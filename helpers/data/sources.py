"""Where each dataset comes from and how it is laid out for the loaders: the table
``helpers/reference/dataset_sources.yml``, read by ``clip-study plan`` and shown in
``book/reproducing.md`` (a test keeps the page equal to :func:`markdown_table`)."""
from __future__ import annotations

import functools
from pathlib import Path

import yaml

TABLE = Path(__file__).resolve().parent.parent / "reference" / "dataset_sources.yml"
CAPTIONS = "imagenet-captions-checkpoints"


@functools.lru_cache(maxsize=1)
def sources() -> dict[str, dict]:
    """dataset name (the profile's ``datasets:`` key) -> its row of the table."""
    return yaml.safe_load(TABLE.read_text())


def checksum_text(row: dict) -> str:
    """``md5 <hex>`` per archive where a public source states it, else "no published checksum"."""
    sums = [f"{a['file']} md5 {a['md5']}" for a in row.get("archives", []) if a.get("md5")]
    if not sums:
        return "no published checksum"
    return "; ".join(sums) + f" (checksum: {' '.join(str(row['source_of_checksum']).split())})"


def plan_lines(name: str, folder: Path | str | None, data_root: Path | str) -> list[str]:
    """What ``clip-study plan`` prints for a dataset that is not in place: its source, archive,
    checksum and the command that lays it out under ``data_root`` (``$CLIP_STUDY_DATA_ROOT``)."""
    row = sources().get(name)
    if row is None or "archives" not in row:
        return []
    files = ", ".join(a["file"] + (f" ({a['size']})" if a.get("size") else "") for a in row["archives"])
    unpack = " ".join(str(row["unpack"]).split()).replace("$DATA", str(data_root))
    out = [f"{row['name']}: get {files} from {row['source']}",
           f"    {checksum_text(row)}"]
    if row.get("download"):
        out.append(f"    download: {row['download']}")
    made = Path(data_root) / row["folder"]
    out.append(f"    lay out: {unpack}  (makes {made}"
               + ("" if folder is None or Path(folder) == made else f"; the profile reads {folder}: move it there or "
                  f"point datasets.{name} at it") + ")")
    return out


def captions_lines(target: Path | str) -> list[str]:
    """Where the ImageNet-Captions checkpoints come from and how one becomes the state dict the
    study reads at ``target`` (the entry's ``checkpoint``)."""
    row = sources()[CAPTIONS]
    convert = " ".join(str(row["convert"]).split()).replace("<checkpoints_dir>/imagenet-captions/RN50-t.pt", str(target))
    return [f"{row['name']}: {' '.join(str(row['source']).split())}",
            f"    convert an open_clip training checkpoint into the state dict the study reads: {convert}"]


def markdown_table() -> str:
    """The sources of ``book/reproducing.md``: a table (dataset, source, archive and checksum) narrow
    enough for the page, then each dataset's unpack command as a code block of its own (a long
    shell line never wraps inside a table cell)."""
    rows = ["| Dataset | Source | Archive and checksum |", "| --- | --- | --- |"]
    commands = []
    for name, row in sources().items():
        if name == CAPTIONS:
            continue
        files = "; ".join(f"`{a['file']}`" + (f" ({a['size']})" if a.get("size") else "")
                          + (f", md5 `{a['md5']}`" if a.get("md5") else "") for a in row["archives"])
        if not any(a.get("md5") for a in row["archives"]):
            files += " (no published checksum)"
        rows.append(f"| {row['name']} | {' '.join(str(row['source']).split())} | {files} |")
        commands.append(f"# {row['name']}\n{' '.join(str(row['unpack']).split())}")
    return "\n".join(rows) + "\n\nLaid out under `data_root` (`$DATA`):\n\n```bash\n" + "\n\n".join(commands) + "\n```"