"""Runtime without a GPU: profile logic, the runner interface, the ONNX Runtime session, the Matcher,
and the TensorRT session's pure checks (manifest, engine I/O, buffer sizes); its GPU code path runs on
the emulated runtime in test_tensorrt_emulated.py.

A small stand-in matcher ONNX (mutual nearest neighbours of the descriptors, with the contract's count
masking and threshold) keeps the Matcher tests fast; the real exported matcher is used where the
result must be the model's (``match_pairs`` against ``match``).
"""

import hashlib
import json
import struct
import types
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from trt.contract import OUTPUT_SPECS, input_specs
from trt.engine.manifest import Manifest, ProfileRecord, manifest_path
from trt.errors import ContractError, EngineError, UserError
from trt.features.base import Features
from trt.gpu import cuda_devices
from trt.contract import KEYPOINTS0, KEYPOINTS1, keypoint_dims
from trt.runtime import tensorrt_engine as tre
from trt.runtime.base import MatcherContract, Profile, capacity, plan_batches, select_profile
from trt.runtime.matcher import Matcher
from trt.runtime.onnxruntime_session import OnnxRuntimeSession, physical_cores
from trt.runtime.tensorrt_memory import buffer_shapes
from trt.runtime.tensorrt_session import TensorRTSession

P_SMALL = Profile("n16", (1, 1, 4), (1, 16, 16), (1, 16, 16))
P_LARGE = Profile("n64", (1, 1, 2), (17, 64, 64), (17, 64, 64))
PROFILES = [P_SMALL, P_LARGE]


# --- a stand-in matcher graph ------------------------------------------------------------------------


