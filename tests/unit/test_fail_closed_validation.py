"""Validation without gaps, each bad value as a user gives it: a non-finite number in a profile or a
``-p``, a ``cuda:N`` beyond the visible GPUs, a misspelt open_clip tag, a full disk on a small run,
and an unsafe checkpoint named in a profile are each refused before any job, naming what is wrong."""
import collections
import math

import pytest
import torch

from helpers.config import ConfigError, load_profile
from helpers.study import ParameterError, check_parameters
from helpers.workflow import preflight
from tests.conftest import write_profile


def test_a_nan_in_a_profile_is_refused_naming_file_and_key(tmp_path):
    path = write_profile(tmp_path, metrics={"er_slope": float("nan")})
    assert ".nan" in path.read_text()  # what the user wrote: metrics: {er_slope: .nan}
    with pytest.raises(ConfigError, match=rf"^{path}: metrics.er_slope: expected a number, got nan$"):
        load_profile(path)
    inf = write_profile(tmp_path, metrics={"er_intercept": float("-inf")})
    with pytest.raises(ConfigError, match=r"metrics.er_intercept: expected a number, got -inf$"):
        load_profile(inf)


def test_a_non_finite_parameter_value_is_refused_naming_the_parameter():
    with pytest.raises(ParameterError, match=r"^parameter 'limit': expected a finite number, got inf$"):
        check_parameters({"limit": math.inf}, {"02_outlier_features.md": {"limit": None}})


def test_a_gpu_beyond_the_visible_ones_is_refused_by_the_plan(tmp_path):
    from helpers.workflow.cuda_check import CudaFacts, Device

    h100 = Device(0, "NVIDIA H100 80GB HBM3", 85_045_460_992, (9, 0))
    two = CudaFacts("2.14.1+cu130", "13.0", (13, 0), [h100, Device(1, h100.name, h100.memory_bytes, h100.capability)], "0,1")
    P = load_profile(write_profile(tmp_path, device="cuda:9"))
    report = preflight.check(P, sections=["outlier_features"], cuda_facts=two)
    refused = [p for p in report.problems if "cuda:9" in p]
    assert refused == [f"{P.path}: device 'cuda:9' is not a visible GPU: 2 visible (CUDA_VISIBLE_DEVICES=0,1), "
                       f"cuda:0 to cuda:1; set device to one of them"]  # once, naming the profile file
    ok = preflight.check(load_profile(write_profile(tmp_path, device="cuda:1")), sections=["outlier_features"],
                         cuda_facts=two)
    assert not [p for p in ok.problems if "visible GPU" in p]


def test_a_misspelt_tag_lists_the_models_tags_closest_first_and_nothing_about_activations(tmp_path):
    import open_clip

    pool = [{"id": "zs", "arch": "ViT-B-32", "family": "robust_zeroshot_clip", "pretraining": "x",
             "model": "ViT-B-32-quickgelu", "pretrained": "openia"},
            {"id": "ft", "arch": "ViT-B-32", "family": "finetuned_clip", "pretraining": "x",
             "model": "ViT-B-32-quickgelu", "finetuned_from": "zs", "checkpoint": str(tmp_path / "ft.pt")}]
    # model names and tags are checked by `clip-study plan` and the run's preflight (loading a
    # profile imports no open_clip)
    report = preflight.check(load_profile(write_profile(tmp_path, pool=pool)), sections=["outlier_features"])
    [msg] = [p for p in report.problems if "openia" in p]
    print(msg)
    tags = open_clip.list_pretrained_tags_by_model("ViT-B-32-quickgelu")
    listed = msg.split("Tags of ViT-B-32-quickgelu, closest first: ")[1].split(". ")[0].split(", ")
    assert sorted(listed) == sorted(tags) and listed[0] == "openai"
    assert "GELU" not in msg and "use model" not in msg


def test_the_disk_check_names_the_bytes_it_needs_and_where(tmp_path, monkeypatch):
    P = load_profile(write_profile(tmp_path))
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage(10_000, 9_990, 10))
    report = preflight.check(P, sections=["outlier_features"])
    [problem] = [p for p in report.problems if "not enough disk" in p]
    print(problem)
    assert "0.0 GB" not in problem and f"{P.cache_dir}" in problem
    assert " bytes still to write, 10 bytes free on " in problem


class Unsafe:
    pass


def test_an_unsafe_checkpoint_is_named_by_the_plan_before_any_model_is_built(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {}, "extra": Unsafe()}, ckpt)  # a pickle weights_only=True refuses
    pool = [{"id": "sup", "arch": "ViT-B-32", "family": "supervised", "pretraining": "x", "model": "demo-ViT-B-32",
             "checkpoint": str(ckpt)}]
    P = load_profile(write_profile(tmp_path, pool=pool))
    report = preflight.check(P, sections=["outlier_features"])
    bad = [p for p in report.problems if str(ckpt) in p]
    print(bad)
    assert bad and bad[0].startswith(f"{P.path}: pool[0] (sup).checkpoint: checkpoint file {ckpt} cannot be read "
                                     "safely (torch.load weights_only=True: ")
    torch.save({"w": torch.zeros(2)}, ckpt)  # a plain state dict passes
    assert not [p for p in preflight.check(P, sections=["outlier_features"]).problems if str(ckpt) in p]
