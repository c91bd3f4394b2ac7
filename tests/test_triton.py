"""The Triton model repository (trt/serve/triton.py): every config.pbtxt parsed with tritonclient's
model_config_pb2 and checked against the engine's manifest, and the Python front-end run here, its engine calls
(Triton requests to the per-profile plan models) answered by OpenVINO on the engine's source ONNX.

A real Triton server cannot run here (it needs NVIDIA's container and a GPU, and full-TensorRT engines).
"""

import json

import numpy as np
import pytest
from test_pairs_jobs import photos  # noqa: F401 - fixture
from test_trt_infer import sift_nn_engine  # noqa: F401 - fixture

from trt.engine.manifest import load_manifest
from trt.errors import UserError
from trt.runtime.matcher import Matcher

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")

from trt.serve import triton  # noqa: E402

KEYPOINTS = 256


@pytest.fixture(scope="module")
def repository(sift_nn_engine, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("triton") / "repo"
    triton.main(["--engine", str(sift_nn_engine), "--output", str(folder), "--max-keypoints", str(KEYPOINTS),
                 "--resize", "0"])
    return folder


def parse(path) -> "model_config_pb2.ModelConfig":
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_every_config_parses_and_follows_the_manifest(repository, sift_nn_engine):  # noqa: F811
    manifest = load_manifest(sift_nn_engine)
    configs = {path.parent.name: parse(path) for path in repository.glob("*/config.pbtxt")}
    plan_models = [f"lightglue_matcher_{profile.name}" for profile in manifest.profiles]
    assert sorted(configs) == sorted(plan_models + ["lightglue"])
    types = {value: name for name, value in model_config_pb2.DataType.items()}
    for index, name in enumerate(plan_models):
        config = configs[name]
        assert config.name == name and config.platform == "tensorrt_plan" and config.max_batch_size == 0
        for declared, tensors in ((config.input, manifest.inputs), (config.output, manifest.outputs)):
            assert [t.name for t in declared] == [t.name for t in tensors]
            for tensor, record in zip(declared, tensors):
                assert types[tensor.data_type] == triton.TRITON_TYPES[record.dtype]
                assert list(tensor.dims) == [d if isinstance(d, int) else -1 for d in record.shape]
        [group] = config.instance_group
        assert list(group.profile) == [str(index)] and group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        assert (repository / name / "1" / "model.plan").read_bytes() == sift_nn_engine.read_bytes()
    front = configs["lightglue"]
    assert front.backend == "python" and front.dynamic_batching.max_queue_delay_microseconds > 0
    assert [t.name for t in front.input] == ["image0", "image1", "threshold"]
    assert [t.name for t in front.output] == ["keypoints0", "keypoints1", "matches", "scores", "record"]
    assert (repository / "lightglue" / "1" / "model.py").read_text().startswith('"""Triton Python backend')


def test_a_misspelt_field_is_refused_by_the_parser(repository):
    text = (repository / "lightglue" / "config.pbtxt").read_text().replace("max_batch_size", "max_batchsize")
    with pytest.raises(text_format.ParseError):
        text_format.Parse(text, model_config_pb2.ModelConfig())


def test_the_front_end_gives_the_matches_of_the_matcher(repository, sift_nn_engine, photos):  # noqa: F811
    """The front-end's engine calls go to the plan model of the profile that holds them; here OpenVINO answers
    them, so its matches must equal those of the project's Matcher on OpenVINO."""
    with Matcher.from_engine(sift_nn_engine, backend="openvino", max_keypoints=KEYPOINTS, resize=None) as matcher:
        expected = matcher.match(photos / "a.jpg", photos / "b.jpg")
        called = []

        def call(model, feeds, names):
            called.append(model)
            outputs = matcher.runner.infer(feeds)
            return {name: outputs[name] for name in names}

        front_end = triton.FrontEnd(repository / "lightglue" / "1" / triton.SETTINGS_FILE, call)
        images = [(photos / name).read_bytes() for name in ("a.jpg", "b.jpg")]
        good, bad, other_threshold = front_end.answer([(*images, None), (b"not an image", images[1], None),
                                                       (*images, 0.5)])
    assert called and set(called) <= {"lightglue_matcher_n1024"}
    np.testing.assert_array_equal(good["matches"][0], expected.matches)
    np.testing.assert_array_equal(good["keypoints0"][0], expected.keypoints0)
    record = json.loads(good["record"][0][0])
    assert record["matches"] == expected.matches.tolist() and record["threshold"] == 0.1
    assert isinstance(bad, UserError) and "image0" in str(bad)
    assert 0 < len(other_threshold["matches"][0]) < len(expected.matches)


def test_an_engine_without_a_manifest_is_refused(tmp_path):
    engine = tmp_path / "bare.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(UserError, match="manifest"):
        triton.write_repository(engine, tmp_path / "repo")
