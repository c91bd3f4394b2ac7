"""Property-based tests (Hypothesis) of the promise "a correct result, or one of the project's own errors
with a message, and no file changed but the outputs asked for", over the Python API and the command
lines' argument space: random shapes and dtypes, NaN and inf, sizes at and around every limit, damaged
image files and manifests, paths with odd characters.

Each property knows, from the documented limits, whether its input is valid: a valid input must give a
result whose invariants hold, an invalid one a UserError (or argparse's exit status 2), never another
exception. Examples are derandomized (a fixed seed) and bounded, so the suite is the same on every run
and takes about a minute on two cores.
"""

import json
import math
import re
import shutil
import struct
import zlib
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bad_inputs import blank_png, cli, script, snapshot, texture, tiny_engine, write_png
from test_runtime import PROFILES
from trt.engine.manifest import load_manifest, manifest_path
from trt.errors import UserError
from trt.features.base import Features
from trt.features.image import header_size, read_image
from trt.features.sift import resized_size
from trt.runtime.base import Profile
from trt.runtime.matcher import Matcher, MatchResult
from trt.runtime.onnxruntime_session import OnnxRuntimeSession
from trt.runtime.outputs import encode_json, result_record
from trt.validation import (
    MAX_KEYPOINTS,
    MAX_RESIZE,
    MIN_IMAGE_SIDE,
    MIN_KEYPOINTS,
    MIN_RESIZE,
    opencv_max_pixels,
    pixel_limit,
)

pytest.importorskip("tensorrt_rtx")
trt_infer, build_cli = script("trt_infer"), script("build_engine")


