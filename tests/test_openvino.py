"""The OpenVINO backend: the importer bug the graph avoids, the session (contract, cache, streams, precision
choice), the mixed-bf16 model, and the bf16 accuracy gate on real pairs with the sharp test weights.

Parity of OpenVINO f32 with kornia is in test_parity.py, with ONNX Runtime's; trt_infer.py --backend
openvino end to end in test_trt_infer.py.
"""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from test_runtime import make_standin_onnx, noisy_copy, random_features
from trt.errors import ContractError, EngineError, UserError
from trt.features.base import pack_pairs
from trt.fileio import sha256_file
from trt.models.lightglue import logsumexp_last
from trt.runtime.base import Profile
from trt.runtime.cpu import CpuInfo, cpu_info, parse_cpuinfo
from trt.runtime.matcher import Matcher
from trt.runtime.onnxruntime_session import OnnxRuntimeSession, physical_cores
from trt.runtime.openvino_session import (BF16_POLICY, GATE_PRESET, OpenVINOSession, bf16_gate_path,
                                          choose_precision)

ov = pytest.importorskip("openvino")
BF16_CPU = cpu_info().bf16_unsupported() is None
needs_bf16 = pytest.mark.skipif(not BF16_CPU, reason=f"no native bf16 here: {cpu_info().bf16_unsupported()}")
AVX512_BF16 = CpuInfo("Test CPU", frozenset({"avx2", "avx512f", "avx512_bf16"}))
AMX = CpuInfo("Test Xeon", frozenset({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}))
NO_BF16 = CpuInfo("Old CPU", frozenset({"avx2", "fma", "avx512f"}))


# --- the importer bug, and the graph that avoids it -----------------------------------------------------------


