"""What a run will cost before it starts: cache bytes and GPU-hours per stage, from per-image
costs of each architecture (measured once, see ``benchmarks/paper_scale.py``) and the dataset
sizes. No weights, data or GPU are needed; ``clip-study plan`` prints :func:`estimate`.

Stages (keys of ``estimate(...)["stages"]``):

- ``stores``: the decoded uint8 stores, ``3 x S x S`` bytes per image per geometry (150,528 at
  224 px); a geometry fewer than :data:`helpers.extract.KEEP_STORE_MIN_ENTRIES` entries read is
  removed after each pass (counted in ``peak_bytes``, not in the cache). CPU work (decoding).
- ``heads``: zero-shot heads, 1,000 classes x 80 templates through the text tower on the GPU;
  every entry's head ``W`` (K x d_H float32) is cached once.
- ``extraction``: ``h`` in float32 (``4 d_H`` bytes per image) for every entry on every dataset a
  section reads; the logits are derived, never stored.
- ``cka``: one extra forward of both models of each (zero-shot, finetuned) pair over the six
  evaluation sets; a few kB of HSIC accumulators per (pair, dataset).
- ``finetuning``: Appendix H.1/H.2 training runs whose checkpoints the profile expects
  (``checkpoints_dir``, reported apart from the cache: final and per-epoch files).
- ``wiseft``: nine in-memory mixtures per pair over ImageNet, the shifts and Broden, and the epoch
  checkpoints of Figure 5 on Broden; only accuracies, kurtosis and AP matrices are cached.
- ``broden_probing``: AP matrices (directions x 1,197 concepts, float64) per entry (CPU work).

GPU-hours divide each stage's FLOPs by :data:`GPU_TFLOPS` (an effective rate of an A100-class
GPU per precision, an assumption to recalibrate from ``benchmarks/gpu_check.sh``'s img/s with
``estimate(..., tflops=...)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from .config import EVAL_DATASETS, PoolEntry, Profile

#: Published image counts (facts checked against the datasets' own pages): ImageNet val,
#: ImageNetV2 matched-frequency, ImageNet-R, ImageNet-Sketch, ObjectNet's 113 ImageNet-mapped
#: classes, ImageNet-A, Broden (broden1_224) and the ImageNet training set (finetuning).
DATASET_IMAGES = {"imagenet": 50_000, "imagenet-v2": 10_000, "imagenet-r": 30_000, "imagenet-sketch": 50_889,
                  "objectnet": 18_574, "imagenet-a": 7_500, "broden": 63_305, "imagenet-train": 1_281_167}
BRODEN_CONCEPTS = 1_197
N_CLASSES = 1_000
N_TEMPLATES = 80  # open_clip.OPENAI_IMAGENET_TEMPLATES
WISEFT_MIXTURES = 9  # alpha = 0.1 ... 0.9 (0 and 1 are the pool entries)
FINETUNE_EPOCHS = 10  # Appendix H.1 (helpers.finetune.FinetuneRecipe)
SUPERVISED_EPOCHS = 90  # Appendix H.2 (helpers.supervised)
#: Training step cost in forward passes (forward + backward ~ 3 forwards).
TRAIN_FORWARDS = 3.0
#: Epoch checkpoints hold the weights and AdamW's two moments (fp32).
EPOCH_CHECKPOINT_COPIES = 3
#: Effective TFLOP/s of an A100-class GPU on these encoders at batch 256 (about 40 % of the bf16 /
#: TF32 peak); an assumption, recalibrated from a measured img/s (benchmarks/gpu_check.sh).
GPU_TFLOPS = {"bf16": 120.0, "fp16": 120.0, "fp32": 50.0}
#: Images decoded and resized per second per DataLoader worker (500 x 375 JPEG, bicubic to 224).
DECODE_PER_WORKER = 150.0


@dataclass(frozen=True)
class ArchCost:
    """Per-image costs of one image tower at 224 px (random weights, measured with
    ``torch.utils.flop_counter`` on a batch of one) and its text tower per prompt."""

    d_H: int  # width of h
    image_gflops: float  # forward FLOPs per image / 1e9
    image_params: int  # image tower parameters
    layers: int  # pooled layer outputs (CKA grid side)
    layer_bytes: int  # float32 bytes per image of all pooled layers (the opt-in layer cache)
    text_gflops: float = 0.0  # text tower FLOPs per prompt / 1e9 (CLIP / CoCa)
    text_params: int = 0


#: Measured by ``benchmarks/paper_scale.py --arch-table`` (torch 2.14, open_clip 3.3).
ARCHS: dict[str, ArchCost] = {
    "RN50": ArchCost(1024, 12.20, 38_316_896, 5, 19_456, 5.81, 63_690_241),
    "RN101": ArchCost(512, 19.52, 56_259_936, 5, 17_408, 5.81, 63_428_097),
    "ViT-B-16": ArchCost(512, 22.54, 86_192_640, 25, 75_776, 5.81, 63_428_097),
    "ViT-B-32": ArchCost(512, 5.89, 87_849_216, 25, 75_776, 5.81, 63_428_097),
    "ViT-L-14": ArchCost(768, 103.79, 303_966_208, 49, 199_680, 13.08, 123_650_305),
    "coca_ViT-B-32": ArchCost(512, 6.24, 89_164_032, 25, 75_776, 5.81, 164_396_033),
    "coca_ViT-L-14": ArchCost(768, 105.20, 306_724_864, 49, 199_680, 13.08, 331_725_313),
    "vit_b_16": ArchCost(768, 22.54, 85_798_656, 25, 76_800),
    "vit_b_32": ArchCost(768, 5.89, 87_455_232, 25, 76_800),
}

#: Which datasets each section's extraction reads (the notebooks' calls), and its other stages.
SECTION_DATASETS = {
    "robustness": EVAL_DATASETS, "outlier_features": EVAL_DATASETS, "privileged_directions": ("imagenet",),
    "concept_probing": ("broden", "imagenet"), "pruning": EVAL_DATASETS, "wiseft": EVAL_DATASETS + ("broden",),
    "coca": EVAL_DATASETS, "cka_layers": (), "summary": (), "validating_the_probes": (), "forking": (),
    "diagnose": (),
}
STAGES = ("stores", "heads", "extraction", "cka", "finetuning", "wiseft", "broden_probing")

GB = 1e9


def arch_key(entry: PoolEntry) -> str:
    """The :data:`ARCHS` key of an entry: its model name without ``-quickgelu`` (an activation,
    not a size)."""
    m = entry.model
    return m[: -len("-quickgelu")] if m.endswith("-quickgelu") else m


def arch_cost(entry: PoolEntry) -> ArchCost:
    """Per-image costs of an entry's architecture: the table, else counted on the meta device
    (no weights, no memory: the demo architectures and forks' models)."""
    key = arch_key(entry)
    if key in ARCHS:
        return ARCHS[key]
    if key not in _MEASURED:
        _MEASURED[key] = measure_arch(entry)
    return _MEASURED[key]


_MEASURED: dict[str, ArchCost] = {}


def measure_arch(entry: PoolEntry, device: str = "meta") -> ArchCost:
    """Count an architecture's costs (``torch.utils.flop_counter``) on one 224 px image
    (``device="meta"``: shapes only, instant). How :data:`ARCHS` was filled (on the CPU)."""
    import dataclasses

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from . import extract, models

    e = dataclasses.replace(entry, checkpoint=None, pretrained=None)
    net = models.build_architecture(e, device=device).eval()
    enc, kind = models._image_encoder(net, e)
    size = models.preprocessing(e).image_size
    x = torch.zeros(1, 3, size, size, device=device)

    class _Shell:  # what extract.layer_names / _layer_hooks read from a LoadedModel
        arch_kind, encoder = kind, enc
    names = extract.layer_names(_Shell)
    captured: dict = {}
    hooks = extract._layer_hooks(_Shell, names, captured)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            h = enc(x)
    finally:
        for hk in hooks:
            hk.remove()
    widths = [int(h.shape[1]) if n == "embedding" else int(captured[n].shape[1]) for n in names]
    text_gflops, text_params = 0.0, 0
    if hasattr(net, "encode_text"):
        import open_clip

        tokens = open_clip.get_tokenizer(e.model)(["a photo of a tench."]).to(device)
        with torch.no_grad(), FlopCounterMode(display=False) as ft:
            net.encode_text(tokens)
        text_gflops = ft.get_total_flops() / 1e9
        text_params = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("visual"))
    return ArchCost(int(h.shape[1]), fc.get_total_flops() / 1e9, sum(p.numel() for p in enc.parameters()),
                    len(names), 4 * sum(widths), text_gflops, text_params)


