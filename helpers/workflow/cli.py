"""``clip-study``: the study's command line.

    clip-study demo-data                      # write the demo datasets (real on-disk layouts)
    clip-study plan --profile paper           # check everything that can fail, print the run's cost
    clip-study run --profile demo             # every section on the whole pool
    clip-study run --profile paper --backbone ViT-B-32 --section outlier_features
    clip-study run --profile paper --per-entry --executor slurm --slurm slurm_partition=gpu
    clip-study run --profile paper --per-entry --gpus 0,1,2,3  # one GPU node, no Slurm
    clip-study render --profile demo          # place executed notebooks for the book
    clip-study prepare-demo                   # train the demo's finetuned and supervised checkpoints
    clip-study finetune --profile paper --entry <finetuned id>          # Appendix H.1
    clip-study train-supervised --profile paper --entry <supervised id> # Appendix H.2
    clip-study wiseft --profile paper --entry <finetuned id>            # Appendix I
    torchrun --nproc_per_node=8 -m helpers.workflow.cli finetune --profile paper --entry <id>  # multi-GPU
    clip-study diagnose --model ViT-B-32-quickgelu --pretrained openai --images <folder> --profile paper
    clip-study diagnose --accuracies accuracies.csv --name my-model  # its ER among the OpenCLIP zoo
"""
from __future__ import annotations

import argparse
import sys

from helpers.config import ConfigError, load_profile, run_setting
from helpers.store import DecodeError


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


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
    from helpers.workflow import runner

    profile = load_profile(args.profile)
    if args.list:
        print(slice_listing(profile))
        return 0
    extra = _overrides(args.param)
    if args.skip_unreadable:
        extra["skip_unreadable"] = True
    # every check before any job starts: sections, slice, -p names, the profile with each job's overrides
    jobs = runner.plan(profile, sections=args.section, entry=args.entry, backbone=args.backbone,
                       per_entry=args.per_entry, extra=extra)
    # the checks of `clip-study plan` (profile, weights, checkpoints, datasets, disk): a slice that
    # would fail is not started
    from helpers.workflow import preflight

    report = preflight.check(profile, sections=args.section, entry=args.entry, backbone=args.backbone,
                             per_entry=args.per_entry)
    if not report.ready:
        print("clip-study run: not started; the run would fail:", file=sys.stderr)
        for p in report.problems + report.pending:
            print(f"  {p}", file=sys.stderr)
        print(f"(clip-study plan --profile {args.profile} shows the whole check)", file=sys.stderr)
        return 2
    slurm = _overrides(args.slurm)
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    if args.jobs > 1 and (gpus or args.executor != "local" or profile.device != "cpu"):
        print(f"clip-study run: --jobs shares this machine's CPU cores between jobs of a CPU profile; profile "
              f"{args.profile!r} runs on {profile.device!r}"
              + (" (use --gpus 0,1,... for one job per GPU)" if profile.device != "cpu" else
                 f" with --{'gpus' if gpus else 'executor ' + args.executor}, which schedules the jobs itself"),
              file=sys.stderr)
        return 2
    limit = run_setting(profile, "job_time_limit_minutes")
    try:
        summary = runner.run(jobs, executor=args.executor, force=args.force, slurm=slurm, gpus=gpus,
                             time_limit_s=None if limit is None else 60 * limit, decode_stage=not args.no_decode_stage,
                             cpu_jobs=args.jobs)
    except DecodeError as exc:  # the decode stage, before any job
        print(f"clip-study run: stopped before any job: {exc}", file=sys.stderr)
        return 2
    print(summary.report())
    return 1 if summary.failures else 0


def slice_listing(profile) -> str:
    """Sections, backbones and entries a run of ``profile`` can select (``run --list``, ``run --help``)."""
    from helpers.workflow.sections import notebooks

    by_arch: dict[str, list[str]] = {}
    for e in profile.pool:
        by_arch.setdefault(e.arch, []).append(e.id)
    lines = [f"sections (--section): {', '.join(notebooks())}",
             f"backbones (--backbone) and entries (--entry) of profile {profile.name!r}:"]
    lines += [f"  {arch}: {', '.join(ids)}" for arch, ids in by_arch.items()]
    return "\n".join(lines)


def _run_epilog() -> str:
    try:
        return slice_listing(load_profile("demo")) + "\n(--list --profile P lists another profile's)"
    except Exception:  # help must never fail
        return ""


