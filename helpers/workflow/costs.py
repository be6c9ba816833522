"""What a run costs before it runs: cache bytes and GPU-hours per stage (``clip-study plan``,
``benchmarks/paper_scale.py`` (d)). No weights, data or GPU are needed.

Per-image costs come from one table, :data:`helpers.engine.flops.ARCHS`, measured by
:func:`helpers.engine.flops.measure_arch`
(``torch.utils.flop_counter`` on one 224 px image, on the meta device) for every architecture of
the paper profile; any other architecture (the demo models, a fork's) is measured the same way on
first use. The meta device counts ``nn.MultiheadAttention`` through its decomposition: on a CPU,
in eval mode, its fused fast path (``_native_multi_head_attention``) is invisible to the counter
and a ViT's projections would go uncounted (5.89 instead of 8.82 GFLOPs for ViT-B-32). The meta
counts equal OpenCLIP's published model profile (``docs/model_profile.csv``: 8.82 / 12.22 / 162.03
GFLOPs for ViT-B-32 / RN50 / ViT-L-14, 5.96 per text prompt), an independent check of the table.

Stages (:func:`estimate` returns one :class:`Stage` each, in this order):

- ``stores``: one uint8 store per (dataset, input geometry): ``3 S^2`` pixels + int64 label and
  index per image (150,544 B at 224 px). A geometry fewer than
  :data:`helpers.engine.extract.KEEP_STORE_MIN_ENTRIES` pool entries read (the torchvision ViTs' 256 -> 224
  bilinear) is removed after each pass (:func:`helpers.engine.extract.keeps_store`): counted once, as the
  largest such store, in ``transient_bytes`` (the peak), not in the cache. CPU work (decoding).
- ``heads``: every entry's head W (1,000 x d_H float32, + bias for a supervised head) under
  ``linear_heads/``; a zero-shot entry's head also under ``heads/`` (keyed by weights digest),
  built from 1,000 classes x 80 templates through the text tower.
- ``extraction``: h in float32 + an int64 label (``4 d_H + 8`` B per image) per (entry, dataset)
  a section reads (Broden included); no logits (derived: the head applied to h), no layer arrays.
- ``CKA``: one extra forward of both models of each (zero-shot, finetuned) pair over the six
  evaluation sets; the HSIC accumulators (``L_x x L_y`` float64 and their diagonals) per
  (pair, dataset).
- ``finetuning``: Appendix H.1/H.2 runs whose checkpoint is still to write, under
  ``paths.checkpoints_dir`` (counted apart from the cache), in the layout of
  :mod:`helpers.training.loop` (:func:`helpers.training.loop.checkpoint_bytes`): with W = 4 bytes x the
  trained parameters (image tower + head W (+ bias); the text tower is neither trained nor stored),
  a finetuning run keeps its 10 weights-only epochs (Figure 5) and ``final.pt``, 11 W; a supervised
  run its newest epoch and ``final.pt``, 2 W; and while one trains, its resume states (weights + two
  AdamW moments, 3 W; two of them for a moment) need 6 W more, counted once (for the largest run:
  runs train one at a time).
- ``WiSE-FT``: nine in-memory mixtures per pair over the evaluation sets and Broden, and the epoch
  checkpoints of Figure 5 on Broden; only accuracies, kurtosis and AP matrices are cached.
- ``Broden probing``: the concept presence matrix (images x 1,197 bool) once, and an AP matrix
  (directions x concepts, float64) per entry (CPU work).

GPU-hours: FLOPs / :data:`GPU_TFLOPS` of the profile's precision (an assumption for an A100-class
GPU; recalibrate from the img/s that ``benchmarks/gpu_check.sh`` measures on yours); on a CPU device
:data:`CPU_TFLOPS`. A training step costs :data:`TRAIN_FORWARDS` forwards at
:data:`TRAIN_EFFICIENCY` of that rate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

# helpers.engine, .models, .data and .training import torch (about 2 s): they are imported inside the
# functions that use them, so `clip-study --help`, a refused flag and the job loop start without it
from helpers.config import EVAL_DATASETS, PoolEntry, Profile
from helpers.engine.flops import (ARCHS, CPU_TFLOPS, GPU_TFLOPS, N_CLASSES, ArchCost, arch_cost, arch_key,
                                  flops_per_second, head_prompts)
from helpers.workflow.sections import PAIR_SECTIONS, SECTION_DATASETS, notebooks, store_reads
from helpers.store import Geometry, pixel_transform
from helpers.paper.published import IMAGES as DATASET_IMAGES  # noqa: F401 - the published sizes, one table

GB = 1e9

#: A training step (forward + backward) costs three forwards ...
TRAIN_FORWARDS = 3.0
#: ... at half the inference rate (optimizer step, augmentation, fp32 master weights).
TRAIN_EFFICIENCY = 0.5
#: Images decoded and resized to 224 px per second per DataLoader worker, assumed where ``plan``
#: cannot measure them on the data (:func:`measure_decode_rate`): an ImageNet-sized JPEG (500 x 375)
#: at 150; ObjectNet's PNG photos, several times more pixels, at 40.
DECODE_PER_WORKER = {"default": 150.0, "objectnet": 40.0}

#: WiSE-FT (Appendix I): the paper's alphas 0, 0.1, ..., 1; 0 and 1 are the pool entries themselves.
WISEFT_MIXTURES = 9
BRODEN_CONCEPTS = 1_197
#: A committed cache entry's manifest.json and folder, about.
MANIFEST_BYTES = 2048


STAGES = ("stores", "heads", "extraction", "CKA", "forking", "finetuning", "WiSE-FT", "Broden probing")
#: Stages done by CPU workers (their hours column reads ``CPU``).
CPU_STAGES = ("stores", "Broden probing")


def layer_bytes_per_image(entry: PoolEntry) -> int:
    """Disk bytes per image of :func:`helpers.engine.extract.layer_activations` with every layer."""
    return arch_cost(entry).layer_bytes


def store_bytes_per_image(image_size: int = 224) -> int:
    """uint8 pixels of one image in a store, plus its label and index (int64 each)."""
    return 3 * image_size * image_size + 16


def h_bytes_per_image(d_H: int) -> int:
    """h in float32 plus the image's int64 label (``activations/<entry>/<dataset>``)."""
    return 4 * d_H + 8


