#!/usr/bin/env bash
# The GPU check in one command: the GPU tests (tests/gpu: build an engine for this GPU, serve it from worker
# threads and with CUDA graphs, close it from another thread, compare with ONNX Runtime), then a JSON report
# (trt/evaluation/gpu_check.py: build, serve, match-set IoU against ONNX Runtime, latency per profile with and
# without CUDA graphs, and "could_not_run": every part that did not run here, and why).
# Needs an NVIDIA GPU, a TensorRT runtime, pycuda and cuda-python: pip install -e '.[gpu,test]'.
# On SM 9.0 (H100, H200) tensorrt-rtx cannot build or run (it targets RTX GPUs): use full TensorRT, e.g. in
# NVIDIA's container (nvcr.io/nvidia/tensorrt:<version>-py3) after pip install pycuda cuda-python -e '.[test]';
# the builder "auto" takes full TensorRT where it is installed. Runs with the project's .venv where there is one.
#
#   scripts/gpu_check.sh                       # report in out/gpu_check.json, test results in out/gpu_check.tests.xml
#   REPORT=/tmp/gpu.json ITERATIONS=50 scripts/gpu_check.sh -k cli   # extra arguments go to pytest
#   PYTHONPATH=tests/emulator scripts/gpu_check.sh        # the same on the emulated runtime (no GPU needed)
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
REPORT="${REPORT:-out/gpu_check.json}"
JUNIT="${REPORT%.json}.tests.xml"
mkdir -p "$(dirname "$REPORT")"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader
else
    echo "nvidia-smi not found"
fi
"$PYTHON" - <<'PY'
import importlib.util
for module in ("tensorrt", "tensorrt_rtx", "pycuda", "cuda.bindings", "onnxruntime", "torch"):
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    print(f"{module:14s}", spec.origin if spec else "not installed")
PY
"$PYTHON" -m pytest tests/gpu -m gpu -v -rs --durations=10 --junit-xml "$JUNIT" "$@"
tests=$?
"$PYTHON" -m trt.evaluation.gpu_check --output "$REPORT" --iterations "${ITERATIONS:-20}" --pytest-status "$tests" \
    --junit "$JUNIT"
report=$?
echo "report: $REPORT (tests/gpu exit status $tests; test results $JUNIT)"
exit $(( tests != 0 ? tests : report ))