def make_standin_onnx(path: Path, descriptor_dim: int = 128, scale_ori: bool = True, extractor: str | None = "sift") -> Path:
    """Mutual nearest neighbours of descriptors (cosine), masked by count0/count1, score = similarity."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    types_ = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32}
    value = lambda s: helper.make_tensor_value_info(s.name, types_[s.dtype], list(s.shape))  # noqa: E731
    const = lambda name, v, dtype=np.int64: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=numpy_helper.from_array(np.array(v, dtype), name)
    )
    node = helper.make_node
    nodes = [
        const("zero", 0), const("one", 1), const("ax1", [1]), const("ax2", [2]),
        const("low", -1e4, np.float32), const("fzero", 0.0, np.float32), const("none", -1, np.int32),
        node("Transpose", ["desc1"], ["desc1t"], perm=[0, 2, 1]),
        node("MatMul", ["desc0", "desc1t"], ["sim"]),
    ]
    for s in (0, 1):
        nodes += [
            node("Shape", [f"desc{s}"], [f"shape{s}"]),
            node("Gather", [f"shape{s}", "one"], [f"n{s}"], axis=0),
            node("Range", ["zero", f"n{s}", "one"], [f"range{s}"]),
            node("Cast", [f"count{s}"], [f"count{s}l"], to=TensorProto.INT64),
            node("Unsqueeze", [f"count{s}l", "ax1"], [f"count{s}u"]),
            node("Less", [f"range{s}", f"count{s}u"], [f"mask{s}"]),
        ]
    nodes += [
        node("Unsqueeze", ["mask0", "ax2"], ["mask0u"]),
        node("Unsqueeze", ["mask1", "ax1"], ["mask1u"]),
        node("And", ["mask0u", "mask1u"], ["valid"]),
        node("Where", ["valid", "sim", "low"], ["simm"]),
        node("ArgMax", ["simm"], ["best0"], axis=2, keepdims=0),
        node("ArgMax", ["simm"], ["best1"], axis=1, keepdims=0),
        node("ReduceMax", ["simm", "ax2"], ["max0"], keepdims=0),
        node("ReduceMax", ["simm", "ax1"], ["max1"], keepdims=0),
    ]
    for s, o in ((0, 1), (1, 0)):
        nodes += [
            node("GatherElements", [f"best{o}", f"best{s}"], [f"back{s}"], axis=1),
            node("Equal", [f"back{s}", f"range{s}"], [f"mutual{s}"]),
            node("Greater", [f"max{s}", "threshold"], [f"above{s}"]),
            node("And", [f"mutual{s}", f"above{s}"], [f"keep{s}a"]),
            node("And", [f"keep{s}a", f"mask{s}"], [f"keep{s}"]),
            node("Cast", [f"best{s}"], [f"best{s}i"], to=TensorProto.INT32),
            node("Where", [f"keep{s}", f"best{s}i", "none"], [f"matches{s}"]),
            node("Where", [f"keep{s}", f"max{s}", "fzero"], [f"mscores{s}"]),
        ]
    graph = helper.make_graph(
        nodes, "standin", [value(s) for s in input_specs(descriptor_dim, scale_ori)], [value(s) for s in OUTPUT_SPECS]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    if extractor is not None:
        helper.set_model_props(model, {"lightglue.extractor": extractor})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    return make_standin_onnx(tmp_path_factory.mktemp("standin") / "standin.onnx")


def plan_bytes(payload: bytes) -> bytes:
    """``payload`` behind a tensorrt-rtx engine header (magic, then the size at bytes 16-23), which is what
    ``read_engine`` checks of an engine without a manifest; for the fakes below, which load any bytes."""
    data = bytearray(b"vtrt" + bytes(20) + payload)
    struct.pack_into("<Q", data, 16, len(data))
    return bytes(data)


def random_features(rng, n: int, dim: int = 128, size=(640.0, 480.0)) -> Features:
    desc = rng.normal(size=(n, dim)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    kpts = (rng.uniform(0, 1, (n, 2)) * np.array(size)).astype(np.float32)
    return Features(kpts, desc, size, rng.uniform(0, 1, n).astype(np.float32),
                    rng.uniform(1, 10, n).astype(np.float32), rng.uniform(0, 6, n).astype(np.float32))


def noisy_copy(rng, features: Features, keep: int, noise: float = 0.01) -> Features:
    """The first ``keep`` features, shuffled, with a little descriptor noise: true matches to find."""
    order = rng.permutation(keep)
    copy = features.subset(order)
    copy.descriptors = copy.descriptors + rng.normal(scale=noise, size=copy.descriptors.shape).astype(np.float32)
    copy.descriptors /= np.linalg.norm(copy.descriptors, axis=1, keepdims=True)
    return copy


class Recording(OnnxRuntimeSession):
    """An ONNX Runtime session that records the (B, N0, N1) of every request."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = []

    def infer_impl(self, feeds, profile_index):
        self.requests.append((feeds["kpts0"].shape[0], feeds["kpts0"].shape[1], feeds["kpts1"].shape[1], profile_index))
        return super().infer_impl(feeds, profile_index)


def assert_same_result(a, b):
    np.testing.assert_array_equal(a.matches, b.matches)
    np.testing.assert_array_equal(a.matches0, b.matches0)
    np.testing.assert_array_equal(a.matches1, b.matches1)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_array_equal(a.keypoints0, b.keypoints0)
    np.testing.assert_array_equal(a.keypoints1, b.keypoints1)


# --- profiles --------------------------------------------------------------------------------------


def test_select_profile_takes_the_smallest_that_fits():
    assert select_profile(PROFILES, keypoint_dims(1, 10, 16)) == 0
    assert select_profile(PROFILES, keypoint_dims(2, 17, 40)) == 1
    assert select_profile(list(reversed(PROFILES)), keypoint_dims(1, 10, 10)) == 1  # by size, not by order
    with pytest.raises(ContractError, match="fits none"):
        select_profile(PROFILES, keypoint_dims(1, 10, 40))  # N0 below the large profile's minimum: no exact fit
    assert select_profile(PROFILES, keypoint_dims(1, 10, 40), padding=True) == 1  # ... but it fits once padded


