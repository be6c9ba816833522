"""What a forward pass costs, in FLOPs: per architecture (:data:`ARCHS`, counted by
:func:`measure_arch` with ``torch.utils.flop_counter`` on the meta device), per zero-shot head
(classes x templates through the text tower) and the effective device rates the hours are computed
at. ``clip-study plan`` (:mod:`helpers.workflow.costs`) and ``diagnose``'s head-cost check both
read it. torch is imported only by :func:`measure_arch`: this module is light."""
from __future__ import annotations

from dataclasses import dataclass

from helpers.config import PoolEntry, Profile

#: Effective TFLOP/s of one A100-class GPU on these encoders at batch 256, per precision: about a
#: third of the dense bf16 peak under autocast; fp32 (TF32 off) four times slower.
GPU_TFLOPS = {"bf16": 100.0, "fp16": 100.0, "fp32": 25.0}
#: Effective TFLOP/s of two CPU threads (measured encode_image: 8 images of ViT-B-32 in 0.25 s, of
#: ViT-L-14 in 4.9 s, of RN50 in 0.84 s: 0.28, 0.26, 0.12 TFLOP/s with the FLOPs of :data:`ARCHS`).
CPU_TFLOPS = 0.2
#: Zero-shot head: 1,000 classes x 80 templates (open_clip.OPENAI_IMAGENET_TEMPLATES).
N_CLASSES = 1_000
N_TEMPLATES = 80
HEAD_PROMPTS = N_CLASSES * N_TEMPLATES


@dataclass(frozen=True)
class ArchCost:
    """Per-image costs of one image tower at 224 px (counted by :func:`measure_arch`) and of its
    text tower per prompt."""

    d_H: int  # width of h
    image_gflops: float  # forward FLOPs per image / 1e9
    image_params: int  # image tower parameters (no head)
    layers: int  # pooled layer outputs (CKA grid side)
    layer_bytes: int  # float32 bytes per image of all pooled layers (the opt-in layer cache)
    text_gflops: float = 0.0  # text tower FLOPs per prompt / 1e9 (CLIP / CoCa)
    text_params: int = 0  # everything outside ``visual`` (text tower, logit scale, CoCa decoder)


def _measured(d_H, gflops, mparams, layers, layer_bytes, text_gflops=0.0, text_mparams=0.0) -> ArchCost:
    """A table row as :func:`measure_arch` prints it, rounded as OpenCLIP's model profile is
    (GFLOPs and millions of parameters to two decimals)."""
    return ArchCost(d_H, gflops, round(mparams * 1e6), layers, layer_bytes, text_gflops, round(text_mparams * 1e6))


#: :func:`measure_arch` on the meta device (``benchmarks/paper_scale.py --arch-table``; torch 2.14,
#: open_clip 3.3), keyed by :func:`arch_key`.
ARCHS: dict[str, ArchCost] = {
    "RN50": _measured(1024, 12.22, 38.32, 5, 19_456, 5.96, 63.69),
    "RN101": _measured(512, 19.54, 56.26, 5, 17_408, 5.96, 63.43),
    "ViT-B-16": _measured(512, 35.13, 86.19, 25, 75_776, 5.96, 63.43),
    "ViT-B-32": _measured(512, 8.82, 87.85, 25, 75_776, 5.96, 63.43),
    "ViT-L-14": _measured(768, 162.03, 303.97, 49, 199_680, 13.30, 123.65),
    "coca_ViT-B-32": _measured(512, 9.19, 89.16, 25, 75_776, 5.96, 164.40),
    "coca_ViT-L-14": _measured(768, 163.64, 306.72, 49, 199_680, 13.30, 331.73),
    "vit_b_16": _measured(768, 35.13, 85.80, 25, 76_800),
    "vit_b_32": _measured(768, 8.82, 87.46, 25, 76_800),
}


def arch_key(entry: PoolEntry) -> str:
    """The :data:`ARCHS` key of an entry: its model name without ``-quickgelu`` (an activation,
    not a size)."""
    m = entry.model
    return m[: -len("-quickgelu")] if m.endswith("-quickgelu") else m


_MEASURED: dict[str, ArchCost] = {}


def arch_cost(entry: PoolEntry) -> ArchCost:
    """Per-image costs of an entry's architecture: the table, else counted on the meta device
    (no weights, no memory: the demo architectures and forks' models)."""
    key = arch_key(entry)
    if key in ARCHS:
        return ARCHS[key]
    if (entry.source, key) not in _MEASURED:
        _MEASURED[entry.source, key] = measure_arch(entry)
    return _MEASURED[entry.source, key]


def measure_arch(entry: PoolEntry, device: str = "meta") -> ArchCost:
    """Count an architecture's costs (``torch.utils.flop_counter``) on one 224 px image; how
    :data:`ARCHS` was filled. ``device="meta"``: shapes only, instant, and attention counted through
    its decomposition (a CPU run of a ViT misses the fused attention's projections, see above)."""
    import dataclasses

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from helpers.engine import extract
    from helpers import models
    from helpers.models.loading import image_encoder

    e = dataclasses.replace(entry, checkpoint=None, pretrained=None)
    net = models.build_architecture(e, device=device).eval()
    enc, kind = image_encoder(net, e)
    size = models.preprocessing(e).image_size
    x = torch.zeros(1, 3, size, size, device=device)

    class _Shell:  # what extract.layer_names / layer_hooks read from a LoadedModel
        arch_kind, encoder = kind, enc
    names = extract.layer_names(_Shell)
    captured: dict = {}
    hooks = extract.layer_hooks(_Shell, names, captured)
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


def flops_per_second(profile: Profile) -> float:
    """The effective rate the hours are computed at: :data:`GPU_TFLOPS` of the profile's precision
    on CUDA, :data:`CPU_TFLOPS` otherwise."""
    if str(profile.device).startswith("cuda"):
        return GPU_TFLOPS[profile.precision] * 1e12
    return CPU_TFLOPS * 1e12


def head_prompts(profile: Profile) -> tuple[int, int]:
    """(classes, templates) a zero-shot head of ``profile`` sends through the text tower: 1,000 x
    80, or a smoke profile's ``zero_shot_classes`` x ``zero_shot_templates``."""
    classes = N_CLASSES if profile.zero_shot_classes is None else len(profile.zero_shot_classes)
    return classes, (N_TEMPLATES if profile.zero_shot_templates is None else int(profile.zero_shot_templates))
