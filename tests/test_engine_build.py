"""Engine builds with tensorrt-rtx on the CPU (SM 8.9 targets), the build_engine.py CLI, and its failures.

Fast tests use a stand-in matcher (the contract's inputs and outputs, a trivial body); the real builds
(marked slow) use the exported matchers of tests/conftest.py and share their engines per module.
"""

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import profile_toml
from onnx import TensorProto, helper, numpy_helper

from trt.contract import OUTPUT_SPECS, input_specs, keypoint_dims
from trt.engine.backends import TensorRT, TensorRTRTX, fp32_layer, get_backend
from trt.engine.builder import (
    ConfigFromProfiles,
    EngineBytesFromNetwork,
    NetworkFromOnnxPath,
    SaveEngine,
    build_engine,
)
from trt.engine.manifest import load_manifest, manifest_path
from trt.engine.profiles import (
    PROFILES_DIR,
    GraphSignature,
    load_profiles,
    read_profile_file,
)
from trt.errors import BuildError, ContractError, UserError
from trt.extractors import EXTRACTORS
from trt.fileio import sha256_file
from trt.runtime.base import Profile, select_profile

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not TensorRTRTX.available(), reason="tensorrt-rtx is not installed")

SMALL_PROFILES = profile_toml(("n64", 1, 64, 64), ("n128", 65, 128, 128), batch=(1, 1, 2))