def test_a_request_larger_than_every_profile_lists_the_profiles():
    with pytest.raises(ContractError) as error:
        select_profile(PROFILES, keypoint_dims(3, 40, 40), padding=True)
    assert "a request of B 3, N0 40, N1 40 fits none" in str(error.value)
    assert "n16 (B 1-4, N0 1-16, N1 1-16)" in str(error.value) and "n64 (B 1-2" in str(error.value)


def test_padding_rises_to_the_profile_minimum():
    assert P_LARGE.padded(keypoint_dims(1, 5, 30)) == keypoint_dims(1, 17, 30)
    assert P_SMALL.padded(keypoint_dims(2, 5, 7)) == keypoint_dims(2, 5, 7)
    assert P_LARGE.at_opt() == Profile("n64", (1, 1, 1), (64, 64, 64), (64, 64, 64))
    assert (P_LARGE.min_dims, P_LARGE.max_dims, P_LARGE.size) == (keypoint_dims(1, 17, 17), keypoint_dims(2, 64, 64), 8192)
    assert capacity(PROFILES) == (64, 64)


def test_plan_batches_groups_by_size_within_the_profiles():
    pairs = [(10, 10), (60, 50), (12, 3), (30, 30), (16, 16), (5, 5), (9, 9), (40, 20)]
    sizes = [{KEYPOINTS0: n0, KEYPOINTS1: n1} for n0, n1 in pairs]
    plan = plan_batches(sizes, PROFILES)
    assert sorted(i for members, _ in plan for i in members) == list(range(len(sizes)))
    for members, index in plan:
        dims = keypoint_dims(len(members), max(pairs[i][0] for i in members), max(pairs[i][1] for i in members))
        assert PROFILES[index].holds(dims)
        assert index == select_profile(PROFILES, dims, padding=True)
    assert max(len(m) for m, i in plan if i == 0) == 4 and all(len(m) <= 2 for m, i in plan if i == 1)
    assert len(plan) == 3  # the four smallest pairs, then the others two by two


def test_profile_from_manifest_record_needs_matcher_ranges():
    record = ProfileRecord("n8", [1, 1, 2], [1, 8, 8], [1, 8, 8], {})
    assert Profile.from_record(record) == Profile("n8", (1, 1, 2), (1, 8, 8), (1, 8, 8))
    with pytest.raises(ContractError, match="follows neither the matcher contract"):
        Profile.from_record(ProfileRecord("static", None, None, None, {}))
    images = ProfileRecord("480x640", [1, 1, 4], None, None, {}, height=[64, 480, 480], width=[64, 640, 640])
    assert Profile.from_record(images) == Profile("480x640", (1, 1, 4), height=(64, 480, 480), width=(64, 640, 640))
    assert Profile.from_record(images).dimensions == ("B", "H", "W")


# --- the runner interface and the ONNX Runtime session ------------------------------------------------


def test_physical_cores_is_sane():
    import os

    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


def test_runner_checks_requests_and_times_them(standin):
    rng = np.random.default_rng(0)
    pair = (random_features(rng, 10), random_features(rng, 12))
    from trt.features.base import pack_pairs

    feeds = pack_pairs([pair], 10, 12, 0.1)
    session = OnnxRuntimeSession(standin, profiles=PROFILES)
    with pytest.raises(UserError, match="not active"):
        session.infer(feeds)
    with session:
        assert session.metadata["lightglue.extractor"] == "sift"
        out = session.infer(feeds)
        assert {k: v.shape for k, v in out.items()} == {"matches0": (1, 10), "matches1": (1, 12), "mscores0": (1, 10), "mscores1": (1, 12)}
        assert out["matches0"].dtype == np.int32 and out["mscores0"].dtype == np.float32
        assert set(session.last_timings) >= {"compute", "total"}
        bad = dict(feeds, count0=feeds["count0"].astype(np.int64))
        with pytest.raises(ContractError, match="count0 has dtype int64"):
            session.infer(bad)
        with pytest.raises(ContractError, match="unexpected inputs: extra"):
            session.infer(dict(feeds, extra=feeds["count0"]))
        with pytest.raises(ContractError, match="fits none"):
            session.infer(pack_pairs([pair] * 3, 40, 40, 0.1))  # B=3 > 2 in the only profile for N=40
    assert not session.is_active


