"""diagnose says what head it builds and what it costs before building it, refuses a long one on
the CPU unless asked, and builds the head of the classes and templates asked for."""
import numpy as np
import pytest
from PIL import Image

from helpers.chapters import diagnose as dg
from tests.conftest import write_profile


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (240, 260, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
    return tmp_path


def test_the_cpu_refuses_the_full_head_naming_its_size_and_the_flag(folder, tmp_path):
    said = []
    with pytest.raises(dg.DiagnoseError) as exc:
        dg.diagnose(dg.DiagnoseConfig(folder, model="RN50", profile=write_profile(tmp_path), concepts=False,
                                      write=False, echo=said.append))
    msg = str(exc.value)
    assert "1,000 classes x 80 templates = 80,000 prompts through the text tower" in msg
    assert "on cpu" in msg and "Pass --yes" in msg and "--templates 1" in msg
    assert said == [f"diagnose: {msg.split('the ', 1)[1].split(': more than')[0]}"]


def test_classnames_and_one_template_build_a_three_class_head_on_a_real_rn50(folder, tmp_path, capsys):
    names = tmp_path / "classes.txt"
    names.write_text("tench\ngoldfish\nstingray\n")
    P = write_profile(tmp_path)
    import argparse

    from helpers.workflow.cli import build_parser

    args = build_parser().parse_args(["diagnose", "--model", "RN50", "--images", str(folder), "--classnames",
                                      str(names), "--templates", "1", "--profile", str(P), "--no-concepts",
                                      "--out", str(tmp_path / "out")])
    assert isinstance(args, argparse.Namespace) and args.templates == 1
    assert dg.run_cli(args) == 0
    out = capsys.readouterr().out
    assert "diagnose: zero-shot head: 3 classes x 1 template = 3 prompts through the text tower" in out
    assert "head: zero-shot head over 3 class names x 1 OpenAI template" in out
    report = (tmp_path / "out" / "report.md").read_text()
    assert "zero-shot head over 3 class names x 1 OpenAI template" in report
    d = dg.diagnose(dg.DiagnoseConfig(folder, model="RN50", classnames=str(names), templates=1, profile=P,
                                      concepts=False, write=False, echo=None))
    assert d.description["head"] == "zero-shot head over 3 class names x 1 OpenAI template"
    assert d.importance_ratio is not None


def test_template_sets_are_the_known_openai_ones():
    import open_clip

    assert [t(".") for t in open_clip.SIMPLE_IMAGENET_TEMPLATES] == [t.format(".") for t in dg.TEMPLATE_SETS[7]]
    assert len(dg._template_list(80)) == 80 and dg._template_list(1) == ["a photo of a {}."]
    with pytest.raises(dg.DiagnoseError, match="templates: expected one of 1, 7, 80"):
        dg._template_list(5)
