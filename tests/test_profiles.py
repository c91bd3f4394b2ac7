"""Profile files: parsing and validation, without TensorRT and without an ONNX file."""

import json
from pathlib import Path

import numpy as np
import pytest

from trt.contract import input_specs, keypoint_dims
from trt.engine.manifest import (
    Manifest,
    ProfileRecord,
    TensorRecord,
    load_manifest,
    manifest_path,
)
from trt.engine.profiles import (
    PROFILES_DIR,
    GraphInput,
    GraphSignature,
    KeypointProfile,
    Range,
    ShapeTuple,
    default_profile_path,
    load_profiles,
    read_profile_file,
)
from trt.errors import ContractError, EngineError, ProfileError
from trt.extractors import EXTRACTORS
from trt.runtime.base import Profile, select_profile

DEFAULT_BUCKETS = [(1, 512), (513, 1024), (1025, 2048), (2049, 4096)]


def matcher_graph(extractor: str = "sift", fixed: tuple[int, int, int] | None = None) -> GraphSignature:
    """The inputs of a matcher ONNX, straight from the contract; ``fixed`` = (B, N0, N1) for a static export."""
    spec = EXTRACTORS[extractor]
    sizes = dict(zip(("B", "N0", "N1"), fixed)) if fixed else {}
    inputs = tuple(GraphInput(s.name, s.dtype, tuple(sizes.get(d, d) for d in s.shape))
                   for s in input_specs(spec.descriptor_dim, spec.scale_ori))
    return GraphSignature(inputs, metadata={"lightglue.extractor": extractor})


IMAGE_GRAPH = GraphSignature((GraphInput("image", np.dtype(np.float32), (1, 3, 480, 640)),))


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def bucket(lo: int, opt: int, hi: int, name: str | None = None) -> str:
    label = f'name = "{name}"\n' if name else ""
    return f"[[profile]]\n{label}keypoints = {{ min = {lo}, opt = {opt}, max = {hi} }}\n"


def shapes(name: str, lo: list, opt: list, hi: list) -> str:
    return f"[profile.shapes.{name}]\nmin = {lo}\nopt = {opt}\nmax = {hi}\n"


BATCH = "[batch]\nmin = 1\nopt = 1\nmax = 4\n"


@pytest.mark.parametrize("extractor", sorted(EXTRACTORS))
def test_default_profile_files(extractor):
    graph = matcher_graph(extractor)
    assert default_profile_path(graph) == PROFILES_DIR / f"{extractor}.toml"
    profiles = load_profiles(graph)  # the default file, from the extractor metadata
    assert [(p.keypoints0.min, p.keypoints0.max) for p in profiles] == DEFAULT_BUCKETS
    assert all(p.keypoints0 == p.keypoints1 and p.keypoints0.opt == p.keypoints0.max for p in profiles)
    assert all(p.batch == Range(1, 1, 4) for p in profiles)
    assert list(profiles[0].shapes) == graph.input_names
    dim = EXTRACTORS[extractor].descriptor_dim
    assert profiles[3].shapes["desc1"] == ShapeTuple((1, 2049, dim), (1, 4096, dim), (4, 4096, dim))
    assert profiles[1].shapes["count0"] == ShapeTuple((1,), (1,), (4,))
    assert profiles[1].shapes["threshold"] == ShapeTuple((1,), (1,), (1,))
    assert ("scales0" in profiles[0].shapes) == EXTRACTORS[extractor].scale_ori


def test_separate_n0_n1_and_bucket_batch(tmp_path):
    path = write(tmp_path, BATCH + """
[[profile]]
keypoints0 = { min = 1, opt = 256, max = 256 }
keypoints1 = { min = 1, opt = 1024, max = 1024 }
batch = { min = 2, opt = 8, max = 8 }
""")
    (profile,) = load_profiles(matcher_graph("superpoint"), path)
    assert profile.name == "n256x1024"
    assert profile.shapes["kpts0"] == ShapeTuple((2, 1, 2), (8, 256, 2), (8, 256, 2))
    assert profile.shapes["desc1"] == ShapeTuple((2, 1, 256), (8, 1024, 256), (8, 1024, 256))


def test_malformed_toml_names_file_and_line(tmp_path):
    path = write(tmp_path, BATCH + "[[profile]]\nkeypoints = { min = 1, opt = 512 max = 512 }\n")
    with pytest.raises(ProfileError, match=rf"{path}: malformed TOML: .*line 6"):
        read_profile_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(ProfileError, match="profile file .* does not exist"):
        read_profile_file(tmp_path / "nope.toml")


