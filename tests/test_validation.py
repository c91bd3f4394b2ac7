"""Every case of the bad-input sweep (issue 12) as a test: one clear message and exit status 2 from the
command lines, one of the project's own errors from the Python API, nothing silently wrong, no file
changed but the outputs asked for. The systematic counterpart is test_properties.py.

The command lines run in this process (``bad_inputs.cli``, as their ``__main__`` runs them) on a tiny
real engine: the stand-in matcher built by tensorrt-rtx, served through the ONNX Runtime fallback.
"""

import json
import math
import re
import shutil
from dataclasses import fields, replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from bad_inputs import blank_png, cli, script, snapshot, texture, tiny_engine, write_png
from test_runtime import PROFILES, noisy_copy, random_features
from trt.contract import concrete_shape, input_specs, keypoint_dims
from trt.engine.manifest import (
    PROFILE_SCHEMA,
    SCHEMA,
    TENSOR_SCHEMA,
    Manifest,
    ProfileRecord,
    TensorRecord,
    load_manifest,
    manifest_path,
)
from trt.engine.profiles import KeypointProfile, ShapeTuple
from trt.errors import BuildError, ContractError, ImageError, UserError
from trt.features.base import Features
from trt.features.image import header_size, read_image
from trt.features.sift import SIFT
from trt.runtime.matcher import Matcher
from trt.runtime.onnxruntime_session import OnnxRuntimeSession
from trt.validation import DEFAULT_MAX_PIXELS, MAX_KEYPOINTS, check_threshold, pixel_limit

