"""A Triton Inference Server model repository for an engine: ``make triton ENGINE=X.engine OUT=repo/``.

    repo/
      lightglue_matcher_<profile>/   config.pbtxt, 1/model.plan   tensorrt_plan, one instance group pinned to
                                                                    that optimization profile (profile: ["k"])
      lightglue_extractor_<profile>/ (learned extractors)          the extractor engine, likewise
      lightglue/                     config.pbtxt, 1/model.py, 1/frontend.json
                                     Python backend: image pair -> matches, the record trt_infer.py writes

Why one plan model per profile, not one model with an instance group per profile: Triton's scheduler hands a
request to any instance of a model without looking at its shapes, and an instance pinned to profile k can
run only k's shapes; so each profile is a model of its own (the same plan, one instance group with
``profile: ["k"]``), and the front-end, which knows the shapes, calls the one that holds the request. The
front-end is a ``Matcher`` (the project's, unchanged: extraction, top-K, batching by profile, padding,
results) whose runners are ``TritonRunner``: each engine call is a Triton business-logic (BLS) request to
the profile's model. The front-end needs this project installed in the Triton container
(``pip install lightglue-trt``); the plan models need nothing of it.

What cannot run here: Triton's TensorRT backend needs NVIDIA's container and a GPU, and loads only engines
built by full TensorRT of its own version (``make engine`` on that machine, with ``tensorrt`` installed),
never tensorrt-rtx engines. Tests check the repository's configs against the engine's manifest with
``tritonclient``'s ``model_config_pb2`` and run the front-end here with its engine calls on OpenVINO.
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
from trt.fileio import write_text_atomic
from trt.runtime.base import Runner, contract_from_manifest
from trt.runtime.matcher import DEFAULT_RESIZE, Matcher, engine_summary, linked_extractor_engine
from trt.runtime.outputs import encode_json, result_record
from trt.runtime.tensorrt_session import profiles_from_manifest
from trt.validation import check_input_file, check_matcher_manifest

FRONT_END = "lightglue"
MATCHER_PREFIX = "lightglue_matcher"
EXTRACTOR_PREFIX = "lightglue_extractor"
SETTINGS_FILE = "frontend.json"
# numpy dtype -> Triton data type
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
                "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL", "bytes": "TYPE_STRING"}
# The front-end's tensors: (name, dtype, dims); dims -1 where the size varies.
FRONT_END_INPUTS = (("image0", "bytes", [1]), ("image1", "bytes", [1]), ("threshold", "float32", [1]))
FRONT_END_OUTPUTS = (("keypoints0", "float32", [-1, 2]), ("keypoints1", "float32", [-1, 2]),
                     ("matches", "int64", [-1, 2]), ("scores", "float32", [-1]), ("record", "bytes", [1]))

MODEL_PY = '''"""Triton Python backend: image pair -> matches (written by trt/serve/triton.py; see its docstring)."""

from pathlib import Path

import triton_python_backend_utils as pb_utils

from trt.errors import UserError
from trt.serve.triton import FrontEnd


def call_model(model_name, feeds, output_names):
    """One engine call: a BLS request to the plan model of the chosen profile."""
    request = pb_utils.InferenceRequest(model_name=model_name, requested_output_names=list(output_names),
                                        inputs=[pb_utils.Tensor(name, value) for name, value in feeds.items()])
    response = request.exec()
    if response.has_error():
        raise pb_utils.TritonModelException(response.error().message())
    return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in output_names}


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / args["model_version"]
        self.front_end = FrontEnd(folder / "frontend.json", call_model)

    def execute(self, requests):
        pairs = []
        for request in requests:
            threshold = pb_utils.get_input_tensor_by_name(request, "threshold")
            pairs.append((pb_utils.get_input_tensor_by_name(request, "image0").as_numpy().reshape(-1)[0],
                          pb_utils.get_input_tensor_by_name(request, "image1").as_numpy().reshape(-1)[0],
                          None if threshold is None else float(threshold.as_numpy().reshape(-1)[0])))
        responses = []
        for answer in self.front_end.answer(pairs):
            if isinstance(answer, UserError):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(answer))))
            else:
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, value) for name, value in answer.items()]))
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


def front_end_config(max_batch_size: int = 8):
    """The Python front-end's config: a pair of encoded images (and an optional threshold) in, matches out;
    Triton's dynamic batcher hands it the requests that wait together, which the Matcher batches by profile."""
    pb = _model_config()
    config = pb.ModelConfig(name=FRONT_END, backend="python", max_batch_size=max_batch_size)
    for tensor, dtype, dims in FRONT_END_INPUTS:
        config.input.add(name=tensor, data_type=pb.DataType.Value(TRITON_TYPES[dtype]), dims=dims,
                         optional=tensor == "threshold")
    for tensor, dtype, dims in FRONT_END_OUTPUTS:
        config.output.add(name=tensor, data_type=pb.DataType.Value(TRITON_TYPES[dtype]), dims=dims)
    config.dynamic_batching.max_queue_delay_microseconds = 5000
    config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=1)
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
    ``output``; return the config files written. ``threshold``, ``max_keypoints``, ``resize``: the
    front-end's settings, as ``Matcher``'s."""
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
    folder = output / FRONT_END / "1"
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / SETTINGS_FILE, json.dumps(settings, indent=1) + "\n")
    write_text_atomic(folder / "model.py", MODEL_PY)
    written.append(write_text_atomic(output / FRONT_END / "config.pbtxt",
                                     text_format.MessageToString(front_end_config(max_batch_size))))
    return written


# -- the front-end, inside Triton --------------------------------------------------------------------------


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


class FrontEnd:
    """The Python model's work: a ``Matcher`` on ``TritonRunner``s, from the settings ``write_repository``
    wrote. ``answer(pairs)`` takes (image0 bytes, image1 bytes, threshold or None) per request."""

    def __init__(self, settings_path: Path, call: Callable[[str, dict, list], dict]):
        settings = json.loads(Path(settings_path).read_text())
        self.settings = settings
        self.call = call
        self.matchers: dict[float, Matcher] = {}
        self.matcher_for(settings["threshold"])

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
                resize=self.settings["resize"], extractor_runner=self._runner("extractor"))
        return self.matchers[threshold]

    def answer(self, pairs: list[tuple[bytes, bytes, Optional[float]]]) -> list:
        """Per request: its output tensors, or the UserError that refuses it (a bad image, threshold, ...)."""
        from trt.features.image import decode_image

        answers: list = [None] * len(pairs)
        groups: dict[float, list[tuple[int, tuple]]] = {}
        for index, (image0, image1, threshold) in enumerate(pairs):
            try:
                matcher = self.matcher_for(self.settings["threshold"] if threshold is None else threshold)
                images = (decode_image(bytes(image0), "image0"), decode_image(bytes(image1), "image1"))
            except UserError as error:
                answers[index] = error
                continue
            groups.setdefault(matcher.threshold, []).append((index, images))
        for threshold, members in groups.items():
            matcher = self.matchers[threshold]
            try:
                results = matcher.match_pairs([images for _, images in members])
            except UserError:  # one of them is at fault: each alone, so that only it gets the error
                results = []
                for _, images in members:
                    try:
                        results.append(matcher.match_pairs([images])[0])
                    except UserError as error:
                        results.append(error)
            for (index, _), result in zip(members, results):
                answers[index] = result if isinstance(result, UserError) else self.tensors(result, threshold)
        return answers

    @staticmethod
    def tensors(result, threshold: float) -> dict:
        """A request's output tensors, each with the leading batch axis (of 1) Triton's batching adds."""
        record = result_record(result, threshold=threshold)
        outputs = {"keypoints0": result.keypoints0, "keypoints1": result.keypoints1, "matches": result.matches,
                   "scores": result.scores, "record": np.array([encode_json(record)], dtype=object)}
        return {name: value[None] for name, value in outputs.items()}


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
                        help="requests Triton's dynamic batcher hands the front-end together")
    args = parser.parse_args(argv)
    for path in write_repository(args.engine, args.output, args.threshold, args.max_keypoints, args.resize or None,
                                 args.max_batch_size):
        print(f"wrote {path}")


if __name__ == "__main__":
    from trt.cli import run

    run(main)
