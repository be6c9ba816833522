"""The CUDA stack, checked before any job: torch's CUDA build, the driver's CUDA version, every
visible device (name, memory, compute capability, bf16), the profile's device index.

``clip-study plan`` and the run's preflight (:func:`helpers.workflow.preflight.check`) call
:func:`check` when the profile's device is CUDA. What it reads about the machine comes in one
:class:`CudaFacts` object (:func:`probe` gathers it from torch, the driver library and
``nvidia-smi``), so the rules below are tested on machines without a GPU with facts written out.

The rules (NVIDIA's CUDA compatibility guide, docs.nvidia.com/deploy/cuda-compatibility, and the
PyTorch wheel indexes, download.pytorch.org/whl/cuXYZ):

- a CUDA build of torch runs on a driver whose CUDA version is at least the build's CUDA version
  (``torch.version.cuda``); an older driver fails at the first ``.to("cuda")`` with "the NVIDIA
  driver on your system is too old". The fix is the torch build of the newest CUDA version the
  driver supports: ``pip install torch==<same version> --index-url
  https://download.pytorch.org/whl/cu<major><minor>`` (:func:`wheel_for`);
- bf16 autocast needs compute capability 8.0 or newer (Ampere: A100, H100, ...); older devices
  emulate it slowly or not at all;
- ``cuda:N`` must name one of the visible devices (``CUDA_VISIBLE_DEVICES`` renumbers them from 0).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

#: CUDA versions the PyTorch wheel indexes have offered for recent releases (cu126, cu128, cu130);
#: a given torch release ships a subset: its "Get Started" page lists which.
WHEEL_CUDA = ((13, 0), (12, 8), (12, 6))
#: bf16 runs natively from compute capability 8.0 (Ampere) on.
BF16_CAPABILITY = (8, 0)
WHEEL_INDEX = "https://download.pytorch.org/whl/cu{major}{minor}"


@dataclass(frozen=True)
class Device:
    """One visible CUDA device, as torch numbers it (after ``CUDA_VISIBLE_DEVICES``)."""

    index: int
    name: str
    memory_bytes: int
    capability: tuple[int, int]

    @property
    def bf16(self) -> bool:
        return tuple(self.capability) >= BF16_CAPABILITY


@dataclass
class CudaFacts:
    """What the check reads about the machine. ``build``: ``torch.version.cuda`` (None: a CPU-only
    torch); ``driver``: the driver's CUDA version ``(major, minor)`` (None: no driver found)."""

    torch_version: str
    build: str | None
    driver: tuple[int, int] | None
    devices: list[Device] = field(default_factory=list)
    visible: str | None = None  # CUDA_VISIBLE_DEVICES as set


@dataclass
class CudaReport:
    lines: list[str] = field(default_factory=list)  # what was found, one line each
    problems: list[str] = field(default_factory=list)  # each one stops the run

    @property
    def ok(self) -> bool:
        return not self.problems


