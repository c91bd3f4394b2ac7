"""Serving the learned extractors (issue 10, phase B): the front-end (``trt.runtime.learned_extractor``), the
Matcher with an extractor runner, ``trt_infer.py`` with a matcher engine linked to its extractor engine
(HPatches v_graffiti through ALIKED and the nearest-neighbour matcher), the TensorRT session's real code
on the emulated runtime against ONNX Runtime, and every bad input of the issue end to end.

The session's exports and default-profile extractor engines (conftest) are reused; the engines built
here are small (one profile each).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from conftest import build_extractor_engine, profile_toml
from test_runtime import make_standin_onnx

from trt.contract import BATCH
from trt.engine.backends import TensorRTRTX
from trt.engine.builder import build_engine
from trt.engine.manifest import manifest_path
from trt.errors import ContractError, ImageError
from trt.evaluation.metrics import corner_error
from trt.extractor_contract import HEIGHT, WIDTH, ExtractorLayout
from trt.features.image import read_image
from trt.runtime.learned_extractor import LearnedExtractor
from trt.features.sift import resized_size
from trt.onnx.export_extractor import feature_agreement
from trt.runtime.base import ExtractorContract, Profile, plan_batches
from trt.jobs.job import JOB_FILE
from trt.runtime.matcher import Matcher
from trt.runtime.onnxruntime_session import OnnxRuntimeSession

ROOT = Path(__file__).resolve().parents[1]
EMULATOR = ROOT / "tests" / "emulator"
GRAFFITI = "images/hpatches/v_graffiti"
SMALL_IMAGES = """[batch]
min = 1
opt = 1
max = 2

[[profile]]
name = "256x320"
height = { min = 64, opt = 256, max = 256 }
width = { min = 64, opt = 320, max = 320 }
"""
needs_rtx = pytest.mark.skipif(not TensorRTRTX.available(), reason="tensorrt-rtx is not installed")


def run_infer(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "trt_infer.py"), *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


def one_error(done: subprocess.CompletedProcess, pattern: str) -> None:
    """Exit status 2 and one line on stderr, matching ``pattern``."""
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith(("notice:", "warning:"))]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def aliked_runner(aliked_extractor_onnx):
    with OnnxRuntimeSession(aliked_extractor_onnx) as runner:
        yield runner


@pytest.fixture(scope="module")
def graffiti(data_dir) -> list[np.ndarray]:
    return [read_image(data_dir / GRAFFITI / f"{i}.ppm") for i in (1, 2)]


# ---------------------------------------------------------------------------------------------------
# The front-end on ONNX Runtime


def test_the_extractor_contract_is_read_from_the_onnx(aliked_runner):
    contract = aliked_runner.contract
    assert contract == ExtractorContract(ExtractorLayout(3, 2048, 128), 32, "centre-replicate", "aliked-n16", "aliked")
    (profile,) = aliked_runner.profiles  # no engine: any size, in steps of the stride
    assert profile.dimensions == (BATCH, HEIGHT, WIDTH) and profile.height[:2] == (32, 32)


@pytest.mark.slow
def test_front_end_equals_the_reference_pipeline(aliked_runner, aliked_checkpoint, graffiti):
    """cvg/LightGlue's Extractor.extract (kornia's antialiased resize of the RGB image to the long side, the
    network, keypoints scaled back) with kornia's ALIKED, against ours: the issue's parity criteria, in
    pixels of the network's input."""
    import kornia
    import torch
    from kornia.feature import ALIKED as KorniaALIKED

    image = graffiti[0]  # 800x640, resized to 512x409
    reference = KorniaALIKED("aliked-n16", max_num_keypoints=2048, detection_threshold=0.2, nms_radius=2).eval()
    reference.load_state_dict(torch.load(aliked_checkpoint, weights_only=True), strict=False)
    tensor = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
    resized = kornia.geometry.transform.resize(tensor, 512, side="long", antialias=True)
    scale = np.array([resized.shape[-1] / image.shape[1], resized.shape[-2] / image.shape[0]], np.float32)
    with torch.no_grad():
        expected = reference(resized)[0]
    ours = LearnedExtractor(aliked_runner, resize=512)(image)
    assert ours.image_size == (800.0, 640.0) and len(expected.keypoints) > 500
    agreement = feature_agreement(expected.keypoints.numpy(), expected.descriptors.numpy(),
                                  (ours.keypoints + 0.5) * scale - 0.5, ours.descriptors, 0.5)  # ours back to 512x409
    assert agreement.recall >= 0.95 and agreement.min_cosine >= 0.999, agreement


