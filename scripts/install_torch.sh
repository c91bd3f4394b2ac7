#!/usr/bin/env bash
# Install torch's CPU build for `make setup`: from PyTorch's own CPU wheel index where it is reachable, else
# torch from the package registry pip is configured with (on Linux x86 that is the CUDA build: several GB of
# CUDA libraries, unused without a GPU). Says which it installed.
#
#   scripts/install_torch.sh PIP VERSION            e.g. scripts/install_torch.sh .venv/bin/pip 2.13.0
#   scripts/install_torch.sh --print PIP VERSION    only print the pip command it would run
#   TORCH_CPU_INDEX=URL scripts/install_torch.sh …  another CPU index (a mirror)
set -euo pipefail
print_only=0
if [[ "${1:-}" == "--print" ]]; then print_only=1; shift; fi
if [[ $# -ne 2 ]]; then
    echo "usage: scripts/install_torch.sh [--print] PIP VERSION" >&2
    exit 2
fi
pip="$1"
version="$2"
cpu_index="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
python="$(dirname "$pip")/python"
[[ -x "$python" ]] || python=python3

# One quick look at the index (5 s, no retries): offline or behind a registry-only proxy, the fallback starts at once.
if "$python" - "$cpu_index/torch/" <<'PY' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=5)
PY
    source="PyTorch's CPU index $cpu_index"
    command=("$pip" install --timeout 30 --index-url "$cpu_index" "torch==$version")
else
    source="the package registry (PyTorch's CPU index $cpu_index is not reachable)"
    command=("$pip" install "torch==$version")
fi
if [[ $print_only -eq 1 ]]; then
    echo "${command[*]}"
    exit 0
fi
echo "torch $version from $source"
"${command[@]}"
"$python" -c "import torch; print('installed torch', torch.__version__, '(CUDA ' + torch.version.cuda + ' build)' if torch.version.cuda else '(CPU build)')"