def parse_version(text: str | None) -> tuple[int, int] | None:
    """``"12.6"`` -> ``(12, 6)``; None for anything else."""
    m = re.match(r"^\s*(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def driver_from_int(v: int) -> tuple[int, int] | None:
    """The CUDA driver API's version number (``1000 * major + 10 * minor``, e.g. 12060) -> (12, 6)."""
    return (v // 1000, (v % 1000) // 10) if v and v > 0 else None


def driver_from_smi(text: str) -> tuple[int, int] | None:
    """The driver's CUDA version from ``nvidia-smi``'s header (``CUDA Version: 12.6``)."""
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _driver_version() -> tuple[int, int] | None:
    import torch

    getter = getattr(torch._C, "_cuda_getDriverVersion", None)
    if getter is not None:
        try:
            v = driver_from_int(int(getter()))
            if v:
                return v
        except Exception:  # no driver loaded
            pass
    try:  # the driver library itself: cuDriverGetVersion needs no device and no context
        import ctypes

        lib = ctypes.CDLL("libcuda.so.1")
        out = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(out)) == 0:
            v = driver_from_int(out.value)
            if v:
                return v
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            return driver_from_smi(subprocess.run([smi], capture_output=True, text=True, timeout=30).stdout)
        except (OSError, subprocess.SubprocessError):
            return None
    return None


def probe() -> CudaFacts:
    """The facts of this machine (imports torch; initialises CUDA only when a driver is there)."""
    import torch

    build = torch.version.cuda
    driver = _driver_version()
    devices = []
    if build and driver and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            devices.append(Device(i, p.name, int(p.total_memory), (int(p.major), int(p.minor))))
    return CudaFacts(torch.__version__, build, driver, devices, os.environ.get("CUDA_VISIBLE_DEVICES"))


def wheel_for(torch_version: str, driver: tuple[int, int]) -> str | None:
    """The install command of the torch build (same release) for a driver of CUDA ``driver``: the
    newest wheel CUDA version not above the driver's. None: the driver is older than every build."""
    base = torch_version.split("+", 1)[0]
    for major, minor in WHEEL_CUDA:
        if (major, minor) <= tuple(driver):
            return (f"pip install torch=={base} --index-url {WHEEL_INDEX.format(major=major, minor=minor)} "
                    f"(and torchvision from the same index; constraints.txt names the tested pair)")
    return None


def device_index(device: str) -> int | None:
    """``cuda:N`` -> N; ``cuda`` -> 0 (torch's current device); anything else -> None."""
    if device == "cuda":
        return 0
    m = re.fullmatch(r"cuda:(\d+)", device)
    return int(m.group(1)) if m else None


def check(device: str, precision: str, facts: CudaFacts) -> CudaReport:
    """The CUDA stack against a profile's ``device`` and ``precision``; empty for a CPU device."""
    r = CudaReport()
    index = device_index(device)
    if index is None:
        return r
    fmt = lambda v: f"{v[0]}.{v[1]}" if v else "none found"  # noqa: E731
    r.lines.append(f"torch {facts.torch_version}: CUDA build {facts.build or 'none (CPU-only torch)'}; "
                   f"driver CUDA {fmt(facts.driver)}"
                   + (f"; CUDA_VISIBLE_DEVICES={facts.visible}" if facts.visible is not None else ""))
    if not facts.build:
        r.problems.append(f"device {device!r}: torch {facts.torch_version} is a CPU-only build (torch.version.cuda "
                          f"is None); install a CUDA build: "
                          + (wheel_for(facts.torch_version, facts.driver) if facts.driver else
                             "pip install torch --index-url https://download.pytorch.org/whl/cu<major><minor> "
                             "for the driver's CUDA version (nvidia-smi shows it)"))
        return r
    if facts.driver is None:
        r.problems.append(f"device {device!r}: no NVIDIA driver found (no libcuda.so.1, no nvidia-smi): "
                          f"run on a GPU node, or set device: cpu")
        return r
    build = parse_version(facts.build)
    if build and tuple(facts.driver) < build:
        fix = wheel_for(facts.torch_version, facts.driver)
        r.problems.append(f"torch {facts.torch_version} is built for CUDA {facts.build} but the driver supports "
                          f"CUDA {fmt(facts.driver)} at most: every job would fail at its first .to('cuda'); "
                          + (f"install the build for this driver: {fix}" if fix else
                             "update the NVIDIA driver (no torch wheel targets a CUDA this old)"))
    for d in facts.devices:
        r.lines.append(f"cuda:{d.index} {d.name}, {d.memory_bytes / 2**30:.1f} GiB, compute capability "
                       f"{d.capability[0]}.{d.capability[1]}, bf16 {'yes' if d.bf16 else 'no'}")
    if not facts.devices:
        r.problems.append(f"device {device!r}: torch sees no CUDA device (torch.cuda.device_count() is 0"
                          + (f"; CUDA_VISIBLE_DEVICES={facts.visible!r}" if facts.visible is not None else "") + ")")
        return r
    if index >= len(facts.devices):
        r.problems.append(f"device {device!r} is not a visible GPU: {len(facts.devices)} visible"
                          + (f" (CUDA_VISIBLE_DEVICES={facts.visible})" if facts.visible is not None else "")
                          + f", cuda:0 to cuda:{len(facts.devices) - 1}; set device to one of them")
        return r
    if precision == "bf16" and not facts.devices[index].bf16:
        d = facts.devices[index]
        r.problems.append(f"precision 'bf16' on {device} ({d.name}, compute capability {d.capability[0]}."
                          f"{d.capability[1]}): bf16 needs compute capability 8.0 or newer; set precision: fp16 "
                          f"or fp32")
    return r
