"""What a run costs before it runs: cache bytes and GPU-hours per stage (``clip-study plan``).

PROVISIONAL: the constants below come from ``guides/facts.md`` (bytes, CPU times), OpenCLIP's
published model profile (``docs/model_profile.csv``: image-tower GFLOPs and parameters per model)
and torchvision's documented GFLOPS. They are not measured on this study's GPUs; the engine's
``benchmarks/paper_scale.py`` measures them, and its numbers are meant to replace these.

How a GPU-hour is estimated: forward seconds per image = image-tower FLOPs /
:data:`INFERENCE_FLOPS` (an A100-class GPU sustaining 100 TFLOP/s under bf16 autocast, about a
third of its dense peak; fp32 runs at :data:`FP32_SLOWDOWN` times that cost). Training steps cost
three forwards (forward + backward) at :data:`TRAINING_FLOPS`. On a CPU device the per-image
seconds are facts.md's 2-thread times of ``encode_image`` instead.

What is cached (issue 11.1-11.2: nothing that can be derived): per dataset and input geometry one
uint8 store (3 x S x S bytes per image); per (entry, dataset) the float32 embeddings h (4 d_H bytes
per image; no logits, no per-layer arrays); per zero-shot entry its head W (1,000 x d_H float32);
per (finetuning pair, dataset) the CKA accumulators (a few KB); WiSE-FT mixtures and epoch
checkpoints keep only their tables. Finetuning and supervised training write checkpoints under
``paths.checkpoints_dir``, counted apart from the cache, in the layout of :mod:`helpers.training`
(:func:`helpers.training.checkpoint_bytes`): with W = 4 bytes x the trained parameters (image tower
+ head W (+ bias); the text tower is neither trained nor stored), a finetuning run keeps its 10
weights-only epochs (Figure 5) and ``final.pt``, 11 W; a supervised run its newest epoch and
``final.pt``, 2 W; and while one trains, its resume states (weights + two AdamW moments, 3 W; two
of them for a moment) need 6 W more, counted once (for the largest run: runs train one at a time).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import EVAL_DATASETS, PoolEntry, Profile

GB = 1e9

#: Effective FLOP/s of one GPU (A100/H100 class) for inference under bf16/fp16 autocast.
INFERENCE_FLOPS = 100e12
#: Effective FLOP/s of one GPU for training (forward + backward, optimizer, data loading).
TRAINING_FLOPS = 50e12
#: fp32 (TF32 off) runs this many times slower than bf16 on the same GPU.
FP32_SLOWDOWN = 4.0

#: Image-tower GFLOPs per 224 px image (OpenCLIP docs/model_profile.csv ``image_gflops``; the
#: -quickgelu variants are the same network). torchvision's ViTs: its documented GFLOPS (17.56,
#: 4.41, multiply-adds) times 2, the convention of OpenCLIP's table.
IMAGE_GFLOPS = {
    "RN50": 12.22, "RN101": 19.54, "ViT-B-16": 35.13, "ViT-B-32": 8.82, "ViT-L-14": 162.03,
    "coca_ViT-B-32": 9.19, "coca_ViT-L-14": 163.64, "vit_b_16": 35.12, "vit_b_32": 8.82,
}
#: Image-tower parameters (millions), OpenCLIP docs/model_profile.csv ``image_mparams``;
#: torchvision vit_b_16 / vit_b_32: 86.6 / 88.2 M (torchvision docs).
IMAGE_MPARAMS = {
    "RN50": 38.32, "RN101": 56.26, "ViT-B-16": 86.19, "ViT-B-32": 87.85, "ViT-L-14": 303.97,
    "coca_ViT-B-32": 89.16, "coca_ViT-L-14": 306.72, "vit_b_16": 86.57, "vit_b_32": 88.22,
}
#: Whole-model parameters (millions): the size of a hub download (float32: 4 bytes each).
MODEL_MPARAMS = {
    "RN50": 102.01, "RN101": 119.69, "ViT-B-16": 149.62, "ViT-B-32": 151.28, "ViT-L-14": 427.62,
    "coca_ViT-B-32": 253.56, "coca_ViT-L-14": 638.45,
}
#: Text-tower GFLOPs per prompt (OpenCLIP ``text_gflops``): the zero-shot head's 80,000 prompts.
TEXT_GFLOPS = {"RN50": 5.96, "RN101": 5.96, "ViT-B-16": 5.96, "ViT-B-32": 5.96, "ViT-L-14": 13.3,
               "coca_ViT-B-32": 5.96, "coca_ViT-L-14": 13.3}
#: CPU seconds per image of ``encode_image`` at 224 px, 2 threads, random weights (facts.md:
#: 8 images in RN50 0.84 s, RN101 0.68 s, ViT-B-16 1.07 s, ViT-B-32 0.25 s, ViT-L-14 4.9 s,
#: coca_ViT-B-32 0.25 s); coca_ViT-L-14 taken as ViT-L-14.
CPU_SECONDS_PER_IMAGE = {
    "RN50": 0.84 / 8, "RN101": 0.68 / 8, "ViT-B-16": 1.07 / 8, "ViT-B-32": 0.25 / 8, "ViT-L-14": 4.9 / 8,
    "coca_ViT-B-32": 0.25 / 8, "coca_ViT-L-14": 4.9 / 8, "vit_b_16": 1.07 / 8, "vit_b_32": 0.25 / 8,
}

#: Zero-shot head: 1,000 classes x 80 templates (open_clip.OPENAI_IMAGENET_TEMPLATES).
HEAD_PROMPTS = 80_000
HEAD_CLASSES = 1000
#: CKA accumulators per (finetuning pair, dataset): the unbiased HSIC sums of every layer.
CKA_BYTES_PER_PAIR_DATASET = 4096
#: WiSE-FT (Appendix I): the paper's alphas 0, 0.1, ..., 1; 0 and 1 are the pool entries themselves.
WISEFT_MIXTURES = 9
#: Broden presence matrix (bool, images x concepts) and balanced sets: cached once per profile.
BRODEN_CONCEPTS = 1197

#: Datasets each section extracts h on, per pool entry of its slice (the chapter modules).
SECTION_DATASETS = {
    "robustness": EVAL_DATASETS, "outlier_features": ("imagenet",), "privileged_directions": ("imagenet",),
    "concept_probing": ("imagenet", "broden"), "pruning": EVAL_DATASETS,
}
#: Sections over (zero-shot, finetuned) pairs.
PAIR_SECTIONS = ("wiseft", "cka_layers")

ZERO_SHOT_FAMILIES = ("robust_zeroshot_clip", "imagenet_captions_clip", "coca_zeroshot")


def base_model(entry: PoolEntry) -> str:
    """The network an entry runs, without the activation suffix (``RN50-quickgelu`` -> ``RN50``)."""
    m = entry.model
    return m[: -len("-quickgelu")] if m.endswith("-quickgelu") else m


def feature_dim(entry: PoolEntry) -> int:
    """d_H, the width of h: open_clip's ``embed_dim`` (RN50 1,024, RN101 / ViT-B 512, ViT-L 768),
    torchvision's ``hidden_dim`` (ViT-B 768); read from the configs, no weights."""
    from .models import _open_clip, _open_clip_config, _torchvision_builder

    if entry.source == "torchvision":
        import torch

        with torch.device("meta"):
            return int(_torchvision_builder(entry)(weights=None).hidden_dim)
    _open_clip(entry.model)
    return int(_open_clip_config(entry)["embed_dim"])