def test_a_grayscale_image_for_a_colour_network_is_converted(aliked_runner, graffiti):
    gray = cv2.cvtColor(graffiti[0][:256, :320], cv2.COLOR_RGB2GRAY)
    front_end = LearnedExtractor(aliked_runner, resize=None)
    from_gray, from_rgb = front_end(gray), front_end(np.repeat(gray[..., None], 3, axis=2))
    assert len(from_gray) > 100
    np.testing.assert_array_equal(from_gray.keypoints, from_rgb.keypoints)
    np.testing.assert_array_equal(from_gray.descriptors, from_rgb.descriptors)


def test_batches_hold_images_of_one_padded_size_and_equal_single_runs(aliked_runner, graffiti, monkeypatch):
    """On a GPU runner images of one padded size share calls; on a CPU runner each call takes one image."""
    images = [graffiti[0][:256, :320], graffiti[1][:250, :300], graffiti[1][100:356, 100:420], graffiti[0][:128, :160]]
    front_end = LearnedExtractor(aliked_runner, resize=None, max_num_keypoints=300)
    alone = [front_end(image) for image in images]
    calls = []
    infer = aliked_runner.infer
    monkeypatch.setattr(aliked_runner, "infer", lambda feeds: calls.append(feeds["image"].shape) or infer(feeds))
    front_end.extract_batch(images)
    assert sorted(calls) == [(1, 3, 128, 160)] + [(1, 3, 256, 320)] * 3
    calls.clear()
    monkeypatch.setattr(aliked_runner, "device", "cuda")  # planned as on a GPU (the emulated TensorRT test runs one)
    batched = front_end.extract_batch(images, [f"image {i}" for i in range(4)])
    # 256x320 twice and 250x300 pad to 256x320 (stride 32): one call of three; 128x160 alone
    assert sorted(calls) == [(1, 3, 128, 160), (3, 3, 256, 320)]
    for single, (features, timings) in zip(alone, batched):
        assert len(features) == len(single) <= 300
        np.testing.assert_allclose(features.keypoints, single.keypoints, atol=1e-4)
        np.testing.assert_allclose(features.descriptors, single.descriptors, atol=1e-5)
        assert set(timings) == {"extract", "extract_compute"} and timings["extract"] > 0
    everything = LearnedExtractor(aliked_runner, resize=None)(images[0])
    np.testing.assert_array_equal(alone[0].keypoints, everything.keypoints[:300])  # the first, strongest rows


def test_image_size_plan_and_profile_minimum(aliked_extractor_onnx, graffiti):
    profiles = [Profile("256x320", (1, 1, 2), height=(64, 256, 256), width=(64, 320, 320)),
                Profile("640x800", (1, 1, 1), height=(64, 640, 640), width=(64, 800, 800))]
    sizes = [{HEIGHT: 64, WIDTH: 64}, {HEIGHT: 256, WIDTH: 320}, {HEIGHT: 64, WIDTH: 64}, {HEIGHT: 640, WIDTH: 800}]
    assert plan_batches(sizes, profiles, same_size=True) == [([0, 2], 0), ([1], 0), ([3], 1)]
    with OnnxRuntimeSession(aliked_extractor_onnx, profiles=profiles) as runner:
        front_end = LearnedExtractor(runner, resize=None)
        tiny = graffiti[0][:40, :50]  # padded to the stride (64x64), the profile's minimum
        assert len(front_end(tiny)) > 0
        with pytest.raises(ImageError, match=r"image 0 is 1200x900 pixels as the network sees it \(1216x928 once "
                                             r"padded to its stride\): larger than every image profile .* \(the largest, "
                                             r"640x800, takes up to 800 pixels wide and 640 high\); resize it \(--resize\)"):
            front_end.extract_batch([cv2.resize(graffiti[0], (1200, 900))])


