"""export.py and the export pipeline: contract, shape inference, lint, weights handling, bad input."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from trt.contract import OUTPUT_SPECS, input_specs
from trt.errors import ContractError, UserError, WeightsError
from trt.extractors import EXTRACTORS, get_extractor
from trt.models.lightglue import LightGlue
from trt.models.weights import load_state_dict_strict, random_state_dict, rename_keys
from trt.onnx.clean import unresolved_shapes
from trt.onnx.export import export_matcher, read_metadata
from trt.onnx.lint import lint_for_tensorrt

ROOT = Path(__file__).resolve().parent.parent
SEED_COMMAND = ["export.py", "--extractor_type=sift", "--lightglue_path", "weights/sift_lightglue.onnx", "--dynamic"]


def run_export(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def parse_with_tensorrt_rtx(path: Path) -> list[str]:
    import tensorrt_rtx

    logger = tensorrt_rtx.Logger(tensorrt_rtx.Logger.ERROR)
    builder = tensorrt_rtx.Builder(logger)
    network = builder.create_network(0)
    parser = tensorrt_rtx.OnnxParser(network, logger)
    parser.parse_from_file(str(path))
    return [str(parser.get_error(i)) for i in range(parser.num_errors)]


@pytest.fixture(scope="module")
def official_layout_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint file laid out exactly like sift_lightglue.pth (v0.1 key names), random values."""
    path = tmp_path_factory.mktemp("ckpt") / "sift_lightglue.pth"
    torch.save(random_state_dict(LightGlue(get_extractor("sift")), seed=7), path)
    return path


def test_seed_command_with_random_weights(tmp_path):
    result = run_export(SEED_COMMAND + ["--random-weights", "0"], tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "weights/sift_lightglue.onnx"
    metadata = read_metadata(onnx.load(str(path), load_external_data=False))
    assert metadata["extractor"] == "sift" and metadata["weights_kind"] == "random"
    assert "random seed 0" in metadata["weights"]
    assert parse_with_tensorrt_rtx(path) == []


def test_seed_command_with_checkpoint_file(tmp_path, official_layout_checkpoint):
    result = run_export(SEED_COMMAND + ["--weights", str(official_layout_checkpoint)], tmp_path)
    assert result.returncode == 0, result.stderr
    # Not the official hash: a warning that names both.
    assert get_extractor("sift").weights_sha256 in result.stderr
    metadata = read_metadata(onnx.load(str(tmp_path / "weights/sift_lightglue.onnx")))
    assert metadata["weights_kind"] == "file" and metadata["weights"].startswith("sha256:")


def test_seed_command_offline_without_weights_fails_clearly(tmp_path):
    result = run_export(SEED_COMMAND, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert get_extractor("sift").weights_url in result.stderr
    assert "weights/sift_lightglue.pth" in result.stderr
    assert not (tmp_path / "weights/sift_lightglue.onnx").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--extractor_type=orb", "--random-weights", "0"], "unknown extractor 'orb'"),
        (["--extractor_type=sift", "--lightglue_path", "out.onnx/x/y.onnx", "--random-weights", "0"], "cannot"),
    ],
)
def test_bad_arguments_fail_clearly(tmp_path, args, message):
    (tmp_path / "out.onnx").write_text("a file where a folder is needed")
    result = run_export(["export.py", *args], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert not list(tmp_path.glob("**/*.onnx")) or (tmp_path / "out.onnx").read_text().startswith("a file")


def test_wrong_layout_lists_the_keys(tmp_path):
    superpoint_layout = random_state_dict(LightGlue(get_extractor("superpoint")), seed=0)
    checkpoint = tmp_path / "wrong.pth"
    torch.save(superpoint_layout, checkpoint)
    result = run_export(["export.py", "--weights", str(checkpoint), "--lightglue_path", "x.onnx"], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "missing keys: input_proj.bias, input_proj.weight" in result.stderr
    assert "posenc.Wr.weight (32, 2) (expected (32, 4))" in result.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_truncated_checkpoint_fails_clearly(tmp_path, official_layout_checkpoint):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(official_layout_checkpoint.read_bytes()[:100_000])
    result = run_export(["export.py", "--weights", str(truncated), "--lightglue_path", "x.onnx"], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "truncated or not a PyTorch checkpoint" in result.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_strict_loading_reports_unexpected_keys():
    model = LightGlue(get_extractor("sift"))
    state_dict = random_state_dict(model, seed=0)
    state_dict["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="unexpected keys: extra.weight"):
        load_state_dict_strict(model, state_dict, "test")


def test_random_state_dict_has_the_official_layout():
    model = LightGlue(get_extractor("sift"))
    state_dict = random_state_dict(model, seed=0)
    assert "self_attn.0.Wqkv.weight" in state_dict  # v0.1 key names, as in the released files
    assert set(rename_keys(state_dict)) == set(model.state_dict()) - {"confidence_thresholds"}
    assert torch.equal(random_state_dict(model, seed=0)["posenc.Wr.weight"], state_dict["posenc.Wr.weight"])


def test_exported_graph_follows_the_contract(sift_onnx):
    model = onnx.load(str(sift_onnx))
    extractor = get_extractor("sift")
    expected_inputs = input_specs(extractor.descriptor_dim, extractor.scale_ori)
    for value, spec in zip(model.graph.input, expected_inputs):
        dims = tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)
        assert value.name == spec.name and dims == spec.shape
        assert onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type) == spec.dtype
    assert len(model.graph.input) == len(expected_inputs)
    for value, spec in zip(model.graph.output, OUTPUT_SPECS):
        dims = tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)
        assert value.name == spec.name and dims == spec.shape
        assert onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type) == spec.dtype
    assert unresolved_shapes(model) == []
    assert lint_for_tensorrt(model) == []
    assert not {"NonZero", "TopK"} & {node.op_type for node in model.graph.node}
    assert model.opset_import[0].version == 17