def test_onnxruntime_session_refuses_a_graph_outside_the_contract(tmp_path):
    path = make_standin_onnx(tmp_path / "no_ori.onnx", scale_ori=False)
    import onnx

    model = onnx.load(str(path))
    count1 = next(i for i in model.graph.input if i.name == "count1")
    model.graph.input.remove(count1)  # now "count1" is neither an input nor produced: rename the node input
    for n in model.graph.node:
        n.input[:] = ["count0" if x == "count1" else x for x in n.input]
    onnx.save(model, str(path))
    with pytest.raises(ContractError, match="missing: count1"):
        OnnxRuntimeSession(path).activate()
    with pytest.raises(EngineError, match="ONNX model .* does not exist"):
        OnnxRuntimeSession(tmp_path / "absent.onnx").activate()


# --- the Matcher on ONNX Runtime ----------------------------------------------------------------------


def test_matcher_finds_the_true_matches_and_pads_to_the_profile(standin):
    rng = np.random.default_rng(1)
    f0 = random_features(rng, 40)
    f1 = noisy_copy(rng, f0, 30)
    runner = Recording(standin, profiles=PROFILES)
    with Matcher(runner) as matcher:
        result = matcher.match_features(f0, f1)
    assert runner.requests == [(1, 40, 30, 1)]
    assert result.matches.shape == (30, 2) and result.matches.dtype == np.int64
    # every one of the 30 copies is matched to its original
    for i, j in result.matches:
        assert np.allclose(f0.keypoints[i], f1.keypoints[j])
    assert (result.matches0[30:] == -1).all() and (result.scores > 0.9).all()
    assert result.engine["backend"] == "onnxruntime" and result.timings["batch"] == 1


def test_small_requests_are_padded_up_to_a_profile_minimum(standin):
    rng = np.random.default_rng(2)
    f0, f1 = random_features(rng, 5), random_features(rng, 40)
    runner = Recording(standin, profiles=[P_LARGE])  # minimum 17 keypoints
    with Matcher(runner) as matcher:
        padded = matcher.match_features(f0, f1)
    with Matcher(OnnxRuntimeSession(standin)) as matcher:
        exact = matcher.match_features(f0, f1)
    assert runner.requests == [(1, 17, 40, 0)]
    assert_same_result(padded, exact)


def test_match_pairs_batches_unequal_pairs_and_equals_one_call_each(standin):
    rng = np.random.default_rng(3)
    pairs = []
    for n0, n1 in [(12, 9), (50, 60), (16, 3), (8, 15), (30, 20), (64, 64), (2, 16)]:
        f0 = random_features(rng, n0)
        pairs.append((f0, noisy_copy(rng, f0, min(n0, n1)) if n1 <= n0 else random_features(rng, n1)))
    runner = Recording(standin, profiles=PROFILES)
    with Matcher(runner) as matcher:
        batched = matcher.match_pairs(pairs)
        calls = len(runner.requests)
        single = [matcher.match_features(*pair) for pair in pairs]
    assert calls == 3 and all(b <= 4 for b, *_ in runner.requests[:calls])
    for a, b in zip(batched, single):
        assert_same_result(a, b)
    assert sum(len(r) for r in batched) > 0


