"""OpenVINO backend: a matcher or extractor ONNX on OpenVINO's CPU plugin, in float32 or mixed bf16.

Same interface as the other runners; the contract (matcher or extractor) is read from the model. Given
an engine's profiles it takes the requests the engine would take; without them any shape (the
contract's ``dynamic_profile``).

Precision (``precision``):

* ``f32``: every op in float32 (OpenVINO's own default on a bf16-capable CPU is bf16 for the whole graph,
  so f32 is asked for explicitly);
* ``bf16``: ``trt.precision``'s mixed policy. The model is rewritten before compiling (``mixed_bf16``):
  the transformer's ops take and give bf16, with Converts only at the region's borders, and the model
  is compiled with ``INFERENCE_PRECISION_HINT=f32`` so OpenVINO keeps every other op in float32. (A
  bf16 *hint* would override any float32 island. The per-node marker the CPU plugin reads for bf16 too,
  ``disable_fp16_compression`` ("precise"), is ignored when set from Python as an rt_info string; set in
  an IR file it holds for LayerNorm and plain projections but is lost in the plugin's fusions: the
  assignment's MatMuls, the projection it folds a scale into and matchability fused with its sigmoid
  stayed bf16, as measured with OpenVINO 2026.4);
* ``auto``: bf16 where the CPU has AMX-BF16 or AVX512-BF16 (``trt.runtime.cpu``) *and* the bf16 accuracy
  gate has passed for this very model (a record ``<model>.bf16-gate.json`` beside the ONNX, written by
  ``make eval`` / ``bench/bf16_gate.py``, for the ONNX's sha256 and the current ``BF16_POLICY``); else
  f32. ``precision`` and ``precision_reason`` say what was chosen and why; ``precision_note`` says it in a
  few words for the serving notice, with ``make bf16-gate`` as the next step where the gate has not run.

Threads and streams (``mode``): ``latency`` (one pair at a time) runs one stream on every physical
core; ``throughput`` (pairs files) lets OpenVINO pick its streams (one per core or core pair) and
splits each batched request across them, so small matrices keep every core busy.

Fixed shapes (``fixed_shapes``, on by default in latency mode with an engine's profiles): a model compiled
for one shape runs 12-15 % faster than the dynamic one (measured with OpenVINO 2026.4, mixed bf16, B = 1,
2 cores: 155 against 182 ms at N = 1024, 436 against 496 ms at N = 2048). So each matcher profile gets one
more model, at its opt shape with B = 1, compiled in the background once ``FIXED_SHAPE_AFTER`` requests
could have used it (a one-pair command never pays for the compile; a server does, once). A pair whose
N0 and N1 both lie within ``FIXED_SHAPE_FILL`` of the opt is padded up to it and runs there: the
contract's counts mark the padding, so its matches are those of the pair alone, and the padding costs
less than the fixed shape gains (cost grows as about N^1.45 here). Other requests run on the dynamic model.

Shape grid: the dynamic model keeps compiled kernels and buffers for every (N0, N1) it has run, and gives
them back only when it is closed (OpenVINO 2026.4's CPU plugin: 1.6-6.6 MB per shape for the ALIKED
LightGlue, 0.35 MB for a tiny stand-in; a soak of keypoint counts wandering over 1-128 grew the process
by 2.2 GB in 10 000 calls and had not levelled off, bench/soak.py). So a matcher request's N0 and N1 are
padded up to the grid 16, 24, 32, 48, 64, 96, ... (two steps an octave: at most half again as many rows,
a fifth on average; ``grid_size``), within its profile: an engine's range of 1-4096 keypoints then
runs in at most 17 x 17 shapes, and memory stops growing once those have been seen. The counts mark the
padding, as for the fixed shapes, so the matches are the pair's own.

Compiled models are cached in ``cache_dir`` (OpenVINO's model cache, keyed by model, shape, precision and
settings), so a second start skips compilation.
"""

