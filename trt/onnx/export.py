"""Export the LightGlue matcher to a clean, TensorRT-ready ONNX file that follows the tensor contract.

Pipeline: torch (TorchScript exporter, opset 17) → onnx.checker → symbolic shape inference →
graph-surgeon fold/clean-up/toposort → checker → TensorRT op lint → numerical check against the torch
module at sizes other than the trace sizes (float64 oracle, see ``compare_outputs``) → atomic write.

The TorchScript exporter is used on purpose: the dynamo exporter's opset ≥ 18 graphs defeat symbolic
shape inference. The trace uses sizes that equal no model dimension, so none can be baked in, and the
numerical check at other sizes catches any that was.
"""

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

from trt import __version__
from trt.contract import BATCH, KEYPOINTS0, KEYPOINTS1, OUTPUT_NAMES, input_specs
from trt.errors import ContractError, UserError
from trt.extractors import Extractor, get_extractor
from trt.fileio import atomic_path, check_writable
from trt.onnx.clean import prepare_for_tensorrt
from trt.onnx.lint import lint_for_tensorrt

DEFAULT_OPSET = 17
SUPPORTED_OPSETS = (17,)
# Trace sizes: odd, and equal to no model dimension (2, 3, 4, 64, 128, 256, 512, 768).
TRACE_SIZES = (5, 211, 173)
CHECK_SIZES = ((1, 97, 131), (3, 150, 61))
# The self-check's oracle is the torch module in float64. Float32 arithmetic, torch's or a runtime's, lands
# within rounding of it, and how far depends on the weights (peaked, trained-like weights put scores at exp of
# sums in the thousands, so float32 moves log(score) by ~1e-3). So the graph is judged against the float32
# torch module's own error on the same inputs: refused only when its error is NOISE_FACTOR times that or more.
NOISE_FACTOR = 4.0
# Errors below these are float32 rounding whatever the float32 module's own happen to be (it may be 0 on a row).
LOG_SCORE_NOISE_FLOOR = 1e-4  # |Δ log score|
MAX_MATCH_DISAGREEMENT = 1e-3  # share of rows: near-ties of the arg-max may flip this many
# Scores are compared in the log domain (a relative error). Below float32's normal range a score carries no
# relative precision (and may flush to 0): compared as equal.
SCORE_FLOOR = float(np.finfo(np.float32).tiny)
# Parity against an independent float32 implementation (kornia's LightGlue, tests/test_parity.py): 1e-2 in
# log(score), a 1 % relative tolerance; any real mistranslation moves scores by far more, and matches stay strict.
LOG_SCORE_ATOL = 1e-2
METADATA_PREFIX = "lightglue."


@dataclass(frozen=True)
class ExportSettings:
    extractor: str
    dynamic: bool = True
    batch_size: int = 1  # static exports only
    num_keypoints: int = 1024  # static exports only
    opset: int = DEFAULT_OPSET


def build_model(extractor: Extractor, weights: Path | None, random_seed: int | None, nearest_neighbour: bool,
                weights_dir: Path, sharp_seed: int | None = None):
    """The torch matcher with the requested weights, and a description of them for the metadata."""
    from trt.models.lightglue import LightGlue
    from trt.models.nearest_neighbour import nearest_neighbour_state_dict
    from trt.models.sharp import sharp_state_dict
    from trt.models.weights import (WeightsSource, load_checkpoint, load_state_dict_strict, random_state_dict,
                                    resolve_weights)

    chosen = sum([weights is not None, random_seed is not None, nearest_neighbour, sharp_seed is not None])
    if chosen > 1:
        raise UserError("choose one of --weights, --random-weights, --nearest-neighbour-weights and --sharp-weights")
    model = LightGlue(extractor).eval()
    if random_seed is not None:
        load_state_dict_strict(model, random_state_dict(model, random_seed), f"random seed {random_seed}")
        source = WeightsSource("random", f"random seed {random_seed} (for tests, not trained)")
    elif nearest_neighbour:
        load_state_dict_strict(model, nearest_neighbour_state_dict(model), "nearest-neighbour weights")
        source = WeightsSource("nearest-neighbour", "hand-set nearest-neighbour weights (not trained)")
    elif sharp_seed is not None:
        load_state_dict_strict(model, sharp_state_dict(model, sharp_seed), f"sharp weights seed {sharp_seed}")
        source = WeightsSource("sharp", f"sharp test weights seed {sharp_seed} (nearest-neighbour plus seeded "
                                        "residual updates; for tests, not trained)")
    else:
        source = load_checkpoint(model, extractor, resolve_weights(extractor, weights, weights_dir))
    return model, source