def test_keypoints_beyond_the_profiles_keep_the_strongest_with_a_warning(standin):
    rng = np.random.default_rng(4)
    f0, f1 = random_features(rng, 80), random_features(rng, 20)
    with Matcher(OnnxRuntimeSession(standin, profiles=PROFILES)) as matcher:
        with pytest.warns(UserWarning, match="80 keypoints, more than the largest profile holds \\(64\\)"):
            result = matcher.match_features(f0, f1)
    np.testing.assert_array_equal(result.keypoints0, f0.top_k(64).keypoints)
    strongest = np.sort(np.argsort(-f0.scores)[:64])
    np.testing.assert_array_equal(result.keypoints0, f0.keypoints[strongest])
    with Matcher(OnnxRuntimeSession(standin, profiles=PROFILES), on_overflow="error") as matcher:
        with pytest.raises(ContractError, match="80 keypoints"):
            matcher.match_features(f0, f1)


def test_max_keypoints_keeps_the_strongest_silently(standin):
    rng = np.random.default_rng(5)
    f0, f1 = random_features(rng, 50), random_features(rng, 50)
    with Matcher(OnnxRuntimeSession(standin, profiles=PROFILES), max_keypoints=20) as matcher:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = matcher.match_features(f0, f1)
    assert len(result.keypoints0) == len(result.keypoints1) == 20
    with pytest.raises(UserError, match="max_keypoints"):
        Matcher(OnnxRuntimeSession(standin), max_keypoints=1)
    with pytest.raises(UserError, match="on_overflow"):
        Matcher(OnnxRuntimeSession(standin), on_overflow="drop")


@pytest.mark.parametrize("n0, n1", [(0, 10), (1, 10), (10, 1), (0, 0)])
def test_zero_or_one_keypoint_gives_an_empty_result_without_the_engine(standin, n0, n1):
    rng = np.random.default_rng(6)
    runner = Recording(standin, profiles=PROFILES)
    with Matcher(runner) as matcher:
        result = matcher.match_features(random_features(rng, n0), random_features(rng, n1))
    assert runner.requests == []
    assert result.matches.shape == (0, 2) and result.scores.shape == (0,)
    assert result.matches0.shape == (n0,) and (result.matches0 == -1).all() and result.matches1.shape == (n1,)
    assert len(result.keypoints0) == n0 and result.engine["backend"] == "onnxruntime"


def test_images_need_a_sift_model_or_an_extractor(tmp_path, standin):
    other = make_standin_onnx(tmp_path / "disk.onnx", scale_ori=False, extractor="disk")
    image = np.zeros((64, 64), np.uint8)
    rng = np.random.default_rng(7)
    with Matcher(OnnxRuntimeSession(other)) as matcher:
        assert matcher.extractor_name == "disk"
        with pytest.raises(UserError, match="matches disk features, but no disk extractor was given.*--extractor-engine"
                                            ".*match_features"):
            matcher.match(image, image)
        f = random_features(rng, 10)
        f.scales = f.oris = None
        assert len(matcher.match_features(f, f)) == 10
    with pytest.raises(UserError, match="exported for 'sift' features, not 'disk'"):
        Matcher(OnnxRuntimeSession(standin), extractor="disk")
    unnamed = make_standin_onnx(tmp_path / "unnamed.onnx", extractor=None)
    with pytest.raises(ContractError, match="superpoint features \\(256-D\\) do not fit the model's inputs"):
        Matcher(OnnxRuntimeSession(unnamed), extractor="superpoint")
    with Matcher(OnnxRuntimeSession(unnamed)) as matcher:
        with pytest.raises(UserError, match="unknown \\(pass extractor='sift'"):
            matcher.match(image, image)


def test_match_on_images_runs_sift(standin, data_dir):
    from trt.features.image import read_image

    path = data_dir / "images/hpatches/v_graffiti/1.ppm"
    image = read_image(path)
    with Matcher(OnnxRuntimeSession(standin, profiles=PROFILES)) as matcher:
        result = matcher.match(path, image[::2, ::2].copy())
    assert 30 < len(result.keypoints0) <= 64 and 30 < len(result.keypoints1) <= 64  # what the profiles hold
    assert result.image_size0 == (image.shape[1], image.shape[0])
    assert {"extract", "match", "compute"} <= set(result.timings)


