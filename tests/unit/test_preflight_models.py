"""Model names, (model, tag) pairs, torchvision builders and the QuickGELU rule are checked by
``clip-study plan`` and before ``clip-study run`` starts a job (:mod:`helpers.workflow.preflight`),
not by loading a profile (which imports neither torch nor open_clip)."""
import pytest

from helpers.config import load_profile
from helpers.workflow import cli, preflight
from tests.conftest import write_profile


POOL = [{"id": "m1", "arch": "RN50", "family": "robust_zeroshot_clip", "pretraining": "x", "model": "demo-RN50"},
        {"id": "m2", "arch": "ViT-B-32", "family": "supervised", "pretraining": "x", "model": "demo-ViT-B-32"}]


def _mutated(tmp_path, mutate):
    """A valid profile (tests.conftest.write_profile) whose pool ``mutate`` edits."""
    pool = [dict(e) for e in POOL]
    mutate({"pool": pool})
    return write_profile(tmp_path, pool=pool)


@pytest.mark.parametrize("mutate, key, words", [
    (lambda r: r["pool"][0].update(model="RN50-quickgel"), "pool[0] (m1).model", "open_clip has no model config"),
    (lambda r: r["pool"][0].update(model="ViT-B-32-quickgelu", pretrained="openia"), "pool[0] (m1).pretrained",
     "is not in open_clip.list_pretrained()"),
    (lambda r: r["pool"][1].update(source="torchvision", model="vit_b_99"), "pool[1] (m2).model",
     "is not a torchvision ViT builder"),
    # QuickGELU weights under a plain-GELU model name
    (lambda r: r["pool"][0].update(model="ViT-B-32", pretrained="openai"), "pool[0] (m1).model",
     "use model 'ViT-B-32-quickgelu'"),
])
def test_plan_names_the_key_of_a_model_the_libraries_do_not_know(tmp_path, mutate, key, words):
    path = _mutated(tmp_path, mutate)
    profile = load_profile(path)  # the values are valid: the profile loads
    report = preflight.check(profile, sections=["robustness"])
    hits = [p for p in report.problems if p.startswith(f"{path}: {key}: ")]
    assert len(hits) == 1 and words in hits[0], report.problems
    assert not report.ready


def test_plan_lists_every_bad_model_at_once(tmp_path, capsys):
    def mutate(r):
        r["pool"][0].update(model="RN50-quickgel")
        r["pool"][1].update(source="torchvision", model="vit_b_99")
    path = _mutated(tmp_path, mutate)
    assert cli.main(["plan", "--profile", str(path), "--section", "robustness"]) == 1
    out = capsys.readouterr().out
    assert f"{path}: pool[0] (m1).model: " in out and "open_clip has no model config" in out
    assert f"{path}: pool[1] (m2).model: " in out and "is not a torchvision ViT builder" in out


def test_a_pool_the_libraries_know_has_no_model_problem(tmp_path):
    report = preflight.check(load_profile(write_profile(tmp_path)), sections=["robustness"])
    assert not any(".model: " in p or ".pretrained: " in p for p in report.problems), report.problems