import json
import os
import threading
from collections import Counter
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from trt.contract import BATCH, KEYPOINTS0, KEYPOINTS1, concrete_shape
from trt.errors import ContractError, EngineError, UserError
from trt.fileio import check_regular_file, read_file_bytes, sha256_file
from trt.precision import REDUCED_SCOPES, SERVE_PRECISION_ALIASES, canonical_precision, reduced, scopes_from_metadata
from trt.runtime.base import Profile, Runner, contract_from_io, network_settings
from trt.runtime.cpu import CpuInfo, cpu_info
from trt.runtime.onnxruntime_session import physical_cores

PRECISIONS = ("auto", "f32", "bf16")
MODES = ("latency", "throughput")
# The mixed-bf16 policy a gate record speaks for; a record of another policy does not count.
BF16_POLICY = "mixed-transformer-1"
BF16_GATE_SUFFIX = ".bf16-gate.json"
# The evaluation preset (trt.evaluation.datasets) a gate record must come from to count: the full one.
GATE_PRESET = "standard"
# Ops whose inputs are read for their shape only: never converted.
SHAPE_ONLY_OPS = frozenset({"ShapeOf"})
# Ops of OpenVINO's LayerNorm decomposition (MVN, then gain and bias) that carry no ONNX name.
KEPT_FP32_OPS = frozenset({"MVN"})
# Fixed-shape models (module docstring): compiled once this many requests could have used one, used for
# pairs whose N0 and N1 are at least this share of the profile's opt.
FIXED_SHAPE_AFTER = 2
FIXED_SHAPE_FILL = 0.9
GRID_START = 16  # the smallest keypoint count the dynamic model runs at (module docstring: shape grid)


def grid_size(count: int, high: int) -> int:
    """``count`` rounded up to the shape grid (16, 24, 32, 48, 64, ...: powers of two and 1.5 times them),
    but not above ``high`` (the profile's max) nor below ``count``."""
    size = GRID_START
    while size < count:
        size = size // 2 * 3 if size & (size - 1) == 0 else size // 3 * 4
    return max(count, min(size, high))


def openvino_unavailable() -> Optional[str]:
    """Why OpenVINO cannot serve here (a short phrase), or None when it can."""
    try:
        import openvino
    except ImportError:
        return "OpenVINO is not installed (pip install openvino)"
    if "CPU" not in openvino.Core().available_devices:
        return "OpenVINO finds no CPU device it supports"
    return None


# -- the bf16 accuracy gate's record ---------------------------------------------------------------------