def cmd_plan(args) -> int:
    from helpers.workflow import preflight

    from helpers.workflow.costs import parse_rate

    try:
        rate = None if args.rate is None else parse_rate(args.rate)
    except ValueError as exc:
        print(f"clip-study plan: error: {exc}", file=sys.stderr)
        return 2
    report = preflight.check(args.profile, sections=args.section, entry=args.entry, backbone=args.backbone,
                             per_entry=args.per_entry, rate=rate)
    print(preflight.format(report))
    return 0 if report.ready else 1


def cmd_render(args) -> int:
    from helpers.workflow import book

    profile = load_profile(args.profile)
    for nb in args.notebook or []:
        print(f"brought in {nb} as {book.adopt(profile, nb)}")
    for p in book.render_sources(profile, sections=args.section):
        print(f"rendered source {p}")
    return 0


def cmd_demo_data(args) -> int:
    from helpers.demo.fixtures import write_demo_data

    profile = load_profile(args.profile)
    root = profile.paths["data_root"]
    write_demo_data(root, seed=args.seed)
    print(f"demo datasets ready under {root}")
    return 0


def _reported(cmd):
    """Training and WiSE-FT commands: their errors (a diverged loss, a checkpoint of another run,
    incompatible models, a bad dataset layout) already name the step, file or entry; print that
    line and exit with status 2 (under torchrun every rank exits, and torchrun reports it)."""
    def run(args) -> int:
        try:
            return cmd(args)
        except (ValueError, ArithmeticError) as exc:
            print(f"clip-study {args.command}: error: {exc}", file=sys.stderr)
            return 2
    return run


@_reported
def cmd_prepare_demo(args) -> int:
    import pandas as pd

    from helpers.training.demo import prepare_demo

    rows = prepare_demo(load_profile(args.profile), restart=args.restart)
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


@_reported
def cmd_finetune(args) -> int:
    from helpers.training.finetune import FinetuneRecipe, finetune
    from helpers.training.loop import run_cli

    return run_cli(args, finetune, FinetuneRecipe())


@_reported
def cmd_train_supervised(args) -> int:
    from helpers.training.supervised import SupervisedRecipe, train_supervised
    from helpers.training.loop import run_cli

    return run_cli(args, train_supervised, SupervisedRecipe())


@_reported
def cmd_wiseft(args) -> int:
    from helpers.engine import mixtures

    return mixtures.run(args)


