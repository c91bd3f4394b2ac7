#!/usr/bin/env bash
# The GPU check in one command: the GPU tests (tests/gpu: build an engine for this GPU, serve it from worker
# threads and with CUDA graphs, compare with ONNX Runtime), then a JSON report (trt/evaluation/gpu_check.py:
# build, serve, match-set IoU against ONNX Runtime, latency per profile with and without CUDA graphs).
# Needs an NVIDIA GPU, a TensorRT runtime (tensorrt-rtx for an RTX GPU, or full tensorrt), pycuda and
# cuda-python: pip install -e '.[gpu,test]'. Runs with the project's environment (.venv) where there is one.
#
#   scripts/gpu_check.sh                       # report in out/gpu_check.json
#   REPORT=/tmp/gpu.json ITERATIONS=50 scripts/gpu_check.sh -k cli   # extra arguments go to pytest
#   PYTHONPATH=tests/emulator scripts/gpu_check.sh        # the same on the emulated runtime (no GPU needed)
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
REPORT="${REPORT:-out/gpu_check.json}"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader
else
    echo "nvidia-smi not found"
fi
"$PYTHON" -m pytest tests/gpu -m gpu -v -rs --durations=10 "$@"
tests=$?
"$PYTHON" -m trt.evaluation.gpu_check --output "$REPORT" --iterations "${ITERATIONS:-20}" --pytest-status "$tests"
report=$?
echo "report: $REPORT (tests/gpu exit status $tests)"
exit $(( tests != 0 ? tests : report ))
