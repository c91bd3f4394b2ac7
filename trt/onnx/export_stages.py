"""Export the matcher as stages (``trt.contract.stage_specs``) for adaptive depth and width.

Each stage goes through the single graph's pipeline (``trt.onnx.export``): the TorchScript exporter at
trace sizes that equal no model dimension, shape inference, clean-up, the TensorRT op lint, then a
numerical check against its torch module at two other sizes, fed what the torch stages before it
produced. The folder is filled file by file, each atomically, and ``stages.json`` written last.
"""

import json
import time
from pathlib import Path

import numpy as np

from trt.contract import BATCH, KEYPOINTS0, KEYPOINTS1, stage_specs
from trt.errors import ContractError, UserError
from trt.extractors import Extractor
from trt.fileio import sha256_file, write_bytes_atomic
from trt.onnx.export import (CHECK_SIZES, DEFAULT_OPSET, TRACE_SIZES, compare_outputs, example_inputs, export_matcher,
                             finish_for_tensorrt, run_onnx, torch_outputs, torch_to_onnx, write_metadata)
from trt.precision import SCOPES_KEY
from trt.stages import UNTRAINED_KINDS, StageRecord, StagesManifest, stage_name

# A stage's float outputs (states, confidences, matchabilities) against torch: relative to the largest
# magnitude of each output, the rounding of a different summation order, far below any mistranslation.
STAGE_RTOL = 1e-4
# One untraced size checks each stage (several pairs, N0 != N1, both unlike the trace's): a dimension the
# trace baked in shows there; the single graph, checked at CHECK_SIZES, covers B = 1.
STAGE_CHECK_SIZES = CHECK_SIZES[1:]
# Node-name prefixes of each stage's transformer (the reduced-precision region, trt.precision).
STAGE_SCOPES = {"encode": ["/input_proj"], "layer": ["/transformer/"], "final_layer": ["/transformer/"],
                "assign": []}


def stage_modules(model) -> list[tuple[str, str, int | None, object]]:
    """(name, kind, layer, torch module) of every stage of ``model`` (a ``trt.models.lightglue.LightGlue``)."""
    from trt.models.lightglue import NUM_LAYERS, AssignStage, EncodeStage, LayerStage

    stages = [("encode", "encode", None, EncodeStage(model).eval())]
    for layer in range(NUM_LAYERS):
        kind = "final_layer" if layer == NUM_LAYERS - 1 else "layer"
        stages.append((stage_name("layer", layer), kind, layer, LayerStage(model, layer).eval()))
    for layer in range(NUM_LAYERS):
        stages.append((stage_name("assign", layer), "assign", layer, AssignStage(model, layer).eval()))
    return stages


def _dynamic_axes(specs) -> dict:
    return {spec.name: {i: d for i, d in enumerate(spec.shape) if d in (BATCH, KEYPOINTS0, KEYPOINTS1)}
            for spec in specs if any(d in (BATCH, KEYPOINTS0, KEYPOINTS1) for d in spec.shape)}


def stage_io(extractor: Extractor, stages, batch: int, n0: int, n1: int, seed: int) -> dict[str, tuple[dict, dict]]:
    """name -> (inputs, torch outputs) of every stage for one request at full depth, each stage fed what the
    torch stages before it made."""
    request = {**example_inputs(extractor, batch, n0, n1, seed), "threshold": np.array([0.1], np.float32)}
    io, state = {}, {}
    states_after = {}  # layer -> its output states, what assignment ℓ reads
    for name, kind, layer, module in stages:
        inputs, outputs = stage_specs(kind, extractor.descriptor_dim, extractor.scale_ori)
        available = {**request, **state} if kind != "assign" else {**request, **states_after[layer]}
        feeds = {spec.name: available[spec.name] for spec in inputs}
        produced = torch_outputs(module, feeds, output_names=[spec.name for spec in outputs])
        io[name] = feeds, produced
        if kind == "encode":
            state = dict(produced)
        elif kind in ("layer", "final_layer"):
            states_after[layer] = {"state0": produced["next_state0"], "state1": produced["next_state1"]}
            state = {**state, **states_after[layer]}
    return io