def test_match_pairs_of_real_model_equals_match_calls(sift_onnx, data_dir):
    """Three pairs of different image sizes, batched with padding, give what three match calls give."""
    from trt.features.image import read_image

    folder = data_dir / "images/hpatches/v_graffiti"
    images = [read_image(folder / f"{i}.ppm") for i in (1, 2, 3, 4)]
    crops = [images[0][:150, :200], images[1][:220, :300], images[2][300:400, 400:560], images[3][::4, ::4]]
    crops = [np.ascontiguousarray(c) for c in crops]  # about 180-230 SIFT keypoints each, all different
    pairs = [(crops[0], crops[1]), (crops[2], crops[0]), (crops[3], crops[2])]
    profiles = [Profile("n256", (1, 1, 4), (1, 256, 256), (1, 256, 256))]
    runner = Recording(sift_onnx, profiles=profiles)
    with Matcher(runner, resize=None, threshold=0.0) as matcher:  # random weights: keep every mutual match
        batched = matcher.match_pairs(pairs)
        assert len(runner.requests) == 1 and runner.requests[0][0] == 3
        single = [matcher.match(*pair) for pair in pairs]
    assert len({n for r in single for n in (len(r.keypoints0), len(r.keypoints1))}) == 4  # padding was needed
    for a, b in zip(batched, single):
        assert_same_result(a, b)
    assert sum(len(r) for r in batched) > 0


def test_from_engine_without_manifest_runs_the_given_onnx(tmp_path, standin, capsys):
    pytest.importorskip("tensorrt_rtx")
    from trt.engine.builder import build_engine

    profiles = tmp_path / "n64.toml"
    profiles.write_text("[batch]\nmin = 1\nopt = 1\nmax = 2\n[[profile]]\nkeypoints = { min = 1, opt = 64, max = 64 }\n")
    engine = build_engine(standin, profiles, tmp_path / "trtexec.engine", builder="tensorrt-rtx", progress=False)
    manifest_path(engine).unlink()  # as trtexec leaves it
    with pytest.raises(UserError, match="no manifest naming its source ONNX.*--onnx"):
        Matcher.from_engine(engine, backend="onnxruntime")
    with pytest.raises(UserError, match="unknown backend 'cuda'"):
        Matcher.from_engine(engine, backend="cuda", onnx=standin)
    backend = "onnxruntime" if cuda_devices() else "auto"
    with Matcher.from_engine(engine, backend=backend, onnx=standin, extractor="sift") as matcher:
        rng = np.random.default_rng(9)
        f0 = random_features(rng, 20)
        assert len(matcher.match_features(f0, noisy_copy(rng, f0, 20))) == 20
        assert matcher.summary["manifest"] is False and matcher.summary["onnx"] == str(standin)
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("notice:")]
    assert len(notices) == (1 if backend == "auto" else 0)


# --- the TensorRT session's checks, without a GPU -------------------------------------------------------


def fake_manifest(engine: Path, data: bytes, onnx: Path | None = None, **changes) -> Manifest:
    manifest = Manifest(
        engine={"file": engine.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)},
        onnx={"path": onnx.name if onnx else None, "absolute": None,
              "sha256": hashlib.sha256(onnx.read_bytes()).hexdigest() if onnx else None, "metadata": {}},
        builder={"name": "tensorrt-rtx", "version": "1.7.1.116"},
        target={"compute_capability": "8.9"},
        precision="fp32", extractor="sift", descriptor_dim=128, scale_ori=True,
        profiles=[ProfileRecord("n16", [1, 1, 4], [1, 16, 16], [1, 16, 16], {})],
        inputs=[], outputs=[], build_seconds=1.0,
    )
    return replace(manifest, **changes)


