#!/usr/bin/env bash
# GPU checks of the TensorRT runtime: build an engine for this GPU, serve it with trt_infer.py and
# compare with ONNX Runtime (tests/gpu). Needs an NVIDIA GPU, TensorRT (tensorrt, or tensorrt-rtx for a
# GPU it supports) and pycuda; without them every test skips and says why.
#
#   scripts/gpu_check.sh            # all GPU tests
#   scripts/gpu_check.sh -k cli     # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader
else
    echo "nvidia-smi not found"
fi
python - <<'EOF'
import importlib.util
from trt.runtime.tensorrt_session import cuda_devices, tensorrt_unavailable
print("CUDA devices (compute capability):", cuda_devices() or "none")
for module in ("tensorrt", "tensorrt_rtx", "pycuda"):
    spec = importlib.util.find_spec(module)
    print(f"{module}: {'installed' if spec else 'missing'}")
print("TensorRT backend:", tensorrt_unavailable(None) or "available")
EOF
exec python -m pytest tests/gpu -m gpu -v -rs --durations=10 "$@"
