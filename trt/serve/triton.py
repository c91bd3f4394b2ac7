"""A Triton Inference Server model repository for an engine: ``make triton ENGINE=X.engine OUT=repo/``.

    repo/
      lightglue/                     config.pbtxt                  ensemble: image pair -> lightglue_features
                                                                    -> lightglue_match -> matches
      lightglue_features/            config.pbtxt, 1/model.py, 1/settings.json
                                     Python backend: image pair (+ threshold) -> both images' features
                                     (SIFT on the host, or the extractor engine through BLS)
      lightglue_match/               config.pbtxt, 1/model.py, 1/settings.json
                                     Python backend: both images' features -> matches, scores and the record
                                     trt_infer.py writes; its engine calls go to the profile's plan model
      lightglue_matcher_<profile>/   config.pbtxt, 1/model.plan   tensorrt_plan, one instance group pinned to
                                                                    that optimization profile (profile: ["k"])
      lightglue_extractor_<profile>/ (learned extractors)          the extractor engine, likewise

Why one plan model per profile, not one model with an instance group per profile: Triton's scheduler hands a
request to any instance of a model without looking at its shapes, and an instance pinned to profile k can
run only k's shapes; an ensemble step names a fixed model, so it cannot pick a profile either. So each
profile is a model of its own (the same plan, one instance group with ``profile: ["k"]``), and the matcher
step, which knows the shapes, calls the one that holds the request. Both Python models are the project's
``Matcher`` (unchanged: extraction, top-K, batching by profile, padding, results) whose runners are
``TritonRunner``: each engine call is a Triton business-logic (BLS) request to the profile's model. The
Python models need this project installed in the Triton container (``pip install lightglue-trt``); the plan
models need nothing of it.

What cannot run here: Triton's TensorRT backend needs NVIDIA's container and a GPU, and loads only engines
built by full TensorRT of its own version (``make engine`` on that machine, with ``tensorrt`` installed),
never tensorrt-rtx engines. Tests check the repository's configs against the engine's manifest and the
ensemble's wiring against its steps' configs with ``tritonclient``'s ``model_config_pb2``, and run the two
Python models as the ensemble chains them, here, with their engine calls on OpenVINO.
"""

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from trt.contract import DEFAULT_THRESHOLD
from trt.engine.manifest import Manifest, load_manifest
from trt.errors import UserError
from trt.features.base import Features
from trt.fileio import write_text_atomic
from trt.runtime.base import Runner, contract_from_manifest
from trt.runtime.matcher import DEFAULT_RESIZE, Matcher, engine_summary, linked_extractor_engine
from trt.runtime.outputs import encode_json, result_record
from trt.runtime.tensorrt_engine import profiles_from_manifest
from trt.serve.payloads import FEATURE_FIELDS, features_from_record
from trt.validation import check_input_file, check_matcher_manifest, check_threshold

