"""plan's estimate of a small real-architecture run against that run, measured: within a factor of 2.

One entry (open_clip ViT-B-32, random weights, 224 px), one section (outlier_features: h on
ImageNet), 96 generated 500 x 375 JPEGs, the head of one template over 9 classes, on the CPU. The
estimate is what `clip-study plan` sums for the slice: the decode of the store, the head's prompts
and the forward (helpers.workflow.costs at CPU_TFLOPS); the measure is the chapter's own call,
`chapters.common.embeddings`, cold (model build, head, decode, forward, cache writes)."""
import time

import numpy as np
import pytest
from PIL import Image

from helpers.config import load_profile
from helpers.workflow import costs, preflight
from tests.conftest import write_profile

N_IMAGES = 96
WNIDS = ["n01440764", "n01443537", "n01484850"]


@pytest.mark.realarch
def test_plan_estimates_a_small_real_run_within_a_factor_of_two(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        folder = tmp_path / "data" / "imagenet" / "val" / WNIDS[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG", quality=90)
    pool = [{"id": "vit", "arch": "ViT-B-32", "family": "robust_zeroshot_clip", "pretraining": "none",
             "model": "ViT-B-32"}]
    path = write_profile(tmp_path, pool=pool, kind="smoke", zero_shot_templates=1,
                         zero_shot_classes=["n01440764", "n01443537", "n01484850", "n01491361", "n01494475",
                                            "n01496331", "n01498041", "n01514668", "n01514859"],
                         batch_size=16, num_workers=0, device="cpu")
    P = load_profile(path)
    report = preflight.check(P, sections=["outlier_features"])
    assert report.ok, report.problems
    stages = {s.name: s for s in report.stages}
    estimate_s = 3600 * (sum(s.gpu_hours for s in report.stages) + stages["stores"].wall_hours)
    assert "9 prompts (9 classes x 1 template)" in " ".join(stages["heads"].notes)
    assert report.decode_rates["imagenet"][1] == "measured on 16 images"

    from helpers.chapters.common import embeddings

    t0 = time.perf_counter()
    h = np.asarray(embeddings(P.entry("vit"), P, "imagenet").h)
    measured_s = time.perf_counter() - t0
    assert h.shape == (N_IMAGES, costs.ARCHS["ViT-B-32"].d_H)
    print(f"plan {estimate_s:.1f} s, measured {measured_s:.1f} s")
    assert 0.5 <= measured_s / estimate_s <= 2.0, (measured_s, estimate_s)