def head_bytes(entry: PoolEntry) -> int:
    """An entry's cached head: W (+ bias for a supervised head) in ``linear_heads/``, and for a
    zero-shot entry the same W again in ``heads/`` (what a new weights file of the same model reuses)."""
    from helpers.models import ZERO_SHOT_FAMILIES

    w = 4 * N_CLASSES * arch_cost(entry).d_H
    return w + (4 * N_CLASSES if entry.family == "supervised" else 0) + (w if entry.family in ZERO_SHOT_FAMILIES else 0)


def trained_weight_bytes(entry: PoolEntry) -> float | None:
    """W: float32 bytes of what training updates and an epoch file stores: the image tower
    and the head (1,000 x d_H, plus the bias of a supervised head). None: no known architecture."""
    try:
        c = arch_cost(entry)
    except Exception:  # noqa: BLE001 - an entry that cannot build is reported by the checks
        return None
    return 4 * (c.image_params + N_CLASSES * c.d_H + (N_CLASSES if entry.family == "supervised" else 0))


def download_bytes(entry: PoolEntry) -> float | None:
    """Size of an open_clip tag's weights file: every parameter of the model in float32."""
    c = ARCHS.get(arch_key(entry))
    return None if c is None else 4 * (c.image_params + c.text_params)


def parse_rate(text: str) -> float:
    """``plan --rate``: the device's measured effective rate in FLOP/s, from ``<N>TFLOPS`` (or a
    bare number, TFLOP/s) or ``<N>img/s:<arch>`` (images per second of one :data:`ARCHS`
    architecture's forward, as ``benchmarks/gpu_check.sh`` prints them: bare forward img/s), e.g.
    ``--rate 2900img/s:ViT-B-32``."""
    t = str(text).strip().replace(" ", "")
    low = t.lower()
    try:
        if "img/s" in low:
            number, _, arch = t.partition(":")
            n = float(number[: low.index("img/s")])
            if arch not in ARCHS:
                raise ValueError(f"--rate {text}: expected <images per second>img/s:<architecture>, the "
                                 f"architecture one of {', '.join(ARCHS)}; got {arch or 'none'!r}")
            return n * ARCHS[arch].image_gflops * 1e9
        return float(low.removesuffix("tflops").removesuffix("tflop/s")) * 1e12
    except ValueError as exc:
        if str(exc).startswith("--rate"):
            raise
        raise ValueError(f"--rate {text}: expected <N>TFLOPS or <N>img/s:<architecture> (e.g. 2900img/s:ViT-B-32)") \
            from None