def test_an_image_smaller_than_the_stride_is_refused(aliked_runner, graffiti):
    with pytest.raises(ImageError, match=r"image 0 is 50x20 pixels: the aliked-n16 network needs at least its stride, "
                                         "32 pixels, on each side"):
        LearnedExtractor(aliked_runner, resize=None).extract_batch([graffiti[0][:20, :50]])
    with pytest.raises(ImageError, match=r"image 0 is 16x1000 pixels, 16x1024 with its long side resized to 1024: the aliked-n16"):
        LearnedExtractor(aliked_runner)(np.zeros((1000, 16), np.uint8))


def test_openvino_runs_the_extractor_as_onnxruntime_does(aliked_runner, aliked_extractor_onnx, graffiti, tmp_path):
    """The learned extractor on OpenVINO (f32, the auto backend on a CPU): the contract, keypoints and
    descriptors of ONNX Runtime."""
    from trt.runtime.openvino_session import OpenVINOSession

    image = graffiti[0]
    want = LearnedExtractor(aliked_runner, resize=512)(image)
    with OpenVINOSession(aliked_extractor_onnx, precision="f32", cache_dir=tmp_path / "cache") as runner:
        assert runner.contract == aliked_runner.contract and runner.summary()["runtime_precision"] == "f32"
        got = LearnedExtractor(runner, resize=512)(image)
    assert len(want) > 500 and got.image_size == want.image_size
    agreement = feature_agreement(want.keypoints, want.descriptors, got.keypoints, got.descriptors, 0.5)
    assert agreement.recall >= 0.99 and agreement.min_cosine >= 0.999, agreement


@pytest.mark.parametrize("network", ["superpoint", "disk"])
def test_superpoint_and_disk_front_ends(network, superpoint_extractor_onnx, disk_extractor_onnx, graffiti):
    """SuperPoint takes grayscale (a colour image is converted with the reference's weights), DISK pads
    zeros at the bottom and right: keypoints stay inside the image, in its own pixels."""
    from trt.features.padding import GRAY_WEIGHTS

    onnx_path = superpoint_extractor_onnx if network == "superpoint" else disk_extractor_onnx
    image = graffiti[0][:150, :230]  # not a multiple of either stride
    with OnnxRuntimeSession(onnx_path) as runner:
        front_end = LearnedExtractor(runner, resize=300)
        features = front_end(image)
        assert 0 < len(features) <= 2048 and features.image_size == (230.0, 150.0)
        assert (features.keypoints >= -0.5).all() and (features.keypoints <= [229.5, 149.5]).all()
        if network == "superpoint":
            gray = np.round(image.astype(np.float32) @ GRAY_WEIGHTS).astype(np.uint8)
            assert len(front_end(gray)) > 0.9 * len(features)  # the same picture in grey, up to rounding to 8 bits


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=st.integers(1, 160), width=st.integers(1, 160), colour=st.booleans(),
       resize=st.sampled_from([None, 64, 96]), seed=st.integers(0, 3))
def test_any_image_gives_features_inside_it_or_one_image_error(aliked_runner, height, width, colour, resize, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3) if colour else (height, width), dtype=np.uint8)
    front_end = LearnedExtractor(aliked_runner, resize=resize, max_num_keypoints=64)
    seen = (width, height) if resize is None else resized_size(width, height, resize)  # what the network sees
    try:
        features = front_end(image)
    except ImageError as error:  # too small to read (16 px), or for the network's stride (32 px)
        assert "\n" not in str(error) and (min(height, width) < 16 or min(seen) < 32), error
        return
    assert min(height, width) >= 16 and min(seen) >= 32
    assert len(features) <= 64 and features.image_size == (float(width), float(height))
    assert np.isfinite(features.keypoints).all() and np.isfinite(features.descriptors).all()
    assert (features.keypoints >= -0.5).all() and (features.keypoints <= [width - 0.5, height - 0.5]).all()
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1, atol=1e-4)


# ---------------------------------------------------------------------------------------------------
# The Matcher with an extractor runner


