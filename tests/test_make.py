"""The Makefile chain a user types: make engine … WEIGHTS=random, then trt_infer.py on the result."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import profile_toml

from trt.demo import check_matches, make_demo_pair
from trt.engine.manifest import load_manifest
from trt.onnx.export import read_metadata

ROOT = Path(__file__).resolve().parent.parent
ONE_PROFILE = profile_toml(("n4096", 1, 2048, 4096))


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(ROOT), f"PYTHON={sys.executable}", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_make_engine_with_random_weights_then_trt_infer(tmp_path):
    profiles = tmp_path / "one.toml"
    profiles.write_text(ONE_PROFILE)
    variables = [f"ONNX={tmp_path}/sift-random.onnx", f"OUT={tmp_path}/sift-random.engine", f"PROFILES={profiles}"]
    result = make("engine", "EXTRACTOR=sift", "WEIGHTS=random", *variables)
    assert result.returncode == 0, result.stdout + result.stderr
    engine = tmp_path / "sift-random.engine"
    assert load_manifest(engine).onnx["metadata"]["lightglue.weights_kind"] == "random"
    assert read_metadata(onnx.load(str(tmp_path / "sift-random.onnx")))["weights"].startswith("random seed 0")

    again = make("engine", "EXTRACTOR=sift", "WEIGHTS=random", *variables)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout  # no rebuild when nothing changed

    image0, image1, _ = make_demo_pair(tmp_path / "pair")
    outputs = [tmp_path / "m.json", tmp_path / "m.npz", tmp_path / "m.png"]
    for output in outputs:
        flag = "--viz" if output.suffix == ".png" else "--output"
        run = subprocess.run([sys.executable, str(ROOT / "trt_infer.py"), "--engine", str(engine), str(image0),
                              str(image1), flag, str(output)], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert "notice:" in run.stderr and "on OpenVINO in f32" in run.stderr
    record = json.loads(outputs[0].read_text())
    assert len(record["keypoints0"]) > 1000 and record["engine"]["precision"] == "fp32"
    assert np.load(outputs[1])["keypoints0"].shape == (len(record["keypoints0"]), 2)
    assert outputs[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_make_weights_sharp_exports_the_sharp_test_weights():
    dry = make("-nB", "onnx", "EXTRACTOR=sift", "WEIGHTS=sharp")
    assert dry.returncode == 0 and "--sharp-weights 0" in dry.stdout and "weights/sift_lightglue-sharp.onnx" in dry.stdout


@pytest.mark.slow
def test_demo_pair_is_recovered_by_nearest_neighbour_matches(sift_nn_onnx, tmp_path):
    """What `make demo` checks: the homography from the matches is the true one."""
    from trt.features.image import read_image
    from trt.runtime.matcher import Matcher
    from trt.runtime.onnxruntime_session import OnnxRuntimeSession
    from trt.runtime.outputs import write_matches

    image0, image1, homography = make_demo_pair(tmp_path)
    with Matcher(OnnxRuntimeSession(sift_nn_onnx)) as matcher:
        result = matcher.match(read_image(image0), read_image(image1))
    write_matches(tmp_path / "matches.json", result)
    assert len(result) > 500
    assert check_matches(tmp_path / "matches.json", homography) < 1.0