def forward_seconds(entry: PoolEntry, device: str, precision: str) -> float | None:
    """Seconds of one image's forward pass on ``device`` (None: no published cost, e.g. demo models)."""
    name = base_model(entry)
    if not str(device).startswith("cuda"):
        return CPU_SECONDS_PER_IMAGE.get(name)
    if name not in IMAGE_GFLOPS:
        return None
    slow = FP32_SLOWDOWN if precision == "fp32" else 1.0
    return IMAGE_GFLOPS[name] * 1e9 / INFERENCE_FLOPS * slow


def training_seconds(entry: PoolEntry) -> float | None:
    """GPU seconds of one training image (forward + backward = three forwards) at :data:`TRAINING_FLOPS`."""
    name = base_model(entry)
    return None if name not in IMAGE_GFLOPS else 3 * IMAGE_GFLOPS[name] * 1e9 / TRAINING_FLOPS


def head_seconds(entry: PoolEntry, device: str) -> float | None:
    name = base_model(entry)
    if name not in TEXT_GFLOPS or not str(device).startswith("cuda"):
        return None
    return HEAD_PROMPTS * TEXT_GFLOPS[name] * 1e9 / INFERENCE_FLOPS


def trained_weight_bytes(entry: PoolEntry) -> float | None:
    """W: float32 bytes of what training updates and an epoch file stores: the image tower
    (:data:`IMAGE_MPARAMS`) and the head (1,000 x d_H, plus the bias of a supervised head)."""
    mp = IMAGE_MPARAMS.get(base_model(entry))
    if mp is None:
        return None
    head = HEAD_CLASSES * feature_dim(entry) + (HEAD_CLASSES if entry.family == "supervised" else 0)
    return 4 * (mp * 1e6 + head)


