#!/usr/bin/env bash
# GPU check: every CUDA path of the project in one command, within 8 minutes on one H100.
#
# Prerequisites: run it after `make env` (which downloads torch's CUDA wheels; on a CUDA 12 driver
# see the README, "Installing on a CUDA 12 driver"), on a node with an NVIDIA driver. It needs no
# weights and no network: every model is randomly initialised, every image generated.
#
#   bash benchmarks/gpu_check.sh             # PYTHON=/path/to/python to use another interpreter
#   bash benchmarks/gpu_check.sh --dry-run   # the same steps at toy sizes on the CPU (no GPU needed)
#
# Steps (each under its own timeout; figures in gpu_check.json, GPU_CHECK_JSON=... to move it):
# 0. the CUDA stack: torch's CUDA build against the driver, each device (name, memory, compute
#    capability, bf16); stops here when it would not run;
# 1. the CUDA-marked tests (pytest -m gpu): bf16 extraction against fp32, heads on the device, the
#    CUDA AP engine, fp16 training with the scaler, and two-process NCCL DDP when two GPUs are visible;
# 2. extraction throughput on 1,024 images (where worker start, allocation and fsync weigh) and on
#    8,192 (sustained: those fixed costs spread thin), each against the bare bf16 forward;
# 3. bf16 training steps on a real architecture (ViT-B-32, random init, 224 px, batch 128): the
#    first step (set-up) apart from the sustained step time, and peak memory;
# 4. the `clip-study run --gpus` runner on every visible device (demo profile on the GPU, one job
#    per entry);
# 5. gpu_check.json: every figure above.
# Exits non-zero if any step fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD" HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONHASHSEED=0
DRY=""
if [ "${1:-}" = "--dry-run" ]; then DRY="--dry-run"; fi
OUT=${GPU_CHECK_JSON:-gpu_check.json}
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
status=0
fail() { echo "gpu_check: $1"; status=1; }

echo "== 0/4 the CUDA stack"
"$PY" benchmarks/gpu_check_steps.py device $DRY >"$LOGS/device.json" || { cat "$LOGS/device.json"; exit 1; }

if [ -n "$DRY" ]; then
  DEV=cpu; SMALL=32; LARGE=64; MODELS="ViT-B-32"; NGPU=0
else
  DEV=cuda; SMALL=1024; LARGE=8192; MODELS="ViT-B-32 RN50"
  NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
fi

echo "== 1/4 CUDA-marked tests (two-GPU DDP included when $NGPU >= 2)"
if [ -z "$DRY" ]; then
  timeout 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider -o addopts="" tests
  rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then fail "CUDA tests failed (exit $rc)"; fi  # 5: none collected
else
  echo "(dry run: skipped)"
fi

echo "== 2/4 extraction throughput: $SMALL images (fixed costs) and $LARGE (sustained)"
for n in $SMALL $LARGE; do
  # shellcheck disable=SC2086  # MODELS is a word list
  timeout 150 "$PY" benchmarks/paper_scale.py --device $DEV --precision bf16 --images "$n" --batch-size 256 \
    --repeats 1 --workers 8 --models $MODELS --only-extraction >"$LOGS/images_$n.log" 2>&1
  rc=$?
  grep -E "bare forward|real-size ratio" "$LOGS/images_$n.log"
  if [ $rc -ne 0 ]; then tail -20 "$LOGS/images_$n.log"; fail "paper_scale.py on $n images failed (exit $rc)"; fi
done

echo "== 3/4 bf16 training steps, ViT-B-32 random init"
timeout 120 "$PY" benchmarks/gpu_check_steps.py train-step $DRY >"$LOGS/train.json" || fail "training step failed"

echo "== 4/4 clip-study run --gpus on $NGPU device(s)"
if [ "$NGPU" -ge 1 ]; then
  GPUS=$(seq -s, 0 $((NGPU - 1)))
  RUNNER_START=$(date +%s)
  { timeout 60 "$PY" -m helpers.workflow.cli demo-data --profile demo &&
    timeout 120 "$PY" -m helpers.workflow.cli prepare-demo --profile demo &&
    timeout 150 "$PY" -m helpers.workflow.cli run --profile demo -p device=cuda --section robustness \
      --section outlier_features --per-entry --force --gpus "$GPUS"; } >"$LOGS/runner.log" 2>&1
  rc=$?
  tail -15 "$LOGS/runner.log"
  printf '{"runner": {"gpus": "%s", "seconds": %d, "exit": %d}}\n' "$GPUS" $(( $(date +%s) - RUNNER_START )) $rc \
    >"$LOGS/runner.json"
  if [ $rc -ne 0 ]; then fail "the --gpus runner failed (exit $rc)"; fi
else
  echo "(no GPU: skipped)"
fi

"$PY" benchmarks/gpu_check_steps.py collect "$OUT" "$LOGS"/*.json "$LOGS"/images_*.log
echo "gpu_check: $([ $status -eq 0 ] && echo passed || echo FAILED)"
exit $status
