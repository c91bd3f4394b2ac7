"""Extractor engines: image-size profiles, real tensorrt-rtx builds (ALIKED and SuperPoint, default
profiles, FP32 and FP16 through the gate), trtexec commands, linking an extractor engine to its matcher,
and `make engine EXTRACTOR=aliked`."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from conftest import build_extractor_engine, profile_toml
from test_engine_build import run_cli, standin_matcher

from trt.engine.backends import TensorRTRTX, fp32_layer
from trt.engine.builder import build_engine
from trt.engine.gate import check_extractor_fp16
from trt.engine.manifest import load_manifest, manifest_path
from trt.engine.profiles import PROFILES_DIR, GraphSignature, default_profile_path, load_profiles, read_profile_file
from trt.errors import BuildError, ContractError, EngineError, ProfileError, UserError
from trt.extractor_contract import OUTPUT_NAMES
from trt.extractors import NETWORKS
from trt.fileio import sha256_file

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not TensorRTRTX.available(), reason="tensorrt-rtx is not installed")
DEFAULT_BUCKETS = {
    "aliked": ["480x640", "640x480", "768x1024", "1024x768", "1088x1920", "1920x1088"],
    "superpoint": ["480x640", "640x480", "768x1024", "1024x768", "1080x1920", "1920x1080"],
    "disk": ["480x640", "640x480", "768x1024", "1024x768", "1088x1920", "1920x1088"],
}
SMALL_IMAGES = """[batch]
min = 1
opt = 1
max = 2