def layer_bytes_per_image(entry: PoolEntry) -> int:
    """Disk bytes per image of :func:`helpers.extract.layer_activations` with every layer."""
    return arch_cost(entry).layer_bytes


def store_bytes_per_image(image_size: int = 224) -> int:
    """uint8 pixels of one image in a store, plus its label and index (int64 each)."""
    return 3 * image_size * image_size + 16


def _images(profile: Profile, dataset: str, counts: Mapping[str, int] | None) -> int:
    n = (counts or {}).get(dataset, DATASET_IMAGES.get(dataset, 0))
    limit = profile.limit(dataset)
    return min(n, limit) if limit is not None else n


def estimate(profile: Profile, entries: Iterable[PoolEntry] | None = None, sections: Sequence[str] | None = None,
             *, counts: Mapping[str, int] | None = None, tflops: Mapping[str, float] | None = None) -> dict:
    """Cache bytes and GPU-hours per stage for running ``sections`` (None: all) over ``entries``
    (None: the profile's pool) of ``profile``.

    ``counts``: image counts per dataset measured on disk (default :data:`DATASET_IMAGES`, capped
    by the profile's limits). ``tflops``: effective GPU TFLOP/s per precision (default
    :data:`GPU_TFLOPS`). Returns::

        {"stages": {stage: {"bytes": int, "gpu_hours": float, "cpu_hours": float, "detail": str}},
         "total_cache_bytes": int,      # what stays under cache_dir (checkpoints excluded)
         "peak_bytes": int,             # + the largest transient store at once
         "checkpoint_bytes": int,       # finetuning / supervised checkpoints the run writes
         "total_gpu_hours": float, "precision": str, "tflops": float}
    """
    from .extract import KEEP_STORE_MIN_ENTRIES
    from .models import FINETUNED_FAMILIES, SUPERVISED_FAMILIES, ZERO_SHOT_FAMILIES, preprocessing

    entries = list(profile.pool if entries is None else entries)
    sections = list(SECTION_DATASETS) if sections is None else list(sections)
    precision = "fp32" if str(profile.device).startswith("cpu") else profile.precision
    rate = dict(GPU_TFLOPS, **(tflops or {}))[precision] * 1e12
    hours = lambda gflop: gflop * 1e9 / rate / 3600  # noqa: E731
    available = set(profile.datasets)
    datasets = sorted({d for s in sections for d in SECTION_DATASETS.get(s, ()) if d in available},
                      key=lambda d: list(DATASET_IMAGES).index(d) if d in DATASET_IMAGES else 99)
    n = {d: _images(profile, d, counts) for d in datasets}
    cost = {e.id: arch_cost(e) for e in entries}
    pool_geometry = {}
    for e in profile.pool:
        try:
            pool_geometry[e.id] = preprocessing(e).geometry
        except Exception:  # noqa: BLE001 - an entry that cannot resolve is reported by the checks
            continue
    users: dict = {}
    for g in pool_geometry.values():
        users[g] = users.get(g, 0) + 1
    stages = {s: {"bytes": 0, "gpu_hours": 0.0, "cpu_hours": 0.0, "detail": ""} for s in STAGES}

    # stores: one per (dataset, geometry) any entry of the slice reads
    geoms = {pool_geometry[e.id] for e in entries if e.id in pool_geometry}
    kept = transient = 0
    for g in geoms:
        size = sum(n[d] for d in datasets) * store_bytes_per_image(g.image_size)
        if users.get(g, 0) >= KEEP_STORE_MIN_ENTRIES:
            kept += size
        else:
            transient = max(transient, max((n[d] for d in datasets), default=0) * store_bytes_per_image(g.image_size))
    decode_images = sum(n[d] for d in datasets) * max(len(geoms), 1)
    stages["stores"].update(bytes=kept, cpu_hours=decode_images / DECODE_PER_WORKER / 3600,
                            detail=f"{len(geoms)} geometr{'y' if len(geoms) == 1 else 'ies'} x {sum(n.values()):,} images; "
                                   f"{transient / GB:.1f} GB transient")

    # heads: zero-shot heads through the text tower; every entry's W cached once
    zs = [e for e in entries if e.family in ZERO_SHOT_FAMILIES]
    prompts = N_CLASSES * N_TEMPLATES
    stages["heads"].update(
        bytes=sum(N_CLASSES * cost[e.id].d_H * 4 * (2 if e.family in ZERO_SHOT_FAMILIES else 1) for e in entries),
        gpu_hours=sum(hours(prompts * cost[e.id].text_gflops) for e in zs),
        detail=f"{len(zs)} zero-shot heads x {prompts:,} prompts")

    # extraction: h float32 per entry per dataset
    per_image = sum(n.values())
    stages["extraction"].update(
        bytes=sum(per_image * (4 * cost[e.id].d_H + 8) for e in entries),
        gpu_hours=sum(hours(per_image * cost[e.id].image_gflops) for e in entries),
        detail=f"{len(entries)} entries x {per_image:,} images (h float32, no logits)")

    by_id = {e.id: e for e in profile.pool}
    ids = {e.id for e in entries}
    pairs = [(by_id[e.finetuned_from], e) for e in profile.pool
             if e.finetuned_from in by_id and (e.id in ids or e.finetuned_from in ids)]
    eval_n = sum(_images(profile, d, counts) for d in EVAL_DATASETS if d in available)
    if "cka_layers" in sections:
        stages["cka"].update(
            bytes=sum(len([d for d in EVAL_DATASETS if d in available])
                      * (8 * (cost_of(a).layers ** 2 + 2 * cost_of(a).layers) + 2048) for a, _ in pairs),
            gpu_hours=sum(hours(eval_n * (cost_of(a).image_gflops + cost_of(b).image_gflops)) for a, b in pairs),
            detail=f"{len(pairs)} pairs x {eval_n:,} images, one pass each, accumulators only")

    # finetuning / supervised training: the checkpoints the profile expects
    train_n = _images(profile, "imagenet-train", counts) if "imagenet-train" in available else DATASET_IMAGES["imagenet-train"]
    trained = [(e, FINETUNE_EPOCHS) for e in entries if e.family in FINETUNED_FAMILIES and e.checkpoint]
    trained += [(e, SUPERVISED_EPOCHS) for e in entries
                if e.family in SUPERVISED_FAMILIES and e.checkpoint and e.source == "open_clip"]
    ckpt = sum(4 * (cost_of(e).image_params + N_CLASSES * (cost_of(e).d_H + 1))
               * (1 + EPOCH_CHECKPOINT_COPIES * epochs) for e, epochs in trained)
    stages["finetuning"].update(
        gpu_hours=sum(hours(TRAIN_FORWARDS * epochs * train_n * cost_of(e).image_gflops) for e, epochs in trained),
        detail=f"{len(trained)} training runs ({ckpt / GB:.0f} GB of checkpoints in checkpoints_dir)")

    if "wiseft" in sections:
        mix_n = sum(n.get(d, 0) for d in EVAL_DATASETS) + n.get("broden", 0)
        broden_n = n.get("broden", 0)
        ap = lambda e: 8 * min(N_CLASSES, cost_of(e).d_H) * BRODEN_CONCEPTS  # noqa: E731
        stages["wiseft"].update(
            bytes=sum(WISEFT_MIXTURES * (ap(b) + 4096 * 7) + (FINETUNE_EPOCHS - 1) * ap(b) for _, b in pairs),
            gpu_hours=sum(hours(WISEFT_MIXTURES * mix_n * cost_of(b).image_gflops
                                + (FINETUNE_EPOCHS - 1) * broden_n * cost_of(b).image_gflops) for _, b in pairs),
            detail=f"{len(pairs)} pairs x {WISEFT_MIXTURES} mixtures + {FINETUNE_EPOCHS - 1} epochs on Broden, no h")
    if "concept_probing" in sections or "wiseft" in sections:
        stages["broden_probing"].update(
            bytes=sum(8 * min(N_CLASSES, cost[e.id].d_H) * BRODEN_CONCEPTS for e in entries),
            cpu_hours=len(entries) * 10 / 3600,  # about 10 s per entry (benchmarks/concept_probing.py)
            detail=f"{len(entries)} AP matrices x {BRODEN_CONCEPTS:,} concepts")

    cache = sum(v["bytes"] for k, v in stages.items() if k != "finetuning")
    return {"stages": stages, "total_cache_bytes": int(cache), "peak_bytes": int(cache + transient),
            "checkpoint_bytes": int(ckpt), "total_gpu_hours": float(sum(v["gpu_hours"] for v in stages.values())),
            "precision": precision, "tflops": rate / 1e12}


def cost_of(entry: PoolEntry) -> ArchCost:
    return arch_cost(entry)


def format_estimate(est: dict) -> str:
    """The per-stage table ``clip-study plan`` prints, ending with ``total cache: <N> GB``."""
    lines = [f"{'stage':<16}{'cache GB':>10}{'GPU-h':>9}{'CPU-h':>8}  detail"]
    for name, s in est["stages"].items():
        lines.append(f"{name:<16}{s['bytes'] / GB:>10.2f}{s['gpu_hours']:>9.2f}{s['cpu_hours']:>8.2f}  {s['detail']}")
    lines.append(f"GPU-hours at {est['tflops']:.0f} effective TFLOP/s ({est['precision']}): {est['total_gpu_hours']:.1f}; "
                 f"checkpoints: {est['checkpoint_bytes'] / GB:.0f} GB; peak with transient stores: "
                 f"{est['peak_bytes'] / GB:.1f} GB")
    lines.append(f"total cache: {est['total_cache_bytes'] / GB:.1f} GB")
    return "\n".join(lines)
