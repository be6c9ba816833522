"""Benchmark at the paper's scale: real architectures (random weights, 224 px) on generated images.

Measured in one run, on JPEGs of 500 x 375 px written in ImageNet's val layout by helpers.demo.fixtures:

(a) extraction end to end (``extract_many(force=True)`` with the uint8 store built and the model in
    the job's memo: planning, head and memo lookups, store reads, normalisation, forward, finite
    checks, memmap writes, checkpoints, commit) against the bare forward (normalise + encoder) of
    the same model over the same uint8 batches already in memory, interleaved over ``--repeats``;
    printed per model and as one line ``real-size ratio: <x>`` (summed bare time / summed engine
    time over the models; aim >= 0.9). The model's cold build is reported beside it.
(b) cache bytes per image per model for each section's arrays (store, h, head, and the opt-in layer
    cache), and the CKA accumulators' bytes per (pair, dataset) from a real one-pass CKA of a
    ViT-B-32 pair, with its time against two bare forwards.
(c) a zero-shot head build (``models.zero_shot_head``: tokenising, batched text-tower forwards,
    normalisations) against the bare text-tower forward of the same pre-tokenised prompts.
(d) the extrapolation to the paper profile (43 models, published dataset sizes) that
    ``clip-study plan`` prints, from :mod:`helpers.workflow.costs`.

Usage (CPU; on a shared machine ``--threads 1`` steadies the timings):

    python benchmarks/paper_scale.py [--images 128] [--batch-size 32] [--threads 2] [--repeats 3]
                                     [--models ViT-B-32 RN50] [--device cpu] [--arch-table]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from helpers.engine import flops  # noqa: E402
from helpers.workflow import costs  # noqa: E402
from helpers.engine import extract
from helpers import models
from helpers.models.heads import MemoTokenizer
from helpers.models.precision import autocast
from helpers.engine.cka_pass import pair_cka  # noqa: E402
from helpers.config import PoolEntry, load_profile  # noqa: E402
from timing import SIZE, bare_forward, sync, timed, write_images  # noqa: E402  (benchmarks/timing.py)



def dir_bytes(path: Path, pattern: str = "*.npy") -> int:
    return sum(p.stat().st_size for p in Path(path).rglob(pattern))


def _cka_and_head(args, P, batches, device, dtype, n, entries, tmp) -> None:
    # ---- (b) CKA of a ViT-B-32 pair: accumulators only
    zs = PoolEntry(id="bench-cka-zs", arch="ViT-B-32", family="supervised", pretraining="x", model="ViT-B-32", seed=1)
    ft = PoolEntry(id="bench-cka-ft", arch="ViT-B-32", family="supervised", pretraining="x", model="ViT-B-32", seed=2,
                   finetuned_from="bench-cka-zs")
    extract.release_models()
    mz, mf = extract.loaded_model(zs, P), extract.loaded_model(ft, P)
    two_bare = bare_forward(mz, batches, device, dtype) + bare_forward(mf, batches, device, dtype)
    res, t_cka = timed(lambda: pair_cka(zs, ft, "imagenet", P, batch=min(256, max(4, n // 4))))
    cka_bytes = dir_bytes(P.cache_dir / "cka")
    layer = costs.layer_bytes_per_image(zs)
    print(f"\n(b) CKA, ViT-B-32 pair, {len(res.layers_x)} x {len(res.layers_y)} layers, {res.n_batches} minibatches: "
          f"{cka_bytes:,} B of accumulators per (pair, dataset) against {2 * layer * n:,} B of layer cache for these "
          f"{n} images ({2 * layer * costs.DATASET_IMAGES['imagenet'] / 1e9:.1f} GB on ImageNet val); "
          f"pass {t_cka:.1f} s vs two bare forwards {two_bare:.1f} s -> ratio {two_bare / t_cka:.3f}; "
          f"final-layer CKA {res.same_layer()['embedding']:.3f}")

    # ---- (c) zero-shot head build against the bare text-tower forward
    import open_clip

    extract.release_models()
    clip = models.build_architecture(PoolEntry(id="bench-text", arch="ViT-B-32", family="robust_zeroshot_clip",
                                               pretraining="x", model="ViT-B-32", seed=0)).eval().to(device)
    tok = open_clip.get_tokenizer("ViT-B-32")
    templates = [t for t in open_clip.OPENAI_IMAGENET_TEMPLATES[:8]]
    names = list(open_clip.IMAGENET_CLASSNAMES[: max(1, args.prompts // len(templates))])
    per_batch = max(1, models.HEAD_PROMPTS_PER_BATCH.get(device.type, 800) // len(templates))
    texts = [t(c) for c in names for t in templates]
    tokens = [tok(texts[i:i + per_batch * len(templates)]).to(device)
              for i in range(0, len(texts), per_batch * len(templates))]
    with torch.inference_mode(), autocast(device, dtype):
        clip.encode_text(tokens[0][:2])
        sync(device)
        _, t_text = timed(lambda: ([clip.encode_text(t) for t in tokens], sync(device)))
    MemoTokenizer.forget()
    _, t_head = timed(lambda: (models.zero_shot_head(clip, tok, names, templates, device, per_batch, dtype),
                               sync(device)))
    if device.type == "cuda" and dtype != "fp32":
        # bf16 against fp32 on the same images: h and its kurtosis (Eq. 1) agree closely
        from helpers.metrics import kurtosis

        h16 = np.asarray(extract.activations(entries[0], "imagenet", P).h, dtype=np.float64)
        P32 = load_profile("demo", overrides={"paths.data_root": str(tmp / "data"),
                                              "paths.cache_dir": str(tmp / "cache"), "device": args.device,
                                              "batch_size": args.batch_size, "num_workers": args.workers, "precision": "fp32"})
        h32 = np.asarray(extract.activations(entries[0], "imagenet", P32).h, dtype=np.float64)
        cos = np.sum(h16 * h32, 1) / np.linalg.norm(h16, axis=1) / np.linalg.norm(h32, axis=1)
        print(f"\nprecision, {entries[0].model}: min cosine(h_{dtype}, h_fp32) {cos.min():.5f}; kurtosis "
              f"{kurtosis(h16):.4f} ({dtype}) vs {kurtosis(h32):.4f} (fp32)")
    if args.full_head:
        full, t_full = timed(lambda: models.zero_shot_head(clip, tok, open_clip.IMAGENET_CLASSNAMES,
                                                           open_clip.OPENAI_IMAGENET_TEMPLATES, device,
                                                           max(1, models.HEAD_PROMPTS_PER_BATCH.get(device.type, 800) // 80),
                                                           dtype))
        sync(device)
        print(f"full ImageNet head (80,000 prompts, {dtype}) on {device}: {t_full:.1f} s, W {tuple(full.shape)}, "
              f"finite {bool(torch.isfinite(full).all())}")
    print(f"\n(c) zero-shot head, ViT-B-32 text tower, {len(texts)} prompts: build {t_head:.2f} s vs bare text "
          f"forward {t_text:.2f} s -> ratio {t_text / t_head:.3f}; {len(texts) / t_head:.0f} prompts/s here, so "
          f"{flops.HEAD_PROMPTS / (len(texts) / t_head) / 3600:.2f} h for the 80,000 prompts "
          f"of one head on this device")



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=128, help="JPEGs to generate (500 x 375 px)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (decoding, store reads)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["ViT-B-32", "RN50"], help="open_clip architectures")
    ap.add_argument("--prompts", type=int, default=160, help="prompts for (c) (20 classes x 8 templates)")
    ap.add_argument("--precision", default="bf16", help="autocast precision on CUDA (fp32 on the CPU)")
    ap.add_argument("--full-head", action="store_true",
                    help="also build one full ImageNet head (1,000 classes x 80 templates) on the device")
    ap.add_argument("--arch-table", action="store_true", help="also count every pool architecture's costs")
    ap.add_argument("--only-extraction", action="store_true", help="run (a) and (d) only (skip the CKA and head runs)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-paper-scale-") as tmp:
        tmp = Path(tmp)
        n = write_images(tmp / "data", args.images)
        P = load_profile("demo", overrides={"paths.data_root": str(tmp / "data"), "paths.cache_dir": str(tmp / "cache"),
                                            "device": args.device, "batch_size": args.batch_size, "num_workers": args.workers,
                                            "precision": args.precision if device.type == "cuda" else "fp32"})
        dtype = "fp32" if device.type == "cpu" else P.precision
        print(f"{n} JPEGs of {SIZE[0]}x{SIZE[1]} px; device {device} ({dtype}), batch {args.batch_size}, "
              f"torch threads {torch.get_num_threads()}")

        # ---- (a) extraction end to end against the bare forward
        entries = [PoolEntry(id=f"bench-{m}", arch=m, family="supervised", pretraining="random init", model=m, seed=0)
                   for m in args.models]
        per_repeat = {"bare": [0.0] * args.repeats, "engine": [0.0] * args.repeats}
        print("\n(a) extraction, store built, model in the job's memo:")
        for e in entries:
            extract.release_models()
            _, t_build = timed(lambda: extract.loaded_model(e, P))  # the cold build, once per job
            first, t_first = timed(lambda: extract.extract_many([e], "imagenet", P))  # store + memo + head cache
            store_dir = next((P.cache_dir / "stores").glob("imagenet-*"))
            run = __import__("json").loads((store_dir / "manifest.json").read_text())["run"]
            pixels = torch.from_numpy(np.load(store_dir / run / "pixels.npy"))
            batches = [pixels[i:i + args.batch_size].to(device) for i in range(0, n, args.batch_size)]
            model = extract.loaded_model(e, P)
            bare, engine = [], []
            for _ in range(args.repeats):
                bare.append(bare_forward(model, batches, device, dtype))
                engine.append(timed(lambda: extract.extract_many([e], "imagenet", P, force=True))[1])
            ratios = [b / t for b, t in zip(bare, engine)]
            b, t = statistics.median(bare), statistics.median(engine)
            for r in range(args.repeats):  # each repeat's bare and engine runs are back to back
                per_repeat["bare"][r] += bare[r]
                per_repeat["engine"][r] += engine[r]
            print(f"  {e.model}: bare forward {n / b:.1f} img/s, engine {n / t:.1f} img/s end to end -> "
                  f"ratio {statistics.median(ratios):.3f} (per repeat {', '.join(f'{r:.3f}' for r in ratios)}); "
                  f"cold model build {t_build:.1f} s; first call (decode + forward) {t_first:.1f} s")
            e_acts = first[e.id]
            act_dir = next((P.cache_dir / "activations" / e.id).glob("imagenet-*"))
            head_dir = next((P.cache_dir / "linear_heads").glob(f"{e.id}-*"))
            cost = costs.arch_cost(e)
            print(f"  (b) {e.model} bytes per image: store {dir_bytes(store_dir) / n:,.0f}, h {dir_bytes(act_dir) / n:,.0f} "
                  f"(d_H {e_acts.h.shape[1]} x 4 + label 8), logits 0 (derived); head {dir_bytes(head_dir):,} B per "
                  f"entry; opt-in layer cache {cost.layer_bytes:,} ({cost.layers} layers)")
        # summed bare time / summed engine time over the models, per repeat; the median over repeats
        ratio = statistics.median(b / t for b, t in zip(per_repeat["bare"], per_repeat["engine"]))

        if not args.only_extraction:
            _cka_and_head(args, P, batches, device, dtype, n, entries, tmp)

    # ---- (d) the extrapolation `clip-study plan` prints (the same checks and helpers.workflow.costs.estimate)
    from helpers.workflow import preflight

    report = preflight.check("paper")
    print(f"\n(d) paper profile ({len(report.entries)} entries, {len(report.sections)} sections; dataset sizes "
          "found on disk, else the published ones), as `clip-study plan --profile paper` prints it:")
    print("\n".join(costs.format_stages(report.stages, report.profile)))
    print(costs.total_line(report.stages))
    if args.arch_table:
        print("\nper-architecture costs (torch.utils.flop_counter, one 224 px image, meta device), "
              "the rows of helpers.engine.flops.ARCHS:")
        for m in costs.ARCHS:
            src = "torchvision" if m.startswith("vit_") else "open_clip"
            e = PoolEntry(id="t", arch=m, family="supervised", pretraining="x", model=m, source=src)
            c = flops.measure_arch(e, device="meta")
            print(f'    "{m}": _measured({c.d_H}, {c.image_gflops:.2f}, {c.image_params / 1e6:.2f}, {c.layers}, '
                  f"{c.layer_bytes:_}" + (f", {c.text_gflops:.2f}, {c.text_params / 1e6:.2f}" if c.text_params else "")
                  + "),")
    print(f"\nreal-size ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