def example_inputs(extractor: Extractor, batch: int, n0: int, n1: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible random inputs of the contract: keypoints inside a 640×480 image, unit descriptors."""
    rng = np.random.default_rng(seed)
    size = np.array([640.0, 480.0], np.float32)
    feeds = {}
    for side, n in ((0, n0), (1, n1)):
        feeds[f"kpts{side}"] = (rng.random((batch, n, 2)) * size).astype(np.float32)
        desc = rng.random((batch, n, extractor.descriptor_dim)).astype(np.float32)
        feeds[f"desc{side}"] = desc / np.linalg.norm(desc, axis=2, keepdims=True)
        feeds[f"scales{side}"] = (rng.random((batch, n)) * 8 + 1).astype(np.float32)
        feeds[f"oris{side}"] = ((rng.random((batch, n)) * 2 - 1) * np.pi).astype(np.float32)
        feeds[f"size{side}"] = np.tile(size, (batch, 1))
        # Some padding in every pair but the first, so masks are exercised.
        feeds[f"count{side}"] = np.array([n - (b * n) // (2 * batch) for b in range(batch)], np.int32)
    feeds["threshold"] = np.array([0.0], np.float32)
    names = [spec.name for spec in input_specs(extractor.descriptor_dim, extractor.scale_ori)]
    return {name: feeds[name] for name in names}


def torch_outputs(model, feeds: dict[str, np.ndarray], float64: bool = False,
                  output_names: Sequence[str] = OUTPUT_NAMES) -> dict[str, np.ndarray]:
    """The torch module's outputs, named ``output_names`` (the matcher's, or a stage's); ``float64``: a float64
    copy of it on float64 inputs (the self-check's oracle)."""
    import copy

    import torch

    if float64:
        model = copy.deepcopy(model).double()
        feeds = {name: value.astype(np.float64) if value.dtype == np.float32 else value for name, value in feeds.items()}
    with torch.no_grad():
        outputs = model(*(torch.from_numpy(value) for value in feeds.values()))
    return {name: value.numpy() for name, value in zip(output_names, outputs)}


def run_onnx(model: bytes | str | Path, feeds_list: list[dict[str, np.ndarray]],
             output_names: list[str] = OUTPUT_NAMES) -> list[dict[str, np.ndarray]]:
    """Run a graph (serialised bytes or a path; the matcher's outputs unless ``output_names`` says otherwise)
    on ONNX Runtime's CPU provider, one session for all."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # ORT's optimiser warns about every Unsqueeze it keeps
    source = str(model) if isinstance(model, Path) else model
    session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return [dict(zip(output_names, session.run(output_names, feeds))) for feeds in feeds_list]


def onnx_outputs(model: bytes | str | Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a matcher graph once (see ``run_onnx``)."""
    return run_onnx(model, [feeds])[0]


@dataclass(frozen=True)
class Deviation:
    """How far one side's outputs are from the float64 oracle's."""

    rows: float  # share of rows whose match differs, or that only one of the two calls mutual
    rms_log_score: float  # of |Δ log score| over the matched rows that agree
    worst_log_score: float


def deviation(oracle: dict, actual: dict, side: str) -> Deviation:
    matches, oracle_matches = actual[f"matches{side}"], oracle[f"matches{side}"]
    scores, oracle_scores = actual[f"mscores{side}"], oracle[f"mscores{side}"]
    differ = (matches != oracle_matches) | ((scores > 0) != (oracle_scores > 0))
    compared = ~differ & (oracle_scores > 0)
    log_delta = np.abs(np.log(np.maximum(scores[compared].astype(np.float64), SCORE_FLOOR))
                       - np.log(np.maximum(oracle_scores[compared].astype(np.float64), SCORE_FLOOR)))
    if not log_delta.size:
        return Deviation(float(np.mean(differ)), 0.0, 0.0)
    return Deviation(float(np.mean(differ)), float(np.sqrt(np.mean(log_delta**2))), float(log_delta.max()))


def compare_outputs(oracle: dict, reference: dict, actual: dict, where: str) -> None:
    """``actual`` (the graph's outputs) against the float64 ``oracle``, judged by the float32 torch module's own
    error (``reference``) on the same inputs; a ContractError printing both when it is well beyond it.

    Allowed: ``NOISE_FACTOR`` times the float32 module's share of differing rows (at least
    ``MAX_MATCH_DISAGREEMENT``), and as many times its RMS and worst |Δ log score| on the rows that agree
    (at least ``LOG_SCORE_NOISE_FLOOR``).
    """
    for name, expected in reference.items():
        value = actual[name]
        if value.shape != expected.shape or value.dtype != expected.dtype:
            raise ContractError(f"{where}: {name} is {value.dtype}{list(value.shape)}, "
                                f"expected {expected.dtype}{list(expected.shape)}")
    for side in ("0", "1"):
        if f"matches{side}" not in reference:
            continue
        own, ours = deviation(oracle, reference, side), deviation(oracle, actual, side)
        allowed_rows = max(MAX_MATCH_DISAGREEMENT, NOISE_FACTOR * own.rows)
        if ours.rows > allowed_rows:
            raise ContractError(f"{where}: matches{side} differs from the float64 torch module on {ours.rows:.2%} of "
                                f"rows (the float32 torch module on {own.rows:.2%}; allowed {allowed_rows:.2%})")
        for label, error, own_error in (("RMS", ours.rms_log_score, own.rms_log_score),
                                        ("worst", ours.worst_log_score, own.worst_log_score)):
            allowed = max(LOG_SCORE_NOISE_FLOOR, NOISE_FACTOR * own_error)
            if error > allowed:
                raise ContractError(
                    f"{where}: mscores{side} is off the float64 torch module by {label} |Δ log score| {error:.3g} "
                    f"(the float32 torch module by {own_error:.3g}; allowed {allowed:.3g}, {NOISE_FACTOR:g}× that)")


def _dynamic_axes(extractor: Extractor) -> dict:
    axes = {}
    for spec in input_specs(extractor.descriptor_dim, extractor.scale_ori):
        symbolic = {i: d for i, d in enumerate(spec.shape) if d in (BATCH, KEYPOINTS0, KEYPOINTS1)}
        if symbolic:
            axes[spec.name] = symbolic
    axes.update({"matches0": {0: BATCH, 1: KEYPOINTS0}, "mscores0": {0: BATCH, 1: KEYPOINTS0},
                 "matches1": {0: BATCH, 1: KEYPOINTS1}, "mscores1": {0: BATCH, 1: KEYPOINTS1}})
    return axes


def trace_to_onnx(model, extractor: Extractor, settings: ExportSettings) -> onnx.ModelProto:
    if settings.dynamic:
        batch, n0, n1 = TRACE_SIZES
    else:
        batch, n0, n1 = settings.batch_size, settings.num_keypoints, settings.num_keypoints
    feeds = example_inputs(extractor, batch, n0, n1)
    return torch_to_onnx(model, feeds, OUTPUT_NAMES, _dynamic_axes(extractor) if settings.dynamic else None,
                         settings.opset)


def torch_to_onnx(model, feeds: dict[str, np.ndarray], output_names: list[str], dynamic_axes: dict | None,
                  opset: int) -> onnx.ModelProto:
    """The TorchScript exporter's graph of ``model`` traced on ``feeds`` (inputs named and ordered as given)."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is chosen on purpose
            # Its notes on its own passes (constant folding skipped, instance norm traced in training mode,
            # which is how InstanceNormalization computes anyway, torch's own shape checks traced as
            # constants) are not the user's to act on; the numerical check at untraced sizes after export
            # is what guards the graph.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                model,
                tuple(torch.from_numpy(value) for value in feeds.values()),
                str(raw),
                input_names=list(feeds),
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        return onnx.load(str(raw))


def set_metadata(model: onnx.ModelProto, extractor: Extractor, settings: ExportSettings, weights) -> None:
    import torch

    entries = {
        "extractor": extractor.name,
        "descriptor_dim": str(extractor.descriptor_dim),
        "scale_ori": str(extractor.scale_ori).lower(),
        "weights": weights.description,
        "weights_kind": weights.kind,
        "contract": "1",
        "export": json.dumps({
            "dynamic": settings.dynamic,
            "batch_size": None if settings.dynamic else settings.batch_size,
            "num_keypoints": None if settings.dynamic else settings.num_keypoints,
            "opset": settings.opset,
            "exporter": "torch.onnx (TorchScript)",
            "torch": torch.__version__,
            "lightglue_trt": __version__,
        }, sort_keys=True),
    }
    write_metadata(model, entries)


def write_metadata(model: onnx.ModelProto, entries: dict[str, str]) -> None:
    """Replace the graph's metadata by ``entries``, each key under the ``lightglue.`` prefix."""
    del model.metadata_props[:]
    for key, value in entries.items():
        model.metadata_props.add(key=METADATA_PREFIX + key, value=value)
    model.producer_name, model.producer_version = "lightglue-trt", __version__


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The ``lightglue.*`` metadata of an exported matcher, without the prefix."""
    return {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(METADATA_PREFIX)}


def finish_for_tensorrt(graph: onnx.ModelProto) -> bytes:
    """Shape inference, clean-up and the TensorRT op lint of an exported graph; its bytes, or a ContractError."""
    graph = prepare_for_tensorrt(graph)
    issues = lint_for_tensorrt(graph)
    if issues:
        raise ContractError("the exported graph has nodes TensorRT cannot parse: " + "; ".join(map(str, issues)))
    return graph.SerializeToString()


def export_matcher(
    extractor: str = "sift",
    output: Path = Path("weights/sift_lightglue.onnx"),
    *,
    weights: Path | None = None,
    random_seed: int | None = None,
    nearest_neighbour: bool = False,
    sharp_seed: int | None = None,
    dynamic: bool = True,
    batch_size: int = 1,
    num_keypoints: int = 1024,
    opset: int = DEFAULT_OPSET,
    weights_dir: Path = Path("weights"),
    verify: bool = True,
    then: Callable[..., object] | None = None,
) -> Path:
    """Export, clean, lint and verify the matcher; write it atomically to ``output`` and return the path.

    ``verify=False`` skips the comparison with the torch module: for a stand-in whose inputs and layer names
    are all that is read (``trt.engine.trtexec.stand_in_onnx``), never for a model to serve. ``then(model,
    extractor, metadata)``: a further export of the verified model before the file is written (the stages of
    adaptive depth and width: ``trt.onnx.export_stages.export_matcher_and_stages``).
    """
    spec = get_extractor(extractor)
    if opset not in SUPPORTED_OPSETS:
        raise UserError(f"opset {opset} is not supported: use {', '.join(map(str, SUPPORTED_OPSETS))} "
                        "(symbolic shape inference cannot handle the axes-as-input ops of opset 18+)")
    if not dynamic and (batch_size < 1 or num_keypoints < 2):
        raise UserError("a static export needs --batch-size >= 1 and --num-keypoints >= 2")
    output = check_writable(Path(output))
    settings = ExportSettings(extractor, dynamic, batch_size, num_keypoints, opset)
    model, source = build_model(spec, weights, random_seed, nearest_neighbour, Path(weights_dir), sharp_seed)

    graph = trace_to_onnx(model, spec, settings)
    set_metadata(graph, spec, settings, source)
    graph_bytes = finish_for_tensorrt(graph)
    check_sizes = () if not verify else CHECK_SIZES if dynamic else ((batch_size, num_keypoints, num_keypoints),)
    for batch, n0, n1 in check_sizes:
        feeds = example_inputs(spec, batch, n0, n1, seed=batch + n0)
        compare_outputs(torch_outputs(model, feeds, float64=True), torch_outputs(model, feeds),
                        onnx_outputs(graph_bytes, feeds), f"exported graph at B={batch}, N0={n0}, N1={n1}")
    if then is not None:
        then(model, spec, read_metadata(graph))

    with atomic_path(output) as tmp:
        tmp.write_bytes(graph_bytes)
    return output
