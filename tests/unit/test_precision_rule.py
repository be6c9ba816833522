"""The one mixed-precision rule (helpers.models.precision): autocast to bf16/fp16 on CUDA only,
float32 on every other device; one rule for extraction, zero-shot heads and training."""
from __future__ import annotations

import contextlib

import pytest
import torch

from helpers.models.precision import autocast, compute_dtype
from helpers.training.loop import precision_for
from helpers.training import ddp


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cpu_and_other_devices_compute_in_float32(precision):
    for device in ("cpu", torch.device("cpu"), "meta"):
        assert compute_dtype(device, precision) == "fp32"
        ctx = autocast(device, precision)
        assert isinstance(ctx, contextlib.nullcontext)
        with ctx:
            assert not torch.is_autocast_enabled("cpu")
            y = torch.ones(2, 2) @ torch.ones(2, 2)
        assert y.dtype == torch.float32


@pytest.mark.filterwarnings("ignore:CUDA is not available")
@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_cuda_autocasts_to_the_profile_precision(precision, dtype):
    assert compute_dtype("cuda", precision) == precision
    assert compute_dtype("cuda:0", precision) == precision
    ctx = autocast("cuda", precision)
    assert isinstance(ctx, torch.autocast)  # built, not entered: entering needs a CUDA device
    assert (ctx.device, ctx.fast_dtype) == ("cuda", dtype)


def test_cuda_fp32_is_not_autocast():
    assert compute_dtype("cuda", "fp32") == "fp32"
    assert isinstance(autocast("cuda", "fp32"), contextlib.nullcontext)


def test_an_unknown_precision_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"precision 'fp8' is not one of fp32, bf16, fp16"):
        compute_dtype("cuda", "fp8")


def test_training_follows_the_same_rule():
    class P:
        precision = "bf16"

    assert precision_for(P, ddp.Context(0, 1, 0, torch.device("cpu"))) == "fp32"
    assert precision_for(P, ddp.Context(0, 1, 0, torch.device("cuda"))) == "bf16"