def measure_decode_rate(dataset, n: int = 16, image_size: int = 224) -> float | None:
    """Images per second one worker decodes and resizes from ``dataset`` (a :mod:`helpers.data`
    dataset): the store's own path (``load_image`` then :func:`helpers.store.pixel_transform`) on
    ``n`` images spread over the dataset, after one warm-up image. None for an empty dataset."""
    import time

    total = len(dataset.files)
    if total == 0:
        return None
    to_pixels = pixel_transform(Geometry(image_size))
    picks = sorted({int(i * total / n) for i in range(min(n, total))})
    to_pixels(dataset.load_image(picks[0]))
    t0 = time.perf_counter()
    for i in picks:
        to_pixels(dataset.load_image(i))
    return len(picks) / max(time.perf_counter() - t0, 1e-9)


@dataclass
class Stage:
    """One stage of a run: what it writes and what it costs."""

    name: str
    cache_bytes: float = 0.0
    gpu_hours: float = 0.0  # hours of the profile's device (CPU-hours on a CPU device)
    unknown: list[str] = field(default_factory=list)  # entries whose architecture could not be counted
    notes: list[str] = field(default_factory=list)
    checkpoint_bytes: float = 0.0  # written under paths.checkpoints_dir, not the cache
    transient_bytes: float = 0.0  # on disk only while the stage runs (the peak, on top of the cache)
    cpu_hours: float = 0.0  # CPU worker-hours (decoding, probing)
    wall_hours: float = 0.0  # hours of wall time of that CPU work with the profile's DataLoader workers

    def add_time(self, gflops: float | None, who: str, times: float, rate: float) -> None:
        if gflops is None:
            if who not in self.unknown:
                self.unknown.append(who)
        else:
            self.gpu_hours += gflops * 1e9 * times / rate / 3600


def cache_bytes(stages: Sequence[Stage]) -> float:
    """What stays under ``cache_dir`` (checkpoints and transient stores excluded)."""
    return sum(s.cache_bytes for s in stages)


def peak_bytes(stages: Sequence[Stage]) -> float:
    """The cache plus the largest transient store at once: the free space the cache needs."""
    return cache_bytes(stages) + max((s.transient_bytes for s in stages), default=0.0)


@dataclass
class _Run:
    """What :func:`estimate` reads, resolved once: the slice, its images, architectures and pairs."""

    profile: Profile
    entries: list[PoolEntry]
    sections: list[str]
    images: dict[str, int]
    geometries: dict[str, object]
    to_train: list[PoolEntry]
    train_images: int
    keep_epochs: str | None
    rate: float
    decode: dict[str, tuple[float, str]]
    cost: dict[str, ArchCost | None] = field(default_factory=dict)
    pairs: list[tuple[PoolEntry, PoolEntry]] = field(default_factory=list)
    need: dict[str, set[str]] = field(default_factory=dict)  # entry -> datasets whose h it needs

    def gflops(self, e: PoolEntry) -> float | None:
        c = self.cost[e.id]
        return None if c is None else c.image_gflops


def _run(profile, entries, sections, images, geometries, to_train, train_images, keep_epochs, rate,
         decode_rates) -> _Run:
    from helpers.models import preprocessing

    def limited(d: str, n: int) -> int:
        lim = profile.limit(d)
        return n if lim is None else min(n, lim)

    entries = list(profile.pool if entries is None else entries)
    if sections is None:
        sections = list(notebooks())
    if images is None:  # the published sizes under the profile's limits, of the datasets it names
        images = {d: limited(d, n) for d, n in DATASET_IMAGES.items() if d in profile.datasets}
    if geometries is None:
        geometries = {}
        for e in profile.pool:
            try:
                geometries[e.id] = preprocessing(e).geometry
            except Exception:  # noqa: BLE001 - an entry that cannot resolve is reported by the checks
                continue
    if train_images is None:
        train_images = limited("imagenet-train", DATASET_IMAGES["imagenet-train"])
    decode = {d: (DECODE_PER_WORKER.get(d, DECODE_PER_WORKER["default"]), "assumed") for d in images}
    decode.update(decode_rates or {})
    r = _Run(profile, entries, list(sections), dict(images), dict(geometries), list(to_train or []), train_images,
             keep_epochs, flops_per_second(profile) if rate is None else rate, decode)
    for e in {**{e.id: e for e in entries}, **{e.id: e for e in r.to_train}}.values():
        try:
            r.cost[e.id] = arch_cost(e)
        except Exception:  # noqa: BLE001 - the entry's build error is reported by the checks
            r.cost[e.id] = None
    # pairs within the slice, as the chapters form them (chapters.common.finetuning_pairs)
    by_id = {e.id: e for e in entries}
    r.pairs = [(by_id[e.finetuned_from], e) for e in entries if e.finetuned_from in by_id]
    r.need = {e.id: set() for e in entries}
    for s in r.sections:
        for e in entries:
            r.need[e.id] |= {d for d in SECTION_DATASETS.get(s, ()) if d in r.images}
    return r