def compare_stage(module, feeds: dict[str, np.ndarray], expected: dict[str, np.ndarray], actual: dict[str, np.ndarray],
                  where: str) -> None:
    """A stage's outputs against its torch ``module`` (``expected``: on ``feeds``, in float32): the contract's
    outputs by ``compare_outputs`` (judged against the float64 module by the float32 module's own error), floats
    within ``STAGE_RTOL``."""
    if "matches0" in expected:
        compare_outputs(torch_outputs(module, feeds, float64=True, output_names=list(expected)), expected, actual, where)
        return
    for name, reference in expected.items():
        value = actual[name]
        if value.shape != reference.shape or value.dtype != reference.dtype:
            raise ContractError(f"{where}: {name} is {value.dtype}{list(value.shape)}, "
                                f"expected {reference.dtype}{list(reference.shape)}")
        scale = max(float(np.abs(reference).max()), 1.0)
        worst = float(np.abs(value - reference).max()) / scale
        if worst > STAGE_RTOL:
            raise ContractError(f"{where}: {name} differs from the torch module by {worst:.3g} of its largest "
                                f"magnitude (tolerance {STAGE_RTOL:g})")


def export_stages(model, extractor: Extractor, folder: Path, matcher_metadata: dict[str, str],
                  opset: int = DEFAULT_OPSET) -> Path:
    """Export, clean, lint and check every stage of ``model`` into ``folder``; return its manifest's path.

    ``matcher_metadata``: the single graph's ``lightglue.*`` metadata, which every stage carries too
    (with its own ``stage``, ``layer`` and reduced-precision scopes).
    """

    from trt.models.lightglue import NUM_LAYERS, confidence_thresholds

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stages = stage_modules(model)
    trace = stage_io(extractor, stages, *TRACE_SIZES, seed=0)
    checks = [((batch, n0, n1), stage_io(extractor, stages, batch, n0, n1, seed=batch + n0))
              for batch, n0, n1 in STAGE_CHECK_SIZES]
    records = []
    for name, kind, layer, module in stages:
        inputs, outputs = stage_specs(kind, extractor.descriptor_dim, extractor.scale_ori)
        output_names = [spec.name for spec in outputs]
        graph = torch_to_onnx(module, trace[name][0], output_names, _dynamic_axes(inputs + outputs), opset)
        write_metadata(graph, {**matcher_metadata, "stage": kind, "stage_layer": "" if layer is None else str(layer),
                               SCOPES_KEY.removeprefix("lightglue."): json.dumps(STAGE_SCOPES[kind])})
        graph_bytes = finish_for_tensorrt(graph)
        for (batch, n0, n1), io in checks:
            feeds, expected = io[name]
            compare_stage(module, feeds, expected, run_onnx(graph_bytes, [feeds], output_names)[0],
                          f"stage {name} at B={batch}, N0={n0}, N1={n1}")
        path = write_bytes_atomic(folder / f"{name}.onnx", graph_bytes)
        records.append(StageRecord(name, kind, layer, path.name, sha256_file(path)))
    thresholds = [float(value) for value in confidence_thresholds(NUM_LAYERS)]
    kind = matcher_metadata.get("weights_kind", "")
    manifest = StagesManifest(
        extractor=extractor.name, descriptor_dim=extractor.descriptor_dim, scale_ori=extractor.scale_ori,
        weights={"kind": kind, "description": matcher_metadata.get("weights", "")},
        trained_confidence=kind not in UNTRAINED_KINDS, num_layers=NUM_LAYERS, confidence_thresholds=thresholds,
        stages=records, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return manifest.write(folder)


def export_matcher_and_stages(extractor: str, output: Path, folder: Path, **settings) -> Path:
    """``export_matcher`` (same arguments), with the verified model also exported as stages into ``folder``
    before the single graph is written; dynamic shapes only."""
    if not settings.get("dynamic", True):
        raise UserError("the stages of adaptive depth and width are exported with dynamic shapes only: add --dynamic")
    opset = settings.get("opset", DEFAULT_OPSET)
    return export_matcher(extractor, output, **settings,
                          then=lambda model, spec, metadata: export_stages(model, spec, folder, metadata, opset))
