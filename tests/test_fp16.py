"""The mixed-precision graph and the FP16 accuracy gate."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import profile_toml
from onnx import TensorProto, numpy_helper

import trt.onnx.fp16 as fp16_module
from trt.contract import OUTPUT_SPECS, input_specs
from trt.engine.builder import build_engine
from trt.engine.gate import GATE_THRESHOLD, MIN_GATE_MATCHES, MIN_IOU, check_fp16, compare_precisions
from trt.engine.manifest import load_manifest
from trt.errors import BuildError
from trt.extractors import get_extractor
from trt.onnx.fp16 import PRECISION_KEY, convert_to_mixed_fp16
from trt.precision import REDUCED_SCOPES

SIFT = get_extractor("sift")
SMALL_PROFILES = profile_toml(("n64", 1, 64, 64))


@pytest.fixture(scope="module")
def sift_fp16_onnx(sift_sharp_onnx, tmp_path_factory) -> Path:
    """The FP16 variant of the sharp model: the gate is judged on trained-like (peaked) weights."""
    return convert_to_mixed_fp16(sift_sharp_onnx, tmp_path_factory.mktemp("fp16") / "sift.fp16.onnx")


def degrade(source: Path, target: Path) -> Path:
    """A deliberately broken FP16 model: its FP16 weights carry 30 % noise."""
    model = onnx.load(str(source))
    rng = np.random.default_rng(0)
    for index, init in enumerate(model.graph.initializer):
        if init.data_type == TensorProto.FLOAT16 and init.name and np.prod(init.dims) > 1000:
            array = numpy_helper.to_array(init).astype(np.float32)
            noisy = array + rng.normal(0, 0.3 * (array.std() + 1e-3), array.shape)
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(noisy.astype(np.float16), init.name))
    onnx.save(model, str(target))
    return target


def test_mixed_precision_graph_keeps_the_contract(sift_sharp_onnx, sift_fp16_onnx):
    model = onnx.load(str(sift_fp16_onnx))
    expected = input_specs(SIFT.descriptor_dim, SIFT.scale_ori) + OUTPUT_SPECS
    for value, spec in zip(list(model.graph.input) + list(model.graph.output), expected):
        assert value.name == spec.name
        assert onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type) == spec.dtype
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata[PRECISION_KEY] == "fp16" and metadata["lightglue.extractor"] == "sift"
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    for node in model.graph.node:
        outputs = [types.get(o) for o in node.output]
        if node.op_type == "MatMul" and node.name.startswith(REDUCED_SCOPES):
            assert outputs == [TensorProto.FLOAT16], node.name
        if node.name.startswith(("/log_assignment", "/posenc")) and node.op_type in ("MatMul", "Cos", "ReduceMax",
                                                                                      "ReduceSum", "Exp", "Log"):
            assert outputs == [TensorProto.FLOAT], node.name  # kept in FP32
        if node.op_type == "LayerNormalization":
            assert outputs == [TensorProto.FLOAT], node.name
    assert sift_fp16_onnx.stat().st_size < 0.6 * sift_sharp_onnx.stat().st_size


def test_gate_passes_the_real_fp16_model(sift_sharp_onnx, sift_fp16_onnx):
    report = check_fp16(sift_sharp_onnx, sift_fp16_onnx, SIFT.descriptor_dim, SIFT.scale_ori)
    assert report.threshold == GATE_THRESHOLD  # the matches users get, not near-ties scored ~0
    assert report.iou >= MIN_IOU and report.fp32_matches > 500
    assert 0.95 < report.count_ratio < 1.05


def test_gate_refuses_a_degraded_model(sift_sharp_onnx, sift_fp16_onnx, tmp_path):
    degraded = degrade(sift_fp16_onnx, tmp_path / "degraded.onnx")
    report = compare_precisions(sift_sharp_onnx, degraded, SIFT.descriptor_dim, SIFT.scale_ori)
    assert report.iou < MIN_IOU
    with pytest.raises(BuildError, match=r"match-set IoU 0\.\d+ \(gate 0\.95\).*--no-gate"):
        check_fp16(sift_sharp_onnx, degraded, SIFT.descriptor_dim, SIFT.scale_ori)


def test_gate_compares_every_mutual_match_where_flat_weights_have_no_confident_ones(sift_onnx, tmp_path):
    """Seeded random weights score nothing above 0.1 on the gate's pairs: their mutual matches are compared."""
    report = compare_precisions(sift_onnx, convert_to_mixed_fp16(sift_onnx, tmp_path / "random.fp16.onnx"),
                                SIFT.descriptor_dim, SIFT.scale_ori)
    assert report.threshold == 0.0 and report.fp32_matches >= MIN_GATE_MATCHES and report.iou >= MIN_IOU


def test_build_refuses_to_write_a_degraded_fp16_engine(sift_onnx, tmp_path, monkeypatch, capsys):
    profiles = tmp_path / "small.toml"
    profiles.write_text(SMALL_PROFILES)
    convert = fp16_module.convert_to_mixed_fp16
    monkeypatch.setattr(fp16_module, "convert_to_mixed_fp16",
                        lambda source, target: degrade(convert(source, target), Path(target)))
    output = tmp_path / "out" / "sift-fp16.engine"
    output.parent.mkdir()
    with pytest.raises(BuildError, match="no engine was written"):
        build_engine(sift_onnx, profiles, output, precision="fp16", builder="tensorrt-rtx", progress=False)
    assert list(output.parent.iterdir()) == []

    with pytest.warns(UserWarning, match="gate is skipped"):
        build_engine(sift_onnx, profiles, output, precision="fp16", builder="tensorrt-rtx", progress=False, gate=False)
    manifest = load_manifest(output)
    assert manifest.precision == "fp16" and manifest.options["fp16_gate"] is None
    assert sorted(p.name for p in output.parent.iterdir()) == ["sift-fp16.engine", "sift-fp16.engine.json",
                                                                "sift-fp16.fp16.onnx"]