ENSEMBLE = "lightglue"
FEATURES_MODEL = "lightglue_features"
MATCH_MODEL = "lightglue_match"
MATCHER_PREFIX = "lightglue_matcher"
EXTRACTOR_PREFIX = "lightglue_extractor"
SETTINGS_FILE = "settings.json"
# numpy dtype -> Triton data type
TRITON_TYPES = {"float32": "TYPE_FP32", "float64": "TYPE_FP64", "float16": "TYPE_FP16", "int32": "TYPE_INT32",
                "int64": "TYPE_INT64", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL", "bytes": "TYPE_STRING"}
# The ensemble's tensors, per request (Triton's batch axis not counted): (name, dtype, dims), -1 where the
# size varies; the threshold is optional (the repository's default when absent).
THRESHOLD = ("threshold", "float64", [1])  # float64: a threshold such as 0.1 reaches the record as sent
PAIR_INPUTS = (("image0", "bytes", [1]), ("image1", "bytes", [1]), THRESHOLD)
MATCH_OUTPUTS = (("keypoints0", "float32", [-1, 2]), ("keypoints1", "float32", [-1, 2]),
                 ("matches", "int64", [-1, 2]), ("scores", "float32", [-1]), ("record", "bytes", [1]))
OPTIONAL_INPUTS = {"threshold"}
EXTRACTED = "extracted_"  # the ensemble's name for a tensor between its steps: this + the models' name

MODEL_PY = '''"""Triton Python backend: {summary} (written by trt/serve/triton.py; see its docstring)."""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from trt.errors import UserError
from trt.serve.triton import {model_class}


def call_model(model_name, feeds, output_names):
    """One engine call: a BLS request to the plan model of the chosen profile."""
    request = pb_utils.InferenceRequest(model_name=model_name, requested_output_names=list(output_names),
                                        inputs=[pb_utils.Tensor(name, value) for name, value in feeds.items()])
    response = request.exec()
    if response.has_error():
        raise pb_utils.TritonModelException(response.error().message())
    return {{name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in output_names}}


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / args["model_version"]
        self.model = {model_class}(folder / "{settings_file}", call_model)

    def execute(self, requests):
        inputs = []
        for request in requests:  # each tensor without the batch axis (of 1) Triton's batching adds
            tensors = {{name: pb_utils.get_input_tensor_by_name(request, name) for name in self.model.input_names}}
            inputs.append({{name: tensor.as_numpy()[0] for name, tensor in tensors.items() if tensor is not None}})
        responses = []
        for answer in self.model.answer(inputs):
            if isinstance(answer, UserError):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(answer))))
            else:
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, np.asarray(value)[None]) for name, value in answer.items()]))
        return responses
'''


def _model_config():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UserError("writing a Triton repository needs tritonclient: pip install 'lightglue-trt[serve]'") from None
    return model_config_pb2


def _dims(shape: list) -> list[int]:
    """A manifest shape with symbolic dimensions ("B", "N0") as Triton's -1."""
    return [value if isinstance(value, int) and value >= 0 else -1 for value in shape]


def plan_model_config(name: str, manifest: Manifest, profile_index: int):
    """The config of a tensorrt_plan model serving ``manifest``'s engine under profile ``profile_index`` only.
    The engine's batch is its own B dimension, so Triton's batching is off (max_batch_size 0)."""
    pb = _model_config()
    config = pb.ModelConfig(name=name, platform="tensorrt_plan", max_batch_size=0)
    for tensors, add in ((manifest.inputs, config.input.add), (manifest.outputs, config.output.add)):
        for tensor in tensors:
            add(name=tensor.name, data_type=pb.DataType.Value(TRITON_TYPES[tensor.dtype]), dims=_dims(tensor.shape))
    config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_GPU, count=1, profile=[str(profile_index)])
    return config


def feature_tensors(manifest: Manifest) -> tuple:
    """Both images' features as the front-end gives them and the matcher step takes them: (name, dtype, dims)
    per tensor, the fields of ``Features`` (``trt.serve.payloads``) with the image's side appended; scales and
    orientations only where the matcher reads them."""
    contract = contract_from_manifest(manifest, "the engine")
    dims = {"keypoints": [-1, 2], "descriptors": [-1, contract.descriptor_dim], "image_size": [2],
            "scores": [-1], "scales": [-1], "oris": [-1]}
    fields = [field for field in FEATURE_FIELDS if contract.scale_ori or field not in ("scales", "oris")]
    return tuple((f"{field}{side}", "float32", dims[field]) for side in "01" for field in fields)


def _add_tensors(pb, config, inputs, outputs) -> None:
    for tensor, dtype, dims in inputs:
        config.input.add(name=tensor, data_type=pb.DataType.Value(TRITON_TYPES[dtype]), dims=dims,
                         optional=tensor in OPTIONAL_INPUTS)
    for tensor, dtype, dims in outputs:
        config.output.add(name=tensor, data_type=pb.DataType.Value(TRITON_TYPES[dtype]), dims=dims)


def python_model_config(name: str, inputs, outputs, max_batch_size: int):
    """A Python-backend model's config; Triton's dynamic batcher hands it the requests that wait together,
    which its Matcher batches by profile."""
    pb = _model_config()
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    _add_tensors(pb, config, inputs, outputs)
    config.dynamic_batching.max_queue_delay_microseconds = 5000
    config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=1)
    return config


