"""Smoke runs of the two scripts behind `make bench` and `make eval`: each runs end to end and writes its JSON.

The session's exported models are copied into each run's export cache, which the scripts then reuse
(that path is tested too), so no test exports again.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trt.errors import UserError
from trt.evaluation.runs import trained_weights
from trt.extractors import get_extractor

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_bench_quick(tmp_path, sift_onnx):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(sift_onnx, models / "sift_lightglue-random0.onnx")  # same seed as the bench's random weights
    result = run_script("matcher_bench.py", "--quick", "--output-dir", tmp_path, "--models-dir", models)

    record = json.loads((tmp_path / "bench-quick.json").read_text())
    rows = {row["backend"]: row for row in record["matcher"]}
    assert {"onnxruntime-cpu", "torch-ours", "kornia-reference"} <= set(rows)
    assert all(row["keypoints"] == 256 and row["batch"] == 1 and row["runs"] >= 3 for row in rows.values()
               if "skipped" not in row)
    assert rows["kornia-reference"]["ratio_to_reference"] == 1.0
    ours = rows["onnxruntime-cpu"]
    assert 0 < ours["p50_ms"] <= ours["p90_ms"] <= ours["p99_ms"]
    machine = record["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["versions"]["torch"] and machine["versions"]["kornia"]
    if record["sift"] is not None:
        assert set(record["sift"]["results"]) == {"sift-ours", "opencv-bare"}
    if record["plot"] is not None:
        assert Path(record["plot"]).is_file()
    assert "kornia-reference" in result.stdout and "wrote" in result.stdout
    assert list(models.iterdir()) == [models / "sift_lightglue-random0.onnx"]  # reused, not exported again


def test_extractor_bench_quick(tmp_path, aliked_extractor_onnx, data_dir):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(aliked_extractor_onnx, models / "aliked-n16-official.onnx")  # the shared data's checkpoint
    result = run_script("extractor_bench.py", "--quick", "--output-dir", tmp_path, "--models-dir", models,
                        "--data-dir", data_dir)

    record = json.loads((tmp_path / "extractor-bench-quick.json").read_text())
    rows = {row["backend"]: row for row in record["extractors"]}
    assert {"onnxruntime-cpu", "torch-ours", "kornia-reference"} <= set(rows)
    assert all((row["network"], row["height"], row["width"]) == ("aliked-n16", 128, 160) and row["runs"] >= 2
               for row in rows.values())
    assert rows["kornia-reference"]["ratio_to_reference"] == 1.0 and rows["onnxruntime-cpu"]["p50_ms"] > 0
    assert record["networks"][0]["weights"] == "official"
    assert "kornia-reference" in result.stdout and "wrote" in result.stdout
    assert list(models.iterdir()) == [models / "aliked-n16-official.onnx"]  # reused, not exported again


def test_eval_smoke(tmp_path, sift_nn_onnx, aliked_nn_onnx, aliked_extractor_onnx, data_dir):
    """`make eval EXTRACTOR=aliked` on the smoke preset: SIFT and ALIKED side by side (the matchers' and the
    ALIKED network's exports come from the session's cache)."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(sift_nn_onnx, models / "sift_lightglue-nn.onnx")
    shutil.copy(aliked_nn_onnx, models / "aliked_lightglue-nn.onnx")
    shutil.copy(aliked_extractor_onnx, models / "aliked-n16-official.onnx")  # the shared data's checkpoint
    result = run_script("eval.py", "--preset", "smoke", "--output-dir", tmp_path, "--models-dir", models,
                        "--data-dir", data_dir, "--backends", "onnxruntime", "--extractors", "sift", "aliked")

    record = json.loads((tmp_path / "eval-smoke.json").read_text())
    runs = {run["run"]: run for run in record["runs"]}
    assert {"sift-nn-fp32-onnxruntime", "sift-nn-fp16-onnxruntime", "aliked-nn-fp32-onnxruntime",
            "aliked-nn-fp16-onnxruntime"} <= set(runs)
    assert [made["extractor"] for made in record["extractors"]] == ["sift", "aliked"]
    assert record["extractors"][1]["network"] == "aliked-n16"
    for run in runs.values():
        dataset = run["datasets"]["hpatches-graffiti"]
        assert [pair["pair"] for pair in dataset["pairs"]] == ["v_graffiti-1-2"]
        summary = dataset["summary"]
        # The nearest-neighbour weights match the easiest graffiti pair well (measured: SIFT P 0.90, 1.8 px).
        assert summary["precision_mean"] > 0.7 and summary["corner_error_median_px"] < 5.0
    assert Path(record["pictures"]["files"]["hpatches-graffiti"]).is_file()
    assert (models / "sift_lightglue-nn-fp16.onnx").is_file()
    assert sorted(p.name for p in models.glob("aliked*")) == ["aliked-n16-official.onnx", "aliked_lightglue-nn-fp16.onnx",
                                                              "aliked_lightglue-nn.onnx"]  # reused, not exported again
    assert "side by side (nn-fp32-onnxruntime): sift | aliked" in result.stdout


def test_trained_weights_are_used_only_when_official(tmp_path):
    sift = get_extractor("sift")
    assert trained_weights(sift, weights_dir=tmp_path)[0] is None  # no file: nothing, and a note
    (tmp_path / sift.weights_filename).write_bytes(b"not the official file")
    weights, note = trained_weights(sift, weights_dir=tmp_path)
    assert weights is None and "not the official" in note
    with pytest.raises(UserError, match="not the official"):  # given explicitly: an error
        trained_weights(sift, tmp_path / sift.weights_filename)
    with pytest.raises(UserError, match="does not exist"):
        trained_weights(sift, tmp_path / "missing.pth")
