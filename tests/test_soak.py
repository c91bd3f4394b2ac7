"""The short soak (issue 20): bench/soak.py's few hundred calls per backend, as CI runs it.

On the stand-in matcher (mutual nearest neighbours, the full contract) built by tensorrt-rtx with three
profiles: OpenVINO dynamic and fixed-shape, ONNX Runtime, and the TensorRT session on the emulated runtime
from worker threads. Every good request answered, every bad one refused by kind, memory and descriptors
flat after warm-up, results equal to a fresh matcher's. `make soak` runs the long version.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_runtime import make_standin_onnx

from trt.engine.backends import TensorRTRTX
from trt.evaluation.soak import BACKENDS, BAD_REQUESTS
from trt.runtime.openvino_session import grid_size

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not TensorRTRTX.available(), reason="tensorrt-rtx is not installed (it builds the engine)")
def test_short_soak_of_every_backend(tmp_path):
    onnx = make_standin_onnx(tmp_path / "standin.onnx")
    report = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, ROOT / "bench" / "soak.py", "--onnx", onnx, "--buckets", "32,64,128",
                           "--calls", "300", "--seconds", "30", "--threads", "3", "--work-dir", tmp_path,
                           "--report", report], capture_output=True, text=True, timeout=400, cwd=ROOT)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "soak: 4 of 4 backends passed" in done.stdout
    records = {name: record for name, record in json.loads(report.read_text()).items() if not name.startswith("_")}
    assert [name.split(" ")[0] for name in records] == list(BACKENDS)
    for name, record in records.items():
        assert record["passed"], (name, record)
        assert record["requests"] == 300 and record["threads"] == 3
        assert set(record["profiles"]) == {"n32", "n64", "n128"} and all(record["profiles"].values())
        refused = {outcome.split(": ")[1].split(" (")[0] for outcome in record["outcomes"] if outcome.startswith("refused")}
        assert refused == set(BAD_REQUESTS), record["outcomes"]
        assert not any(outcome.startswith("FAILED") for outcome in record["outcomes"])
        assert record["fds_growth_after_warmup"] <= 0
        assert record["rss_growth_after_warmup_mib"] <= record["rss_growth_allowed_mib"]
        equal, compared = map(int, record["equal_to_fresh"].split("/"))
        assert equal == compared > 0


def test_the_shape_grid_bounds_the_shapes_openvino_compiles():
    """Two steps an octave within the profile: 17 sizes for 1-4096 keypoints, never below the count."""
    sizes = {grid_size(n, 4096) for n in range(1, 4097)}
    assert sorted(sizes) == [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]
    assert all(n <= grid_size(n, 4096) <= max(16, 1.5 * n) for n in range(1, 4097))
    assert grid_size(100, 110) == 110 and grid_size(5, 8) == 8 and grid_size(300, 300) == 300
