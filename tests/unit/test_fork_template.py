"""The fork template matches the models it runs on and carries every chapter parameter; a
misspelt section gets close matches."""
import pytest

from helpers.config import load_profile
from helpers.study import provenance
from helpers.workflow import forking, runner
from helpers.workflow.forking import TEMPLATE


def test_the_template_declares_every_parameter_the_chapters_take():
    template = set(provenance.declared_parameters(TEMPLATE))
    chapter = set(provenance.declared_parameters(runner.notebooks()["robustness"]))
    assert {"num_workers", "precision", "skip_unreadable"} <= template
    assert chapter <= template, chapter - template
    text = TEMPLATE.read_text()
    for p in ("num_workers=num_workers", "precision=precision", "skip_unreadable=skip_unreadable"):
        assert p in text  # passed on to open_study, not only declared


def test_layer_names_in_the_table_are_the_demo_models_and_a_list():
    demo = load_profile("demo")
    vit = next(e for e in demo.pool if e.arch == "ViT-B-32" and e.family == "robust_zeroshot_clip")
    table = forking.layer_table([vit])
    names = table["names"][0]
    assert isinstance(names, list) and names == forking.layer_names(vit)
    assert names[0] == "block0.cls"  # the demo ViT has fewer than 10 blocks: no zero padding
    assert "`block0`, `block1` for the demo's 2-block ViT" in TEMPLATE.read_text()
    assert len([n for n in names if n.endswith(".cls")]) == 2


def test_a_misspelt_section_gets_close_matches():
    with pytest.raises(KeyError, match=r"unknown section\(s\) robustnes \(did you mean: 'robustnes' -> robustness\)"):
        runner.plan(load_profile("demo"), sections=["robustnes"])
    from helpers.workflow import preflight

    report = preflight.check("demo", sections=["outlier_feature"])
    assert any("did you mean: 'outlier_feature' -> outlier_features" in p for p in report.problems)