@pytest.mark.slow
@pytest.mark.parametrize("extractor", list(EXTRACTORS))
def test_every_matcher_exports_and_parses_dynamic_and_static(extractor, model_cache):
    dynamic = model_cache / f"{extractor}_random0.onnx"
    if not dynamic.exists():
        export_matcher(extractor, dynamic, random_seed=0, dynamic=True)
    static = model_cache / f"{extractor}_static.onnx"
    export_matcher(extractor, static, random_seed=0, dynamic=False, batch_size=2, num_keypoints=300)
    for path in (dynamic, static):
        assert parse_with_tensorrt_rtx(path) == [], path
    dims = [d.dim_value for d in onnx.load(str(static)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 300, 2]


def test_unsupported_opset_is_refused(tmp_path):
    with pytest.raises(UserError, match="opset 18 is not supported"):
        export_matcher("sift", tmp_path / "x.onnx", random_seed=0, opset=18)
    assert not (tmp_path / "x.onnx").exists()


def test_lint_names_unsupported_nodes():
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("NonZero", ["x"], ["nz"], name="find"),
            onnx.helper.make_node("FusedMatMul", ["x", "x"], ["y"], name="contrib", domain="com.microsoft"),
            onnx.helper.make_node("TopK", ["x", "k"], ["v", "i"], name="big_topk"),
            onnx.helper.make_node("ReduceMax", ["x", "axes_in"], ["r"], name="dynamic_axes"),
        ],
        "g",
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [4]) for n in ("x",)]
        + [onnx.helper.make_tensor_value_info("axes_in", onnx.TensorProto.INT64, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])],
        initializer=[onnx.numpy_helper.from_array(np.array([5000], np.int64), "k")],
    )
    issues = {issue.node: issue.problem for issue in lint_for_tensorrt(onnx.helper.make_model(graph))}
    assert "NonZero" in issues["find"]
    assert "com.microsoft" in issues["contrib"]
    assert "K=5000" in issues["big_topk"]
    assert "constant" in issues["dynamic_axes"]


def test_export_check_judges_the_graph_by_float32_noise():
    """Against the float64 oracle, a graph as far off as the float32 torch module passes however large that is
    (peaked weights: |Δ log score| ~1e-2), one well beyond it is refused with both figures, and so are flipped
    matches."""
    from trt.onnx.export import compare_outputs

    oracle = {"matches0": np.array([[0, 1, 2, 3, -1]], np.int32),
              "mscores0": np.array([[0.93, 0.2, 3e-30, 1e-40, 0.0]], np.float64)}
    float32_noise = np.array([[1.011, 0.99, 1.005, 1.0, 1.0]])
    reference = {**oracle, "mscores0": (oracle["mscores0"] * float32_noise).astype(np.float32)}
    as_noisy = {**oracle, "mscores0": (oracle["mscores0"] / float32_noise).astype(np.float32)}
    compare_outputs(oracle, reference, as_noisy, "test")  # off by 1.1 %: the old 1 % worst-element test refused it
    far_off = {**oracle, "mscores0": (oracle["mscores0"] * 1.08).astype(np.float32)}
    with pytest.raises(ContractError, match=r"mscores0 is off the float64 torch module by RMS \|Δ log score\| 0\.0667 "
                                            r"\(the float32 torch module by 0\.00784; allowed 0\.0313"):
        compare_outputs(oracle, reference, far_off, "test")
    flipped = {**reference, "matches0": np.array([[0, 4, 2, 3, -1]], np.int32)}
    with pytest.raises(ContractError, match=r"matches0 differs .* on 20\.00% of rows \(the float32 torch module on 0\.00%"):
        compare_outputs(oracle, reference, flipped, "test")


