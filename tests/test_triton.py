"""The Triton model repository (trt/serve/triton.py): every config.pbtxt parsed with tritonclient's
model_config_pb2 and checked against the engine's manifest, the ensemble's wiring checked as Triton checks it
at load, and the two Python models run here in the ensemble's order, their engine calls (Triton requests to
the per-profile plan models) answered by OpenVINO on the engine's source ONNX.

A real Triton server cannot run here (it needs NVIDIA's container and a GPU, and full-TensorRT engines).
"""

import json

import numpy as np
import pytest
import cv2
from test_learned_serving import GRAFFITI, needs_rtx, small_engines  # noqa: F401 - fixture
from test_pairs_jobs import photos  # noqa: F401 - fixture
from test_trt_infer import sift_nn_engine  # noqa: F401 - fixture

from trt.engine.manifest import load_manifest
from trt.errors import UserError
from trt.features.image import decode_image
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


def configs(repository) -> dict:
    return {path.parent.name: parse(path) for path in repository.glob("*/config.pbtxt")}


def test_every_config_parses_and_follows_the_manifest(repository, sift_nn_engine):  # noqa: F811
    manifest = load_manifest(sift_nn_engine)
    models = configs(repository)
    plan_models = [f"lightglue_matcher_{profile.name}" for profile in manifest.profiles]
    assert sorted(models) == sorted(plan_models + ["lightglue", "lightglue_features", "lightglue_match"])
    types = {value: name for name, value in model_config_pb2.DataType.items()}
    for index, name in enumerate(plan_models):
        config = models[name]
        assert config.name == name and config.platform == "tensorrt_plan" and config.max_batch_size == 0
        for declared, tensors in ((config.input, manifest.inputs), (config.output, manifest.outputs)):
            assert [t.name for t in declared] == [t.name for t in tensors]
            for tensor, record in zip(declared, tensors):
                assert types[tensor.data_type] == triton.TRITON_TYPES[record.dtype]
                assert list(tensor.dims) == [d if isinstance(d, int) else -1 for d in record.shape]
        [group] = config.instance_group
        assert list(group.profile) == [str(index)] and group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        assert (repository / name / "1" / "model.plan").read_bytes() == sift_nn_engine.read_bytes()
    # SIFT features as the matcher engine takes them: 128-D descriptors, scales and orientations
    descriptors = {t.name: list(t.dims) for t in models["lightglue_features"].output}["descriptors0"]
    assert descriptors == [-1, {t.name: t.shape for t in manifest.inputs}["desc0"][-1]] == [-1, 128]
    for name, inputs, outputs in (
            ("lightglue_features", ["image0", "image1", "threshold"], None),
            ("lightglue_match", None, ["keypoints0", "keypoints1", "matches", "scores", "record"])):
        config = models[name]
        assert config.backend == "python" and config.dynamic_batching.max_queue_delay_microseconds > 0
        assert (repository / name / "1" / "model.py").read_text().startswith('"""Triton Python backend')
        assert [t.name for t in (config.input if inputs else config.output)] == (inputs or outputs)
    features = ["keypoints", "descriptors", "image_size", "scores", "scales", "oris"]
    expected = [f"{field}{side}" for side in "01" for field in features] + ["threshold"]
    assert [t.name for t in models["lightglue_features"].output] == expected
    assert [t.name for t in models["lightglue_match"].input] == expected
    assert {t.name for t in models["lightglue_match"].input if t.optional} == {"threshold"}
    ensemble = models["lightglue"]
    assert ensemble.platform == "ensemble" and (repository / "lightglue" / "1").is_dir()
    assert [step.model_name for step in ensemble.ensemble_scheduling.step] == ["lightglue_features", "lightglue_match"]


