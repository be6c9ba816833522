"""The CUDA stack check (helpers.workflow.cuda_check) on facts written out: a CPU-only torch, a
driver older than the build, a device index that is not visible, bf16 on a pre-Ampere device, and
a machine where everything fits; then the same check inside ``clip-study plan``'s preflight."""
from __future__ import annotations

import pytest

from helpers.config import load_profile
from helpers.workflow import cuda_check, preflight
from helpers.workflow.cuda_check import CudaFacts, Device

H100 = Device(0, "NVIDIA H100 80GB HBM3", 85_045_460_992, (9, 0))
V100 = Device(1, "Tesla V100-SXM2-32GB", 34_089_730_048, (7, 0))


def facts(build="13.0", driver=(13, 0), devices=(H100,), visible=None):
    return CudaFacts("2.14.1+cu130", build, driver, list(devices), visible)


def test_a_cpu_device_is_not_checked():
    r = cuda_check.check("cpu", "fp32", facts(build=None, driver=None, devices=()))
    assert r.ok and r.lines == []


def test_a_cpu_only_torch_is_refused_with_the_build_for_the_driver():
    r = cuda_check.check("cuda", "bf16", facts(build=None, driver=(12, 8), devices=()))
    (p,) = r.problems
    assert "CPU-only build" in p
    assert "pip install torch==2.14.1 --index-url https://download.pytorch.org/whl/cu128" in p


def test_a_driver_older_than_the_build_names_the_wheel_to_install():
    # CUDA 13.0 build on a CUDA 12.6 driver: the newest wheel CUDA not above 12.6 is cu126
    r = cuda_check.check("cuda", "bf16", facts(driver=(12, 6)))
    (p,) = r.problems
    assert "built for CUDA 13.0 but the driver supports CUDA 12.6 at most" in p
    assert "pip install torch==2.14.1 --index-url https://download.pytorch.org/whl/cu126" in p
    # a 12.9 driver takes cu128, and a driver older than every wheel is told to update
    assert "whl/cu128" in cuda_check.check("cuda", "fp32", facts(driver=(12, 9))).problems[0]
    assert "update the NVIDIA driver" in cuda_check.check("cuda", "fp32", facts(driver=(11, 8))).problems[0]
    # a newer driver than the build is fine
    assert cuda_check.check("cuda", "fp32", facts(build="12.6", driver=(13, 0))).ok


def test_an_index_beyond_the_visible_devices_is_refused():
    r = cuda_check.check("cuda:2", "fp32", facts(devices=(H100, V100), visible="3,5"))
    (p,) = r.problems
    assert p == ("device 'cuda:2' is not a visible GPU: 2 visible (CUDA_VISIBLE_DEVICES=3,5), cuda:0 to cuda:1; "
                 "set device to one of them")
    assert "CUDA_VISIBLE_DEVICES=3,5" in r.lines[0]
    assert cuda_check.check("cuda:1", "fp32", facts(devices=(H100, V100))).ok
    assert "torch sees no CUDA device" in cuda_check.check("cuda", "fp32", facts(devices=())).problems[0]


def test_bf16_on_a_device_without_it_is_refused():
    r = cuda_check.check("cuda:1", "bf16", facts(devices=(H100, V100)))
    (p,) = r.problems
    assert "bf16 needs compute capability 8.0 or newer" in p and "Tesla V100" in p and "7.0" in p
    assert cuda_check.check("cuda:1", "fp16", facts(devices=(H100, V100))).ok
    assert cuda_check.check("cuda:0", "bf16", facts(devices=(H100, V100))).ok


def test_everything_fits_and_every_device_is_reported():
    r = cuda_check.check("cuda", "bf16", facts(devices=(H100, V100)))
    assert r.ok
    assert r.lines[0] == "torch 2.14.1+cu130: CUDA build 13.0; driver CUDA 13.0"
    assert r.lines[1] == "cuda:0 NVIDIA H100 80GB HBM3, 79.2 GiB, compute capability 9.0, bf16 yes"
    assert r.lines[2] == "cuda:1 Tesla V100-SXM2-32GB, 31.7 GiB, compute capability 7.0, bf16 no"


def test_no_driver_is_named():
    (p,) = cuda_check.check("cuda", "fp32", facts(driver=None, devices=())).problems
    assert "no NVIDIA driver found" in p


@pytest.mark.parametrize("value, expected", [(12060, (12, 6)), (13000, (13, 0)), (12080, (12, 8)), (0, None)])
def test_driver_api_version_numbers(value, expected):
    assert cuda_check.driver_from_int(value) == expected


def test_driver_version_from_nvidia_smi_header():
    header = ("| NVIDIA-SMI 560.35.03              Driver Version: 560.35.03      CUDA Version: 12.6     |\n"
              "|-----------------------------------------+------------------------+----------------------+")
    assert cuda_check.driver_from_smi(header) == (12, 6)
    assert cuda_check.driver_from_smi("command not found") is None


def test_plan_reports_the_stack_and_refuses_an_invisible_device(tmp_path):
    P = load_profile("demo", overrides={"device": "cuda:3", "precision": "bf16"})
    report = preflight.check(P, sections=["robustness"], cuda_facts=facts(driver=(12, 6)))
    assert any(p.startswith(f"{P.path}: torch 2.14.1+cu130 is built for CUDA 13.0") for p in report.problems)
    assert [p for p in report.problems if "cuda:3" in p] == [
        f"{P.path}: device 'cuda:3' is not a visible GPU: 1 visible, cuda:0 to cuda:0; set device to one of them"]
    text = preflight.format(report)
    assert "ok  CUDA: cuda:0 NVIDIA H100 80GB HBM3, 79.2 GiB, compute capability 9.0, bf16 yes" in text
    ok = preflight.check(P.path, sections=["robustness"], cuda_facts=facts())  # a path: loaded as given (cpu)
    assert not any("CUDA" in c for c in ok.checked)