@pytest.mark.slow
def test_export_check_accepts_held_out_trained_like_weights_and_refuses_a_perturbed_graph(tmp_path):
    """The issue's case: nearest-neighbour weights plus seeded residuals of another seed than the tests' (0),
    checked at B=1, N0=97, N1=131 among others, export; the same graph with one weight matrix off by 2 %
    (a mistranslation the size of a wrong constant) is refused."""
    from onnx import numpy_helper

    from trt.models.sharp import sharp_state_dict
    from trt.onnx.export import CHECK_SIZES, compare_outputs, example_inputs, onnx_outputs, torch_outputs

    assert (1, 97, 131) in CHECK_SIZES
    path = export_matcher("sift", tmp_path / "sharp5.onnx", sharp_seed=5)
    graph = onnx.load(str(path))
    weight = next(init for init in graph.graph.initializer if len(init.dims) == 2 and list(init.dims) == [256, 256])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.02), weight.name))
    model = LightGlue(get_extractor("sift")).eval()
    load_state_dict_strict(model, sharp_state_dict(model, 5), "sharp seed 5")
    feeds = example_inputs(get_extractor("sift"), 1, 97, 131, seed=98)
    with pytest.raises(ContractError, match="float32 torch module"):
        compare_outputs(torch_outputs(model, feeds, float64=True), torch_outputs(model, feeds),
                        onnx_outputs(graph.SerializeToString(), feeds), "perturbed graph")


def test_sharp_weights_make_the_transformer_matter_and_keep_the_assignment_peaked():
    from trt.engine.gate import gate_pairs
    from trt.features.base import pack_pairs
    from trt.models.nearest_neighbour import nearest_neighbour_state_dict
    from trt.models.sharp import sharp_state_dict

    extractor = get_extractor("sift")
    models = {}
    for name, make in (("nn", nearest_neighbour_state_dict), ("sharp", lambda m: sharp_state_dict(m, 0))):
        models[name] = LightGlue(extractor).eval()
        load_state_dict_strict(models[name], make(models[name]), name)
    seeded = [sharp_state_dict(models["nn"], seed)["transformers.0.cross_attn.to_qk.weight"] for seed in (0, 0, 1)]
    assert torch.equal(seeded[0], seeded[1]) and not torch.equal(seeded[0], seeded[2])
    f0, f1 = gate_pairs(extractor.descriptor_dim, extractor.scale_ori)[0]
    f0, f1 = f0.top_k(300), f1.top_k(280)
    feeds = tuple(torch.from_numpy(v) for v in pack_pairs([(f0, f1)], len(f0), len(f1), 0.1).values())
    with torch.no_grad():
        nn_matches, sharp_matches = (models[name](*feeds)[0][0].numpy() for name in ("nn", "sharp"))
        sharp_scores = models["sharp"](*feeds)[2][0].numpy()
    matched = sharp_matches > -1
    assert matched.sum() > 150 and np.median(sharp_scores[matched]) > 0.5  # a peaked assignment
    assert np.mean(sharp_matches != nn_matches) > 0.02  # the transformer changes matches


def test_download_when_absent_verifies_and_writes_atomically(tmp_path, official_layout_checkpoint, monkeypatch):
    """The official-weights path end to end against a loopback server standing in for the release host."""
    import dataclasses
    import functools
    import hashlib
    import http.server
    import threading

    import trt.extractors
    from trt.models.weights import resolve_weights

    served = tmp_path / "served"
    served.mkdir()
    (served / "sift_lightglue.pth").write_bytes(official_layout_checkpoint.read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setattr(trt.extractors, "WEIGHTS_URL", f"http://127.0.0.1:{server.server_port}/{{name}}_lightglue.pth")
        weights_dir = tmp_path / "weights"
        with pytest.raises(WeightsError, match="not the official .*not kept"):  # the served file is not cvg's
            resolve_weights(get_extractor("sift"), None, weights_dir)
        assert list(weights_dir.iterdir()) == []  # nothing half-written, nothing unverified
        served_hash = hashlib.sha256(official_layout_checkpoint.read_bytes()).hexdigest()
        path = resolve_weights(dataclasses.replace(get_extractor("sift"), weights_sha256=served_hash), None, weights_dir)
        assert path == weights_dir / "sift_lightglue.pth"
        assert path.read_bytes() == official_layout_checkpoint.read_bytes()
        assert [p.name for p in weights_dir.iterdir()] == ["sift_lightglue.pth"]  # no temporary file left
        with pytest.raises(WeightsError, match="not the official"):  # sift's real hash: it would shadow the official file
            export_matcher("sift", tmp_path / "x.onnx", weights_dir=weights_dir)
    finally:
        server.shutdown()


def test_static_flags_with_dynamic_warn(tmp_path):
    result = run_export(SEED_COMMAND + ["--random-weights", "0", "--num_keypoints", "512"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: --num-keypoints ignored: --dynamic exports take any batch and keypoint count" in result.stderr
