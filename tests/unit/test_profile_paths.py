"""One rule for relative paths: a profile outside configs/ resolves them against the checkout,
as every profile in configs/ does; CLIP_STUDY_DATA_ROOT and CLIP_STUDY_CACHE override."""
from pathlib import Path

import yaml

from helpers.config import REPO_ROOT, load_profile


def _copy_of_demo(folder: Path, **paths) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "configs" / "demo.yml").read_text())
    raw["paths"].update(paths)
    out = folder / "elsewhere" / "mine.yml"
    out.parent.mkdir(parents=True)
    out.write_text(yaml.safe_dump(raw))
    return out


def test_a_profile_outside_configs_resolves_like_the_examples(tmp_path, monkeypatch):
    monkeypatch.delenv("CLIP_STUDY_DATA_ROOT", raising=False)
    monkeypatch.delenv("CLIP_STUDY_CACHE", raising=False)
    demo = load_profile("demo")
    mine = load_profile(_copy_of_demo(tmp_path))
    assert mine.paths["data_root"] == demo.paths["data_root"] == REPO_ROOT / "_data" / "demo"
    assert mine.cache_dir == REPO_ROOT / "_cache" / "demo"
    assert mine.results_dir == REPO_ROOT / "_results" / "demo"
    assert mine.dataset_root("imagenet") == REPO_ROOT / "_data" / "demo" / "imagenet" / "val"
    assert tmp_path not in mine.cache_dir.parents


def test_environment_overrides_the_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_STUDY_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("CLIP_STUDY_CACHE", str(tmp_path / "scratch"))
    mine = load_profile(_copy_of_demo(tmp_path))
    assert mine.paths["data_root"] == tmp_path / "data"
    assert mine.dataset_root("broden") == tmp_path / "data" / "broden1_224"
    assert mine.cache_dir == tmp_path / "scratch" / "demo"
    assert mine.paths["checkpoints_dir"] == tmp_path / "scratch" / "demo-checkpoints"
    assert mine.entry("demo-rn-finetuned").checkpoint == str(tmp_path / "scratch" / "demo-checkpoints"
                                                            / "demo-rn-finetuned" / "final.pt")
    # the paper profile names the variable itself: its own layout is kept
    paper = load_profile("paper")
    assert paper.cache_dir == tmp_path / "scratch" / "paper"
    assert paper.paths["checkpoints_dir"] == tmp_path / "scratch" / "paper-checkpoints"