def ensemble_config(features, max_batch_size: int):
    """The ensemble ``lightglue``: image pair (and optional threshold) -> the front-end -> the matcher step ->
    matches."""
    pb = _model_config()
    config = pb.ModelConfig(name=ENSEMBLE, platform="ensemble", max_batch_size=max_batch_size)
    _add_tensors(pb, config, PAIR_INPUTS, MATCH_OUTPUTS)
    # A tensor of the ensemble has one producer: the features between the steps are named apart from the
    # matcher step's keypoints0/1, and the threshold the front-end resolved (the request's, else the
    # default) apart from the ensemble's optional input.
    between = {name: f"{EXTRACTED}{name}" for name, _, _ in features} | {"threshold": f"{EXTRACTED}threshold"}
    steps = ((FEATURES_MODEL, {name: name for name, _, _ in PAIR_INPUTS}, between),
             (MATCH_MODEL, between, {name: name for name, _, _ in MATCH_OUTPUTS}))
    for model, input_map, output_map in steps:  # maps: the model's tensor name -> the ensemble's
        step = config.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        step.input_map.update(input_map)
        step.output_map.update(output_map)
    return config


def profile_model_names(prefix: str, manifest: Manifest) -> list[str]:
    return [f"{prefix}_{profile.name}" for profile in manifest.profiles]


def _place(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (one engine on disk for all its profile models), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_repository(engine: Path, output: Path, threshold: float = DEFAULT_THRESHOLD,
                     max_keypoints: Optional[int] = None, resize: Optional[int] = DEFAULT_RESIZE,
                     max_batch_size: int = 8) -> list[Path]:
    """Write the model repository of ``engine`` (and the extractor engine its manifest names) into
    ``output``; return the config files written. ``threshold``, ``max_keypoints``, ``resize``: the Python
    models' settings, as ``Matcher``'s."""
    from google.protobuf import text_format

    engine = check_input_file(engine, "the engine")
    manifest = load_manifest(engine)
    if manifest is None:
        raise UserError(f"engine {engine} has no manifest ({engine}.json): the repository's inputs and outputs come from it")
    check_matcher_manifest(engine, manifest)
    extractor, extractor_manifest = linked_extractor_engine(engine, manifest, None)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"{output} exists and is not a folder")
    models = [(MATCHER_PREFIX, engine, manifest)] + ([(EXTRACTOR_PREFIX, extractor, extractor_manifest)] if extractor else [])
    written = []
    settings = {"threshold": threshold, "max_keypoints": max_keypoints, "resize": resize}
    for prefix, plan, plan_manifest in models:
        names = profile_model_names(prefix, plan_manifest)
        for index, name in enumerate(names):
            _place(plan, output / name / "1" / "model.plan")
            config = text_format.MessageToString(plan_model_config(name, plan_manifest, index))
            written.append(write_text_atomic(output / name / "config.pbtxt", config))
        role = "matcher" if prefix == MATCHER_PREFIX else "extractor"
        settings[role] = {"models": names, "manifest": json.loads(plan_manifest.to_json()),
                          "summary": engine_summary(plan, plan_manifest, None)}
    features = feature_tensors(manifest)
    python_models = ((FEATURES_MODEL, "FeaturesModel", "image pair -> both images' features", PAIR_INPUTS,
                      features + (THRESHOLD,)),
                     (MATCH_MODEL, "MatchModel", "both images' features -> matches", features + (THRESHOLD,),
                      MATCH_OUTPUTS))
    for name, model_class, summary, inputs, outputs in python_models:
        folder = output / name / "1"
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / SETTINGS_FILE, json.dumps(settings, indent=1) + "\n")
        write_text_atomic(folder / "model.py", MODEL_PY.format(summary=summary, model_class=model_class,
                                                               settings_file=SETTINGS_FILE))
        config = python_model_config(name, inputs, outputs, max_batch_size)
        written.append(write_text_atomic(output / name / "config.pbtxt", text_format.MessageToString(config)))
    (output / ENSEMBLE / "1").mkdir(parents=True, exist_ok=True)  # Triton wants a version folder, empty here
    written.append(write_text_atomic(output / ENSEMBLE / "config.pbtxt",
                                     text_format.MessageToString(ensemble_config(features, max_batch_size))))
    return written