def reduce_logsumexp_model() -> bytes:
    """The minimal case: ReduceLogSumExp over axis 2 of a [2, 3, 4] tensor, opset 17 (axes as an attribute)."""
    node = helper.make_node("ReduceLogSumExp", ["x"], ["y"], axes=[2], keepdims=0)
    graph = helper.make_graph([node], "lse", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.xfail(reason="OpenVINO's ONNX importer ignores ReduceLogSumExp's axes attribute (opset <= 17) and "
                          "reduces over every axis (seen in 2026.4); an XPASS here means it no longer does",
                   strict=False)
def test_openvino_reduce_logsumexp_keeps_its_axes():
    import onnxruntime

    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    expected = onnxruntime.InferenceSession(reduce_logsumexp_model()).run(None, {"x": x})[0]
    core = ov.Core()
    compiled = core.compile_model(core.read_model(reduce_logsumexp_model(), b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled(x)[0]
    assert got.shape == expected.shape == (2, 3), f"OpenVINO reduced [2, 3, 4] to shape {got.shape}"
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_the_matcher_graph_has_no_reduce_logsumexp(sift_sharp_onnx):
    ops = {node.op_type for node in onnx.load(str(sift_sharp_onnx)).graph.node}
    assert "ReduceLogSumExp" not in ops and {"ReduceMax", "ReduceSum", "Exp", "Log"} <= ops


def test_logsumexp_last_is_torch_logsumexp():
    x = torch.randn(2, 7, 300) * 400  # logits of peaked weights reach the hundreds
    x[1, :, 200:] = -1e4  # masked columns, as padding gives
    np.testing.assert_allclose(logsumexp_last(x), torch.logsumexp(x, dim=2), rtol=1e-6, atol=1e-4)


# --- the session ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    return make_standin_onnx(tmp_path_factory.mktemp("ov_standin") / "standin.onnx")


def test_session_runs_the_contract_like_onnxruntime(standin):
    rng = np.random.default_rng(0)
    pairs = [(f0, noisy_copy(rng, f0, 25)) for f0 in (random_features(rng, 30), random_features(rng, 28))]
    feeds = pack_pairs(pairs, 30, 25, 0.1)
    profiles = [Profile("n32", (1, 1, 2), (1, 32, 32), (1, 32, 32))]
    session = OpenVINOSession(standin, profiles=profiles, precision="f32")
    with pytest.raises(UserError, match="not active"):
        session.infer(feeds)
    with session, OnnxRuntimeSession(standin) as reference:
        assert session.metadata["lightglue.extractor"] == "sift" and session.backend == "openvino"
        assert session.streams == 1 and session.threads == physical_cores()
        out, expected = session.infer(feeds), reference.infer(feeds)
        for name in expected:
            assert out[name].dtype == expected[name].dtype and out[name].shape == expected[name].shape
        np.testing.assert_array_equal(out["matches0"], expected["matches0"])
        np.testing.assert_allclose(out["mscores0"], expected["mscores0"], rtol=1e-6)
        assert set(session.last_timings) >= {"compute", "total"}
        with pytest.raises(ContractError, match="count0 has dtype int64"):
            session.infer(dict(feeds, count0=feeds["count0"].astype(np.int64)))
        with pytest.raises(ContractError, match="fits none"):
            session.infer(pack_pairs(pairs * 2, 30, 25, 0.1))  # B = 4 > 2
    assert not session.is_active


def test_fixed_shape_models_serve_pairs_near_a_profiles_opt_as_the_dynamic_model_does(sift_sharp_onnx, tmp_path):
    """Latency mode with an engine's profiles: once FIXED_SHAPE_AFTER requests could have used it, a model
    compiled at the profile's opt (B = 1) is compiled in the background and then serves the pairs within
    FIXED_SHAPE_FILL of the opt, padded up, with the dynamic model's matches; other requests stay dynamic."""
    import time

    from trt.runtime import openvino_session

    rng = np.random.default_rng(1)
    f0 = random_features(rng, 64)
    first = lambda n: f0.subset(np.arange(n))  # noqa: E731
    near = pack_pairs([(first(60), noisy_copy(rng, f0, 58))], 60, 58, 0.1)  # within 0.9 of 64 on both sides
    far = pack_pairs([(first(40), noisy_copy(rng, f0, 58))], 40, 58, 0.1)
    profiles = [Profile("n64", (1, 1, 2), (1, 64, 64), (1, 64, 64))]
    served = []
    with OpenVINOSession(sift_sharp_onnx, profiles=profiles, precision="f32", cache_dir=tmp_path) as session, \
            OnnxRuntimeSession(sift_sharp_onnx) as reference:
        infer_fixed = session._infer_fixed
        session._infer_fixed = lambda *args: served.append(args[2]) or infer_fixed(*args)
        assert session.fixed_shapes and session.fixed_shape_models == []
        want = reference.infer(near)
        for _ in range(openvino_session.FIXED_SHAPE_AFTER):  # the dynamic model, until the compile is done
            got = session.infer(near)
        deadline = time.monotonic() + 120
        while not session.fixed_shape_models and time.monotonic() < deadline:
            time.sleep(0.2)
        assert session.fixed_shape_models == ["n64"] and served == []
        fixed = session.infer(near)
        assert served == [{"B": 1, "N0": 60, "N1": 58}]
        session.infer(far)  # 40 < 0.9 * 64: the dynamic model
        assert len(served) == 1
    assert (want["matches0"] > -1).sum() > 20
    for out in (got, fixed):
        for name in want:
            assert out[name].shape == want[name].shape
        np.testing.assert_array_equal(out["matches0"], want["matches0"])
        np.testing.assert_array_equal(out["matches1"], want["matches1"])
        np.testing.assert_allclose(out["mscores0"], want["mscores0"], rtol=1e-3, atol=1e-6)
    assert not OpenVINOSession(sift_sharp_onnx, profiles=profiles, mode="throughput").fixed_shapes
    assert not OpenVINOSession(sift_sharp_onnx).fixed_shapes  # no engine's profiles: any shape comes


def test_session_refuses_what_is_not_a_matcher(tmp_path):
    path = make_standin_onnx(tmp_path / "no_count1.onnx", scale_ori=False)
    model = onnx.load(str(path))
    model.graph.input.remove(next(i for i in model.graph.input if i.name == "count1"))
    for node in model.graph.node:
        node.input[:] = ["count0" if x == "count1" else x for x in node.input]
    onnx.save(model, str(path))
    with pytest.raises(ContractError, match="missing: count1"):
        OpenVINOSession(path, precision="f32").activate()
    with pytest.raises(EngineError, match="ONNX model .* does not exist"):
        OpenVINOSession(tmp_path / "absent.onnx")
    (tmp_path / "text.onnx").write_text("not a model")
    with pytest.raises(EngineError, match="OpenVINO cannot read"):
        OpenVINOSession(tmp_path / "text.onnx", precision="f32").activate()
    with pytest.raises(UserError, match="unknown OpenVINO mode"):
        OpenVINOSession(path, mode="fast")
    with pytest.raises(UserError, match="unknown precision 'fp16'"):
        OpenVINOSession(path, precision="fp16")


def test_second_start_loads_the_compiled_model_from_the_cache(standin, tmp_path):
    cache = tmp_path / "cache"
    with OpenVINOSession(standin, precision="f32", cache_dir=cache) as first:
        assert not first.loaded_from_cache
    assert any(cache.iterdir())
    with OpenVINOSession(standin, precision="f32", cache_dir=cache) as second:
        assert second.loaded_from_cache


def test_throughput_mode_splits_batches_across_streams_with_the_same_result(standin):
    rng = np.random.default_rng(3)
    pairs = []
    for n in (20, 24, 18, 22, 19):
        f0 = random_features(rng, n)
        pairs.append((f0, noisy_copy(rng, f0, n - 3)))
    feeds = pack_pairs(pairs, 24, 21, 0.1)
    with OpenVINOSession(standin, precision="f32", mode="throughput") as parallel, \
            OpenVINOSession(standin, precision="f32") as serial:
        assert parallel.streams >= min(2, physical_cores()) and serial.streams == 1
        out, expected = parallel.infer(feeds), serial.infer(feeds)
    for name in expected:
        np.testing.assert_array_equal(out[name], expected[name])


# --- the precision choice ------------------------------------------------------------------------------------


def write_gate_record(onnx_path: Path, passed: bool = True, **changes) -> Path:
    """A gate record as trt.evaluation.bf16_record writes it (its real writer runs in the gate test below)."""
    record = {"gate": "bf16", "onnx": str(onnx_path), "onnx_sha256": sha256_file(onnx_path), "policy": BF16_POLICY,
              "preset": GATE_PRESET, "passed": passed, "summary": "test figures", **changes}
    path = bf16_gate_path(onnx_path)
    path.write_text(json.dumps(record))
    return path


def test_cpu_features_are_read_from_cpuinfo():
    text = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
            "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    info = parse_cpuinfo(text)
    assert info.model == "Intel(R) Xeon(R) Platinum 8480+" and info.bf16_unit() == "AMX"
    assert info.features["amx_bf16"] and not info.features["amx_int8"] and info.bf16_unsupported() is None
    assert AVX512_BF16.bf16_unit() == "AVX512-BF16"
    assert "neither AMX-BF16 nor AVX512-BF16" in NO_BF16.bf16_unsupported()
    assert "cannot be read" in parse_cpuinfo("").bf16_unsupported()
    assert cpu_info().model and set(cpu_info().features) >= {"avx512_bf16", "amx_bf16"}


def test_auto_precision_needs_bf16_hardware_and_a_passed_gate_for_this_model(standin, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(standin.read_bytes())
    precision, why = choose_precision("auto", model, NO_BF16)
    assert precision == "f32" and "Old CPU" in why and "neither AMX-BF16 nor AVX512-BF16" in why
    precision, why = choose_precision("auto", model, AMX)
    assert precision == "f32" and "has not been run for model.onnx (no model.bf16-gate.json)" in why

    write_gate_record(model)
    precision, why = choose_precision("auto", model, AMX)
    assert precision == "bf16" and why.startswith("AMX, and the bf16 accuracy gate passed for model.onnx")
    assert choose_precision("auto", model, AVX512_BF16)[0] == "bf16"
    assert choose_precision("auto", model, NO_BF16)[0] == "f32"  # the gate alone is not enough
    assert choose_precision("f32", model, AMX) == ("f32", "asked for")

    for changes, message in [({"passed": False}, "gate failed for model.onnx: test figures"),
                             ({"onnx_sha256": "0" * 64}, "record of another model"),
                             ({"preset": "smoke"}, "'smoke' preset, not the full gate"),
                             ({"policy": "old"}, "another bf16 policy")]:
        write_gate_record(model, **changes)
        precision, why = choose_precision("auto", model, AMX)
        assert precision == "f32" and message in why, why
    bf16_gate_path(model).write_text("{ not json")
    assert "cannot read the bf16 gate record" in choose_precision("auto", model, AMX)[1]


def test_asked_for_bf16_runs_without_a_gate_but_not_without_the_hardware(standin):
    precision, why = choose_precision("bf16", standin, AVX512_BF16)
    assert precision == "bf16" and "asked for, on AVX512-BF16" in why and "beware" in why
    with pytest.raises(UserError, match="bf16 needs a CPU with AMX-BF16 or AVX512-BF16.*Old CPU"):
        choose_precision("bf16", standin, NO_BF16)


# --- mixed bf16 on the real model ----------------------------------------------------------------------------


def runtime_precisions(session) -> list[tuple[str, str, str]]:
    """(layer type, runtime precision, original ONNX node names) of every node OpenVINO runs."""
    rows = []
    for op in session._compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        rows.append((info["layerType"].astype(str), info["runtimePrecision"].astype(str),
                     info["originalLayersNames"].astype(str)))
    return rows


@needs_bf16
def test_mixed_bf16_runs_the_transformer_in_bf16_and_the_rest_in_f32(sift_sharp_onnx):
    with OpenVINOSession(sift_sharp_onnx, precision="bf16") as session:
        rows = runtime_precisions(session)
        assert session.precision == "bf16" and session.input_specs[0].name == "kpts0"
    products = [(kind, precision, names) for kind, precision, names in rows if kind in ("FullyConnected", "MatMul")]
    transformer = [p for _, p, names in products if re.match(r"/transformers\.", names)]
    assert len(transformer) >= 9 * 26 and set(transformer) == {"bf16"}
    attention = {p for kind, p, names in rows if kind == "Subgraph" and "Softmax" in names}
    assert attention == {"bf16"}  # each attention is one fused (snippets) kernel, in bf16
    kept = {(names.split(",")[0], p) for _, p, names in products if names.startswith(("/log_assignment", "/posenc"))}
    assert kept and {p for _, p in kept} == {"f32"}, kept  # assignment projections, similarity, positional encoding
    assert {p for kind, p, _ in rows if kind == "MVN"} == {"f32"}  # LayerNorm


@needs_bf16
def test_bf16_gate_on_real_pairs(sift_sharp_onnx, data_dir, tmp_path):
    """The CI-sized gate ("ci" preset: 4 pairs, 1024 keypoints) with its real writer and reader."""
    from trt.evaluation.bf16_gate import run_gate
    from trt.evaluation.bf16_record import MIN_IOU, write_record
    from trt.evaluation.datasets import get_preset

    model = tmp_path / "sharp.onnx"
    model.symlink_to(sift_sharp_onnx)
    record = run_gate(model, get_preset("ci"), data_dir)
    assert set(record["datasets"]) == {"hpatches-graffiti", "sacre-coeur-rot", "sacre-coeur-scale"}
    for name, figures in record["datasets"].items():
        assert figures["iou"] >= MIN_IOU, (name, figures)  # measured: 0.93, 0.97, 0.92
        assert abs(figures["precision_delta"]) <= 0.01, (name, figures)
        assert figures["matches_f32"] > 200 and figures["matches_bf16"] > 200
    assert "auc5_delta" in record["datasets"]["hpatches-graffiti"]
    assert record["passed"] == all(f["passed"] for f in record["datasets"].values())
    path = write_record(record)
    assert path == tmp_path / "sharp.bf16-gate.json" and json.loads(path.read_text())["policy"] == BF16_POLICY
    precision, why = choose_precision("auto", model)
    assert precision == "f32" and "'ci' preset, not the full gate" in why  # only the full gate counts


def test_matcher_records_the_precision(standin, tmp_path):
    rng = np.random.default_rng(5)
    f0 = random_features(rng, 30)
    with Matcher(OpenVINOSession(standin, precision="f32"), extractor="sift") as matcher:
        result = matcher.match_features(f0, noisy_copy(rng, f0, 30))
    assert result.engine["backend"] == "openvino" and result.engine["runtime_precision"] == "f32"
    assert result.engine["runtime_precision_reason"] == "asked for" and len(result) == 30


def test_auto_takes_tensorrt_then_openvino_then_onnxruntime(monkeypatch):
    import trt.runtime.matcher as matcher_module
    from trt.runtime.matcher import choose_backend

    monkeypatch.setattr(matcher_module, "tensorrt_unavailable", lambda manifest: None)
    assert choose_backend("auto", None)[0] == "tensorrt"
    monkeypatch.setattr(matcher_module, "tensorrt_unavailable", lambda manifest: "no CUDA GPU was found")
    assert choose_backend("auto", None) == ("openvino", "TensorRT cannot run here (no CUDA GPU was found)")
    monkeypatch.setattr(matcher_module, "openvino_unavailable", lambda: "OpenVINO is not installed (pip install openvino)")
    backend, why = choose_backend("auto", None)
    assert backend == "onnxruntime" and why.endswith("and OpenVINO is not installed (pip install openvino)")
    assert choose_backend("openvino", None) == ("openvino", None)
    with pytest.raises(UserError, match="unknown backend 'cuda': choose one of auto, tensorrt, openvino, onnxruntime"):
        choose_backend("cuda", None)
