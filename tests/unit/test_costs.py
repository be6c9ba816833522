"""helpers.workflow.costs: the per-image costs and the paper-scale extrapolation `clip-study plan` prints,
checked against sizes written out by hand (published widths, dataset sizes, uint8 pixels)."""
import dataclasses

import pytest

from helpers.engine import flops
from helpers.workflow import costs
from helpers.config import PoolEntry, load_profile

#: Published widths of h (the embedding the head reads) per architecture.
D_H = {"RN50": 1024, "RN101": 512, "ViT-B-16": 512, "ViT-B-32": 512, "ViT-L-14": 768, "coca_ViT-B-32": 512,
       "coca_ViT-L-14": 768, "vit_b_16": 768, "vit_b_32": 768}
IMAGES = 50_000 + 10_000 + 30_000 + 50_889 + 18_574 + 7_500 + 63_305  # six evaluation sets and Broden


@pytest.fixture(scope="module")
def paper():
    return load_profile("paper")


def test_paper_cache_fits_and_equals_its_parts_by_hand(paper):
    from helpers.workflow.sections import notebooks

    est = costs.estimate(paper, paper.pool, list(notebooks()))
    stages = {s.name: s for s in est}
    # One kept store (the open_clip geometry; the torchvision ViTs' store is transient).
    assert stages["stores"].cache_bytes == IMAGES * (3 * 224 * 224 + 16)
    # h in float32 plus an int64 label per image, for the 43 entries; no logits.
    by_hand = sum(IMAGES * (4 * D_H[e.model.removesuffix("-quickgelu")] + 8) for e in paper.pool)
    assert len(paper.pool) == 43 and stages["extraction"].cache_bytes == by_hand
    assert costs.cache_bytes(est) <= 80e9
    assert costs.peak_bytes(est) - costs.cache_bytes(est) == 63_305 * (3 * 224 * 224 + 16)  # largest transient store
    assert costs.total_line(est) == f"total cache: {costs.cache_bytes(est) / 1e9:.0f} GB"
    assert costs.estimate(paper) == est  # the defaults: the pool, every section


def test_layer_cache_cost_is_four_bytes_per_pooled_value():
    vit = PoolEntry(id="v", arch="ViT-B-32", family="supervised", pretraining="x", model="ViT-B-32")
    rn = dataclasses.replace(vit, arch="RN50", model="RN50")
    assert costs.layer_bytes_per_image(vit) == 4 * (12 * 2 * 768 + 512)  # cls + patch mean per block, h
    assert costs.layer_bytes_per_image(rn) == 4 * (256 + 512 + 1024 + 2048 + 1024)  # 4 stages + attnpool


def test_unknown_architectures_are_counted_on_the_meta_device():
    demo = PoolEntry(id="d", arch="ViT-B-32", family="supervised", pretraining="x", model="demo-ViT-B-32")
    meta, cpu = flops.measure_arch(demo, "meta"), flops.measure_arch(demo, "cpu")
    assert (meta.d_H, meta.layers, meta.layer_bytes, meta.image_params) == (cpu.d_H, cpu.layers, cpu.layer_bytes,
                                                                           cpu.image_params)
    assert meta.d_H == 64 and meta.layer_bytes == 4 * (2 * 2 * 64 + 64)  # 2 blocks x (cls, mean) x 64 + h
    # attention is counted through its decomposition on meta, through the fused kernel on the CPU
    assert cpu.image_gflops == pytest.approx(meta.image_gflops, rel=0.25)


#: OpenCLIP's published model profile (docs/model_profile.csv): image GFLOPs at 224 px, image-tower
#: and whole-model parameters (millions), text GFLOPs per prompt; torchvision's ViTs: its documented
#: GFLOPS (multiply-adds) x 2 and parameters (86,567,656 / 88,224,232 with the 768 x 1,000 head + bias).
PUBLISHED = {"RN50": (12.22, 38.32, 102.01, 5.96), "RN101": (19.54, 56.26, 119.69, 5.96),
             "ViT-B-16": (35.13, 86.19, 149.62, 5.96), "ViT-B-32": (8.82, 87.85, 151.28, 5.96),
             "ViT-L-14": (162.03, 303.97, 427.62, 13.3), "coca_ViT-B-32": (9.19, 89.16, 253.56, 5.96),
             "coca_ViT-L-14": (163.64, 306.72, 638.45, 13.3)}
TORCHVISION = {"vit_b_16": (2 * 17.56, 86_567_656), "vit_b_32": (2 * 4.41, 88_224_232)}


def test_the_measured_table_equals_the_published_profiles():
    """A flop counter that missed the fused attention of a ViT (a CPU count: 5.89 GFLOPs for
    ViT-B-32) would fail here; so would a table of parameters counted without the text tower."""
    for m, (gflops, image_m, model_m, text_gflops) in PUBLISHED.items():
        e = PoolEntry(id="t", arch=m, family="robust_zeroshot_clip", pretraining="x", model=m + "-quickgelu")
        c = costs.arch_cost(e)
        assert (c.image_gflops, c.image_params, c.text_gflops) == (gflops, image_m * 1e6, text_gflops), m
        assert costs.download_bytes(e) == pytest.approx(4 * model_m * 1e6, abs=4 * 0.011e6), m
    for m, (gflops, params) in TORCHVISION.items():  # the table rounds to 10,000 parameters
        c = costs.ARCHS[m]
        assert c.image_gflops == pytest.approx(gflops, abs=0.015), m
        assert c.image_params + 768 * 1000 + 1000 == pytest.approx(params, abs=5_000), m


def test_the_table_is_what_measure_arch_counts():
    e = PoolEntry(id="v", arch="ViT-B-32", family="robust_zeroshot_clip", pretraining="x", model="ViT-B-32")
    got, row = flops.measure_arch(e), flops.ARCHS["ViT-B-32"]
    assert (got.d_H, got.layers, got.layer_bytes) == (row.d_H, row.layers, row.layer_bytes)
    assert (round(got.image_gflops, 2), round(got.image_params / 1e6, 2), round(got.text_gflops, 2)) == (
        row.image_gflops, row.image_params / 1e6, row.text_gflops)