pytest.importorskip("tensorrt_rtx")
trt_infer, build_cli = script("trt_infer"), script("build_engine")


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Path:
    return tiny_engine(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def standin(engine) -> Path:
    return engine.parent / "tiny.onnx"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("images")
    base = texture(0, (120, 160))
    return write_png(folder / "a.png", base[:96, :128]), write_png(folder / "b.png", base[8:104, 12:140])


@pytest.fixture
def matcher(standin):
    with Matcher(OnnxRuntimeSession(standin, profiles=PROFILES)) as matcher:
        yield matcher


def assert_matches(line: str, pattern: str) -> None:
    assert re.search(pattern, line), line


def edited_engine(engine: Path, folder: Path, edit) -> Path:
    """A copy of the engine in ``folder`` whose manifest JSON ``edit`` changed (in place)."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = Path(shutil.copyfile(engine, folder / engine.name))
    data = json.loads(manifest_path(engine).read_text())
    data["onnx"]["path"] = str(engine.parent / "tiny.onnx")
    edit(data)
    manifest_path(copy).write_text(json.dumps(data))
    return copy


# --- build_engine.py -----------------------------------------------------------------------------------


def test_build_output_equal_to_an_input_is_refused_before_any_work(standin, tmp_path, monkeypatch):
    from trt.engine import builder

    monkeypatch.setattr(builder.NetworkFromOnnxPath, "__call__", lambda self: pytest.fail("the build started"))
    onnx = Path(shutil.copyfile(standin, tmp_path / "m.onnx"))
    profiles = Path(shutil.copyfile(standin.parent / "tiny.toml", tmp_path / "p.toml"))
    named_engine = Path(shutil.copyfile(standin, tmp_path / "x.engine"))  # an ONNX named .engine
    named_manifest = Path(shutil.copyfile(profiles, tmp_path / "e.engine.json"))  # a profile file named as a manifest
    named_fp16 = Path(shutil.copyfile(standin, tmp_path / "y.fp16.onnx"))  # an FP32 ONNX named as a build's FP16 graph
    before = snapshot(tmp_path)
    for argv, message in [
        (["--onnx", onnx, "--profiles", profiles, "--output", onnx], "the engine .*m.onnx is the same file as the ONNX"),
        (["--onnx", onnx, "--profiles", profiles, "--output", profiles], "the engine .*p.toml is the same file as the profile"),
        (["--onnx", named_engine, "--profiles", profiles], "the engine .*x.engine is the same file as the ONNX"),  # default output
        (["--onnx", onnx, "--profiles", named_manifest, "--output", tmp_path / "e.engine"],
         "its manifest .*e.engine.json is the same file as the profile file"),
        (["--onnx", named_fp16, "--profiles", profiles, "--output", tmp_path / "y.engine", "--precision", "fp16", "--no-gate"],
         "the FP16 ONNX .*y.fp16.onnx is the same file as the ONNX"),
    ]:
        assert_matches(cli(build_cli.main, [*argv, "--builder", "tensorrt-rtx"]).error, message)
    assert snapshot(tmp_path) == before


def test_build_print_trtexec_refuses_an_output_equal_to_its_onnx(standin, tmp_path):
    run = cli(build_cli.main, ["--onnx", standin, "--profiles", standin.parent / "tiny.toml", "--output", standin,
                               "--print-trtexec"])
    assert_matches(run.error, "is the same file as the ONNX")


@pytest.mark.parametrize("argv, message", [
    (["--onnx", ""], "argument --onnx: the path is empty"),
    (["--onnx", "{folder}"], "ONNX file .* is a folder, not a file"),
    (["--onnx", "{folder}/absent.onnx"], "ONNX file .*absent.onnx does not exist"),
    (["--onnx", "{onnx}", "--output", ""], "argument --output: the path is empty"),
    (["--onnx", "{onnx}", "--workspace", str(1 << 60)], "argument --workspace: the value must be an integer from 1"),
])
def test_build_paths_and_numbers(argv, message, standin, tmp_path):
    argv = [a.format(folder=tmp_path, onnx=standin) for a in argv]
    assert_matches(cli(build_cli.main, argv).error, message)
    assert list(tmp_path.iterdir()) == []


def test_a_profile_beyond_tensorrts_tensor_volume_is_refused_before_building(standin, tmp_path):
    profiles = tmp_path / "huge.toml"
    profiles.write_text("[batch]\nmin = 1\nopt = 1\nmax = 1\n\n[[profile]]\nkeypoints = { min = 1, opt = 64, max = 2147483647 }\n")
    run = cli(build_cli.main, ["--onnx", standin, "--profiles", profiles, "--output", tmp_path / "m.engine"])
    assert_matches(run.error, r"huge\.toml:6: profile 'n2147483647': at batch 1 and 2147483647 keypoints, .*attention "
                              r"scores are a \[1, 4, 2147483647, 2147483648\] tensor .* at most 524287 keypoints")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.toml"]


def test_errors_the_builder_logs_fail_the_build(standin):
    """tensorrt-rtx logs an impossible profile ("not self-consistent") as a warning and still serializes an
    engine; the build must fail. The profile here skips our own volume check to reach the builder."""
    from trt.engine.backends import get_backend
    from trt.engine.builder import ConfigFromProfiles, EngineBytesFromNetwork, NetworkFromOnnxPath

    huge = 2147483647
    shapes = {spec.name: ShapeTuple(*(concrete_shape(spec, keypoint_dims(1, n, n)) for n in (1, 64, huge))) for spec in input_specs(128, True)}
    profile = KeypointProfile("huge", shapes)
    parsed = NetworkFromOnnxPath(standin, get_backend("tensorrt-rtx"), echo_warnings=False)()
    config = ConfigFromProfiles([profile], target=["8.9"], progress=False)(parsed)
    with pytest.raises(BuildError, match="could not build the engine:\n.*not self-consistent"):
        EngineBytesFromNetwork(parsed, config)()


# --- trt_infer.py: flags --------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, message", [
    (["--engine", ""], "argument --engine: the path is empty"),
    (["--onnx", ""], "argument --onnx: the path is empty"),
    (["--max-keypoints", "2147483648"], "argument --max-keypoints: .* from 2 to 1048576, not 2147483648"),
    (["--resize", "100000"], "argument --resize: .* 0 \\(the original size\\) or 64 to 4096 pixels, not 100000"),
    (["--resize", "1"], "argument --resize: .* not 1"),
    (["--resize", "8"], "argument --resize: .* not 8"),
    (["--threshold", "nan"], "argument --threshold: .* 0 <= threshold < 1 .* not nan"),
    (["--threshold", "inf"], "argument --threshold: .* not inf"),
    (["--threshold", "1.5"], "argument --threshold: .* not 1.5"),
    (["--threshold", "-1"], "argument --threshold: .* not -1"),
    (["--threshold", "1"], "argument --threshold: .* not 1"),
    (["--max-pixels", "4000000000"], "argument --max-pixels: .* above the 1073741824 pixels OpenCV decodes"),
])
def test_bad_flags_are_refused_before_the_engine_loads(flags, message, engine, images, tmp_path, monkeypatch):
    monkeypatch.setattr(Matcher, "from_engine", lambda *a, **k: pytest.fail("the engine was loaded"))
    argv = ["--engine", engine, *images, "--output", tmp_path / "m.json", *flags]
    assert_matches(cli(trt_infer.main, argv).error, message)
    assert list(tmp_path.iterdir()) == []


def test_threshold_edges_and_json_without_nan(engine, images, tmp_path):
    for threshold in ("0", "0.999"):
        out = tmp_path / f"m{threshold}.json"
        run = cli(trt_infer.main, ["--engine", engine, *images, "--threshold", threshold, "--output", out])
        assert run.code == 0, run.stderr
        record = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
        assert record["threshold"] == float(threshold)
        assert all(float(threshold) < score <= 1 + 1e-6 for score in record["scores"])  # cosine similarity
    assert len(json.loads((tmp_path / "m0.json").read_text())["matches"]) > 10


def test_outputs_may_not_overwrite_inputs(engine, images, tmp_path):
    image = Path(shutil.copyfile(images[0], tmp_path / "a.png"))
    before = snapshot(tmp_path)
    run = cli(trt_infer.main, ["--engine", engine, image, images[1], "--viz", image])
    assert_matches(run.error, "--viz .*a.png is the same file as image0")
    run = cli(trt_infer.main, ["--engine", engine, *images, "--output", manifest_path(engine)])
    assert_matches(run.error, "--output .* is the same file as the engine's manifest")
    assert snapshot(tmp_path) == before


# --- trt_infer.py: images -------------------------------------------------------------------------------


def test_a_very_thin_image_is_refused_not_matched_empty(engine, images, tmp_path):
    thin = write_png(tmp_path / "thin.png", np.tile(texture(1, (16, 256)), (1, 20)))  # 16 x 5120: 3 x 1024 resized
    run = cli(trt_infer.main, ["--engine", engine, images[0], thin, "--output", tmp_path / "m.json"])
    assert_matches(run.error, r"image 1: .*5120x16 pixels: with its long side resized to 1024 it would be 1024x3, too thin.*--resize 0")
    assert not (tmp_path / "m.json").exists()
    run = cli(trt_infer.main, ["--engine", engine, images[0], thin, "--output", tmp_path / "m.json", "--resize", "0"])
    assert run.code == 0, run.stderr


def test_the_pixel_limit_is_read_from_the_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "black.png"
    path.write_bytes(blank_png(20000, 20000))
    assert path.stat().st_size < 1 << 20 and header_size(path.read_bytes()) == (20000, 20000)
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded an image over the pixel limit"))
    with pytest.raises(ImageError, match=r"black.png is 20000x20000 pixels \(400.0 megapixels\), more than the limit of "
                                         r"100000000 pixels: raise it with --max-pixels"):
        read_image(path)


def test_a_valid_40000_square_png_is_called_too_big_not_corrupt(engine, images, tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(blank_png(40000, 40000))
    for limit in ([], ["--max-pixels", str(1 << 30)]):
        run = cli(trt_infer.main, ["--engine", engine, images[0], path, *limit])
        assert_matches(run.error, "huge.png is 40000x40000 pixels .* more than the limit")
        assert "corrupt" not in run.error


def test_max_pixels_raises_and_lowers_the_limit(engine, images, tmp_path):
    big = write_png(tmp_path / "big.png", cv2.resize(texture(2), (1200, 900)))  # 1.08 megapixels
    run = cli(trt_infer.main, ["--engine", engine, images[0], big, "--max-pixels", "1000000"])
    assert_matches(run.error, "big.png is 1200x900 pixels .* more than the limit of 1000000 pixels")
    run = cli(trt_infer.main, ["--engine", engine, images[0], big, "--max-pixels", "1080000"])
    assert run.code == 0, run.stderr
    with pixel_limit(1_000_000):
        with pytest.raises(ImageError, match="more than the limit of 1000000"):
            read_image(big)
    assert read_image(big, max_pixels=2_000_000).shape == (900, 1200)
    assert DEFAULT_MAX_PIXELS == 100_000_000


@pytest.mark.parametrize("make, size", [
    (lambda image: cv2.imencode(".jpg", image)[1], (128, 96)),
    (lambda image: cv2.imencode(".png", image)[1], (128, 96)),
    (lambda image: cv2.imencode(".bmp", image)[1], (128, 96)),
    (lambda image: cv2.imencode(".tiff", image)[1], (128, 96)),
    (lambda image: cv2.imencode(".webp", image)[1], (128, 96)),
    (lambda image: cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])[1], (128, 96)),  # lossless
    (lambda image: cv2.imencode(".pgm", image)[1], (128, 96)),
    (lambda image: cv2.imencode(".ppm", cv2.merge([image] * 3))[1], (128, 96)),
    (lambda image: cv2.imencode(".pam", image)[1], (128, 96)),
    (lambda image: cv2.imencode(".pfm", image.astype(np.float32))[1], (128, 96)),
    (lambda image: cv2.imencode(".gif", cv2.merge([image] * 3))[1], (128, 96)),
], ids=["jpeg", "png", "bmp", "tiff", "webp", "webp-lossless", "pgm", "ppm", "pam", "pfm", "gif"])
def test_header_sizes_agree_with_opencv(make, size):
    data = make(texture(3)).tobytes()
    assert header_size(data) == size
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape[1::-1] == size


def test_exif_jpeg_size_is_found_after_the_exif_segment(data_dir):
    path = data_dir / "images/lightglue_assets/sacre_coeur1.jpg"
    width, height = header_size(path.read_bytes())
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    assert (width, height) == (image.shape[1], image.shape[0])


# --- trt_infer.py: engines and manifests ----------------------------------------------------------------


@pytest.mark.parametrize("case, edit, message", [
    ("engine-string", lambda d: d.update(engine="tiny.engine"), "engine: expected an object, got \"tiny.engine\""),
    ("engine-null", lambda d: d.update(engine=None), "engine: expected an object, got null"),
    ("onnx-string", lambda d: d.update(onnx="tiny.onnx"), "onnx: expected an object"),
    ("onnx-null", lambda d: d.update(onnx=None), "onnx: expected an object, got null"),
    ("no-profiles", lambda d: d.update(profiles=[]), "profiles: expected a non-empty list"),
    ("range-text", lambda d: d["profiles"][0].update(keypoints0=[1, "a", 512]),
     "profiles\\[0\\].keypoints0\\[1\\]: expected a positive integer, got \"a\""),
    ("range-order", lambda d: d["profiles"][0].update(keypoints1=[1, 512, 256]), "profiles\\[0\\].keypoints1: expected .* non-decreasing"),
    ("no-sha256", lambda d: d["engine"].pop("sha256"), "engine: missing field\\(s\\) sha256"),
    ("no-bytes", lambda d: d["engine"].pop("bytes"), "engine: missing field\\(s\\) bytes"),
    ("bad-target", lambda d: d["target"].update(compute_capability=[]), "target.compute_capability"),
    ("half-ranges", lambda d: d["profiles"][0].update(batch=None), "profiles\\[0\\]: batch, keypoints0 and keypoints1"),
])
def test_manifest_fields_are_type_checked(case, edit, message, engine, images, tmp_path):
    copy = edited_engine(engine, tmp_path / "engine", edit)
    if case in ("no-sha256", "no-bytes"):  # a truncated engine must not be served for want of the fields
        copy.write_bytes(copy.read_bytes()[:1000])
    run = cli(trt_infer.main, ["--engine", copy, *images, "--output", tmp_path / "m.json"])
    assert_matches(run.error, "corrupt engine manifest .*tiny.engine.json: " + message)
    assert not (tmp_path / "m.json").exists()


def test_the_manifest_schema_and_the_dataclasses_agree():
    assert set(SCHEMA.fields) == {f.name for f in fields(Manifest)}
    assert set(PROFILE_SCHEMA.fields) == {f.name for f in fields(ProfileRecord)}
    assert set(TENSOR_SCHEMA.fields) == {f.name for f in fields(TensorRecord)}
    # format: checked first, by itself
    assert SCHEMA.optional == {"timings", "created", "options", "format", "extractor_network", "extractor_engine",
                               "weights"}


def test_target_compute_capability_may_be_null_a_string_or_a_list(engine, tmp_path):
    for value in (None, "8.9", ["8.6", "8.9"]):
        copy = edited_engine(engine, tmp_path / str(value), lambda d: d["target"].update(compute_capability=value))
        assert load_manifest(copy).target == {"compute_capability": value}


@pytest.mark.parametrize("case, message", [
    ("garbage", "is not a TensorRT engine .*rebuild"),
    ("truncated", "has 100000 bytes but its header says .*truncated"),
    ("onnx", "is an ONNX model, not a TensorRT engine: build one with `python build_engine.py --onnx"),
])
def test_an_engine_without_manifest_is_still_looked_at(case, message, engine, standin, images, tmp_path):
    if case == "onnx":
        path = Path(shutil.copyfile(standin, tmp_path / "x.onnx"))
        argv = ["--engine", path]
    else:
        path = tmp_path / "trtexec.engine"
        path.write_bytes(b"\x00garbage" * 1000 if case == "garbage" else engine.read_bytes()[:100000])
        argv = ["--engine", path, "--onnx", standin]
    assert_matches(cli(trt_infer.main, [*argv, *images, "--output", tmp_path / "m.json"]).error, message)
    assert not (tmp_path / "m.json").exists()
    # the same whole engine without its manifest is served, with the ONNX given
    whole = tmp_path / "whole.engine"
    whole.write_bytes(engine.read_bytes())
    assert cli(trt_infer.main, ["--engine", whole, "--onnx", standin, *images]).code == 0


def test_an_extractor_engine_is_not_taken_for_a_matcher(images, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from trt.engine.builder import build_engine

    value = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["scores"])], "extractor",
                              [value("image", [1, 1, 32, 32])], [value("scores", [1, 1, 32, 32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "extractor.onnx"))
    extractor = build_engine(tmp_path / "extractor.onnx", output=tmp_path / "extractor.engine", builder="tensorrt-rtx",
                             progress=False)
    run = cli(trt_infer.main, ["--engine", extractor, *images])
    assert_matches(run.error, r"extractor.engine is not a LightGlue matcher: its manifest records the inputs "
                              r"image \[1, 1, 32, 32\] \(a feature extractor\?\)")
    assert "does not follow the matcher contract" not in run.error


# --- the Python API ---------------------------------------------------------------------------------------


def good_pair(seed: int = 0, n: int = 40):
    rng = np.random.default_rng(seed)
    f0 = random_features(rng, n)
    return f0, noisy_copy(rng, f0, n)


def change(features: Features, **values) -> Features:
    return replace(features, **values)


@pytest.mark.parametrize("edit, error, message", [
    (lambda f: change(f, descriptors=f.descriptors[:-1]), ContractError, "image 1: 40 keypoints but 39 descriptors"),
    (lambda f: change(f, keypoints=np.hstack([f.keypoints, f.keypoints[:, :1]])), ContractError,
     r"image 1: keypoints must have shape \(N, 2\)"),
    (lambda f: change(f, scales=f.scales[:-3]), ContractError, "image 1: 37 scales for 40 keypoints"),
    (lambda f: change(f, image_size=(640.0, 480.0, 1.0)), ContractError, r"image 1: image_size must be \(width, height\)"),
    (lambda f: change(f, image_size=(0, 0)), ContractError, "image 1: image_size must be two finite numbers of at least 1"),
    (lambda f: change(f, image_size=(-640, 480)), ContractError, "image_size must be two finite numbers"),
    (lambda f: change(f, image_size=(640, math.nan)), ContractError, "image_size must be two finite numbers"),
    (lambda f: change(f, descriptors=f.descriptors.astype(np.complex64)), ContractError, "expected numbers"),
    (lambda f: change(f, keypoints=f.keypoints * 1e6), ContractError, "keypoint row 0 .* lies outside the 640x480 image"),
    (lambda f: change(f, descriptors=f.descriptors[:, :64]), ContractError, "64-D descriptors, but the model takes 128-D"),
    (lambda f: change(f, scales=None, oris=None), ContractError, "the model reads scales and orientations"),
    (lambda f: "not features", ImageError, "image 1: .*expected a numpy array, got str|image not features does not exist"),
], ids=["lengths", "kpts-n3", "scales-length", "size-3", "size-0", "size-negative", "size-nan", "complex", "outside",
        "dim", "no-scales", "not-features"])
def test_api_shapes_and_types_raise_project_errors(matcher, edit, error, message):
    f0, f1 = good_pair()
    with pytest.raises(error, match=message):
        matcher.match_features(f0, edit(f1))


@pytest.mark.parametrize("field, row, value", [
    ("descriptors", 17, math.nan), ("descriptors", 3, math.inf), ("keypoints", 5, math.nan), ("scales", 9, -math.inf),
    ("oris", 0, math.nan), ("scores", 12, math.nan),
])
def test_one_bad_number_is_refused_by_row_not_matched_to_nothing(matcher, field, row, value):
    f0, f1 = good_pair()
    assert len(matcher.match_features(f0, f1)) == 40  # the pair matches ...
    poisoned = getattr(f1, field).copy()
    poisoned[row] = value
    with pytest.raises(ContractError, match=f"image 1: {field} row {row} is not finite"):  # ... one bad number is named
        matcher.match_features(f0, change(f1, **{field: poisoned}))


def test_pairs_must_be_pairs(matcher):
    f0, f1 = good_pair()
    with pytest.raises(UserError, match="pair 1 has 3 member"):
        matcher.match_pairs([(f0, f1), (f0, f1, f0)])
    with pytest.raises(UserError, match="pair 0 must be a pair"):
        matcher.match_pairs([f0])
    with pytest.raises(UserError, match="pairs must be a list"):
        matcher.match_pairs("a.jpg b.jpg")
    with pytest.raises(ContractError, match="pair 1, image 0: keypoints row 2 is not finite"):
        bad = f0.keypoints.copy()
        bad[2, 1] = math.nan
        matcher.match_pairs([(f0, f1), (change(f0, keypoints=bad), f1)])
    assert matcher.match_pairs([]) == []
    assert [len(r) for r in matcher.match_pairs(iter([(f0, f1)]))] == [40]  # any iterable of pairs


@pytest.mark.parametrize("value", ["0.2", None, True, math.nan, math.inf, -1, 1, 1.5, np.float64(1.0), [0.1], 1 - 1e-9])
def test_api_threshold_outside_its_range_is_refused(standin, value):
    with pytest.raises(UserError, match="threshold must be a number with 0 <= threshold < 1"):
        Matcher(OnnxRuntimeSession(standin), threshold=value)


def test_api_threshold_range():
    assert check_threshold(0) == 0.0 and check_threshold(np.float32(0.5)) == 0.5 and check_threshold(0.9999) == 0.9999


@pytest.mark.parametrize("options, message", [
    ({"max_keypoints": 2**31}, "max_keypoints must be an integer from 2 to 1048576"),
    ({"max_keypoints": 2.5}, "max_keypoints must be an integer"),
    ({"resize": 100000}, "resize must be None .* 64 to 4096 pixels"),
    ({"resize": 8}, "resize must be None"),
    ({"resize": 0}, "resize must be None"),
    ({"extractor": 5}, "extractor must be a feature type's name or a callable"),
])
def test_api_matcher_options(standin, options, message):
    with pytest.raises(UserError, match=message):
        Matcher(OnnxRuntimeSession(standin), **options)


def test_api_engine_paths(tmp_path):
    with pytest.raises(UserError, match="the engine path is empty"):
        Matcher.from_engine("")
    with pytest.raises(UserError, match="the ONNX path is empty"):
        Matcher.from_engine(tmp_path / "m.engine", onnx="")


def test_sift_options_are_bounded():
    with pytest.raises(UserError, match="max_num_keypoints must be an integer from 1 to"):
        SIFT(max_num_keypoints=MAX_KEYPOINTS + 1)
    with pytest.raises(UserError, match="num_octaves"):
        SIFT(num_octaves=2**31)
    with pytest.raises(UserError, match="resize"):
        SIFT(resize=2**40)
    with pytest.raises(ImageError, match="too thin"):
        SIFT(resize=1024)(np.zeros((16, 6000), np.uint8))


def test_images_through_the_api(matcher):
    image = texture(4)
    with pytest.raises(ImageError, match="image 0: .*expected uint8 samples, got float32"):
        matcher.match(image.astype(np.float32), image)
    with pytest.raises(ImageError, match=r"image 1: .*expected shape \(H, W\) grayscale or \(H, W, 3\) RGB"):
        matcher.match(image, image[..., None])
    with pixel_limit(1000):
        with pytest.raises(ImageError, match="more than the limit of 1000 pixels"):
            matcher.match(image, image)
    assert len(matcher.match(image, image)) > 10
