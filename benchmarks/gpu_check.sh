#!/usr/bin/env bash
# GPU check (issue 11, item 11): every CUDA path of the project in one command, under 5 minutes on
# one GPU. Nothing else depends on a GPU; run this whenever one is at hand:
#
#   bash benchmarks/gpu_check.sh            # PYTHON=/path/to/python to use another interpreter
#
# 1. the CUDA-marked tests (pytest -m gpu): bf16 extraction against fp32, heads on the device,
#    the CUDA AP engine, ...;
# 2. bf16 extraction end to end against its bare bf16 forward (real architectures, random
#    weights, 224 px), the one-pass CKA, bf16 against fp32 h and kurtosis, and a full 80,000-prompt
#    zero-shot head built on the device (benchmarks/paper_scale.py);
# 3. the measured rates, to recalibrate helpers.workflow.costs.GPU_TFLOPS (printed by step 2).
# Exits non-zero if any step fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD" HF_HUB_OFFLINE=1 MPLBACKEND=Agg
status=0

"$PY" - <<'PYEOF' || exit 1
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False)")
p = torch.cuda.get_device_properties(0)
print(f"gpu_check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
PYEOF

echo "== 1/2 CUDA-marked tests"
timeout 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider -o addopts="" tests
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then  # 5: no test collected
  echo "gpu_check: CUDA tests failed (exit $rc)"; status=1
fi

echo "== 2/2 bf16 extraction vs bare bf16 forward, one-pass CKA, heads on the device"
timeout 180 "$PY" benchmarks/paper_scale.py --device cuda --precision bf16 --images 1024 --batch-size 256 \
  --repeats 3 --workers 4 --models ViT-B-32 RN50 ViT-B-16 --prompts 4000 --full-head
rc=$?
if [ $rc -ne 0 ]; then echo "gpu_check: paper_scale.py failed (exit $rc)"; status=1; fi

echo "gpu_check: $([ $status -eq 0 ] && echo passed || echo FAILED)"
exit $status