def test_the_extractor_must_make_the_matchers_features(tmp_path, aliked_extractor_onnx, superpoint_extractor_onnx):
    aliked = make_standin_onnx(tmp_path / "aliked.onnx", 128, False, "aliked")
    extractor = OnnxRuntimeSession(superpoint_extractor_onnx)
    with pytest.raises(ContractError, match=r"the extractor \(superpoint\) gives 256-D descriptors, but the matcher "
                                            "takes 128-D ones"):
        Matcher(OnnxRuntimeSession(aliked), extractor_runner=extractor)
    assert not extractor.is_active
    disk = make_standin_onnx(tmp_path / "disk.onnx", 128, False, "disk")
    with pytest.raises(ContractError, match="makes aliked features, but the matcher was trained for disk features"):
        Matcher(OnnxRuntimeSession(disk), extractor_runner=OnnxRuntimeSession(aliked_extractor_onnx))
    sift = make_standin_onnx(tmp_path / "sift.onnx")
    with pytest.raises(ContractError, match="reads scales and orientations"):
        Matcher(OnnxRuntimeSession(sift), extractor_runner=OnnxRuntimeSession(aliked_extractor_onnx))
    with pytest.raises(ContractError, match="serves a feature extractor, aliked-n16 .*, not a LightGlue matcher"):
        Matcher(OnnxRuntimeSession(aliked_extractor_onnx))


def test_the_extractor_runs_beside_the_matcher_where_it_is_fastest():
    from trt.runtime.matcher import extractor_backend

    assert extractor_backend("tensorrt", "auto", has_engine=True) == "tensorrt"
    assert extractor_backend("tensorrt", "tensorrt", has_engine=False) == "onnxruntime"  # a bare ONNX: no engine
    assert extractor_backend("openvino", "auto", has_engine=True) == "onnxruntime"  # faster for extractors here
    assert extractor_backend("openvino", "openvino", has_engine=True) == "openvino"  # asked for
    assert extractor_backend("onnxruntime", "auto", has_engine=True) == "onnxruntime"


def test_match_pairs_extracts_each_image_once(tmp_path, aliked_extractor_onnx, graffiti, monkeypatch):
    standin = make_standin_onnx(tmp_path / "aliked.onnx", 128, False, None)  # the feature type from the extractor
    a, b, c = graffiti[0][:256, :320], graffiti[1][:256, :320], graffiti[1][:128, :160]
    extractor = OnnxRuntimeSession(aliked_extractor_onnx)
    with Matcher(OnnxRuntimeSession(standin), resize=None, threshold=0.0, extractor_runner=extractor) as matcher:
        assert matcher.extractor_name == "aliked" and matcher.summary["extractor_engine"]["backend"] == "onnxruntime"
        singles = [matcher.match(a, b), matcher.match(c, a)]
        calls = []
        infer = extractor.infer
        monkeypatch.setattr(extractor, "infer", lambda feeds: calls.append(feeds["image"].shape[0]) or infer(feeds))
        results = matcher.match_pairs([(a, b), (c, a)])
        assert calls == [1, 1, 1]  # a once, though in both pairs (one image per call on the CPU)
        for single, result in zip(singles, results):
            np.testing.assert_array_equal(single.matches, result.matches)
            assert {"extract", "extract_compute", "match"} <= set(result.timings)
        assert len(matcher.extract_many([a, c])[1]) == len(matcher.extract(c))
    assert not extractor.is_active  # closed with the matcher


# ---------------------------------------------------------------------------------------------------
# Engines: trt_infer.py with the matcher engine only (its manifest names the extractor engine)


@pytest.fixture(scope="module")
def served(aliked_nn_onnx, aliked_engine, tmp_path_factory) -> Path:
    """The ALIKED matcher (nearest-neighbour weights, one profile of up to 2048 keypoints) built linked to the
    session's ALIKED extractor engine (default image profiles)."""
    folder = tmp_path_factory.mktemp("served")
    (folder / "n2048.toml").write_text(profile_toml(("n2048", 1, 2048, 2048)))
    return build_engine(aliked_nn_onnx, folder / "n2048.toml", folder / "aliked_lightglue.engine", builder="tensorrt-rtx",
                        target_sm="8.9", progress=False, extractor_engine=aliked_engine)