def test_the_ensemble_wiring_is_what_triton_accepts(repository):
    """Triton's checks at load: every step names a model of the repository; each input_map key is an input
    of that model and each output_map key an output; an ensemble tensor has one producer (an ensemble input
    or a step's output), made before it is read, of the type and dims its readers declare (batching models
    on both sides, so dims without the batch axis); every ensemble output is produced; a required input of
    a step is fed."""
    models = configs(repository)
    ensemble = models["lightglue"]
    produced = {t.name: (t.data_type, list(t.dims)) for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = models[step.model_name]
        assert 0 < ensemble.max_batch_size <= model.max_batch_size
        inputs = {t.name: t for t in model.input}
        assert set(step.input_map) <= set(inputs)
        assert {name for name, t in inputs.items() if not t.optional} <= set(step.input_map)
        for name, tensor in step.input_map.items():
            assert produced[tensor] == (inputs[name].data_type, list(inputs[name].dims)), (step.model_name, name)
            if tensor in {t.name for t in ensemble.input if t.optional}:
                assert inputs[name].optional  # an optional ensemble input feeds only an optional step input
        outputs = {t.name: t for t in model.output}
        assert set(step.output_map) <= set(outputs)
        for name, tensor in step.output_map.items():
            assert tensor not in produced, f"{tensor} has two producers"
            produced[tensor] = (outputs[name].data_type, list(outputs[name].dims))
    for tensor in ensemble.output:
        assert produced[tensor.name] == (tensor.data_type, list(tensor.dims))


def test_a_misspelt_field_is_refused_by_the_parser(repository):
    text = (repository / "lightglue" / "config.pbtxt").read_text().replace("max_batch_size", "max_batchsize")
    with pytest.raises(text_format.ParseError):
        text_format.Parse(text, model_config_pb2.ModelConfig())


def run_ensemble(repository, models: dict, request: dict):
    """One request through the ensemble as Triton runs it: the steps in order, each fed the ensemble tensors
    its input_map names (an absent optional one stays absent) and its outputs stored as its output_map says."""
    ensemble = configs(repository)["lightglue"]
    tensors = dict(request)
    for step in ensemble.ensemble_scheduling.step:
        feeds = {name: tensors[tensor] for name, tensor in step.input_map.items() if tensor in tensors}
        [answer] = models[step.model_name].answer([feeds])
        if isinstance(answer, UserError):
            return answer
        tensors.update({tensor: answer[name] for name, tensor in step.output_map.items()})
    return {tensor.name: tensors[tensor.name] for tensor in ensemble.output}


def test_the_ensemble_gives_the_matches_of_the_matcher(repository, sift_nn_engine, photos):  # noqa: F811
    """The matcher step's engine calls go to the plan model of the profile that holds them; here OpenVINO
    answers them, so the ensemble's matches must equal those of the project's Matcher on OpenVINO."""
    with Matcher.from_engine(sift_nn_engine, backend="openvino", max_keypoints=KEYPOINTS, resize=None) as matcher:
        expected = matcher.match(photos / "a.jpg", photos / "b.jpg")
        called = []

        def call(model, feeds, names):
            called.append(model)
            outputs = matcher.runner.infer(feeds)
            return {name: outputs[name] for name in names}

        models = {name: model_class(repository / name / "1" / triton.SETTINGS_FILE, call) for name, model_class in
                  (("lightglue_features", triton.FeaturesModel), ("lightglue_match", triton.MatchModel))}
        images = [np.array([(photos / name).read_bytes()], dtype=object) for name in ("a.jpg", "b.jpg")]
        good = run_ensemble(repository, models, {"image0": images[0], "image1": images[1]})
        bad = run_ensemble(repository, models, {"image0": np.array([b"not an image"], dtype=object),
                                                "image1": images[1]})
        other_threshold = run_ensemble(repository, models, {"image0": images[0], "image1": images[1],
                                                            "threshold": np.array([0.5])})
        ensemble_calls = len(called)  # the bad image never reaches the matcher step
        # the matcher step alone, several requests batched together, one of them with bad features
        features = models["lightglue_features"].answer([{"image0": images[0], "image1": images[1]}])[0]
        broken = {**features, "descriptors1": features["descriptors1"][:, :64]}
        together = models["lightglue_match"].answer([features, broken, features])
    assert called and set(called) <= {"lightglue_matcher_n1024"} and ensemble_calls == 2
    np.testing.assert_array_equal(good["matches"], expected.matches)
    np.testing.assert_array_equal(good["scores"], expected.scores)
    np.testing.assert_array_equal(good["keypoints0"], expected.keypoints0)
    np.testing.assert_array_equal(good["keypoints1"], expected.keypoints1)
    record = json.loads(good["record"][0])
    assert record["matches"] == expected.matches.tolist() and record["threshold"] == 0.1
    assert isinstance(bad, UserError) and "image0" in str(bad)
    assert 0 < len(other_threshold["matches"]) < len(expected.matches)
    assert json.loads(other_threshold["record"][0])["threshold"] == 0.5
    assert isinstance(together[1], UserError) and "image 1: 64-D descriptors" in str(together[1])
    for answer in (together[0], together[2]):
        np.testing.assert_array_equal(answer["matches"], expected.matches)


@needs_rtx
@pytest.mark.slow
def test_a_learned_extractor_runs_in_the_front_end(small_engines, data_dir, tmp_path):  # noqa: F811
    """ALIKED: the front-end's engine calls go to the extractor's plan model, the matcher step's to the
    matcher's; ONNX Runtime answers both, and the ensemble's matches equal the Matcher's."""
    folder = tmp_path / "repo"
    triton.write_repository(small_engines, folder, threshold=0.0, resize=None)
    features = {t.name for t in configs(folder)["lightglue_features"].output}
    assert "scales0" not in features and "descriptors0" in features  # ALIKED gives no scales or orientations
    images = [cv2.imencode(".png", cv2.imread(str(data_dir / GRAFFITI / f"{i}.ppm"))[:256, :320])[1].tobytes()
              for i in (1, 2)]
    with Matcher.from_engine(small_engines, backend="onnxruntime", threshold=0.0, resize=None) as matcher:
        expected = matcher.match(*(decode_image(image) for image in images))
        called = []

        def call(model, feeds, names):
            called.append(model)
            runner = matcher.extractor_runner if model.startswith("lightglue_extractor") else matcher.runner
            outputs = runner.infer(feeds)
            return {name: outputs[name] for name in names}

        models = {name: model_class(folder / name / "1" / triton.SETTINGS_FILE, call) for name, model_class in
                  (("lightglue_features", triton.FeaturesModel), ("lightglue_match", triton.MatchModel))}
        answer = run_ensemble(folder, models, {f"image{side}": np.array([image], dtype=object)
                                               for side, image in enumerate(images)})
    assert {model.rsplit("_", 1)[0] for model in called} == {"lightglue_extractor", "lightglue_matcher"}
    assert len(expected.matches) > 0
    np.testing.assert_array_equal(answer["matches"], expected.matches)
    np.testing.assert_array_equal(answer["keypoints0"], expected.keypoints0)


def test_an_engine_without_a_manifest_is_refused(tmp_path):
    engine = tmp_path / "bare.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(UserError, match="manifest"):
        triton.write_repository(engine, tmp_path / "repo")
