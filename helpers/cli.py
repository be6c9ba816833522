"""``clip-study``: the study's command line.

    clip-study demo-data                      # write the demo datasets (real on-disk layouts)
    clip-study run --profile demo             # every section on the whole pool
    clip-study run --profile paper --backbone ViT-B-32 --section outlier_features
    clip-study run --profile paper --per-entry --executor slurm --slurm partition=gpu
    clip-study render --profile demo          # place executed notebooks for the book
"""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_profile


def _overrides(items: list[str] | None) -> dict:
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"expected NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def cmd_run(args) -> int:
    from . import runner

    profile = load_profile(args.profile)
    jobs = runner.plan(profile, sections=args.section, entry=args.entry, backbone=args.backbone,
                       per_entry=args.per_entry, extra=_overrides(args.param))
    slurm = _overrides(args.slurm)
    summary = runner.run(jobs, executor=args.executor, force=args.force, slurm=slurm)
    print(summary.report())
    return 1 if summary.failures else 0


def cmd_render(args) -> int:
    from . import book

    profile = load_profile(args.profile)
    for p in book.render_sources(profile):
        print(f"rendered source {p}")
    return 0


def cmd_demo_data(args) -> int:
    from .fixtures import write_demo_data

    profile = load_profile(args.profile)
    root = profile.paths["data_root"]
    write_demo_data(root, seed=args.seed)
    print(f"demo datasets ready under {root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="clip-study", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="execute chapter notebooks with papermill")
    r.add_argument("--profile", default="demo", help="profile name (demo, paper) or YAML path")
    r.add_argument("--section", action="append", help="section name (repeatable; default: all)")
    r.add_argument("--entry", help="one pool entry id")
    r.add_argument("--backbone", help="one backbone (RN50, RN101, ViT-B-16, ViT-B-32, ViT-L-14, ...)")
    r.add_argument("--per-entry", action="store_true", help="one execution per pool entry of the slice")
    r.add_argument("--executor", default="local", choices=["local", "slurm", "submitit-local"])
    r.add_argument("--slurm", action="append", metavar="KEY=VALUE",
                   help="submitit parameters, e.g. slurm_partition=gpu timeout_min=600 gpus_per_node=1")
    r.add_argument("--param", "-p", action="append", metavar="NAME=VALUE",
                   help="notebook parameter, e.g. device=cuda data_root=/data batch_size=512 limit=1000")
    r.add_argument("--force", action="store_true", help="re-run even when up to date")
    r.set_defaults(func=cmd_run)

    rr = sub.add_parser("render", help="copy executed notebooks where the book expects them")
    rr.add_argument("--profile", default="demo")
    rr.set_defaults(func=cmd_render)

    d = sub.add_parser("demo-data", help="write the demo datasets in their real on-disk layouts")
    d.add_argument("--profile", default="demo")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo_data)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, KeyError, FileNotFoundError) as exc:
        print(f"clip-study: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