def bounded(examples: int):
    """Derandomized, bounded, no deadline (the machine is shared), no example database in the checkout."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Path:
    return tiny_engine(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def matcher(engine):
    with Matcher(OnnxRuntimeSession(engine.parent / "tiny.onnx", profiles=PROFILES), threshold=0.5) as matcher:
        yield matcher


def assert_result(result: MatchResult, n0: int, n1: int, threshold: float) -> None:
    """What every result promises (trt.runtime.matcher), and that it is valid JSON."""
    k = len(result.matches)
    assert result.matches.shape == (k, 2) and result.matches.dtype == np.int64
    assert len(result.keypoints0) == n0 and len(result.keypoints1) == n1
    assert ((0 <= result.matches[:, 0]) & (result.matches[:, 0] < n0)).all()
    assert ((0 <= result.matches[:, 1]) & (result.matches[:, 1] < n1)).all()
    np.testing.assert_array_equal(result.matches0[result.matches[:, 0]], result.matches[:, 1])
    np.testing.assert_array_equal(result.matches1[result.matches[:, 1]], result.matches[:, 0])
    assert (result.matches0 >= -1).all() and (result.matches0 < n1).all()
    assert np.isfinite(result.scores).all() and (result.scores > threshold).all()
    json.loads(encode_json(result_record(result, threshold=threshold)))  # allow_nan=False: no NaN can pass


def assert_user_error(error: UserError) -> None:
    assert str(error).strip(), "a user error without a message"


# --- the Python API: features -------------------------------------------------------------------------

GOOD_DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8]
BAD_DTYPES = [np.bool_, np.complex64, object, "U8"]
NON_FINITE = [math.nan, math.inf, -math.inf]


@st.composite
def features(draw, capacity: int = 64):
    """(Features, valid): every field drawn right or wrong in one of several ways, and whether all are right."""
    n = draw(st.sampled_from([0, 1, 2, 3, 17, capacity - 1, capacity, capacity + 1]))
    width, height = draw(st.sampled_from([(640.0, 480.0), (1.0, 1.0), (16, 4000)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    valid = True

    def field(value: np.ndarray) -> np.ndarray:
        """``value`` as a good dtype, or spoiled: a bad dtype, a non-finite entry, a row too many or few, a bad rank."""
        nonlocal valid
        kind = draw(st.sampled_from(["good"] * 6 + ["dtype", "nonfinite", "length", "rank"]))
        if kind == "dtype":
            valid = False
            return value.astype(draw(st.sampled_from([np.bool_, np.complex64, object, str])))
        if kind == "nonfinite" and value.size > 0:
            valid = False
            value = value.copy()
            value.reshape(n, -1)[draw(st.integers(0, n - 1)), 0] = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e39]))
            return value  # float64: 1e39 is finite here, not in the float32 the engine takes
        if kind == "length":
            valid = False
            return value[:-1] if n > 0 else np.concatenate([value, np.ones((1, *value.shape[1:]))])
        if kind == "rank":
            valid = False
            return value.reshape(-1) if value.ndim == 2 else value[:, None]
        dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8]))
        return (np.round(value) if np.issubdtype(dtype, np.integer) else value).astype(dtype)

    keypoints = rng.uniform(0, 1, (n, 2)) * [width, height]
    if n > 0 and draw(st.integers(0, 9)) == 0:  # a keypoint far outside the image
        keypoints[draw(st.integers(0, n - 1))] += 3 * max(width, height)
        valid = False
    keypoints = field(keypoints)
    dim = draw(st.sampled_from([128] * 4 + [127, 64, 0]))
    valid = valid and dim == 128
    descriptors = field(rng.normal(size=(n, dim)))
    scores = field(rng.uniform(0, 1, n)) if draw(st.booleans()) else None
    scale_ori = draw(st.sampled_from(["both"] * 3 + ["none", "scales only"]))
    scales = field(rng.uniform(1, 10, n)) if scale_ori != "none" else None
    oris = field(rng.uniform(0, 6, n)) if scale_ori == "both" else None
    valid = valid and scale_ori == "both"  # the stand-in is a SIFT model: it reads both
    size = draw(st.sampled_from([(width, height)] * 6 + [(0, 0), (-640, 480), (640, 480, 1), (math.nan, 1), (math.inf, 2),
                                                          ("640", "480"), None, 640, (0.5, 10)]))
    valid = valid and size == (width, height)
    return Features(keypoints, descriptors, size, scores, scales, oris), valid


@bounded(120)
@given(features(), features())
def test_any_features_give_a_result_or_a_contract_error(matcher, side0, side1):
    (f0, valid0), (f1, valid1) = side0, side1
    try:
        result = matcher.match_features(f0, f1)
    except UserError as error:
        assert_user_error(error)
        assert not (valid0 and valid1), f"valid features refused: {error}"
        return
    assert valid0 and valid1, "invalid features were matched"
    assert_result(result, min(len(f0.keypoints), 64), min(len(f1.keypoints), 64), matcher.threshold)


PAIR_SHAPES = {
    "pair": lambda f: (f, f), "list": lambda f: [f, f], "single": lambda f: (f,), "triple": lambda f: (f, f, f),
    "bare": lambda f: f, "none": lambda f: None, "string": lambda f: "a.png b.png",
}


@bounded(40)
@given(st.lists(st.sampled_from(sorted(PAIR_SHAPES)), max_size=5))
def test_any_pairs_give_results_in_order_or_an_error(matcher, shapes):
    rng = np.random.default_rng(0)
    f = Features(rng.uniform(0, 100, (20, 2)), rng.normal(size=(20, 128)), (100, 100), None,
                 rng.uniform(1, 2, 20), rng.uniform(0, 1, 20))
    pairs = [PAIR_SHAPES[shape](f) for shape in shapes]
    valid = all(shape in ("pair", "list") for shape in shapes)
    try:
        results = matcher.match_pairs(pairs)
    except UserError as error:
        assert_user_error(error)
        assert not valid
        return
    assert valid and len(results) == len(pairs)
    for result in results:
        assert_result(result, 20, 20, matcher.threshold)


# --- the Python API: images and settings ---------------------------------------------------------------


@bounded(60)
@given(st.sampled_from([0, 1, MIN_IMAGE_SIDE - 1, MIN_IMAGE_SIDE, MIN_IMAGE_SIDE + 1, 64, 100]),
       st.sampled_from([MIN_IMAGE_SIDE, 64, 100, 1100, 1500]),
       st.sampled_from([(), (1,), (3,), (4,)]),
       st.sampled_from([np.uint8] * 4 + [np.uint16, np.float32, np.bool_, np.int8]),
       st.sampled_from([None, MIN_RESIZE, 1024]),
       st.booleans())
def test_any_array_gives_features_or_an_image_error(engine, short, long, channels, dtype, resize, transpose):
    height, width = (long, short) if transpose else (short, long)
    image = texture(5, (max(height, 1), max(width, 1)))[:height, :width]
    image = (np.stack([image] * channels[0], axis=-1) if channels else image).astype(dtype)
    resized = resized_size(width, height, resize) if resize and min(width, height) > 0 else (width, height)
    valid = (dtype == np.uint8 and channels in ((), (3,)) and min(height, width) >= MIN_IMAGE_SIDE
             and min(resized) >= MIN_IMAGE_SIDE)
    with Matcher(OnnxRuntimeSession(engine.parent / "tiny.onnx", profiles=PROFILES), resize=resize, threshold=0.5) as matcher:
        try:
            result = matcher.match(image, image)
        except UserError as error:
            assert_user_error(error)
            assert not valid, f"a valid image refused: {error}"
            return
    assert valid
    assert_result(result, len(result.keypoints0), len(result.keypoints1), matcher.threshold)
    assert result.image_size0 == (width, height) and len(result.keypoints0) <= 64


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 0.0, 0.999999, 1.0, 1 - 1e-9, MAX_KEYPOINTS, MAX_KEYPOINTS + 1, MIN_RESIZE - 1, MIN_RESIZE,
                     MAX_RESIZE, MAX_RESIZE + 1, 2**31 - 1, 2**31, np.float32(0.5), np.int64(64), True, None, "0.5", [1]]),
)


@bounded(120)
@given(st.floats(0, 1, exclude_max=True) | NUMBERS,
       st.none() | st.integers(MIN_KEYPOINTS, MAX_KEYPOINTS) | NUMBERS,
       st.none() | st.integers(MIN_RESIZE, MAX_RESIZE) | NUMBERS)
def test_matcher_settings_are_taken_within_their_ranges_or_refused(engine, threshold, max_keypoints, resize):
    def integer(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    valid = (
        (integer(threshold) or isinstance(threshold, (float, np.floating))) and 0 <= min(threshold, 2) < 1
        and np.float32(min(threshold, 2)) < 1
        and (max_keypoints is None or integer(max_keypoints) and MIN_KEYPOINTS <= max_keypoints <= MAX_KEYPOINTS)
        and (resize is None or integer(resize) and MIN_RESIZE <= resize <= MAX_RESIZE)
    )
    try:
        matcher = Matcher(OnnxRuntimeSession(engine.parent / "tiny.onnx"), threshold=threshold,
                          max_keypoints=max_keypoints, resize=resize)
    except UserError as error:
        assert_user_error(error)
        assert not valid, f"valid settings refused: {error}"
        return
    with matcher:
        assert valid and 0 <= matcher.threshold < 1 and isinstance(matcher.threshold, float)


# --- image files ---------------------------------------------------------------------------------------


def encode(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    return data.tobytes() if ok else encode(image, ".png")  # (an encoder may refuse a 1-pixel-high image)


def with_png_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims another size (CRC fixed, so only the size is wrong)."""
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]


