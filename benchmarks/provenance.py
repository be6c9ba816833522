"""Cost of the runner's up-to-date check on a dataset tree (helpers.study.provenance.tree_signature).

Builds a tree in the ImageNet layout (``--dirs`` class folders x ``--files`` images of ``--kb`` KB),
then measures in the same run:

- ``tree_signature`` (one stat per file, threads), cold memo;
- a single-threaded ``os.walk`` + ``stat`` (the obvious way to stat every file);
- sha256 of every byte (the obvious way to know that no image changed), on a sample of files,
  extrapolated per byte.

and prints the ratios and the extrapolation to ImageNet's training set (1,281,167 files, ~140 GB)
and to the six evaluation sets plus Broden (~290,000 files, ~25 GB)."""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from helpers.study.provenance import _TREE_MEMO, tree_signature


def build(root: Path, dirs: int, files: int, kb: int) -> int:
    blob = os.urandom(kb * 1024)
    for d in range(dirs):
        folder = root / f"n{d:08d}"
        folder.mkdir(parents=True)
        for f in range(files):
            (folder / f"ILSVRC2012_val_{d * files + f:08d}.JPEG").write_bytes(blob)
    return dirs * files


def walk_stat(root: Path) -> int:
    n = 0
    for folder, _, names in os.walk(root):
        for name in names:
            os.stat(os.path.join(folder, name))
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--kb", type=int, default=110, help="bytes per image (ImageNet JPEGs average about 110 KB)")
    ap.add_argument("--sample", type=int, default=500, help="files read for the content-hash baseline")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="prov-bench-"))
    try:
        n = build(tmp / "train", args.dirs, args.files, args.kb)
        walk_stat(tmp)  # warm the dentry cache for both contenders alike
        t0 = time.perf_counter()
        tree_signature(tmp / "train")
        t_sig = time.perf_counter() - t0
        _TREE_MEMO.clear()
        t0 = time.perf_counter()
        walk_stat(tmp / "train")
        t_walk = time.perf_counter() - t0
        files = sorted((tmp / "train").rglob("*.JPEG"))[: args.sample]
        t0 = time.perf_counter()
        for f in files:
            hashlib.sha256(f.read_bytes()).hexdigest()
        t_hash = (time.perf_counter() - t0) / len(files) * n  # per file, extrapolated to the tree
        print(f"tree of {n} files x {args.kb} KB")
        print(f"tree_signature:            {t_sig:8.3f} s  ({t_sig / n * 1e6:.1f} us/file)")
        print(f"single-thread walk + stat: {t_walk:8.3f} s  (ratio walk / signature: {t_walk / t_sig:.2f})")
        print(f"sha256 of every byte:      {t_hash:8.3f} s  (extrapolated from {len(files)} files; "
              f"ratio hash / signature: {t_hash / t_sig:.0f})")
        per_file = t_sig / n
        print(f"extrapolated signature: ImageNet train (1,281,167 files) {per_file * 1_281_167:.1f} s, "
              f"evaluation sets + Broden (~290,000 files) {per_file * 290_000:.1f} s "
              f"(once per dataset per `clip-study run`; a job's kernel signs only the datasets it opens)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