def estimate(profile: Profile, entries: Sequence[PoolEntry] | None = None, sections: Sequence[str] | None = None, *,
             images: Mapping[str, int] | None = None, geometries: Mapping[str, object] | None = None,
             to_train: Sequence[PoolEntry] | None = None, train_images: int | None = None,
             keep_epochs: str | None = None, rate: float | None = None,
             decode_rates: Mapping[str, tuple[float, str]] | None = None) -> list[Stage]:
    """Per-stage cache bytes and hours (one :class:`Stage` per :data:`STAGES`) for ``entries``
    (None: the pool) over ``sections`` (None: every notebook's section), as the profile sets them:
    its datasets and limits, its zero-shot head (:func:`head_prompts`), its ``num_workers``.

    ``images``: images per dataset (default: the published sizes of the profile's datasets under its
    limits; ``clip-study plan`` passes the counts found on disk); ``geometries``: each pool entry's
    input :class:`helpers.store.Geometry` (default: ``models.preprocessing``); ``to_train``: entries
    whose checkpoint a finetuning or training command still has to write (default: none), over
    ``train_images`` ImageNet training images, keeping ``keep_epochs`` epoch weights files (default:
    each command's, ``all`` for finetuning and ``last`` for supervised runs); ``rate``: effective
    FLOP/s of the device (default :func:`flops_per_second`; ``plan --rate``); ``decode_rates``:
    dataset -> (images decoded per second per worker, where the figure comes from), default
    :data:`DECODE_PER_WORKER` (``plan`` measures it on the datasets it finds).
    """
    r = _run(profile, entries, sections, images, geometries, to_train, train_images, keep_epochs, rate, decode_rates)
    stages = {n: Stage(n) for n in STAGES}
    _extraction(r, stages["extraction"])
    _stores(r, stages["stores"])
    _heads(r, stages["heads"])
    _cka(r, stages["CKA"])
    _forking(r, stages["forking"])
    _wiseft(r, stages["WiSE-FT"])
    _probing(r, stages["Broden probing"])
    _finetuning(r, stages["finetuning"])
    return list(stages.values())


def _extraction(r: _Run, st: Stage) -> None:
    """h of every (entry, dataset) a section reads: float32 + label per image, one forward each."""
    for e in r.entries:
        for d in sorted(r.need[e.id]):
            n = r.images.get(d, 0)
            if r.cost[e.id] is not None:
                st.cache_bytes += h_bytes_per_image(r.cost[e.id].d_H) * n
            st.add_time(r.gflops(e), e.id, n, r.rate)
    rows = sum(r.images.get(d, 0) for e in r.entries for d in r.need[e.id])
    if rows:
        st.notes.append(f"{sum(bool(r.need[e.id]) for e in r.entries)} entries, {rows:,} (entry, image) "
                        "rows of h (float32) + label; no logits, no layer arrays")


def _store_keys(r: _Run) -> set[tuple[str, object]]:
    """(dataset, geometry) of every uint8 store the run decodes (:func:`store_reads`)."""
    return {(d, r.geometries[e.id]) for s in r.sections for reads in store_reads(s, r.entries, r.profile)
            for e in reads.entries for d in reads.datasets if d in r.images and e.id in r.geometries}