def standin_matcher(path: Path, extractor: str = "sift") -> Path:
    """An ONNX with exactly the matcher contract's inputs and outputs and a trivial body that reads them all."""
    spec = EXTRACTORS[extractor]
    inputs = input_specs(spec.descriptor_dim, spec.scale_ori)
    axes = {f"axis{a}": numpy_helper.from_array(np.array([a], np.int64), f"axis{a}") for a in (1, 2)}
    nodes = []
    for side in (0, 1):
        terms = [f"kpts{side}_sum", f"desc{side}_sum"] + ([f"scales{side}", f"oris{side}"] if spec.scale_ori else [])
        nodes += [
            helper.make_node("ReduceSum", [f"kpts{side}", "axis2"], [terms[0]], keepdims=0),
            helper.make_node("ReduceSum", [f"desc{side}", "axis2"], [terms[1]], keepdims=0),
            helper.make_node("ReduceSum", [f"size{side}", "axis1"], [f"size{side}_sum"], keepdims=1),
            helper.make_node("Cast", [f"count{side}"], [f"count{side}_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", [f"count{side}_f", "axis1"], [f"count{side}_u"]),
            helper.make_node("Sum", terms + [f"size{side}_sum", f"count{side}_u", "threshold"], [f"mscores{side}"],
                             name=f"/log_assignment.8/Sum_{side}"),
            helper.make_node("Cast", [f"mscores{side}"], [f"matches{side}"], to=TensorProto.INT32, name=f"/Cast_{side}"),
        ]

    def value(s):
        return helper.make_tensor_value_info(s.name, helper.np_dtype_to_tensor_dtype(s.dtype), list(s.shape))

    graph = helper.make_graph(nodes, "standin", [value(s) for s in inputs], [value(s) for s in OUTPUT_SPECS],
                              initializer=list(axes.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key="lightglue.extractor", value=extractor)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def unsupported_op_onnx(path: Path) -> Path:
    """An ONNX the TensorRT parser rejects: two custom-domain ops, no plugin for either."""
    tensor = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y", "z")]
    nodes = [
        helper.make_node("Relu", ["x"], ["t"], name="relu_ok"),
        helper.make_node("FancyWarp", ["t"], ["y"], name="warp_custom", domain="com.example"),
        helper.make_node("FancyBlur", ["t"], ["z"], name="blur_custom", domain="com.example"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "bad", tensor[:1], tensor[1:]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(path))
    return path


def run_cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "build_engine.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".engine", ".json", ".tmp"))


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    return standin_matcher(tmp_path_factory.mktemp("standin") / "standin.onnx")


@pytest.fixture(scope="module")
def small_profiles(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "small.toml"
    path.write_text(SMALL_PROFILES)
    return path


# ---------------------------------------------------------------------------------------------------
# Steps alone, on the stand-in


def test_network_and_config_steps(standin):
    """ONNX → network → config with every bucket as its own profile, without building."""
    parsed = NetworkFromOnnxPath(standin, get_backend("tensorrt-rtx"))()
    names = [parsed.network.get_input(i).name for i in range(parsed.network.num_inputs)]
    assert names == GraphSignature.from_onnx(standin).input_names
    profiles = load_profiles(GraphSignature.from_onnx(standin), PROFILES_DIR / "sift.toml")
    built = ConfigFromProfiles(profiles, target=["8.9"], progress=False)(parsed)
    assert built.config.num_optimization_profiles == 4
    assert built.profiles_seen == [p.to_record()["shapes"] for p in profiles]
    assert built.profiles_seen[2]["desc1"] == {"min": [1, 1025, 128], "opt": [1, 2048, 128], "max": [4, 2048, 128]}


def test_steps_compose_into_one_expression(standin, small_profiles, tmp_path):
    network = NetworkFromOnnxPath(standin, get_backend("tensorrt-rtx"))
    config = ConfigFromProfiles(load_profiles(GraphSignature.from_onnx(standin), small_profiles), target=["8.9"], progress=False)
    output = SaveEngine(EngineBytesFromNetwork(network, config), tmp_path / "chain.engine")()
    assert output.stat().st_size > 0 and leftovers(tmp_path) == ["chain.engine"]  # no manifest asked for


def test_standin_build(standin, small_profiles, tmp_path):
    output = tmp_path / "standin.engine"
    (tmp_path / ".standin.engine.1234.tmp").write_bytes(b"stale, from a killed build")
    assert build_engine(standin, small_profiles, output, builder="tensorrt-rtx", workspace_mib=256, opt_level=1,
                        progress=True) == output
    assert leftovers(tmp_path) == ["standin.engine", "standin.engine.json"]  # the stale temporary file is gone
    manifest = load_manifest(output)
    assert manifest.engine == {"file": "standin.engine", "sha256": sha256_file(output), "bytes": output.stat().st_size}
    assert manifest.onnx["sha256"] == sha256_file(standin) and manifest.onnx["metadata"] == {"lightglue.extractor": "sift"}
    assert manifest.builder["name"] == "tensorrt-rtx"
    assert manifest.target == {"compute_capability": TensorRTRTX().target(None)}  # the local GPU, else every RTX GPU
    assert [p.name for p in manifest.profiles] == ["n64", "n128"]
    assert manifest.profiles[1].keypoints1 == [65, 128, 128] and manifest.profiles[1].batch == [1, 1, 2]
    assert manifest.options["workspace_mib"] == 256 and manifest.options["opt_level"] == 1
    assert set(manifest.timings) >= {"profiles", "parse", "configure", "build"}


def test_rtx_has_no_timing_cache(standin, small_profiles, tmp_path):
    with pytest.raises(UserError, match="tensorrt-rtx .* has no timing cache"):
        build_engine(standin, small_profiles, tmp_path / "m.engine", builder="tensorrt-rtx", timing_cache=tmp_path / "t.cache")
    assert leftovers(tmp_path) == []


def test_print_trtexec_matches_profile_file(standin, small_profiles, tmp_path):
    output = tmp_path / "x.engine"
    result = run_cli("--onnx", standin, "--profiles", small_profiles, "--output", output, "--print-trtexec",
                     "--precision", "fp16", "--workspace", "512", "--opt-level", "4")
    assert result.returncode == 0, result.stderr
    full, rtx = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    argv = shlex.split(full)
    assert argv[:4] == ["trtexec", f"--onnx={standin}", f"--saveEngine={output}", "--skipInference"]
    # tensorrt-rtx builds the mixed-FP16 ONNX build_engine writes beside the engine, with the same shapes
    assert rtx.startswith(f"tensorrt_rtx --onnx={tmp_path}/x.fp16.onnx --saveEngine={output} --skipInference")
    assert "--maxShapes=kpts0:2x128x2,desc0:2x128x128,scales0:2x128" in rtx and "--fp16" not in rtx
    assert rtx.endswith("--memPoolSize=workspace:512M --builderOptimizationLevel=4")
    profiles = load_profiles(GraphSignature.from_onnx(standin), small_profiles)
    flags = argv[4:4 + 4 * len(profiles)]
    assert flags[0::4] == [f"--profile={index}" for index in range(len(profiles))]
    for index, profile in enumerate(profiles):  # read the shapes back from trtexec's name:AxBxC lists
        for offset, which in enumerate(("min", "opt", "max"), start=1):
            option, _, spec = flags[4 * index + offset].partition("=")
            assert option == f"--{which}Shapes"
            given = {name: tuple(map(int, dims.split("x"))) for name, dims in (item.split(":") for item in spec.split(","))}
            assert given == {name: getattr(shape, which) for name, shape in profile.shapes.items()}
    assert "--maxShapes=kpts0:2x128x2,desc0:2x128x128,scales0:2x128" in full
    rest = argv[4 + len(flags):]
    assert rest[:2] == ["--fp16", "--precisionConstraints=obey"]
    assert rest[2] == "--layerPrecisions=/log_assignment.8/Sum_0:fp32,/Cast_0:fp32,/log_assignment.8/Sum_1:fp32,/Cast_1:fp32"
    assert rest[3:] == ["--memPoolSize=workspace:512M", "--builderOptimizationLevel=4"]
    assert not output.exists()


def test_fp16_of_a_foreign_graph_is_refused(standin, small_profiles, tmp_path):
    """tensorrt-rtx is strongly typed: FP16 needs the mixed-precision graph trt.onnx.fp16 makes from a matcher."""
    with pytest.raises(UserError, match="not a matcher or extractor graph exported by this project"):
        build_engine(standin, small_profiles, tmp_path / "a.engine", precision="fp16", builder="tensorrt-rtx")
    assert leftovers(tmp_path) == []


class FakeLayer:
    def __init__(self, name):
        self.name, self.precision, self.num_outputs, self.types = name, None, 1, {0: "float16"}

    def get_output_type(self, index):
        return self.types[index]

    def set_output_type(self, index, dtype):
        self.types[index] = dtype


def test_full_tensorrt_adapter_without_tensorrt():
    """Full TensorRT: FP16 is a builder flag, FP32-critical layers are pinned; no target compute capability."""
    layers = [FakeLayer(n) for n in ("/posenc/Cos", "/transformers.0/self_attn/MatMul", "/Div_3", "/log_assignment.8/Log")]
    network = types.SimpleNamespace(num_layers=len(layers), get_layer=layers.__getitem__)
    flags = []
    config = types.SimpleNamespace(set_flag=flags.append)
    module = types.SimpleNamespace(BuilderFlag=types.SimpleNamespace(FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY"),
                                   float32="float32", float16="float16")
    backend = TensorRT()
    backend.__dict__["module"] = module  # the cached property, without importing tensorrt
    assert not backend.needs_fp16_onnx
    assert backend.configure_precision(config, network, "fp32") == [] and flags == []
    pinned = backend.configure_precision(config, network, "fp16")
    assert flags == ["FP16", "OBEY"]
    assert pinned == ["/posenc/Cos", "/Div_3", "/log_assignment.8/Log"]
    assert [(layer.precision, layer.types[0]) for layer in layers] == [("float32", "float32"), (None, "float16"),
                                                                       ("float32", "float32"), ("float32", "float32")]
    with pytest.raises(UserError, match="--target-sm is for --builder tensorrt-rtx"):
        backend.target("8.9")
    assert not fp32_layer("/transformers.3/cross_attn/Softmax")
    strongly_typed_only = TensorRT()
    strongly_typed_only.__dict__["module"] = types.SimpleNamespace(BuilderFlag=types.SimpleNamespace())
    assert strongly_typed_only.needs_fp16_onnx  # a TensorRT without FP16 flag builds FP16 from an FP16 ONNX


def test_rtx_targets():
    backend = get_backend("tensorrt-rtx")
    assert backend.target("12.0") == ["12.0"] and backend.target("8.6, 8.9,12.0,8.9") == ["8.6", "8.9", "12.0"]
    with pytest.raises(UserError, match=r"cannot build for compute capability 6.1: choose one or several .* of 7.5, 8.0, 8.6, 8.9"):
        backend.target("6.1")


def test_parser_errors_list_every_node(tmp_path):
    bad = unsupported_op_onnx(tmp_path / "bad.onnx")
    with pytest.raises(BuildError) as error:
        NetworkFromOnnxPath(bad, get_backend("tensorrt-rtx"), echo_warnings=False)()
    message = str(error.value)
    assert "node 1 'warp_custom' (FancyWarp)" in message and "node 2 'blur_custom' (FancyBlur)" in message


def test_builder_errors_are_build_errors(standin, small_profiles):
    parsed = NetworkFromOnnxPath(standin, get_backend("tensorrt-rtx"))()
    config = ConfigFromProfiles([], target=["8.9"], progress=False)(parsed)  # a dynamic network with no profile
    for _ in range(2):  # TensorRT keeps one logger per process: errors still reach the second build's message
        with pytest.raises(BuildError, match="could not build the engine:\n.*no optimization profile"):
            EngineBytesFromNetwork(parsed, config)()


# ---------------------------------------------------------------------------------------------------
# CLI failures: one message, exit status 2, nothing left behind


BATCH = "[batch]\nmin = 1\nopt = 1\nmax = 4\n"
KEYPOINTS = "[[profile]]\nkeypoints = {{ min = {}, opt = {}, max = {} }}\n"
CASES = {  # profile file text -> message; "bad target" takes flags instead
    "malformed TOML": (BATCH + "[[profile]\nkeypoints = 3\n", r"bad\.toml: malformed TOML: .*line 5"),
    "unknown input": (BATCH + KEYPOINTS.format(1, 8, 8) + "[profile.shapes.image]\nmin = [1]\nopt = [1]\nmax = [1]\n",
                      r"no input 'image'; its inputs are: kpts0, desc0, scales0, oris0, kpts1"),
    "min > max": (BATCH + KEYPOINTS.format(9, 8, 8), r"need min <= opt <= max, got min=9 opt=8 max=8"),
    "overlap": (BATCH + KEYPOINTS.format(1, 8, 8) + KEYPOINTS.format(8, 16, 16), r"N0 range 8-16 overlaps profile 'n8' \(1-8\)"),
    "bad target": (["--builder", "tensorrt-rtx", "--target-sm", "5.2"], r"cannot build for compute capability 5.2"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_rejects_bad_input(case, standin, tmp_path):
    args, message = CASES[case]
    if isinstance(args, str):
        (tmp_path / "bad.toml").write_text(args)
        args = ["--profiles", tmp_path / "bad.toml"]
    output = tmp_path / "out" / "m.engine"
    result = run_cli("--onnx", standin, "--output", output, *args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert not output.parent.exists()  # inputs are checked before anything is written, even the folder


def test_cli_parser_rejection(tmp_path):
    bad = unsupported_op_onnx(tmp_path / "bad.onnx")
    result = run_cli("--onnx", bad, "--builder", "tensorrt-rtx", "--no-progress")
    assert result.returncode == 2 and result.stderr.startswith("error: the tensorrt-rtx ONNX parser rejected")
    assert "'warp_custom' (FancyWarp)" in result.stderr and "'blur_custom' (FancyBlur)" in result.stderr
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["parent is a file", "proc"])
def test_cli_unwritable_output(where, standin, tmp_path):
    if where == "proc":
        output = Path("/proc/lightglue-test/m.engine")
    else:
        (tmp_path / "file").write_text("not a folder")
        output = tmp_path / "file" / "m.engine"
    result = run_cli("--onnx", standin, "--output", output, "--builder", "tensorrt-rtx")
    assert result.returncode == 2 and result.stderr.startswith("error: cannot"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not output.exists()


# ---------------------------------------------------------------------------------------------------
# Real matchers (slow): engines shared per module


@pytest.fixture(scope="module")
def sift_engine(sift_onnx, tmp_path_factory) -> Path:
    """The SIFT matcher with the default profile file (from its metadata), built through the CLI."""
    output = tmp_path_factory.mktemp("sift") / "sift.engine"
    result = run_cli("--onnx", sift_onnx, "--output", output, "--builder", "tensorrt-rtx", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(output)
    return output


@pytest.fixture(scope="module")
def superpoint_engine(superpoint_onnx, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("superpoint") / "superpoint.engine"
    return build_engine(superpoint_onnx, PROFILES_DIR / "superpoint.toml", output, builder="tensorrt-rtx", progress=False)


def check_matcher_engine(engine: Path, onnx_path: Path, extractor: str, precision: str = "fp32") -> None:
    assert engine.stat().st_size > 0
    manifest = load_manifest(engine)
    assert manifest.engine["sha256"] == hashlib.sha256(engine.read_bytes()).hexdigest()
    if precision == "fp16":  # built from the mixed-precision variant, kept beside the engine for ONNX Runtime
        assert manifest.onnx["converted_from"]["sha256"] == sha256_file(onnx_path)
        onnx_path = engine.parent / manifest.onnx["path"]
        assert manifest.onnx["metadata"]["lightglue.precision"] == "fp16"
    assert manifest.onnx["sha256"] == sha256_file(onnx_path)
    assert manifest.onnx["metadata"]["lightglue.extractor"] == extractor
    assert (manifest.builder["name"], manifest.precision) == ("tensorrt-rtx", precision)
    assert manifest.target["compute_capability"] == TensorRTRTX().target(None)
    spec = EXTRACTORS[extractor]
    assert (manifest.extractor, manifest.descriptor_dim, manifest.scale_ori) == (extractor, spec.descriptor_dim, spec.scale_ori)
    assert [t.name for t in manifest.inputs] == [s.name for s in input_specs(spec.descriptor_dim, spec.scale_ori)]
    assert [t.name for t in manifest.outputs] == [s.name for s in OUTPUT_SPECS]
    # the profiles TensorRT was given, read back from its profile objects, are those of the profile file
    assert manifest.options["num_optimization_profiles"] == 4
    buckets = read_profile_file(PROFILES_DIR / f"{extractor}.toml").buckets
    expected = load_profiles(GraphSignature.from_onnx(onnx_path), PROFILES_DIR / f"{extractor}.toml")
    assert [p.name for p in manifest.profiles] == [b.name for b in buckets] == ["n512", "n1024", "n2048", "n4096"]
    for record, bucket, profile in zip(manifest.profiles, buckets, expected):
        assert (record.batch, record.keypoints0, record.keypoints1) == (list(bucket.batch), list(bucket.keypoints0), list(bucket.keypoints1))
        assert record.shapes == profile.to_record()["shapes"]
    assert manifest.profiles[3].shapes["desc0"] == {"min": [1, 2049, spec.descriptor_dim], "opt": [1, 4096, spec.descriptor_dim],
                                                    "max": [4, 4096, spec.descriptor_dim]}
    profiles = [Profile.from_record(record) for record in manifest.profiles]
    assert select_profile(profiles, keypoint_dims(1, 300, 1500), padding=True) == 2
    assert select_profile(profiles, keypoint_dims(4, 4096, 1), padding=True) == 3
    for request in ((5, 10, 10), (1, 4097, 10)):
        with pytest.raises(ContractError, match="fits none"):
            select_profile(profiles, keypoint_dims(*request), padding=True)
    assert json.loads(manifest_path(engine).read_text())["format"] == "lightglue-trt-engine/1"


@pytest.mark.slow
def test_sift_engine(sift_engine, sift_onnx):
    check_matcher_engine(sift_engine, sift_onnx, "sift")


@pytest.mark.slow
def test_sift_fp16_engine(sift_onnx, tmp_path):
    output = build_engine(sift_onnx, PROFILES_DIR / "sift.toml", tmp_path / "sift-fp16.engine", precision="fp16",
                          builder="tensorrt-rtx", progress=False)
    check_matcher_engine(output, sift_onnx, "sift", precision="fp16")
    assert leftovers(tmp_path) == ["sift-fp16.engine", "sift-fp16.engine.json"]
    assert (tmp_path / "sift-fp16.fp16.onnx").is_file()  # the engine's source, for ONNX Runtime in its place


@pytest.mark.slow
def test_superpoint_engine(superpoint_engine, superpoint_onnx):
    check_matcher_engine(superpoint_engine, superpoint_onnx, "superpoint")


@pytest.mark.slow
def test_static_third_party_onnx(data_dir, tmp_path):
    """A feature extractor with a fixed 1x3x480x640 input: no profile file, one static profile."""
    onnx_path = data_dir / "onnx/aliked-t16-top1k-tum.onnx"
    output = build_engine(onnx_path, output=tmp_path / "aliked.engine", builder="tensorrt-rtx", progress=False)
    manifest = load_manifest(output)
    assert output.stat().st_size == manifest.engine["bytes"] > 0
    assert manifest.extractor is None and manifest.descriptor_dim is None
    (profile,) = manifest.profiles
    assert profile.name == "static" and profile.batch is None
    assert profile.shapes == {"image": {"min": [1, 3, 480, 640], "opt": [1, 3, 480, 640], "max": [1, 3, 480, 640]}}
    assert [t.name for t in manifest.inputs] == ["image"]


@pytest.mark.slow
def test_killed_build_leaves_previous_engine(sift_onnx, standin, small_profiles, tmp_path):
    output = tmp_path / "m.engine"
    output.write_bytes(b"previous engine")
    manifest_path(output).write_text('{"previous": "manifest"}')
    process = subprocess.Popen([sys.executable, str(ROOT / "build_engine.py"), "--onnx", str(sift_onnx), "--output",
                                str(output), "--builder", "tensorrt-rtx", "--no-progress"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(6)
    assert process.poll() is None, "the build ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert output.read_bytes() == b"previous engine"
    assert manifest_path(output).read_text() == '{"previous": "manifest"}'
    assert leftovers(tmp_path) == ["m.engine", "m.engine.json"]
    # a build killed while writing leaves hidden temporary files; the next build of that output removes them
    (tmp_path / ".m.engine.x1y2.tmp").write_bytes(b"partial")
    (tmp_path / ".m.engine.json.x1y2.tmp").write_bytes(b"partial")
    build_engine(standin, small_profiles, output, builder="tensorrt-rtx", progress=False)
    assert leftovers(tmp_path) == ["m.engine", "m.engine.json"]
    assert load_manifest(output).onnx["sha256"] == sha256_file(standin)