def test_unknown_input_lists_real_inputs(tmp_path):
    path = write(tmp_path, BATCH + bucket(1, 512, 512) + shapes("kpts9", [1], [1], [1]))
    with pytest.raises(ProfileError, match=r"no input 'kpts9'; its inputs are: kpts0, desc0, scales0, .*threshold"):
        load_profiles(matcher_graph(), path)


@pytest.mark.parametrize("keypoints, message", [
    ("{ min = 600, opt = 512, max = 512 }", r"min <= opt <= max, got min=600 opt=512 max=512"),
    ("{ min = 1, opt = 513, max = 512 }", r"min <= opt <= max, got min=1 opt=513 max=512"),
    ("{ min = 0, opt = 1, max = 512 }", r"keypoints min must be positive, not 0"),
    ("{ min = -4, opt = 1, max = 512 }", r"keypoints min must be positive, not -4"),
    ("{ min = 1.5, opt = 2, max = 512 }", r"keypoints min must be an integer"),
    ("{ min = 1, max = 512 }", r"exactly min, opt and max"),
])
def test_bad_ranges(tmp_path, keypoints, message):
    path = write(tmp_path, BATCH + f"[[profile]]\nkeypoints = {keypoints}\n")
    with pytest.raises(ProfileError, match=rf"p\.toml:5: profile .*{message}"):
        read_profile_file(path)


def test_bad_batch(tmp_path):
    path = write(tmp_path, "[batch]\nmin = 4\nopt = 1\nmax = 4\n" + bucket(1, 512, 512))
    with pytest.raises(ProfileError, match=r"p\.toml:1: \[batch\]: need min <= opt <= max"):
        read_profile_file(path)


@pytest.mark.parametrize("first, second, message", [
    ((1, 512, 512), (500, 1024, 1024), r"p\.toml:8: profile 'b': N0 range 500-1024 overlaps profile 'a' \(1-512\); start it at 513"),
    ((1, 512, 512), (600, 1024, 1024), r"p\.toml:8: profile 'b': gap in N0: profile 'a' ends at 512 but this one starts at 600"),
    ((513, 1024, 1024), (1, 512, 512), r"p\.toml:8: profile 'b': buckets must be listed in increasing order of N0"),
])
def test_buckets_contiguous(tmp_path, first, second, message):
    with pytest.raises(ProfileError, match=message):
        read_profile_file(write(tmp_path, BATCH + bucket(*first, "a") + bucket(*second, "b")))


@pytest.mark.parametrize("text, message", [
    (BATCH, r"no \[\[profile\]\] tables"),
    (BATCH + "[[profile]]\nkeypoints = { min = 1, opt = 2, max = 2 }\nkeypoint = 3\n", r"unknown key\(s\) keypoint"),
    ("bucket = 1\n" + BATCH + bucket(1, 2, 2), r"unknown key\(s\) bucket"),
    (bucket(1, 512, 512), "no batch range"),
    (BATCH + bucket(1, 512, 512, "a") + bucket(513, 1024, 1024, "a"), "name 'a' is used twice"),
    (BATCH + "[[profile]]\nkeypoints0 = { min = 1, opt = 2, max = 2 }\n", "keypoints0 and keypoints1 together"),
])
def test_malformed_files(tmp_path, text, message):
    with pytest.raises(ProfileError, match=message):
        read_profile_file(write(tmp_path, text))


def test_explicit_shape_must_match_fixed_dims(tmp_path):
    path = write(tmp_path, BATCH + bucket(1, 512, 512) + shapes("desc0", [1, 1, 64], [1, 512, 64], [4, 512, 64]))
    with pytest.raises(ProfileError, match=r"input 'desc0' dimension 2 is fixed to 128 in the ONNX \[B, N0, 128\], but the profile gives 64/64/64"):
        load_profiles(matcher_graph(), path)


def test_static_matcher_is_derived_and_must_match(tmp_path):
    graph = matcher_graph("sift", fixed=(1, 1024, 1024))
    (profile,) = load_profiles(graph)  # fixed shapes: no file needed, even with extractor metadata
    assert profile.name == "static"
    assert (profile.batch, profile.keypoints0, profile.keypoints1) == (Range(1, 1, 1), Range(1024, 1024, 1024), Range(1024, 1024, 1024))
    assert profile.shapes["desc0"] == ShapeTuple(*((1, 1024, 128),) * 3)
    matching = write(tmp_path, "[batch]\nmin = 1\nopt = 1\nmax = 1\n" + bucket(1024, 1024, 1024))
    assert load_profiles(graph, matching)[0].shapes == profile.shapes
    with pytest.raises(ProfileError, match=r"input 'kpts0' dimension 0 is fixed to 1 .* gives 1/1/4"):
        load_profiles(graph, PROFILES_DIR / "sift.toml")