def _stores(r: _Run, st: Stage) -> None:
    """uint8 stores: kept ones in the cache, transient ones at their peak; decode worker-hours and
    the wall time per dataset with the profile's DataLoader workers."""
    from helpers.engine.extract import KEEP_STORE_MIN_ENTRIES, keeps_store

    stores = _store_keys(r)
    kept = transient = 0
    readers: dict[object, int] = {}
    for g in r.geometries.values():
        readers[g] = readers.get(g, 0) + 1
    decoded: dict[str, float] = {}
    for d, g in stores:
        size = store_bytes_per_image(g.image_size) * r.images.get(d, 0)
        if keeps_store(r.profile, g):
            kept += 1
            st.cache_bytes += size
            decoded[d] = decoded.get(d, 0.0) + r.images.get(d, 0)
        else:  # removed after each pass: decoded again by each of its readers
            transient += 1
            st.transient_bytes = max(st.transient_bytes, size)
            decoded[d] = decoded.get(d, 0.0) + r.images.get(d, 0) * readers.get(g, 1)
    st.cpu_hours = sum(n / r.decode[d][0] for d, n in decoded.items()) / 3600
    workers = max(1, int(r.profile.num_workers))
    st.wall_hours = st.cpu_hours / workers
    if stores:
        per = ", ".join(f"{d} {n / r.decode[d][0] / workers / 3600:.2f} h ({r.decode[d][0]:.0f} img/s per worker, "
                        f"{r.decode[d][1]})" for d, n in sorted(decoded.items()))
        st.notes.append(f"{kept} (dataset, geometry) store(s) kept, decoded once on CPU workers "
                        f"(~{st.cpu_hours:.1f} worker-hours; wall time with num_workers {r.profile.num_workers}: "
                        f"{st.wall_hours:.2f} h: {per})")
    by_geometry: dict[str, list[str]] = {}
    stage_hours = 0.0  # the kept stores only: a transient one is decoded by each job that reads it
    for d, g in sorted(stores, key=lambda s: (s[1].key, s[0])):
        if keeps_store(r.profile, g):
            by_geometry.setdefault(g.key, []).append(d)
            stage_hours += r.images.get(d, 0) / r.decode[d][0] / workers / 3600
    if by_geometry:
        st.notes.append(f"decode stage of `clip-study run`, before any job (~{stage_hours:.2f} h wall): "
                        + "; ".join(f"{', '.join(ds)} at {g}" for g, ds in by_geometry.items()))
    if transient:
        st.notes.append(f"{transient} transient (a geometry fewer than {KEEP_STORE_MIN_ENTRIES} pool entries read, "
                        f"removed after each pass): {_size(st.transient_bytes)} more at the peak")


def _heads(r: _Run, st: Stage) -> None:
    """Every loaded entry's head W; a zero-shot one built once per weights through the text tower."""
    from helpers.models import ZERO_SHOT_FAMILIES

    loaded = {e.id for e in r.entries if r.need[e.id]}
    if any(s in PAIR_SECTIONS for s in r.sections):
        loaded |= {zs.id for zs, _ in r.pairs}
    classes, templates = head_prompts(r.profile)
    for e in r.entries:
        if e.id in loaded and r.cost[e.id] is not None:
            st.cache_bytes += head_bytes(e)
        if e.id in loaded and e.family in ZERO_SHOT_FAMILIES:
            st.add_time(None if r.cost[e.id] is None else r.cost[e.id].text_gflops, e.id, classes * templates, r.rate)
    heads = sum(e.family in ZERO_SHOT_FAMILIES for e in r.entries if e.id in loaded)
    if heads:
        st.notes.append(f"{heads} zero-shot head(s) x {classes * templates:,} prompts ({classes:,} classes x "
                        f"{templates} template{'s' if templates > 1 else ''}) on the device, once per weights")


def _cka(r: _Run, st: Stage) -> None:
    """One extra forward of both models of each pair over the evaluation sets; HSIC sums cached."""
    if "cka_layers" not in r.sections:
        return
    evals = [d for d in EVAL_DATASETS if d in r.images]
    eval_n = sum(r.images[d] for d in evals)
    for zs, ft in r.pairs:
        if r.cost[zs.id] is not None and r.cost[ft.id] is not None:
            lx, ly = r.cost[zs.id].layers, r.cost[ft.id].layers
            st.cache_bytes += len(evals) * (8 * (lx * ly + lx + ly + 1) + lx + ly + MANIFEST_BYTES)
        st.add_time(r.gflops(zs), zs.id, eval_n, r.rate)
        st.add_time(r.gflops(ft), ft.id, eval_n, r.rate)
    if r.pairs:
        st.notes.append(f"{len(r.pairs)} pair(s): both models over the same minibatches, "
                        "HSIC sums accumulated on the device (no layer cache)")