def test_engine_file_is_checked_against_its_manifest(tmp_path):
    engine = tmp_path / "m.engine"
    data = plan_bytes(b"engine bytes " * 100)
    engine.write_bytes(data)
    manifest = fake_manifest(engine, data)
    assert tre.read_engine(engine, manifest) == data
    assert tre.read_engine(engine, None) == data
    with pytest.raises(EngineError, match="truncated.*rebuild"):
        tre.read_engine(engine, replace(manifest, engine={**manifest.engine, "bytes": len(data) + 1}))
    with pytest.raises(EngineError, match="sha256 differs.*rebuild"):
        tre.read_engine(engine, replace(manifest, engine={**manifest.engine, "sha256": "0" * 64}))
    with pytest.raises(EngineError, match="does not exist"):
        tre.read_engine(tmp_path / "absent.engine", None)
    with pytest.raises(EngineError, match="folder"):
        tre.read_engine(tmp_path, None)
    (tmp_path / "empty.engine").write_bytes(b"")
    with pytest.raises(EngineError, match="empty"):
        tre.read_engine(tmp_path / "empty.engine", None)


def test_source_onnx_is_found_beside_the_manifest_and_checked(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    onnx = folder / "m.onnx"
    onnx.write_bytes(b"onnx")
    engine = folder / "m.engine"
    engine.write_bytes(b"e")
    manifest = fake_manifest(engine, b"e", onnx)
    assert tre.source_onnx_path(engine, manifest) == onnx  # relative to the manifest, not the cwd
    assert tre.source_onnx_path(engine, manifest, tmp_path / "x.onnx") == tmp_path / "x.onnx"
    assert tre.source_onnx_path(engine, None) is None
    tre.check_source_onnx(onnx, manifest, required=True)
    tre.check_source_onnx(folder / "absent.onnx", manifest, required=False)
    with pytest.raises(EngineError, match="missing.*--onnx"):
        tre.check_source_onnx(folder / "absent.onnx", manifest, required=True)
    onnx.write_bytes(b"changed")
    with pytest.raises(EngineError, match="not the ONNX the engine was built from"):
        tre.check_source_onnx(onnx, manifest, required=False)


def test_runtime_version_and_gpu_must_equal_the_manifest(tmp_path):
    manifest = fake_manifest(tmp_path / "m.engine", b"")
    tre.check_runtime_version(manifest, "tensorrt-rtx", "1.7.1.116")
    with pytest.raises(EngineError, match="built with tensorrt-rtx 1.7.1.116 but this machine runs tensorrt-rtx 1.8.0.1.*rebuild"):
        tre.check_runtime_version(manifest, "tensorrt-rtx", "1.8.0.1")
    tre.check_compute_capability(manifest, "8.9")
    with pytest.raises(EngineError, match="built for compute capability 8.9 but this GPU is 9.0.*rebuild"):
        tre.check_compute_capability(manifest, "9.0")
    several = replace(manifest, target={"compute_capability": ["8.6", "8.9"]})
    assert tre.target_capabilities(several) == ["8.6", "8.9"]
    tre.check_compute_capability(replace(manifest, target={"compute_capability": None}), "9.0")
    tre.check_compute_capability(None, "9.0")
    assert tre.runtime_backend(manifest).module_name == "tensorrt_rtx"
    with pytest.raises(EngineError, match="unknown builder"):
        tre.runtime_backend(replace(manifest, builder={"name": "onnx", "version": "1"}))


def test_no_gpu_is_detected_without_touching_tensorrt():
    assert isinstance(cuda_devices(), list)
    if not cuda_devices():
        assert tre.tensorrt_unavailable(None) == "no CUDA GPU was found"


def fake_engine(inputs: dict, outputs: dict, profiles: list[dict]):
    """An object with the ICudaEngine methods read_engine_io uses, and a matching fake TensorRT module."""
    names = list(inputs) + list(outputs)
    shapes = {**inputs, **outputs}
    dtypes = {n: (np.int32 if n.startswith(("count", "matches")) else np.float32) for n in names}
    module = types.SimpleNamespace(TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"), nptype=lambda t: t)
    engine = types.SimpleNamespace(
        num_io_tensors=len(names),
        num_optimization_profiles=len(profiles),
        get_tensor_name=lambda i: names[i],
        get_tensor_mode=lambda n: "in" if n in inputs else "out",
        get_tensor_dtype=lambda n: dtypes[n],
        get_tensor_shape=lambda n: shapes[n],
        get_tensor_profile_shape=lambda n, i: profiles[i][n],
    )
    return engine, module


def contract_io(descriptor_dim=128, scale_ori=True):
    inputs = {s.name: tuple(-1 if isinstance(d, str) else d for d in s.shape) for s in input_specs(descriptor_dim, scale_ori)}
    outputs = {s.name: (-1, -1) for s in OUTPUT_SPECS}
    return inputs, outputs


def test_engine_io_and_profiles_are_read_from_the_engine():
    inputs, outputs = contract_io()
    profiles = [
        {"kpts0": [(1, 1, 2), (1, 512, 2), (4, 512, 2)], "kpts1": [(1, 1, 2), (1, 512, 2), (4, 512, 2)]},
        {"kpts0": [(1, 513, 2), (1, 1024, 2), (2, 1024, 2)], "kpts1": [(1, 513, 2), (1, 1024, 2), (2, 1024, 2)]},
    ]
    io = tre.read_engine_io(*fake_engine(inputs, outputs, profiles))
    assert io.contract == MatcherContract(128, True)
    assert io.profiles == [
        Profile("profile0", (1, 1, 4), (1, 512, 512), (1, 512, 512)),
        Profile("profile1", (1, 1, 2), (513, 1024, 1024), (513, 1024, 1024)),
    ]
    assert io.inputs["count0"][0] == np.int32


def test_an_engine_outside_the_contract_is_refused():
    inputs, outputs = contract_io()
    del inputs["count1"]
    with pytest.raises(ContractError, match="cannot be served as a LightGlue matcher or feature extractor.*missing: count1"):
        tre.read_engine_io(*fake_engine(inputs, outputs, []))
    inputs, outputs = contract_io()
    del outputs["mscores1"]
    with pytest.raises(ContractError, match="lacks the outputs mscores1"):
        tre.read_engine_io(*fake_engine(inputs, outputs, []))
    with pytest.raises(ContractError, match="cannot be served"):
        tre.read_engine_io(*fake_engine({"images": (1, 3, 480, 640)}, {"scores": (1, 100)}, []))


def test_buffers_are_sized_for_the_profile_maximum():
    specs = [*input_specs(128, True), *OUTPUT_SPECS]
    shapes = buffer_shapes(specs, Profile("p", (1, 1, 4), (1, 512, 512), (1, 256, 1024)))
    assert shapes["kpts0"] == (4, 512, 2) and shapes["desc1"] == (4, 1024, 128)
    assert shapes["count0"] == (4,) and shapes["threshold"] == (1,)
    assert shapes["matches0"] == (4, 512) and shapes["mscores1"] == (4, 1024)
    assert tre.compatible_dtype(np.dtype(np.float16), np.dtype(np.float32))
    assert not tre.compatible_dtype(np.dtype(np.int64), np.dtype(np.int32))


def test_tensorrt_session_without_a_gpu_fails_cleanly(tmp_path, standin):
    engine = tmp_path / "m.engine"
    engine.write_bytes(plan_bytes(b"not really an engine"))
    manifest = fake_manifest(engine, engine.read_bytes())
    manifest.write(engine)
    assert json.loads(manifest_path(engine).read_text())["engine"]["bytes"] == 44
    session = TensorRTSession(engine)
    assert session.profiles == [Profile("n16", (1, 1, 4), (1, 16, 16), (1, 16, 16))]
    if cuda_devices():
        pytest.skip("this machine has a GPU: see tests/gpu")
    with pytest.raises(EngineError):  # no runtime, another version, or no GPU: never a crash
        session.activate()
    with pytest.warns(UserWarning, match="no manifest"):
        manifest_path(engine).unlink()
        TensorRTSession(engine)