def bf16_gate_path(onnx_path: Path) -> Path:
    """Where the bf16 gate's record of ``onnx_path`` lives: ``X.onnx`` -> ``X.bf16-gate.json`` beside it."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + BF16_GATE_SUFFIX)


def bf16_gate_record(onnx_path: Path) -> tuple[Optional[dict], str]:
    """(the gate record that speaks for the model at ``onnx_path``, or None; why there is none).

    A record counts when it is for this very file (sha256), for the current ``BF16_POLICY``, and from
    the full gate (``GATE_PRESET``), whether it passed or not.
    """
    record_path = bf16_gate_path(onnx_path)
    if not os.path.lexists(record_path):
        return None, f"the bf16 accuracy gate has not been run for {Path(onnx_path).name} (no {record_path.name})"
    try:
        record = json.loads(read_file_bytes(record_path, "the bf16 gate record"))
    except (UserError, ValueError) as error:
        return None, f"cannot read the bf16 gate record {record_path}: {error}"
    if not isinstance(record, dict) or record.get("onnx_sha256") != sha256_file(onnx_path):
        return None, f"{record_path.name} is the bf16 gate record of another model"
    if record.get("preset") != GATE_PRESET:
        preset = record.get("preset")
        return None, f"{record_path.name} comes from the {preset!r} preset, not the full gate ({GATE_PRESET!r})"
    if record.get("policy") != BF16_POLICY:
        return None, f"{record_path.name} records another bf16 policy ({record.get('policy')!r}, now {BF16_POLICY!r})"
    return record, ""


def bf16_gate_verdict(onnx_path: Path) -> tuple[bool, str]:
    """(passed, what the record says) for the model at ``onnx_path``: no record that counts
    (``bf16_gate_record``) and a failed gate are both "not passed"."""
    record, why = bf16_gate_record(onnx_path)
    if record is None:
        return False, why
    name, summary = Path(onnx_path).name, record.get("summary", "")
    if not record.get("passed"):
        return False, f"the bf16 accuracy gate failed for {name}: {summary}"
    return True, f"the bf16 accuracy gate passed for {name}: {summary}"


# OpenVINO mixed bf16 against f32 on the project's machine (make bench, 2-core AMD EPYC with AVX512-BF16, sharp
# test weights, B = 1, docs/results/bench-full.json): 249 / 148 ms at N = 1024, 743 / 463 ms at N = 2048.
BF16_SPEEDUP = "about 1.6x"


def precision_note(requested: str, precision: str, onnx_path: Path, cpu: Optional[CpuInfo] = None) -> str:
    """The notice's few words on the precision ``choose_precision`` chose: ``"in f32 (asked for)"``, ``"in bf16
    (X.bf16-gate.json passed)"``, and where the bf16 gate has not run on a CPU with bf16, the command that runs
    it (what makes matching faster here)."""
    requested = check_precision(requested)
    if requested == "bf16" and not bf16_gate_verdict(onnx_path)[0]:
        return "in bf16 (asked for; its bf16 accuracy gate has not passed)"
    if requested != "auto":
        return f"in {precision} (asked for)"
    gate = bf16_gate_path(onnx_path).name
    if precision == "bf16":
        return f"in bf16 ({gate} passed)"
    if (cpu or cpu_info()).bf16_unsupported():
        return "in f32 (no bf16 on this CPU)"
    record, _ = bf16_gate_record(onnx_path)
    if record is not None:
        return f"in f32 (the bf16 accuracy gate failed: {gate})"
    return f"in f32; make bf16-gate ONNX={onnx_path} enables bf16, {BF16_SPEEDUP} faster on this CPU"


def check_precision(requested: str) -> str:
    """A serving precision ("auto", "f32", "bf16"; the builder's "fp32" taken as "f32"), or a UserError."""
    precision = canonical_precision(requested, SERVE_PRECISION_ALIASES)
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


def choose_precision(requested: str, onnx_path: Path, cpu: Optional[CpuInfo] = None) -> tuple[str, str]:
    """(``"f32"`` or ``"bf16"``, why) for a requested precision ("auto", "f32", "bf16") on this CPU.

    "bf16" asked for explicitly runs even where the gate has not passed (the reason says so), but not
    on a CPU without native bf16, where it would be slower than f32: that is a UserError.
    """
    requested = check_precision(requested)
    cpu = cpu or cpu_info()
    if requested == "f32":
        return "f32", "asked for"
    unsupported = cpu.bf16_unsupported()
    if requested == "bf16":
        if unsupported:
            raise UserError(f"bf16 needs a CPU with AMX-BF16 or AVX512-BF16, but {unsupported}; use precision f32 or auto")
        passed, verdict = bf16_gate_verdict(onnx_path)
        return "bf16", f"asked for, on {cpu.bf16_unit()}" + ("" if passed else f"; beware: {verdict}")
    if unsupported:
        return "f32", unsupported
    passed, verdict = bf16_gate_verdict(onnx_path)
    if not passed:
        return "f32", verdict
    return "bf16", f"{cpu.bf16_unit()}, and {verdict}"


# -- the mixed-bf16 model --------------------------------------------------------------------------------


def mixed_bf16(model, scopes: tuple[str, ...] = REDUCED_SCOPES):
    """Rewrite an ``openvino.Model`` in place so that ``trt.precision``'s region (``scopes``: the matcher's,
    or the one an extractor's metadata names) runs in bf16.

    Float32 tensors entering the region are converted to bf16 once each (constants too: OpenVINO folds
    those Converts into bf16 weights); region outputs read outside it are converted back to float32.
    Returns the model; a ContractError when it has no region (not a matcher exported by this project).
    """
    import openvino as ov
    from openvino import opset13

    def in_region(node) -> bool:
        return (node.get_type_name() not in ("Parameter", "Result", "Constant", *KEPT_FP32_OPS)
                and reduced(node.get_friendly_name(), scopes))

    nodes = model.get_ordered_ops()
    region = {node.get_name() for node in nodes if in_region(node)}
    if not region:
        raise ContractError("no nodes of the bf16 region in the model: not a matcher or extractor graph exported by "
                            "this project")
    entering = {}
    leaving = []
    for node in nodes:
        if node.get_name() not in region:
            continue
        if node.get_type_name() == "Convert" and node.get_output_element_type(0) == ov.Type.f32:
            raise ContractError(f"{node.get_friendly_name()} converts to float32 inside the bf16 region")
        if any(output.get_element_type() == ov.Type.f16 for output in node.outputs()):
            raise ContractError("the model's transformer is FP16 already (an FP16 engine's source ONNX): bf16 runs "
                                "from the FP32 ONNX, pass it with --onnx")
        for output in node.outputs():
            if output.get_element_type() == ov.Type.f32:
                leaving += [target for target in output.get_target_inputs()
                            if target.get_node().get_name() not in region]
        if node.get_type_name() in SHAPE_ONLY_OPS:
            continue
        for port in node.inputs():
            source = port.get_source_output()
            if source.get_node().get_name() in region or source.get_element_type() != ov.Type.f32:
                continue
            key = (source.get_node().get_name(), source.get_index())
            if key not in entering:
                entering[key] = opset13.convert(source, "bf16", name=f"{source.get_node().get_friendly_name()}/to_bf16")
            port.replace_source_output(entering[key].output(0))
    back = {}
    for target in leaving:
        source = target.get_source_output()
        key = (source.get_node().get_name(), source.get_index())
        if key not in back:
            back[key] = opset13.convert(source, "f32", name=f"{source.get_node().get_friendly_name()}/to_f32")
        target.replace_source_output(back[key].output(0))
    model.validate_nodes_and_infer_types()
    return model


# -- the session ----------------------------------------------------------------------------------------


class OpenVINOSession(Runner):
    """A matcher or extractor ONNX on OpenVINO's CPU plugin: ``with OpenVINOSession(path) as s: s.infer(feeds)``.

    ``profiles``: the engine's profiles when standing in for one, else any shape. ``precision``: "auto",
    "f32" or "bf16" (module docstring); the choice is in ``precision`` and ``precision_reason`` once made
    (at construction). ``cache_dir``: OpenVINO's model cache (None: no cache). ``mode``: "latency" or
    "throughput". ``threads``: CPU threads in all (default: the physical cores). ``fixed_shapes``: a
    fixed-shape model per matcher profile (module docstring); default: in latency mode, given profiles.
    """

    backend = "openvino"

    def __init__(
        self,
        onnx_path: Path,
        profiles: Optional[Sequence[Profile]] = None,
        precision: str = "auto",
        cache_dir: Optional[Path] = None,
        mode: str = "latency",
        threads: Optional[int] = None,
        fixed_shapes: Optional[bool] = None,
    ):
        super().__init__(f"OpenVINO session of {onnx_path}", profiles=profiles)
        if mode not in MODES:
            raise UserError(f"unknown OpenVINO mode {mode!r}: choose one of {', '.join(MODES)}")
        self.onnx_path = Path(onnx_path)
        check_regular_file(self.onnx_path, "ONNX model", EngineError)
        self.precision, self.precision_reason = choose_precision(precision, self.onnx_path)
        self.precision_note = precision_note(precision, self.precision, self.onnx_path)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.mode = mode
        self.threads = threads or physical_cores()
        self.fixed_shapes = (mode == "latency" and bool(profiles)) if fixed_shapes is None else fixed_shapes
        self.loaded_from_cache = False
        self._core = None
        self._source = None  # the model as read (before any bf16 rewrite), for the fixed-shape compiles
        self._fixed: dict[int, object] = {}  # profile index -> infer request of its fixed-shape model
        self._fixed_wanted: Counter = Counter()  # profile index -> requests that could have used it
        self._compiled = None
        self._requests: list = []
        self._output_index: dict[str, int] = {}
        self._lock = threading.Lock()

    def summary(self) -> dict:
        return {"runtime_precision": self.precision, "runtime_precision_reason": self.precision_reason}

    @property
    def fixed_shape_models(self) -> list[str]:
        """The profiles whose fixed-shape model is compiled and serving."""
        with self._lock:
            return [self.profiles[index].name for index, request in sorted(self._fixed.items()) if request is not None]

    def compile_config(self) -> dict:
        """The properties the model is compiled with."""
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": self.threads}
        if self.mode == "latency":
            config.update(PERFORMANCE_HINT="LATENCY", NUM_STREAMS=1)
        else:
            config.update(PERFORMANCE_HINT="THROUGHPUT")
        return config

    def activate_impl(self) -> None:
        import openvino as ov

        core = ov.Core()
        if self.cache_dir is not None:
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                core.set_property({"CACHE_DIR": str(self.cache_dir)})
            except OSError as error:
                warnings.warn(f"no OpenVINO model cache at {self.cache_dir} ({error}): every start compiles", stacklevel=2)
        try:
            model = core.read_model(str(self.onnx_path))
        except RuntimeError as error:
            raise EngineError(f"OpenVINO cannot read {self.onnx_path}: {error}") from None
        def shapes(ports) -> dict[str, tuple]:
            return {port.get_any_name(): tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
                    for port in ports}

        if model.has_rt_info(["framework"]):
            framework = model.get_rt_info(["framework"]).astype(dict)
            self.metadata = {key: value.astype(str) for key, value in framework.items()}
        contract = contract_from_io(shapes(model.inputs), shapes(model.outputs), network_settings(self.metadata),
                                    str(self.onnx_path))
        outputs = {port.get_any_name(): index for index, port in enumerate(model.outputs)}
        self._core, self._source = core, (model.clone() if self.fixed_shapes and contract.kind == "matcher" else None)
        compiled = self._compile(core, model)
        self.loaded_from_cache = bool(compiled.get_property("LOADED_FROM_CACHE"))
        self.contract = contract
        self._output_index = {name: outputs[name] for name in contract.output_names}
        self._compiled = compiled
        requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) if self.mode == "throughput" else 1
        self._requests = [compiled.create_infer_request() for _ in range(max(1, requests))]

    def _compile(self, core, model):
        """``model`` (as read) compiled in this session's precision and settings."""
        scopes = scopes_from_metadata(self.metadata)
        # An empty recorded region (an adaptive stage without a transformer, the assignment) stays all f32.
        if self.precision == "bf16" and scopes:
            model = mixed_bf16(model, scopes)
        try:
            return core.compile_model(model, "CPU", self.compile_config())
        except RuntimeError as error:
            raise EngineError(f"OpenVINO cannot compile {self.onnx_path}: {error}") from None

    def fixed_shape(self, profile_index: int) -> dict[str, int]:
        """The dimensions profile ``profile_index``'s fixed-shape model is compiled for: its opt, B = 1."""
        return {**self.profiles[profile_index].opt_dims, BATCH: 1}

    def compile_fixed_shapes(self, indices: Optional[Sequence[int]] = None) -> None:
        """Compile the fixed-shape models of these profiles (default: all) now, as a warmed-up server has."""
        for index in range(len(self.profiles)) if indices is None else indices:
            self._compile_fixed(index)

    def _compile_fixed(self, profile_index: int) -> None:
        core, source = self._core, self._source
        if source is None or profile_index in self._fixed:
            return
        model = source.clone()
        dims = self.fixed_shape(profile_index)
        model.reshape({spec.name: list(concrete_shape(spec, dims)) for spec in self.input_specs})
        try:
            request = self._compile(core, model).create_infer_request()
        except EngineError as error:  # the dynamic model serves on
            warnings.warn(f"no fixed-shape model for profile {self.profiles[profile_index].name}: {error}", stacklevel=2)
            request = None
        with self._lock:
            if self._source is source:  # not deactivated meanwhile
                self._fixed[profile_index] = request

    def _fixed_request(self, dims: dict[str, int], profile_index: int):
        """The fixed-shape model's infer request for a request of ``dims``, or None: the dynamic model serves
        it (and a compile starts in the background once ``FIXED_SHAPE_AFTER`` requests wanted one)."""
        opt = self.fixed_shape(profile_index)
        if dims[BATCH] != 1 or not all(FIXED_SHAPE_FILL * opt[d] <= dims[d] <= opt[d] for d in (KEYPOINTS0, KEYPOINTS1)):
            return None
        with self._lock:
            if profile_index in self._fixed:
                return self._fixed[profile_index]
            self._fixed_wanted[profile_index] += 1
            if self._fixed_wanted[profile_index] == FIXED_SHAPE_AFTER:
                threading.Thread(target=self._compile_fixed, args=(profile_index,), daemon=True).start()
        return None

    def _padded(self, feeds, target: dict[str, int]) -> dict:
        """``feeds`` with their keypoint rows padded (zeros, which the counts leave out) up to ``target``'s N0, N1."""
        return {spec.name: np.pad(feeds[spec.name], [(0, target[d] - size) if d in (KEYPOINTS0, KEYPOINTS1) else (0, 0)
                                                     for d, size in zip(spec.shape, feeds[spec.name].shape)])
                for spec in self.input_specs}

    def _cut(self, outputs: dict, dims: dict[str, int]) -> dict:
        """The outputs of padded feeds cut back to the request's own N0 and N1."""
        return {spec.name: outputs[spec.name][tuple(slice(0, dims[d]) if d in (KEYPOINTS0, KEYPOINTS1) else slice(None)
                                                    for d in spec.shape)]
                for spec in self.contract.outputs}

    def _infer_fixed(self, request, feeds, dims: dict[str, int], profile_index: int):
        """One B = 1 request padded up to the fixed shape; the outputs cut back to its N0 and N1."""
        padded = self._padded(feeds, self.fixed_shape(profile_index))
        start = time.perf_counter()
        with self._lock:
            request.infer(padded)
            outputs = {spec.name: np.array(request.get_output_tensor(self._output_index[spec.name]).data)
                       for spec in self.contract.outputs}
        return self._cut(outputs, dims), {"compute": time.perf_counter() - start}

    @property
    def streams(self) -> int:
        return int(self._compiled.get_property("NUM_STREAMS")) if self._compiled is not None else 0

    def infer_impl(self, feeds, profile_index):
        """One request: on a fixed-shape model where one serves it; else on the dynamic model, a matcher's
        padded to the shape grid (module docstring), in throughput mode with a batch split across the
        streams and run concurrently."""
        dims = None
        if self.contract.kind == "matcher":
            dims = self.contract.check_feeds(feeds)
            fixed = self._fixed_request(dims, profile_index) if self._source is not None else None
            if fixed is not None:
                return self._infer_fixed(fixed, feeds, dims, profile_index)
            ranges = self.profiles[profile_index].ranges
            feeds = self._padded(feeds, {d: grid_size(dims[d], ranges[d][2]) for d in (KEYPOINTS0, KEYPOINTS1)})
        batched = {spec.name for spec in self.input_specs if spec.shape[:1] == (BATCH,)}
        batch = feeds[next(iter(sorted(batched)))].shape[0]
        bounds = np.linspace(0, batch, min(batch, len(self._requests)) + 1).astype(int)
        chunks = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        start = time.perf_counter()
        with self._lock:  # an infer request serves one call at a time
            running = self._requests[: len(chunks)]
            for request, chunk in zip(running, chunks):
                request.start_async({name: np.ascontiguousarray(value[chunk]) if name in batched else value
                                     for name, value in feeds.items()})
            for request in running:
                request.wait()
            parts = [[np.array(request.get_output_tensor(self._output_index[name]).data) for request in running]
                     for name in self._output_index]
        outputs = {name: np.concatenate(values) for name, values in zip(self._output_index, parts)}
        return (outputs if dims is None else self._cut(outputs, dims)), {"compute": time.perf_counter() - start}

    def deactivate_impl(self) -> None:
        with self._lock:
            self._source, self._core = None, None
            self._fixed.clear()
            self._fixed_wanted.clear()
        self._requests = []
        self._compiled = None