@needs_rtx
@pytest.mark.slow
def test_aliked_recovers_graffiti_through_trt_infer(served, data_dir, tmp_path):
    """The issue's acceptance: ALIKED + the nearest-neighbour matcher weights, HPatches v_graffiti 1->2,
    mean corner error < 3 px, from the matcher engine alone."""
    output = tmp_path / "matches.json"
    done = run_infer("--engine", served, data_dir / GRAFFITI / "1.ppm", data_dir / GRAFFITI / "2.ppm", "--output", output)
    assert done.returncode == 0, done.stderr
    notices = [line for line in done.stderr.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "matching on OpenVINO in f32" in notices[0]
    assert notices[0].endswith("; the extractor on ONNX Runtime")
    record = json.loads(output.read_text())
    points0 = np.array(record["keypoints0"])[np.array(record["matches"])[:, 0]]
    points1 = np.array(record["keypoints1"])[np.array(record["matches"])[:, 1]]
    error = corner_error(points0, points1, np.loadtxt(data_dir / GRAFFITI / "H_1_2"), record["image_size0"])
    assert error < 3.0 and len(points0) > 300, (error, len(points0))
    assert len(record["keypoints0"]) <= 2048 and record["engine"]["extractor"] == "aliked"
    linked = record["engine"]["extractor_engine"]
    # auto on a CPU: the matcher on OpenVINO, the extractor on ONNX Runtime (faster for it, make bench)
    assert linked["network"]["name"] == "aliked-n16" and linked["backend"] == "onnxruntime"
    assert record["engine"]["backend"] == "openvino"
    assert {"extract", "extract_compute", "match", "compute"} <= set(record["timings"])
    assert "time: extract " in done.stdout and "(compute " in done.stdout and ", match " in done.stdout


@needs_rtx
@pytest.mark.slow
def test_bad_input_through_trt_infer(served, superpoint_engine, data_dir, tmp_path):
    """One message, exit status 2 and no output for each: an image smaller than the stride, an extractor
    engine of another descriptor size, a linked extractor engine that is missing or was replaced."""
    output = tmp_path / "out" / "matches.json"
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((24, 40), 128, np.uint8))
    image = data_dir / GRAFFITI / "1.ppm"
    one_error(run_infer("--engine", served, small, image, "--resize", "0", "--output", output),
              r"image 0 is 40x24 pixels: the aliked-n16 network needs at least its stride, 32 pixels, on each side")
    one_error(run_infer("--engine", served, image, image, "--extractor-engine", superpoint_engine, "--output", output),
              r"the extractor \(superpoint\) gives 256-D descriptors, but the matcher takes 128-D ones")
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in (served, manifest_path(served)):
        shutil.copy(path, copy / path.name)
    moved = copy / served.name
    one_error(run_infer("--engine", moved, image, image, "--output", output),
              r"linked to the extractor engine .*extractor-fp32.engine, which is missing.*--extractor-engine")
    record = json.loads(manifest_path(moved).read_text())
    replaced = copy / "other.engine"
    shutil.copy(superpoint_engine, replaced)
    record["extractor_engine"]["file"] = replaced.name
    manifest_path(moved).write_text(json.dumps(record))
    one_error(run_infer("--engine", moved, image, image, "--output", output),
              r"the extractor engine .*other.engine is not the one engine .* was linked to \(sha256 differs\)")
    assert not output.parent.exists()  # the folder made for the output is removed with the failure


# ---------------------------------------------------------------------------------------------------
# The TensorRT session with extractor and matcher engines, on the emulated runtime


@pytest.fixture(scope="module")
def small_engines(aliked_extractor_onnx, tmp_path_factory) -> Path:
    """A one-profile ALIKED extractor engine (images up to 256x320, opt 256x320) and a small stand-in matcher
    engine (mutual nearest neighbours, up to 128 keypoints) linked to it."""
    folder = tmp_path_factory.mktemp("small-engines")
    (folder / "images.toml").write_text(SMALL_IMAGES)
    (folder / "n128.toml").write_text(profile_toml(("n128", 1, 128, 128), batch=(1, 1, 2)))
    extractor = build_extractor_engine(aliked_extractor_onnx, folder, profiles=folder / "images.toml")
    matcher = make_standin_onnx(folder / "standin.onnx", 128, False, "aliked")
    return build_engine(matcher, folder / "n128.toml", folder / "standin.engine", builder="tensorrt-rtx",
                        target_sm="8.9", progress=False, extractor_engine=extractor)