def _forking(r: _Run, st: Stage) -> None:
    """The forking chapter: one more forward per entry over ImageNet for its penultimate layer,
    kept in memory (the page's ``keep_layers=False``), besides h (counted under extraction)."""
    if "forking" not in r.sections or "imagenet" not in r.images:
        return
    n = r.images["imagenet"]
    for e in r.entries:
        st.add_time(r.gflops(e), e.id, n, r.rate)
    st.notes.append(f"{len(r.entries)} entries x {n:,} ImageNet images: one forward each for the penultimate "
                    "layer, in memory (no layer cache)")


def _wiseft(r: _Run, st: Stage) -> None:
    """Nine in-memory mixtures per pair over the evaluation sets and Broden; Figure 5's epochs."""
    from helpers.training.finetune import FinetuneRecipe

    if "wiseft" not in r.sections:
        return
    ft_epochs = FinetuneRecipe().epochs
    eval_n = sum(r.images.get(d, 0) for d in EVAL_DATASETS)
    broden_n = r.images.get("broden", 0)
    for zs, ft in r.pairs:
        st.add_time(r.gflops(ft), ft.id, WISEFT_MIXTURES * (eval_n + broden_n), r.rate)
        st.add_time(r.gflops(ft), ft.id, (ft_epochs - 1) * broden_n, r.rate)
        if r.cost[ft.id] is not None:
            ap = 8 * min(N_CLASSES, r.cost[ft.id].d_H) * BRODEN_CONCEPTS
            summaries = (len(EVAL_DATASETS) + 1) * (16 + MANIFEST_BYTES)  # accuracy, kurtosis per dataset
            st.cache_bytes += WISEFT_MIXTURES * (ap + summaries) + (ft_epochs - 1) * (ap + 16 + MANIFEST_BYTES)
    if r.pairs:
        st.notes.append(f"{len(r.pairs)} pair(s) x {WISEFT_MIXTURES} mixtures (the paper's alphas) "
                        f"and {ft_epochs - 1} epoch checkpoints on Broden (Figure 5); tables only")


def _probing(r: _Run, st: Stage) -> None:
    """The concept presence matrix once, and one AP matrix per probed entry (CPU work)."""
    probed = [e for e in r.entries if "broden" in r.need[e.id]]
    if not (probed or ("wiseft" in r.sections and r.pairs and "broden" in r.images)):
        return
    st.cache_bytes += r.images.get("broden", 0) * BRODEN_CONCEPTS
    st.cache_bytes += sum(8 * min(N_CLASSES, r.cost[e.id].d_H) * BRODEN_CONCEPTS for e in probed
                          if r.cost[e.id] is not None)
    st.cpu_hours = len(probed) * 10 / 3600  # about 10 s per entry (benchmarks/concept_probing.py)
    if probed:
        st.notes.append(f"{len(probed)} AP matrices x {BRODEN_CONCEPTS:,} concepts (h on Broden: extraction)")


def _finetuning(r: _Run, st: Stage) -> None:
    """Appendix H.1/H.2 runs still to train: their steps, and the checkpoints they keep."""
    from helpers.training import finetune, supervised
    from helpers.training.finetune import FinetuneRecipe
    from helpers.training.loop import checkpoint_bytes
    from helpers.training.supervised import SupervisedRecipe

    kept_b, kept_last, peak_extra = 0.0, 0.0, 0.0
    for e in r.to_train:
        sup = e.family == "supervised"
        recipe = SupervisedRecipe() if sup else FinetuneRecipe()
        g = r.gflops(e)
        st.add_time(None if g is None else TRAIN_FORWARDS * g / TRAIN_EFFICIENCY, e.id,
                    recipe.epochs * r.train_images, r.rate)
        w = trained_weight_bytes(e)
        if w is not None:  # (an unknown model is listed by add_time above)
            keep = r.keep_epochs or (supervised.KEEP_EPOCHS_DEFAULT if sup else finetune.KEEP_EPOCHS_DEFAULT)
            k, x = checkpoint_bytes(w, recipe.epochs, keep)
            kept_b, peak_extra = kept_b + k, max(peak_extra, x)
            kept_last += checkpoint_bytes(w, recipe.epochs, "last")[0]
    if r.to_train:
        st.checkpoint_bytes = kept_b + peak_extra
        st.notes.append(f"{len(r.to_train)} checkpoint(s) to produce (finetune: {FinetuneRecipe().epochs} epochs, "
                        f"train-supervised: {SupervisedRecipe().epochs} epochs, over {r.train_images:,} images); "
                        f"{kept_b / GB:.1f} GB kept (weights-only epochs, final.pt), {peak_extra / GB:.1f} GB more "
                        "while a run trains (resume states)"
                        + (f"; --keep-epochs last keeps {kept_last / GB:.1f} GB (Figure 5: final epoch only)"
                           if kept_last < kept_b else ""))


