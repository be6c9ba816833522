"""plan's estimate follows the profile: its head, its datasets, the forking chapter, --rate."""
import pytest

from helpers.config import load_profile
from helpers.workflow import costs


def _stages(P, **kw):
    return {s.name: s for s in costs.estimate(P, **kw)}


def test_the_head_is_the_profiles_classes_times_templates():
    smoke, paper = load_profile("smoke-real"), load_profile("paper")
    assert costs.head_prompts(smoke) == (9, 1) and costs.head_prompts(paper) == (1000, 80)
    e = smoke.entry(next(x.id for x in smoke.pool if x.family == "robust_zeroshot_clip"))
    got = _stages(smoke, entries=[e], sections=["outlier_features"])["heads"].gpu_hours
    want = costs.ARCHS[costs.arch_key(e)].text_gflops * 1e9 * 9 * 1 / (costs.CPU_TFLOPS * 1e12) / 3600
    assert got == pytest.approx(want)


def test_forking_adds_one_imagenet_forward_per_entry_and_rate_rescales():
    P = load_profile("paper")
    entries = P.pool[:2]
    n = 1234
    st = _stages(P, entries=entries, sections=["forking"], images={"imagenet": n})
    flops = sum(costs.ARCHS[costs.arch_key(e)].image_gflops for e in entries) * 1e9 * n
    assert st["forking"].gpu_hours == pytest.approx(flops / (costs.GPU_TFLOPS["bf16"] * 1e12) / 3600)
    assert st["extraction"].gpu_hours == pytest.approx(st["forking"].gpu_hours)  # h on ImageNet too
    fast = _stages(P, entries=entries, sections=["forking"], images={"imagenet": n}, rate=2 * costs.GPU_TFLOPS["bf16"] * 1e12)
    assert fast["forking"].gpu_hours == pytest.approx(st["forking"].gpu_hours / 2)


def test_decode_wall_time_uses_each_datasets_rate_and_the_workers():
    P = load_profile("paper")  # num_workers 8
    e = P.entry("ViT-B-32-openai")
    st = _stages(P, entries=[e], sections=["outlier_features"], images={"imagenet": 3000},
                 decode_rates={"imagenet": (100.0, "measured")})["stores"]
    assert st.cpu_hours == pytest.approx(3000 / 100 / 3600)
    assert st.wall_hours == pytest.approx(3000 / 100 / 8 / 3600)
    assert costs.DECODE_PER_WORKER["objectnet"] < costs.DECODE_PER_WORKER["default"]


def test_parse_rate():
    assert costs.parse_rate("150TFLOPS") == 150e12 == costs.parse_rate("150")
    assert costs.parse_rate("1000img/s:ViT-B-32") == pytest.approx(1000 * 8.82e9)
    with pytest.raises(ValueError, match="ViT-X"):
        costs.parse_rate("1000img/s:ViT-X")
    with pytest.raises(ValueError, match="expected <N>TFLOPS"):
        costs.parse_rate("fast")