def test_non_matcher_graph(tmp_path):
    (profile,) = load_profiles(IMAGE_GRAPH)
    assert profile.shapes == {"image": ShapeTuple(*((1, 3, 480, 640),) * 3)}
    assert profile.batch is None
    with pytest.raises(ProfileError, match="keypoint ranges need the LightGlue matcher contract.*image"):
        load_profiles(IMAGE_GRAPH, write(tmp_path, BATCH + bucket(1, 512, 512)))
    dynamic = GraphSignature((GraphInput("image", np.dtype(np.float32), ("B", 3, "H", "W")),))
    with pytest.raises(ProfileError, match=r"dynamic inputs \(image \[B, 3, H, W\]\): give a profile file"):
        load_profiles(dynamic)
    vga = write(tmp_path, '[[profile]]\nname = "vga"\n' + shapes("image", [1, 3, 240, 320], [1, 3, 480, 640], [2, 3, 480, 640]), "s.toml")
    (profile,) = load_profiles(dynamic, vga)
    assert profile.shapes["image"] == ShapeTuple((1, 3, 240, 320), (1, 3, 480, 640), (2, 3, 480, 640))
    with pytest.raises(ProfileError, match=r"input 'image' has rank 4 \[1, 3, 480, 640\], but the profile gives \[1, 3, 240\]"):
        load_profiles(IMAGE_GRAPH, write(tmp_path, '[[profile]]\n' + shapes("image", [1, 3, 240], [1, 3, 240], [1, 3, 240])))


def test_unknown_extractor_metadata():
    graph = GraphSignature(matcher_graph().inputs, metadata={"lightglue.extractor": "orb"})
    with pytest.raises(Exception, match="unknown extractor 'orb'"):
        load_profiles(graph)


class FakeProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = (lo, opt, hi)

    def __bool__(self):
        return True


class FakeBuilder:
    def create_optimization_profile(self):
        return FakeProfile()


def test_to_trt_is_the_only_tensorrt_step():
    profile = load_profiles(matcher_graph())[0]
    trt_profile = profile.to_trt(FakeBuilder(), input_names={"kpts0", "threshold"})
    assert trt_profile.shapes == {"kpts0": ((1, 1, 2), (1, 512, 2), (4, 512, 2)), "threshold": ((1,), (1,), (1,))}


def make_manifest(profile: KeypointProfile) -> Manifest:
    return Manifest(
        engine={"file": "m.engine", "sha256": "0" * 64, "bytes": 3}, onnx={"path": "m.onnx", "sha256": "1" * 64},
        builder={"name": "tensorrt-rtx", "version": "1"}, target={"compute_capability": "8.9"}, precision="fp32",
        extractor="sift", descriptor_dim=128, scale_ori=True, profiles=[ProfileRecord(**profile.to_record())],
        inputs=[TensorRecord("kpts0", "float32", ["B", "N0", 2])], outputs=[], build_seconds=1.0,
    )


def test_manifest_round_trip(tmp_path):
    engine = tmp_path / "m.engine"
    assert manifest_path(engine) == tmp_path / "m.engine.json"
    assert load_manifest(engine) is None
    manifest = make_manifest(load_profiles(matcher_graph())[0])
    manifest.write(engine)
    data = json.loads(manifest_path(engine).read_text())
    assert data["format"] == "lightglue-trt-engine/1"
    assert data["profiles"][0]["batch"] == [1, 1, 4]
    loaded = load_manifest(engine)
    assert loaded == manifest
    # the runtime reads the recorded profiles back: one selection mechanism, trt.runtime.base
    profiles = [Profile.from_record(record) for record in loaded.profiles]
    assert select_profile(profiles, keypoint_dims(2, 100, 500), padding=True) == 0
    with pytest.raises(ContractError, match="fits none of the engine's profiles"):
        select_profile(profiles, keypoint_dims(5, 100, 100), padding=True)
    assert profiles[0].fits(keypoint_dims(1, 512, 1)) and not profiles[0].fits(keypoint_dims(1, 513, 1))


@pytest.mark.parametrize("text", ["{not json", '{"format": "other/1"}', '{"format": "lightglue-trt-engine/1"}'])
def test_corrupt_manifest(tmp_path, text):
    (tmp_path / "m.engine.json").write_text(text)
    with pytest.raises(EngineError, match="corrupt engine manifest"):
        load_manifest(tmp_path / "m.engine")