# -- the Python models, inside Triton -----------------------------------------------------------------------


class TritonRunner(Runner):
    """A runner whose engine calls are Triton requests to the plan model of the chosen profile.

    ``call(model_name, feeds, output_names) -> outputs`` sends one (a BLS request inside Triton)."""

    backend = "triton"
    device = "cuda"

    def __init__(self, manifest: Manifest, models: list[str], call: Callable[[str, dict, list], dict]):
        super().__init__(f"Triton models {', '.join(models)}", contract_from_manifest(manifest, "the Triton model"),
                         profiles_from_manifest(manifest))
        self.models, self.call = models, call
        self.metadata = dict(manifest.onnx.get("metadata") or {})

    def activate_impl(self) -> None:
        pass

    def infer_impl(self, feeds: dict, profile_index: int) -> tuple[dict, dict]:
        return self.call(self.models[profile_index], feeds, self.contract.output_names), {}

    def deactivate_impl(self) -> None:
        pass

    def summary(self) -> dict:
        return {"triton_models": self.models}


class _PythonModel:
    """What the two Python models share: the settings ``write_repository`` wrote, and a ``Matcher`` per
    threshold on ``TritonRunner``s (the extractor's only where ``extractor`` is true). ``answer(requests)``
    takes each request's tensors by name (without Triton's batch axis) and gives, per request, its output
    tensors or the UserError that refuses it (a bad image, features, threshold, ...)."""

    def __init__(self, settings_path: Path, call: Callable[[str, dict, list], dict], extractor: bool):
        self.settings = json.loads(Path(settings_path).read_text())
        self.call, self.extractor = call, extractor
        self.features = feature_tensors(Manifest.from_dict(self.settings["matcher"]["manifest"]))
        self.matchers: dict[float, Matcher] = {}
        self.matcher_for(self.settings["threshold"])

    def _runner(self, role: str) -> Optional[Runner]:
        if role not in self.settings:
            return None
        record = self.settings[role]
        return TritonRunner(Manifest.from_dict(record["manifest"]), record["models"], self.call)

    def matcher_for(self, threshold: float) -> Matcher:
        if threshold not in self.matchers:
            manifest = self.settings["matcher"]["manifest"]
            self.matchers[threshold] = Matcher(
                self._runner("matcher"), threshold, self.settings["max_keypoints"],
                summary=self.settings["matcher"]["summary"], extractor_name=manifest.get("extractor"),
                resize=self.settings["resize"], extractor_runner=self._runner("extractor") if self.extractor else None)
        return self.matchers[threshold]

    def threshold(self, request: dict) -> float:
        value = request.get("threshold")
        return self.settings["threshold"] if value is None else check_threshold(float(value[0]))


class FeaturesModel(_PythonModel):
    """``lightglue_features``: image pair -> both images' features (``feature_tensors``) and the threshold,
    through the Matcher's front-end (SIFT on the host, or the extractor engine's plan models); the matcher's
    plan models are never called here."""

    input_names = [name for name, _, _ in PAIR_INPUTS]

    def __init__(self, settings_path: Path, call: Callable[[str, dict, list], dict]):
        super().__init__(settings_path, call, extractor=True)

    def answer(self, requests: list[dict]) -> list:
        from trt.features.image import decode_image

        answers: list = [None] * len(requests)
        staged = []
        for index, request in enumerate(requests):
            try:
                threshold = self.threshold(request)
                pair = [decode_image(bytes(request[f"image{side}"][0]), f"image{side}") for side in "01"]
            except UserError as error:
                answers[index] = error
                continue
            staged.append((index, threshold, pair))
        matcher = self.matchers[self.settings["threshold"]]
        try:  # one call for all images, which a learned extractor batches
            extracted = matcher.extract_many([image for _, _, pair in staged for image in pair])
        except UserError:  # one of them is at fault: each pair alone, so that only its request gets the error
            extracted = []
            for _, _, pair in staged:
                try:
                    extracted.extend(matcher.extract_many(pair))
                except UserError as error:
                    extracted.extend([error, error])
        for number, (index, threshold, _) in enumerate(staged):
            sides = extracted[2 * number: 2 * number + 2]
            answers[index] = sides[0] if isinstance(sides[0], UserError) else self.tensors(sides, threshold)
        return answers

    def tensors(self, sides: list[Features], threshold: float) -> dict:
        outputs = {"threshold": np.array([threshold], dtype=np.float64)}
        for name, _, _ in self.features:
            features = sides[int(name[-1])]
            value = getattr(features, name[:-1])
            if value is None:  # no scores: equal ones keep the first K, as no scores do (Features.top_k)
                value = np.zeros(len(features))
            outputs[name] = np.asarray(value, dtype=np.float32)
        return outputs