@needs_rtx
@pytest.mark.slow
def test_tensorrt_session_serves_extractor_engines_as_onnxruntime_does(small_engines, data_dir, tmp_path):
    """trt_infer.py --backend tensorrt on the emulated runtime (the session's real code: profiles, buffers,
    CUDA graphs at each profile's opt) against --backend onnxruntime, a pairs file crossing image sizes."""
    folder = tmp_path / "images"
    folder.mkdir()
    crops = {"a.png": ("1.ppm", 0, 0, 256, 320), "b.png": ("2.ppm", 0, 0, 256, 320), "c.png": ("3.ppm", 40, 60, 200, 260)}
    for name, (source, top, left, height, width) in crops.items():
        cv2.imwrite(str(folder / name), cv2.imread(str(data_dir / GRAFFITI / source))[top:top + height, left:left + width])
    (folder / "pairs.txt").write_text("a.png b.png\nc.png a.png\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EMULATOR), str(ROOT)])}
    records = {}
    for name, flags in {"onnxruntime": ["--backend", "onnxruntime"], "tensorrt": ["--backend", "tensorrt"],
                        "graphs": ["--backend", "tensorrt", "--cuda-graphs"]}.items():
        out = tmp_path / name
        done = run_infer("--engine", small_engines, "--pairs", folder / "pairs.txt", "--output-dir", out, "--resize", "0",
                         "--max-keypoints", "128", "--threshold", "0", *flags, env=env)
        assert done.returncode == 0, done.stderr
        if name != "onnxruntime":
            assert "tensorrt)" in done.stdout and "extractor device memory: 256x320" in done.stdout
        records[name] = {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.name != JOB_FILE}
    assert len(records["onnxruntime"]) == 2
    for name in ("tensorrt", "graphs"):
        for file, record in records[name].items():
            want = records["onnxruntime"][file]
            assert record["engine"]["extractor_engine"]["backend"] == "tensorrt"
            for key in ("keypoints0", "keypoints1", "matches"):
                if name == "graphs" and file.startswith("c"):  # c (200x260) runs padded to the opt, 256x320
                    continue
                np.testing.assert_allclose(record[key], want[key], atol=1e-4)
    graphs = records["graphs"]["c.png__a.png.json"]
    assert len(graphs["matches"]) > 0.5 * len(records["onnxruntime"]["c.png__a.png.json"]["matches"])


@needs_rtx
@pytest.mark.slow
def test_an_extractor_engine_without_manifest_reads_its_network_from_its_onnx(small_engines, aliked_extractor_onnx,
                                                                              graffiti, tmp_path, monkeypatch):
    """An extractor engine built by trtexec has no manifest: the session reads its I/O and profiles from the
    engine, and the network's stride and padding from --extractor-onnx (refused without it)."""
    from test_tensorrt_emulated import emulated_modules

    from trt.runtime.tensorrt_session import TensorRTSession

    extractor = small_engines.parent / "extractor-fp32.engine"
    copy = tmp_path / "trtexec.engine"
    shutil.copy(extractor, copy)
    monkeypatch.setenv("TRT_EMULATOR_ENGINES", os.pathsep.join(str(manifest_path(e)) for e in (extractor, small_engines)))
    a, b = graffiti[0][:256, :320], graffiti[1][:256, :320]
    with Matcher.from_engine(small_engines, backend="onnxruntime", resize=None, threshold=0.0) as matcher:
        want = matcher.match(a, b)
    with emulated_modules():
        with pytest.warns(UserWarning, match="no manifest"):
            session = TensorRTSession(copy)
        with pytest.raises(ContractError, match=r"has no manifest: its network's stride and padding come from its "
                                                r"source ONNX, which is not given \(--extractor-onnx\)"):
            session.activate()
        with pytest.warns(UserWarning, match="no manifest"):
            matcher = Matcher.from_engine(small_engines, backend="tensorrt", extractor_engine=copy,
                                          extractor_onnx=aliked_extractor_onnx, resize=None, threshold=0.0)
        with matcher:
            extractor_runner = matcher.extractor_runner
            assert extractor_runner.contract == ExtractorContract(ExtractorLayout(3, 2048, 128), 32, "centre-replicate",
                                                                  "aliked-n16", "aliked")
            assert [p.ranges for p in extractor_runner.profiles] == [
                {BATCH: (1, 1, 2), HEIGHT: (64, 256, 256), WIDTH: (64, 320, 320)}]
            assert matcher.summary["extractor_engine"]["manifest"] is False
            got = matcher.match(a, b)
    np.testing.assert_array_equal(got.matches, want.matches)
    np.testing.assert_allclose(got.keypoints0, want.keypoints0, atol=1e-4)