LIMIT = 1_000_000  # the pixel limit image files are read under here: sizes around it stay cheap to try


@st.composite
def image_files(draw):
    kind = draw(st.sampled_from(["encoded"] * 4 + ["png-size", "blank", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=64)), "random"
    if kind == "blank":  # valid files at and around the pixel limit, and OpenCV's side limit
        width, height = draw(st.sampled_from([(1000, 1000), (1000, 1001), (1001, 1000), (16, 62500), (16, 62501),
                                              (1 << 20, 16), ((1 << 20) + 1, 16), (15, 1000)]))
        return blank_png(width, height), "blank"
    h, w = draw(st.sampled_from([1, 15, 16, 40])), draw(st.sampled_from([16, 33, 100]))
    image = texture(draw(st.integers(0, 9)), (h, w))
    if draw(st.booleans()):
        image = cv2.merge([image, image[::-1], image])
    data = encode(image, draw(st.sampled_from([".png", ".jpg", ".bmp", ".tiff", ".webp", ".pgm" if image.ndim == 2 else ".ppm"])))
    if kind == "png-size":
        data = encode(image, ".png")
        side = draw(st.sampled_from([0, 1, 16, 1000, 1001, 1 << 20, (1 << 20) + 1, 2**31 - 1, 2**32 - 1]))
        data = with_png_size(data, side, draw(st.sampled_from([16, 999, 1000, 1001, 1 << 16])))
    damage = draw(st.sampled_from(["none"] * 3 + ["truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip":
        data = bytearray(data)
        data[draw(st.integers(0, len(data) - 1))] ^= 0xFF
        data = bytes(data)
    return data, kind


@bounded(150)
@given(image_files())
def test_any_file_gives_an_image_or_an_image_error_and_big_ones_are_never_decoded(tmp_path_factory, file):
    data, kind = file
    path = tmp_path_factory.getbasetemp() / "property.img"
    path.write_bytes(data)
    size = header_size(data)
    with mock.patch.object(cv2, "imdecode", wraps=cv2.imdecode) as decode, pixel_limit(LIMIT):
        try:
            image = read_image(path)
        except UserError as error:
            assert_user_error(error)
            assert str(path) in str(error)
            if size is not None and size[0] * size[1] > LIMIT:
                assert decode.call_count == 0 and "more than the limit" in str(error)
            return
    assert image.dtype == np.uint8 and image.ndim in (2, 3) and (image.ndim == 2 or image.shape[2] == 3)
    assert min(image.shape[:2]) >= MIN_IMAGE_SIDE and image.shape[0] * image.shape[1] <= LIMIT
    assert size is None or sorted(size) == sorted(image.shape[:2])  # (EXIF may rotate)


# --- manifests -----------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def json_paths(value, prefix=()):
    """Every path into a JSON document: keys of objects, indices of lists."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, prefix + (index,))


@bounded(80)
@given(st.data())
def test_any_damaged_manifest_is_read_or_refused_as_corrupt(engine, tmp_path_factory, data):
    document = json.loads(manifest_path(engine).read_text())
    paths = [p for p in json_paths(document) if p]
    shallow = [p for p in paths if len(p) <= 2]  # the deep ones are mostly the many shapes of the profiles
    path = data.draw(st.sampled_from(shallow) | st.sampled_from(paths), label="path")
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans(), label="delete") and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JSON_VALUES, label="value")
    folder = tmp_path_factory.getbasetemp() / "manifest-property"
    folder.mkdir(exist_ok=True)
    copy = folder / engine.name
    shutil.copyfile(engine, copy)
    shutil.copyfile(engine.parent / "tiny.onnx", folder / "tiny.onnx")
    manifest_path(copy).write_text(json.dumps(document))
    try:
        manifest = load_manifest(copy)
        with Matcher.from_engine(copy, backend="onnxruntime") as matcher:
            assert matcher.capacity[0] >= 1
    except UserError as error:
        assert_user_error(error)
        return
    for record in manifest.profiles:  # what the runtime relies on, once a manifest is read
        Profile.from_record(record)
    assert len(manifest.engine["sha256"]) == 64 and manifest.engine["bytes"] == copy.stat().st_size


# --- the command lines ---------------------------------------------------------------------------------


def flag_values(values):
    return st.sampled_from([str(v) for v in values]) | st.text(max_size=6)


THRESHOLDS = flag_values([0, 0.0, 0.1, 0.99999, 1, 1.0, -0.0, -1, 1.5, "nan", "inf", "-inf", "1e-300", "1e400", "0x1", ""])
KEYPOINTS = flag_values([-1, 0, 1, 2, 3, 4096, MAX_KEYPOINTS - 1, MAX_KEYPOINTS, MAX_KEYPOINTS + 1, 2**31, 2**63, "2.0"])
RESIZES = flag_values([-1, 0, 1, 8, MIN_RESIZE - 1, MIN_RESIZE, 1024, MAX_RESIZE, MAX_RESIZE + 1, 100000])
PIXELS = flag_values([0, 1, 255, 256, 10**8, opencv_max_pixels(), opencv_max_pixels() + 1, 2**64])


def parses_as(text: str, kind):
    """``text`` as argparse hands it to the flag's type and that type reads it; None where either refuses."""
    if text.startswith("-") and not re.fullmatch(r"-\d+|-\d*\.\d+", text):
        return None  # argparse takes it for an option, not a value
    try:
        return kind(text) if kind is float else int(text, 10)
    except ValueError:
        return None


FLAG_VALUES = {  # in range, at and around the limits, or any text
    "--threshold": st.floats(0, 1, exclude_max=True).map(repr) | THRESHOLDS,
    "--max-keypoints": st.integers(MIN_KEYPOINTS, MAX_KEYPOINTS).map(str) | KEYPOINTS,
    "--resize": st.integers(MIN_RESIZE, MAX_RESIZE).map(str) | RESIZES,
    "--max-pixels": st.integers(MIN_IMAGE_SIDE**2, opencv_max_pixels()).map(str) | PIXELS,
}


FLAG_IN_RANGE = {  # the documented ranges (README, "Reliability"), as the flag's text
    "--threshold": lambda v: (f := parses_as(v, float)) is not None and 0 <= min(f, 2) < 1 and np.float32(min(f, 2)) < 1,
    "--max-keypoints": lambda v: (i := parses_as(v, int)) is not None and MIN_KEYPOINTS <= i <= MAX_KEYPOINTS,
    "--resize": lambda v: (i := parses_as(v, int)) is not None and (i == 0 or MIN_RESIZE <= i <= MAX_RESIZE),
    "--max-pixels": lambda v: (i := parses_as(v, int)) is not None and MIN_IMAGE_SIDE**2 <= i <= opencv_max_pixels(),
}


@bounded(200)
@given(st.fixed_dictionaries({}, optional=FLAG_VALUES))
def test_serving_flags_are_taken_within_their_ranges_or_refused_by_argparse(flags):
    argv = ["--engine", "x.engine", "a.png", "b.png"] + [item for pair in flags.items() for item in pair]
    valid = all(FLAG_IN_RANGE[flag](value) for flag, value in flags.items())
    run = cli(trt_infer.parse_args, argv)
    if valid:
        assert run.code == 0, run.stderr
        args = run.value
        assert 0 <= args.threshold < 1 and args.resize in range(0, MAX_RESIZE + 1)
        assert args.max_keypoints is None or MIN_KEYPOINTS <= args.max_keypoints <= MAX_KEYPOINTS
    else:
        assert run.code == 2 and "error: argument" in run.stderr, run.stderr


ODD_NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0") | st.sampled_from(
    [" ", "-", "'", '"', "=", "*", "?", "\n", "\udcff", "é", "中", "\u202e"]), min_size=1, max_size=12)


@st.composite
def serving_runs(draw):
    """Argument lists of trt_infer.py for one pair: odd file names, outputs of any suffix, flags near limits."""
    names = {
        "image0": draw(ODD_NAME) + ".png", "image1": draw(st.sampled_from(["b.png", "b b.png", "-b.png", "b.JPG"])),
    }
    argv = ["--engine", "@engine", "@image0", "@image1"]
    outputs = []
    for flag in ("--output", "--viz"):
        if draw(st.booleans()):
            name = draw(ODD_NAME | st.sampled_from(["", ".", "..", "@image0"]))
            name += draw(st.sampled_from([".json", ".npz", ".png", ".txt", ""]))
            argv += [flag, name]
            outputs.append(name)
    for flag, values in (("--threshold", ["0", "0.5", "nan", "1"]), ("--max-keypoints", ["2", "64", "1", "9999999"]),
                         ("--resize", ["0", "64", "300", "63"]), ("--max-pixels", ["256", "100000", "10"])):
        if draw(st.booleans()):
            argv += [flag, draw(st.sampled_from(values))]
    return names, argv, outputs


@bounded(40)
@given(serving_runs())
def test_serving_runs_write_exactly_the_outputs_asked_for_or_nothing(engine, tmp_path_factory, run_spec):
    names, argv, outputs = run_spec
    folder = tmp_path_factory.mktemp("run")
    base = texture(6, (110, 150))
    write_png(folder / names["image0"], base[:96, :128])
    cv2.imwrite(str(folder / "tmp.png"), base[10:106, 12:140])
    (folder / "tmp.png").rename(folder / names["image1"])
    paths = {"@engine": str(engine), "@image0": names["image0"], "@image1": names["image1"]}
    argv = [paths.get(a, a.replace("@image0", names["image0"])) for a in argv]
    outputs = [o.replace("@image0", names["image0"]) for o in outputs]
    before = snapshot(folder)
    engine_before = snapshot(engine.parent, skip_caches=True)
    run = cli(trt_infer.main, argv, cwd=folder)
    after = snapshot(folder)
    assert snapshot(engine.parent, skip_caches=True) == engine_before
    if run.code != 0:
        assert run.error and after == before, run.stderr
        return
    written = {str(Path(p)) for p in run.value}
    assert written == {str(Path(o)) for o in outputs}
    flags = dict(zip(argv[4::2], argv[5::2]))
    assert all(check(flags[flag]) for flag, check in FLAG_IN_RANGE.items() if flag in flags), flags
    assert {k: v for k, v in after.items() if k not in written} == before  # inputs untouched, nothing else written
    for path in written:
        data = (folder / path).read_bytes()
        if path.lower().endswith(".json"):
            json.loads(data, parse_constant=lambda name: pytest.fail(f"{name} in {path}"))
        elif path.lower().endswith(".npz"):
            with np.load(folder / path) as npz:
                assert np.isfinite(npz["scores"]).all()
        else:
            assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None


@bounded(60)
@given(st.sampled_from(["@onnx", "", "@folder", "@missing", "@text", "@onnx.engine"]),
       st.none() | ODD_NAME.map(lambda name: name + ".engine") | st.sampled_from(["@onnx", "@profiles", ""]),
       st.none() | flag_values([0, 1, 256, 2**24, 2**24 + 1, 2**44]),
       st.none() | st.sampled_from(["0", "5", "6", "-1", "x"]),
       st.sampled_from([[], ["--precision", "fp16"], ["--precision", "fp8"], ["--target-sm", "12.0"], ["--target-sm", "5.0"],
                        ["--builder", "tensorrt"]]))
def test_build_arguments_give_the_command_or_one_error_and_write_nothing(engine, tmp_path_factory, onnx, output, workspace,
                                                                         opt_level, extra):
    folder = tmp_path_factory.mktemp("build")
    shutil.copyfile(engine.parent / "tiny.onnx", folder / "m.onnx")
    shutil.copyfile(engine.parent / "tiny.onnx", folder / "m.engine")
    shutil.copyfile(engine.parent / "tiny.toml", folder / "p.toml")
    (folder / "notes.txt").write_text("not an ONNX")
    (folder / "sub").mkdir()
    paths = {"@onnx": "m.onnx", "@folder": "sub", "@missing": "absent.onnx", "@text": "notes.txt", "@onnx.engine": "m.engine",
             "@profiles": "p.toml"}
    argv = ["--onnx", paths.get(onnx, onnx), "--profiles", "p.toml", "--print-trtexec", *extra]
    if output is not None:
        argv += ["--output", paths.get(output, output)]
    if workspace is not None:
        argv += ["--workspace", workspace]
    if opt_level is not None:
        argv += ["--opt-level", opt_level]
    before = snapshot(folder)
    run = cli(build_cli.main, argv, cwd=folder)
    assert snapshot(folder) == before
    if run.code == 0:
        assert "\ntrtexec --onnx=" in run.stdout and "\ntensorrt_rtx --onnx=" in run.stdout and "--saveEngine=" in run.stdout
        assert onnx in ("@onnx", "@onnx.engine") and output not in ("@profiles", "")
        assert paths.get(output, output) != paths[onnx] and not (output is None and onnx == "@onnx.engine")
    else:
        assert run.error
