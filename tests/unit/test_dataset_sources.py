"""`plan` says where to get every dataset and checkpoint it does not find, from one table that the
reproducing page shows too."""
from pathlib import Path

from helpers.config import EVAL_DATASETS, REPO_ROOT, load_profile
from helpers.data import sources
from helpers.workflow import preflight
from tests.conftest import write_profile


def test_the_table_covers_every_dataset_in_the_paper_profiles_layout():
    paper = load_profile("paper")
    table = sources.sources()
    for name in (*EVAL_DATASETS, "broden", "imagenet-train"):
        row = table[name]
        # the unpack command makes exactly the folder the paper profile reads
        assert Path(paper.paths["data_root"]) / row["folder"] == paper.dataset_root(name), name
        assert row["source"] and row["unpack"]
        for a in row["archives"]:
            assert a["md5"] is None or (len(a["md5"]) == 32 and int(a["md5"], 16) >= 0), a
        assert any(a["md5"] for a in row["archives"]) == ("source_of_checksum" in row), name


def test_the_reproducing_page_shows_the_table():
    page = (REPO_ROOT / "book" / "reproducing.md").read_text()
    assert sources.markdown_table() in page
    assert "github.com/mlfoundations/imagenet-captions" in page


def test_plan_names_source_checksum_layout_and_the_variable_for_a_missing_dataset(tmp_path, monkeypatch):
    monkeypatch.delenv("CLIP_STUDY_DATA_ROOT", raising=False)
    path = write_profile(tmp_path, datasets={"imagenet": "{data_root}/imagenet/val",
                                             "imagenet-r": "{data_root}/elsewhere-r"})
    report = preflight.check(path, sections=["robustness"])
    text = preflight.format(report)
    data = tmp_path / "data"
    assert "set CLIP_STUDY_DATA_ROOT=/path/to/datasets" in text
    assert "ImageNet-R (Hendrycks et al., 2021): get imagenet-r.tar from https://github.com/hendrycks/imagenet-r" in text
    assert "imagenet-r.tar md5 a61312130a589d0ca1a8fca1f2bd3337" in text
    assert (f"lay out: tar -xf imagenet-r.tar -C {data}  (makes {data / 'imagenet-r'}; the profile reads "
            f"{data / 'elsewhere-r'}: move it there or point datasets.imagenet-r at it)") in text
    # a dataset the profile does not set: the folder the command makes, to name under datasets:
    assert (f"lay out: tar -xzf imagenetv2-matched-frequency.tar.gz -C {data}  "
            f"(makes {data / 'imagenetv2-matched-frequency-format-val'})") in text
    assert "ImageNet-V2 matched-frequency (Recht et al., 2019)" in text and "no published checksum" in text
    assert f"relative paths resolve against the checkout {REPO_ROOT}" in text


def test_plan_explains_the_cache_total_and_the_bytes_still_to_write(tmp_path):
    report = preflight.check(write_profile(tmp_path), sections=["outlier_features"])
    text = preflight.format(report)
    assert "GB cache at its peak, transient stores included + " in text
    assert "the total cache below is what stays under cache_dir" in text


def test_plan_says_where_the_imagenet_captions_checkpoints_come_from(tmp_path):
    pool = [{"id": "cap", "arch": "RN50", "family": "imagenet_captions_clip", "pretraining": "ImageNet-Captions-t",
             "model": "RN50", "checkpoint": str(tmp_path / "ck" / "RN50-t.pt")}]
    text = preflight.format(preflight.check(write_profile(tmp_path, pool=pool), sections=["outlier_features"]))
    assert "Fang et al., 2022" in text and "github.com/mlfoundations/imagenet-captions" in text
    assert f"epoch_32.pt {tmp_path / 'ck' / 'RN50-t.pt'}" in text