def download_bytes(entry: PoolEntry) -> float | None:
    """Approximate size of an open_clip tag's weights file (float32)."""
    mp = MODEL_MPARAMS.get(base_model(entry))
    return None if mp is None else mp * 1e6 * 4


@dataclass
class Stage:
    """One stage of a run: what it writes and what it costs."""

    name: str
    cache_bytes: float = 0.0
    gpu_hours: float = 0.0
    unknown: list[str] = field(default_factory=list)  # entries without a published per-image cost
    notes: list[str] = field(default_factory=list)
    checkpoint_bytes: float = 0.0  # written under paths.checkpoints_dir, not the cache

    def add_time(self, seconds: float | None, who: str, times: float = 1.0) -> None:
        if seconds is None:
            if who not in self.unknown:
                self.unknown.append(who)
        else:
            self.gpu_hours += seconds * times / 3600


def estimate(profile: Profile, entries: list[PoolEntry], sections: list[str], *,
             images: dict[str, int] | None = None, geometries: dict[str, str] | None = None,
             to_train: list[PoolEntry] | None = None, train_images: int | None = None,
             keep_epochs: str | None = None) -> list[Stage]:
    """Per-stage cache bytes and GPU-hours for ``entries`` over ``sections``.

    ``images``: images per dataset (default: the published sizes under the profile's limits;
    ``clip-study plan`` passes the counts found on disk); ``geometries``: each entry's input
    geometry key, one uint8 store per (dataset, geometry) (default: ``models.preprocessing``);
    ``to_train``: entries whose checkpoint a finetuning or training command still has to write
    (default: none), over ``train_images`` ImageNet training images, keeping ``keep_epochs`` epoch
    weights files (default: each command's, ``all`` for finetuning and ``last`` for supervised runs).
    """
    from .data import published
    from . import finetune, supervised
    from .finetune import FinetuneRecipe
    from .models import preprocessing
    from .supervised import SupervisedRecipe
    from .training import checkpoint_bytes

    def limited(d: str, n: int) -> int:
        lim = profile.limit(d)
        return n if lim is None else min(n, lim)

    if images is None:
        images = {d: limited(d, n) for d, n in published.IMAGES.items()}
    if geometries is None:
        geometries = {e.id: preprocessing(e).geometry_key for e in profile.pool}
    to_train = to_train or []
    if train_images is None:
        train_images = limited("imagenet-train", published.IMAGES["imagenet-train"])

    dev, prec = profile.device, profile.precision
    stages = {n: Stage(n) for n in ("stores", "heads", "extraction", "CKA", "finetuning", "WiSE-FT",
                                    "Broden probing")}
    # pairs within the slice, as the chapters form them (chapters.common.finetuning_pairs)
    by_id = {e.id: e for e in entries}
    pairs = [(by_id[e.finetuned_from], e) for e in entries if e.finetuned_from in by_id]
    need: dict[str, set[str]] = {e.id: set() for e in entries}  # entry -> datasets with h
    for s in sections:
        for e in entries:
            need[e.id] |= set(SECTION_DATASETS.get(s, ()))
    dims = {e.id: feature_dim(e) for e in entries}

    stores: set[tuple[str, str]] = set()
    for eid, datasets in need.items():
        e = by_id[eid]
        for d in sorted(datasets):
            n = images.get(d, 0)
            target = stages["Broden probing" if d == "broden" else "extraction"]
            target.cache_bytes += 4 * dims[eid] * n
            target.add_time(forward_seconds(e, dev, prec), e.id, n)
            stores.add((d, geometries[eid]))
    for s in sections:
        if s in PAIR_SECTIONS:  # both models of a pair read the stores of the evaluation sets (and Broden)
            for zs, ft in pairs:
                for d in EVAL_DATASETS + (("broden",) if s == "wiseft" and "broden" in images else ()):
                    stores.update({(d, geometries[zs.id]), (d, geometries[ft.id])})
    for d, g in sorted(stores):
        size = int(g.split("-")[0])
        stages["stores"].cache_bytes += 3 * size * size * images.get(d, 0)
    if stores:
        stages["stores"].notes.append(f"{len(stores)} (dataset, geometry) store(s), decoded once on CPU workers")
    if "broden" in {d for d, _ in stores}:
        stages["Broden probing"].cache_bytes += images.get("broden", 0) * BRODEN_CONCEPTS
    loaded = {e.id for e in entries if need.get(e.id)}
    if any(s in PAIR_SECTIONS for s in sections):
        loaded |= {zs.id for zs, _ in pairs}
    for e in entries:
        if e.family in ZERO_SHOT_FAMILIES and e.id in loaded:
            stages["heads"].cache_bytes += HEAD_CLASSES * dims[e.id] * 4
            stages["heads"].add_time(head_seconds(e, dev), e.id)
    if "cka_layers" in sections:
        for zs, ft in pairs:
            n = sum(images.get(d, 0) for d in EVAL_DATASETS)
            stages["CKA"].cache_bytes += CKA_BYTES_PER_PAIR_DATASET * len(EVAL_DATASETS)
            stages["CKA"].add_time(forward_seconds(zs, dev, prec), zs.id, n)
            stages["CKA"].add_time(forward_seconds(ft, dev, prec), ft.id, n)
        if pairs:
            stages["CKA"].notes.append(f"{len(pairs)} pair(s): both models over the same minibatches, "
                                       "HSIC sums accumulated on the device (no layer cache)")
    if "wiseft" in sections:
        ft_epochs = FinetuneRecipe().epochs
        for zs, ft in pairs:
            n = sum(images.get(d, 0) for d in EVAL_DATASETS) + images.get("broden", 0)
            stages["WiSE-FT"].add_time(forward_seconds(ft, dev, prec), ft.id, WISEFT_MIXTURES * n)
            stages["WiSE-FT"].add_time(forward_seconds(ft, dev, prec), ft.id, (ft_epochs - 1) * images.get("broden", 0))
        if pairs:
            stages["WiSE-FT"].notes.append(f"{len(pairs)} pair(s) x {WISEFT_MIXTURES} mixtures (the paper's alphas) "
                                           f"and {ft_epochs - 1} epoch checkpoints on Broden (Figure 5); tables only")
    kept, kept_last, peak_extra = 0.0, 0.0, 0.0
    for e in to_train:
        sup = e.family == "supervised"
        recipe = SupervisedRecipe() if sup else FinetuneRecipe()
        st = stages["finetuning"]
        st.add_time(training_seconds(e), e.id, recipe.epochs * train_images)
        w = trained_weight_bytes(e)
        if w is not None:  # (an unknown model is listed by add_time above)
            keep = keep_epochs or (supervised.KEEP_EPOCHS_DEFAULT if sup else finetune.KEEP_EPOCHS_DEFAULT)
            k, x = checkpoint_bytes(w, recipe.epochs, keep)
            kept, peak_extra = kept + k, max(peak_extra, x)
            kept_last += checkpoint_bytes(w, recipe.epochs, "last")[0]
    if to_train:
        st = stages["finetuning"]
        st.checkpoint_bytes = kept + peak_extra
        st.notes.append(f"{len(to_train)} checkpoint(s) to produce (finetune: {FinetuneRecipe().epochs} epochs, "
                        f"train-supervised: {SupervisedRecipe().epochs} epochs, over {train_images:,} images); "
                        f"{kept / GB:.1f} GB kept (weights-only epochs, final.pt), {peak_extra / GB:.1f} GB more "
                        "while a run trains (resume states)"
                        + (f"; --keep-epochs last keeps {kept_last / GB:.1f} GB (Figure 5: final epoch only)"
                           if kept_last < kept else ""))
    return list(stages.values())


ASSUMPTIONS = (f"GPU-hours: image-tower FLOPs (OpenCLIP model_profile.csv, torchvision docs) at "
               f"{INFERENCE_FLOPS / 1e12:.0f} TFLOP/s for inference and {TRAINING_FLOPS / 1e12:.0f} TFLOP/s "
               f"for training (an A100-class GPU under bf16 autocast; fp32 x{FP32_SLOWDOWN:g}); not measured "
               "here (benchmarks/paper_scale.py measures yours)")