def _size(b: float) -> str:
    return f"{b / GB:.1f} GB" if b >= 0.05 * GB else f"{b / 1e6:.1f} MB" if b >= 1e5 else f"{b / 1e3:.0f} kB"


def assumptions(profile: Profile, rate: float | None = None) -> str:
    """How the hours column was computed, for the line under the table."""
    if rate is not None:
        return (f"{'GPU' if str(profile.device).startswith('cuda') else 'CPU'}-hours: FLOPs per image of each "
                f"architecture (helpers.engine.flops.ARCHS) at the measured {rate / 1e12:.3g} effective TFLOP/s "
                f"(--rate; training at x{TRAIN_EFFICIENCY:g} of that rate)")
    if str(profile.device).startswith("cuda"):
        return (f"GPU-hours: FLOPs per image of each architecture (helpers.engine.flops.ARCHS, counted with "
                f"torch.utils.flop_counter) at {GPU_TFLOPS[profile.precision]:g} effective TFLOP/s "
                f"({profile.precision}, an A100-class GPU; training at x{TRAIN_EFFICIENCY:g} of that rate); "
                "recalibrate with --rate <img/s>img/s:<arch> from the bare-forward img/s benchmarks/gpu_check.sh "
                "prints on yours")
    return (f"CPU-hours: FLOPs per image of each architecture (helpers.engine.flops.ARCHS) at {CPU_TFLOPS:g} "
            "TFLOP/s, measured encode_image times on 2 CPU threads")


def format_stages(stages: Sequence[Stage], profile: Profile, rate: float | None = None) -> list[str]:
    """The per-stage table ``clip-study plan`` prints (followed, there, by ``total cache: <N> GB``)."""
    unit = "GPU-hours" if str(profile.device).startswith("cuda") else "CPU-hours"
    out = [f"{'Stage':<16} {'cache':>10} {unit:>10}  notes"]
    for s in stages:
        hours = f"{s.gpu_hours:.2f}" if not s.unknown else (f"{s.gpu_hours:.2f}+" if s.gpu_hours else "n/a")
        notes = list(s.notes)
        if s.checkpoint_bytes:
            notes.insert(0, f"checkpoints: {_size(s.checkpoint_bytes)} under checkpoints_dir")
        if s.unknown:
            notes.append(f"no per-image cost for {', '.join(s.unknown[:4])}"
                         + (f" (+{len(s.unknown) - 4})" if len(s.unknown) > 4 else ""))
        if s.name in CPU_STAGES:
            hours = "CPU"
        out.append(f"  {s.name:<14} {_size(s.cache_bytes):>10} {hours:>10}  {'; '.join(notes)}")
    total_h = sum(s.gpu_hours for s in stages)
    out.append(f"  {'total':<14} {_size(cache_bytes(stages)):>10} {total_h:>10.2f}  "
               f"peak with transient stores {_size(peak_bytes(stages))}")
    wall = sum(s.wall_hours for s in stages)
    if wall:
        out.append(f"  (and {wall:.2f} h of decoding wall time on the CPU workers before the device stages: the kept "
                   "stores are decoded by `clip-study run`'s decode stage before any job starts, in the runner's "
                   "process or, with --executor slurm, as one CPU-only job that every extraction job waits for; "
                   "--no-decode-stage leaves them to the jobs)")
    out.append(f"  ({assumptions(profile, rate)})")
    return out


def total_line(stages: Sequence[Stage]) -> str:
    """The last line of ``clip-study plan``."""
    return f"total cache: {cache_bytes(stages) / GB:.0f} GB"