class MatchModel(_PythonModel):
    """``lightglue_match``: both images' features (and the threshold) -> keypoints, matches, scores and the
    JSON record trt_infer.py writes; the Matcher checks the features, keeps the top-K, batches the requests
    by profile and pads them, and calls the plan model of the profile that holds each batch."""

    def __init__(self, settings_path: Path, call: Callable[[str, dict, list], dict]):
        super().__init__(settings_path, call, extractor=False)
        self.input_names = [name for name, _, _ in self.features] + ["threshold"]

    def answer(self, requests: list[dict]) -> list:
        answers: list = [None] * len(requests)
        groups: dict[float, list[tuple[int, tuple]]] = {}
        for index, request in enumerate(requests):
            try:
                matcher = self.matcher_for(self.threshold(request))
                pair = tuple(features_from_record({field: request[f"{field}{side}"] for field in FEATURE_FIELDS
                                                   if f"{field}{side}" in request}, f"features{side}")
                             for side in "01")
            except UserError as error:
                answers[index] = error
                continue
            groups.setdefault(matcher.threshold, []).append((index, pair))
        for threshold, members in groups.items():
            matcher = self.matchers[threshold]
            try:
                results = matcher.match_pairs([pair for _, pair in members])
            except UserError:  # one of them is at fault: each alone, so that only it gets the error
                results = []
                for _, pair in members:
                    try:
                        results.append(matcher.match_pairs([pair])[0])
                    except UserError as error:
                        results.append(error)
            for (index, _), result in zip(members, results):
                answers[index] = result if isinstance(result, UserError) else self.tensors(result, threshold)
        return answers

    @staticmethod
    def tensors(result, threshold: float) -> dict:
        record = result_record(result, threshold=threshold)
        return {"keypoints0": result.keypoints0, "keypoints1": result.keypoints1, "matches": result.matches,
                "scores": result.scores, "record": np.array([encode_json(record)], dtype=object)}


def main(argv=None) -> None:
    import argparse

    from trt.validation import max_keypoints_arg, path_arg, positive_int_arg, resize_arg, threshold_arg

    parser = argparse.ArgumentParser(prog="python -m trt.serve.triton", description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", type=path_arg, required=True, help="the matcher engine (its manifest beside it)")
    parser.add_argument("--output", type=path_arg, required=True, help="the model repository folder to write")
    parser.add_argument("--threshold", type=threshold_arg, default=DEFAULT_THRESHOLD)
    parser.add_argument("--max-keypoints", type=max_keypoints_arg)
    parser.add_argument("--resize", type=resize_arg, default=DEFAULT_RESIZE, help="0: the original size")
    parser.add_argument("--max-batch-size", type=positive_int_arg(256), default=8,
                        help="requests Triton's dynamic batcher hands each Python model together")
    args = parser.parse_args(argv)
    for path in write_repository(args.engine, args.output, args.threshold, args.max_keypoints, args.resize or None,
                                 args.max_batch_size):
        print(f"wrote {path}")


if __name__ == "__main__":
    from trt.cli import run

    run(main)