[[profile]]
height = { min = 64, opt = 256, max = 256 }
width = { min = 64, opt = 320, max = 320 }
"""


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".engine", ".json", ".tmp", ".onnx"))


# ---------------------------------------------------------------------------------------------------
# Image-size profiles (no build)


@pytest.mark.parametrize("feature", list(DEFAULT_BUCKETS))
def test_default_image_profiles(feature):
    buckets = read_profile_file(PROFILES_DIR / "extractors" / f"{feature}.toml").buckets
    assert [b.name for b in buckets] == DEFAULT_BUCKETS[feature]
    stride = {"aliked": 32, "superpoint": 8, "disk": 16}[feature]
    for bucket in buckets:
        assert tuple(bucket.batch) == (1, 1, 4) and bucket.keypoints0 is None
        assert all(value % stride == 0 for value in (*bucket.height, *bucket.width))
        assert f"{bucket.height.max}x{bucket.width.max}" == bucket.name


def test_image_profiles_resolve_for_an_extractor_graph(aliked_extractor_onnx):
    graph = GraphSignature.from_onnx(aliked_extractor_onnx)
    assert graph.is_extractor and graph.stride == 32 and graph.layout is None
    assert default_profile_path(graph) == PROFILES_DIR / "extractors" / "aliked.toml"
    profiles = load_profiles(graph)
    assert [p.name for p in profiles] == DEFAULT_BUCKETS["aliked"]
    assert profiles[4].shapes["image"].to_dict() == {"min": [1, 3, 64, 64], "opt": [1, 3, 1088, 1920],
                                                     "max": [4, 3, 1088, 1920]}
    assert profiles[4].shapes["region"].to_dict() == {"min": [1, 4], "opt": [1, 4], "max": [4, 4]}
    assert profiles[1].to_record()["height"] == [64, 640, 640] and profiles[1].to_record()["keypoints0"] is None


@pytest.mark.parametrize("text, message", [
    ("[batch]\nmin = 1\nopt = 1\nmax = 1\n[[profile]]\nheight = { min = 64, opt = 1080, max = 1080 }\n"
     "width = { min = 64, opt = 1920, max = 1920 }\n",
     r"height opt 1080 is not a multiple of the network's stride 32: .* \(use 1088\)"),
    ("[batch]\nmin = 1\nopt = 1\nmax = 1\n[[profile]]\nheight = { min = 64, opt = 480, max = 480 }\n",
     "give height and width together"),
    (profile_toml(("n512", 1, 512, 512)), r"keypoint ranges need the LightGlue matcher contract, .* give height and width"),
    ("[[profile]]\nheight = { min = 64, opt = 480, max = 480 }\nwidth = { min = 64, opt = 640, max = 640 }\n",
     "no batch range"),
    ("[batch]\nmin = 1\nopt = 1\nmax = 1\n[[profile]]\nkeypoints = { min = 1, opt = 8, max = 8 }\n"
     "height = { min = 64, opt = 480, max = 480 }\nwidth = { min = 64, opt = 640, max = 640 }\n",
     r"a profile is for a matcher \(keypoints\) or an extractor \(height and width\), not both"),
])
def test_bad_image_profiles(text, message, aliked_extractor_onnx, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message):
        load_profiles(GraphSignature.from_onnx(aliked_extractor_onnx), path)


def test_image_profiles_on_a_matcher_are_refused(tmp_path):
    matcher = standin_matcher(tmp_path / "m.onnx", "aliked")
    (tmp_path / "images.toml").write_text(SMALL_IMAGES)
    with pytest.raises(ProfileError, match=r"height and width need the extractor contract .* give keypoint ranges"):
        load_profiles(GraphSignature.from_onnx(matcher), tmp_path / "images.toml")


def test_print_trtexec_for_an_extractor(aliked_extractor_onnx, tmp_path):
    output = tmp_path / "x.engine"
    result = run_cli("--onnx", aliked_extractor_onnx, "--output", output, "--print-trtexec", "--precision", "fp16")
    assert result.returncode == 0, result.stderr
    argv = shlex.split(next(line for line in result.stdout.splitlines() if line.startswith("trtexec ")))
    assert argv[:4] == ["trtexec", f"--onnx={aliked_extractor_onnx}", f"--saveEngine={output}", "--skipInference"]
    assert [a for a in argv if a.startswith("--profile=")] == [f"--profile={i}" for i in range(6)]
    assert "--maxShapes=image:4x3x1088x1920,region:4x4" in argv and "--minShapes=image:1x3x64x64,region:1x4" in argv
    (pinned,) = [a for a in argv if a.startswith("--layerPrecisions=")]
    pinned = [item.rsplit(":", 1)[0] for item in pinned.split("=", 1)[1].split(",")]
    scopes = GraphSignature.from_onnx(aliked_extractor_onnx).fp16_scopes
    model = onnx.load(str(aliked_extractor_onnx), load_external_data=False)
    outside = {n.name for n in model.graph.node if n.name and not n.name.startswith(scopes)}
    assert set(pinned) == outside and "/TopK" in pinned  # detection stays FP32; the encoder is FP16
    assert not fp32_layer("/block3/conv1/GridSample", scopes) and fp32_layer("/desc_head/GridSample", scopes)
    assert not output.exists()


# ---------------------------------------------------------------------------------------------------
# Real builds with the default image profiles (slow): the engines are shared by the session (conftest)


def check_extractor_engine(engine: Path, onnx_path: Path, network: str, precision: str) -> None:
    manifest = load_manifest(engine)
    spec = NETWORKS[network]
    assert manifest.engine["sha256"] == sha256_file(engine) and manifest.precision == precision
    assert (manifest.builder["name"], manifest.target["compute_capability"]) == ("tensorrt-rtx", ["8.9"])
    assert (manifest.extractor, manifest.descriptor_dim, manifest.scale_ori) == (spec.feature, spec.descriptor_dim, None)
    assert manifest.extractor_network == {"name": network, "padding": spec.padding, "channels": spec.channels,
                                          "stride": spec.stride, "max_keypoints": 2048,
                                          "detection_threshold": spec.detection_threshold, "nms_radius": spec.nms_radius}
    assert manifest.extractor_engine is None
    assert [(t.name, t.dtype) for t in manifest.inputs] == [("image", "float32"), ("region", "int32")]
    assert [t.name for t in manifest.outputs] == OUTPUT_NAMES
    assert [(t.dtype, t.shape) for t in manifest.outputs] == [
        ("float32", ["B", 2048, 2]), ("float32", ["B", 2048]), ("float32", ["B", 2048, spec.descriptor_dim]),
        ("int32", ["B"])]
    assert manifest.options["num_optimization_profiles"] == 6
    assert [p.name for p in manifest.profiles] == DEFAULT_BUCKETS[spec.feature]
    expected = load_profiles(GraphSignature.from_onnx(onnx_path))
    for record, profile in zip(manifest.profiles, expected):  # as TensorRT read them back
        assert record.shapes == profile.to_record()["shapes"] and record.height == list(profile.height)
    if precision == "fp16":
        assert manifest.onnx["converted_from"]["sha256"] == sha256_file(onnx_path)
        assert (engine.parent / manifest.onnx["path"]).name == f"{engine.stem}.fp16.onnx"
        gate = manifest.options["fp16_gate"]
        assert gate["recall"] >= 0.95 and gate["mean_cosine"] >= 0.99 and gate["fp32_keypoints"] > 100
    else:
        assert manifest.onnx["sha256"] == sha256_file(onnx_path)


@pytest.mark.slow
def test_aliked_engines_fp32_and_fp16(aliked_engine, aliked_extractor_onnx, tmp_path):
    check_extractor_engine(aliked_engine, aliked_extractor_onnx, "aliked-n16", "fp32")
    check_extractor_engine(build_extractor_engine(aliked_extractor_onnx, tmp_path, "fp16"), aliked_extractor_onnx, "aliked-n16", "fp16")
    assert leftovers(tmp_path) == ["extractor-fp16.engine", "extractor-fp16.engine.json", "extractor-fp16.fp16.onnx"]


@pytest.mark.slow
def test_superpoint_engines_fp32_and_fp16(superpoint_engine, superpoint_extractor_onnx, tmp_path):
    check_extractor_engine(superpoint_engine, superpoint_extractor_onnx, "superpoint", "fp32")
    check_extractor_engine(build_extractor_engine(superpoint_extractor_onnx, tmp_path, "fp16"), superpoint_extractor_onnx, "superpoint",
                           "fp16")


def test_the_gate_refuses_an_extractor_that_detects_otherwise(superpoint_extractor_onnx, tmp_path):
    """The gate compares keypoints and descriptors: a graph whose first layer is negated fails it."""
    model = onnx.load(str(superpoint_extractor_onnx))
    for init in model.graph.initializer:
        if init.name == "conv1a.weight":
            array = onnx.numpy_helper.to_array(init)
            init.CopyFrom(onnx.numpy_helper.from_array(-array, init.name))
    changed = tmp_path / "changed.onnx"
    onnx.save(model, str(changed))
    with pytest.raises(BuildError, match=r"of keypoints found again within 1.0 px \(gate 95%\).*no engine was written"):
        check_extractor_fp16(superpoint_extractor_onnx, changed, NETWORKS["superpoint"])


# ---------------------------------------------------------------------------------------------------
# Linking an extractor engine to its matcher


@pytest.fixture(scope="module")
def small_keypoints(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "small.toml"
    path.write_text(profile_toml(("n64", 1, 64, 64)))
    return path


@pytest.mark.slow
def test_matcher_manifest_names_its_extractor_engine(aliked_engine, small_keypoints, tmp_path):
    matcher = standin_matcher(tmp_path / "aliked_lightglue.onnx", "aliked")
    output = tmp_path / "serve" / "aliked_lightglue.engine"
    result = run_cli("--onnx", matcher, "--profiles", small_keypoints, "--output", output, "--builder", "tensorrt-rtx",
                     "--no-progress", "--extractor-engine", aliked_engine)
    assert result.returncode == 0, result.stderr
    linked = load_manifest(output).extractor_engine  # the path is relative to the matcher's folder
    assert linked == {"file": os.path.relpath(aliked_engine, output.parent), "sha256": sha256_file(aliked_engine),
                      "network": "aliked-n16", "descriptor_dim": 128}
    assert (output.parent / linked["file"]).resolve() == aliked_engine.resolve()


@pytest.mark.slow
@pytest.mark.parametrize("matcher_type, message", [
    ("aliked", r"\(superpoint\) gives 256-D descriptors, but this matcher \(aliked\) takes 128-D ones"),
    ("superpoint", None),  # the right one: fails on nothing but is not built here
])
def test_linking_checks_the_descriptor_size(matcher_type, message, superpoint_engine, small_keypoints, tmp_path):
    matcher = standin_matcher(tmp_path / "m.onnx", matcher_type)
    if message is None:
        from trt.engine.builder import link_extractor_engine

        assert link_extractor_engine(GraphSignature.from_onnx(matcher), superpoint_engine, tmp_path / "m.engine")[
            "descriptor_dim"] == 256
        return
    output = tmp_path / "out" / "m.engine"
    result = run_cli("--onnx", matcher, "--profiles", small_keypoints, "--output", output, "--builder", "tensorrt-rtx",
                     "--extractor-engine", superpoint_engine)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert re.search(message, result.stderr), result.stderr
    assert not output.parent.exists()


@pytest.mark.slow
def test_linking_refuses_other_features_and_foreign_engines(aliked_engine, aliked_extractor_onnx, small_keypoints,
                                                            tmp_path):
    from trt.engine.builder import link_extractor_engine

    disk_matcher = GraphSignature.from_onnx(standin_matcher(tmp_path / "disk.onnx", "disk"))
    with pytest.raises(ContractError, match="makes aliked features, but this matcher was trained for disk features"):
        link_extractor_engine(disk_matcher, aliked_engine, tmp_path / "m.engine")
    aliked_matcher = GraphSignature.from_onnx(standin_matcher(tmp_path / "aliked.onnx", "aliked"))
    matcher_engine = build_engine(tmp_path / "aliked.onnx", small_keypoints, tmp_path / "matcher.engine",
                                  builder="tensorrt-rtx", progress=False)
    with pytest.raises(EngineError, match="is not an extractor engine built by build_engine.py"):
        link_extractor_engine(aliked_matcher, matcher_engine, tmp_path / "m.engine")
    tampered = tmp_path / "tampered.engine"
    tampered.write_bytes(aliked_engine.read_bytes() + b"\0")
    shutil.copy(manifest_path(aliked_engine), manifest_path(tampered))
    with pytest.raises(EngineError, match="does not match its manifest"):
        link_extractor_engine(aliked_matcher, tampered, tmp_path / "m.engine")
    with pytest.raises(UserError, match="links an extractor engine to a matcher, but this ONNX is not a matcher"):
        link_extractor_engine(GraphSignature.from_onnx(aliked_extractor_onnx), aliked_engine, tmp_path / "x.engine")


# ---------------------------------------------------------------------------------------------------
# make engine EXTRACTOR=…


def make(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(ROOT), f"PYTHON={sys.executable}", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_make_engine_aliked_commands(tmp_path):
    """What `make engine EXTRACTOR=aliked` runs: the extractor exported with its weights and built beside OUT,
    then the matcher built and linked to it."""
    checkpoint = tmp_path / "aliked-n16.pth"
    checkpoint.write_bytes(b"")  # make only needs it to exist: -n runs nothing
    result = make("-n", "--no-print-directory", "engine", "EXTRACTOR=aliked", f"EXTRACTOR_WEIGHTS={checkpoint}", "WEIGHTS=random",
                  "OUT=/srv/aliked_lightglue.engine", "PRECISION=fp16")
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.replace("\\\n", " ").splitlines() if line.strip()]
    assert [c[1] for c in commands] == ["export.py", "export.py", "build_engine.py", "build_engine.py"]
    matcher_export, extractor_export, extractor_build, matcher_build = commands
    assert "--lightglue-path" in matcher_export and "--extractor-path" not in matcher_export
    # a file named as the official one keeps the official ONNX name (not weights/aliked-n16-aliked-n16.onnx)
    assert extractor_export[extractor_export.index("--extractor-path") + 1] == "weights/aliked-n16.onnx"
    assert extractor_export[extractor_export.index("--extractor-model") + 1] == "aliked-n16"
    assert extractor_export[extractor_export.index("--extractor-weights") + 1] == str(checkpoint)
    assert extractor_build[extractor_build.index("--profiles") + 1] == "profiles/extractors/aliked.toml"
    assert extractor_build[extractor_build.index("--output") + 1] == "/srv/aliked_lightglue.extractor.engine"
    assert extractor_build[extractor_build.index("--precision") + 1] == "fp16"
    assert matcher_build[matcher_build.index("--extractor-engine") + 1] == "/srv/aliked_lightglue.extractor.engine"
    sift = make("-n", "engine", "EXTRACTOR=sift", "WEIGHTS=random")
    assert "--extractor" not in sift.stdout.replace("--extractor-type", "")  # SIFT stays on the host
    (tmp_path / "tuned.pth").write_bytes(b"")
    other = make("-n", "--no-print-directory", "onnx", "EXTRACTOR=aliked", f"EXTRACTOR_WEIGHTS={tmp_path}/tuned.pth",
                 "WEIGHTS=random")
    assert "--extractor-path weights/aliked-n16-tuned.onnx" in other.stdout, other.stderr  # other files tag the name


@pytest.mark.slow
def test_make_engine_builds_the_extractor_engine_beside_the_matcher(superpoint_onnx, superpoint_extractor_onnx,
                                                                    tmp_path):
    """The chain a user types, with the session's exports (copied: newer than the sources, so make keeps them)."""
    matcher_onnx, extractor_onnx = tmp_path / "superpoint_lightglue.onnx", tmp_path / "superpoint.onnx"
    shutil.copy(superpoint_onnx, matcher_onnx)
    shutil.copy(superpoint_extractor_onnx, extractor_onnx)
    (tmp_path / "keypoints.toml").write_text(profile_toml(("n256", 1, 256, 256)))
    (tmp_path / "images.toml").write_text(SMALL_IMAGES)
    variables = ["EXTRACTOR=superpoint", "WEIGHTS=random", "EXTRACTOR_WEIGHTS=random", f"ONNX={matcher_onnx}",
                 f"EXTRACTOR_ONNX={extractor_onnx}", f"OUT={tmp_path}/serve/superpoint_lightglue.engine",
                 f"PROFILES={tmp_path}/keypoints.toml", f"EXTRACTOR_PROFILES={tmp_path}/images.toml"]
    result = make("engine", *variables)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "export.py" not in result.stdout  # both ONNX files were up to date
    matcher = tmp_path / "serve" / "superpoint_lightglue.engine"
    extractor = tmp_path / "serve" / "superpoint_lightglue.extractor.engine"
    assert load_manifest(matcher).extractor_engine == {"file": extractor.name, "sha256": sha256_file(extractor),
                                                       "network": "superpoint", "descriptor_dim": 256}
    assert load_manifest(extractor).extractor_network["name"] == "superpoint"
    again = make("engine", *variables)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout
    trtexec = make("-s", "trtexec", *variables)
    assert trtexec.returncode == 0, trtexec.stderr
    first, first_rtx, second, second_rtx = [line for line in trtexec.stdout.splitlines() if not line.startswith("#")]
    assert first.startswith("trtexec ") and first_rtx.startswith("tensorrt_rtx ")
    assert f"--saveEngine={extractor}" in first and "image:2x1x256x320" in first and "image:2x1x256x320" in first_rtx
    assert f"--saveEngine={matcher}" in second and "kpts0:1x256x2" in second and f"--saveEngine={matcher}" in second_rtx
    assert json.loads(manifest_path(matcher).read_text())["format"] == "lightglue-trt-engine/1"