@_reported
def cmd_diagnose(args) -> int:
    from helpers.chapters.diagnose import run_cli

    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:  # long by nature: one declaration per subcommand and option
    ap = argparse.ArgumentParser(prog="clip-study", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="execute chapter notebooks with papermill", epilog=_run_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--profile", default="demo", help="profile name (demo, paper) or YAML path")
    r.add_argument("--section", action="append", help="section name (repeatable; default: all)")
    r.add_argument("--entry", help="one pool entry id")
    r.add_argument("--backbone", help="one backbone (RN50, RN101, ViT-B-16, ViT-B-32, ViT-L-14, ...)")
    r.add_argument("--per-entry", action="store_true", help="one execution per pool entry of the slice")
    r.add_argument("--executor", default="local", choices=["local", "slurm", "submitit-local"])
    r.add_argument("--slurm", action="append", metavar="KEY=VALUE",
                   help="submitit parameters, e.g. slurm_partition=gpu timeout_min=600 gpus_per_node=1; "
                   "decode_<key>=<value> for the decode stage's CPU-only job alone, e.g. decode_slurm_partition=cpu")
    r.add_argument("--param", "-p", action="append", metavar="NAME=VALUE",
                   help="notebook parameter, e.g. device=cuda data_root=/data batch_size=512 limit=1000")
    r.add_argument("--force", action="store_true", help="re-run even when up to date")
    r.add_argument("--gpus", metavar="0,1,2,3", help="one GPU node without Slurm: run up to one job per listed "
                   "device at a time (each job sees only its device through CUDA_VISIBLE_DEVICES)")
    r.add_argument("--jobs", type=_positive_int, default=1, metavar="N", help="a CPU profile: run up to N jobs at "
                   "a time, each with an equal share of the cores (the demo: make book uses 2)")
    r.add_argument("--skip-unreadable", action="store_true", help="skip unreadable images (each one listed) "
                   "instead of failing the job (profile key skip_unreadable)")
    r.add_argument("--no-decode-stage", action="store_true", help="do not decode the stores the jobs read before "
                   "they start (in the runner's process, or as one CPU-only Slurm job): each job decodes what it misses")
    r.add_argument("--list", action="store_true", help="list the sections, backbones and entries of the profile and exit")
    r.set_defaults(func=cmd_run)

    pl = sub.add_parser("plan", help="check, in seconds and without weights or a GPU, everything a run needs, "
                        "and print its cache bytes and GPU-hours per stage (exit 1 listing every problem)")
    pl.add_argument("--profile", default="demo", help="profile name (demo, paper) or YAML path")
    pl.add_argument("--section", action="append", help="section name (repeatable; default: all)")
    pl.add_argument("--entry", help="one pool entry id")
    pl.add_argument("--backbone", help="one backbone (RN50, RN101, ViT-B-16, ViT-B-32, ViT-L-14, ...)")
    pl.add_argument("--per-entry", action="store_true", help="count one job per pool entry of the slice")
    pl.add_argument("--rate", metavar="RATE", help="the device's measured rate, to recompute the hours: <N>TFLOPS, "
                    "or <N>img/s:<arch> from the bare-forward img/s benchmarks/gpu_check.sh prints "
                    "(e.g. 2900img/s:ViT-B-32)")
    pl.set_defaults(func=cmd_plan)

    rr = sub.add_parser("render", help="copy executed notebooks where the book expects them")
    rr.add_argument("--profile", default="demo")
    rr.add_argument("--notebook", action="append", metavar="PATH", help="a notebook executed directly with "
                    "papermill (a chapter or a fork, output anywhere): brought into <results_dir>/executed/ first")
    rr.add_argument("--section", action="append", help="render only this section (repeatable; default: all)")
    rr.set_defaults(func=cmd_render)

    d = sub.add_parser("demo-data", help="write the demo datasets in their real on-disk layouts")
    d.add_argument("--profile", default="demo")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo_data)

    from helpers.training.finetune import FinetuneRecipe
    from helpers.training.supervised import SupervisedRecipe
    from helpers.training.loop import add_recipe_arguments, add_run_arguments
    from helpers.engine.mixtures import add_arguments as add_wiseft_arguments

    pd_ = sub.add_parser("prepare-demo", help="train the demo profile's finetuned and supervised checkpoints "
                         "(a few steps each; skips those already present)")
    pd_.add_argument("--profile", default="demo")
    pd_.add_argument("--restart", action="store_true", help="retrain even when the checkpoints are up to date")
    pd_.set_defaults(func=cmd_prepare_demo)

    f = sub.add_parser("finetune", help="finetune a zero-shot entry into its finetuned entry (Appendix H.1; "
                       "works under torchrun)")
    add_run_arguments(f)
    add_recipe_arguments(f, FinetuneRecipe())
    f.set_defaults(func=cmd_finetune)

    t = sub.add_parser("train-supervised", help="train a supervised CLIP ResNet from scratch (Appendix H.2; "
                       "works under torchrun)")
    add_run_arguments(t)
    add_recipe_arguments(t, SupervisedRecipe())
    t.set_defaults(func=cmd_train_supervised)

    w = sub.add_parser("wiseft", help="evaluate WiSE-FT mixtures of a finetuned entry and its zero-shot parent "
                       "(Appendix I)")
    add_wiseft_arguments(w)
    w.set_defaults(func=cmd_wiseft)

    from helpers.chapters.diagnose import add_arguments as add_diagnose_arguments

    dg = sub.add_parser("diagnose", help="the paper's robustness indicators (kurtosis, importance ratio, unique "
                        "concepts) for any open_clip model on a folder of images, placed against the pool")
    add_diagnose_arguments(dg)
    dg.set_defaults(func=cmd_diagnose)

    from helpers.workflow.forking import add_arguments as add_fork_arguments, run_cli as run_fork

    nb = sub.add_parser("new-notebook", help="start a fork: copy notebooks/templates/new_hypothesis.md to "
                        "notebooks/<next number>_<name>.md and list it in _toc.yml under 'Going further'")
    add_fork_arguments(nb)
    nb.set_defaults(func=_reported(run_fork))
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
