"""helpers.costs: the per-image costs and the paper-scale extrapolation `clip-study plan` prints,
checked against sizes written out by hand (published widths, dataset sizes, uint8 pixels)."""
import dataclasses

import pytest

from helpers import costs
from helpers.config import PoolEntry, load_profile

#: Published widths of h (the embedding the head reads) per architecture.
D_H = {"RN50": 1024, "RN101": 512, "ViT-B-16": 512, "ViT-B-32": 512, "ViT-L-14": 768, "coca_ViT-B-32": 512,
       "coca_ViT-L-14": 768, "vit_b_16": 768, "vit_b_32": 768}
IMAGES = 50_000 + 10_000 + 30_000 + 50_889 + 18_574 + 7_500 + 63_305  # six evaluation sets and Broden


@pytest.fixture(scope="module")
def paper():
    return load_profile("paper")


def test_paper_cache_fits_and_equals_its_parts_by_hand(paper):
    est = costs.estimate(paper)
    stages = est["stages"]
    # One kept store (the open_clip geometry; the torchvision ViTs' store is transient).
    assert stages["stores"]["bytes"] == IMAGES * (3 * 224 * 224 + 16)
    # h in float32 plus an int64 label per image, for the 43 entries; no logits.
    by_hand = sum(IMAGES * (4 * D_H[e.model.removesuffix("-quickgelu")] + 8) for e in paper.pool)
    assert len(paper.pool) == 43 and stages["extraction"]["bytes"] == by_hand
    assert est["total_cache_bytes"] <= 80e9
    assert est["peak_bytes"] - est["total_cache_bytes"] == 63_305 * (3 * 224 * 224 + 16)  # largest transient store
    text = costs.format_estimate(est)
    assert text.splitlines()[-1] == f"total cache: {est['total_cache_bytes'] / 1e9:.1f} GB"


def test_layer_cache_cost_is_four_bytes_per_pooled_value():
    vit = PoolEntry(id="v", arch="ViT-B-32", family="supervised", pretraining="x", model="ViT-B-32")
    rn = dataclasses.replace(vit, arch="RN50", model="RN50")
    assert costs.layer_bytes_per_image(vit) == 4 * (12 * 2 * 768 + 512)  # cls + patch mean per block, h
    assert costs.layer_bytes_per_image(rn) == 4 * (256 + 512 + 1024 + 2048 + 1024)  # 4 stages + attnpool


def test_unknown_architectures_are_counted_on_the_meta_device():
    demo = PoolEntry(id="d", arch="ViT-B-32", family="supervised", pretraining="x", model="demo-ViT-B-32")
    meta, cpu = costs.measure_arch(demo, "meta"), costs.measure_arch(demo, "cpu")
    assert (meta.d_H, meta.layers, meta.layer_bytes, meta.image_params) == (cpu.d_H, cpu.layers, cpu.layer_bytes,
                                                                           cpu.image_params)
    assert meta.d_H == 64 and meta.layer_bytes == 4 * (2 * 2 * 64 + 64)  # 2 blocks x (cls, mean) x 64 + h
    # attention is counted through its decomposition on meta, through the fused kernel on the CPU
    assert cpu.image_gflops == pytest.approx(meta.image_gflops, rel=0.25)
