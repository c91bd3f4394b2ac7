"""TensorRT backend: a serialized engine served with pycuda buffers and streams.

Before an engine is deserialized it is checked, so that a wrong engine ends in an ``EngineError``
that says to rebuild rather than in a crash inside TensorRT:

1. the file against its manifest (``X.engine.json``): size and sha256;
2. the source ONNX, when it is present, against the manifest's sha256;
3. the TensorRT runtime (``tensorrt`` or ``tensorrt_rtx``, after the manifest's builder) and its
   version, which must equal the builder's;
4. a CUDA GPU, found through the driver (``libcuda``) before TensorRT is touched (TensorRT may crash
   without one), whose compute capability must equal the manifest's target.

An engine without a manifest (built by ``trtexec``) is still served, with a warning that versions could
not be checked: its inputs, dtypes and profiles are read from the engine itself and must follow the
matcher contract.

Execution model, chosen for use from worker threads: one *slot* per optimization profile, made once
at activation, holding an execution context bound to that profile, its own CUDA stream, CUDA events,
and page-locked host and device buffers sized for the profile's largest shape. A lock per slot makes
calls that land on the same profile take turns; calls on different profiles run concurrently. Every
call pushes the session's CUDA context (the device's primary context, the one TensorRT's runtime API
uses) and pops it when done, so any thread may call. Tensor addresses are fixed per slot, which is
what lets ``cuda_graphs=True`` capture one CUDA graph per (profile, input shapes) after a first
ordinary run and replay it afterwards.

Only ``activate`` imports TensorRT and pycuda; the pure parts (checks, profile reading, buffer sizes)
are functions tested without a GPU.
"""

import ctypes
import ctypes.util
import importlib.util
import struct
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from trt.contract import OUTPUT_SPECS, TensorSpec, concrete_shape, infer_layout, input_specs
from trt.engine.backends import BACKENDS, Backend, make_logger
from trt.engine.manifest import Manifest, load_manifest, manifest_path
from trt.errors import ContractError, EngineError
from trt.fileio import sha256_file
from trt.runtime.base import Profile, Runner

REBUILD = "rebuild it on this machine with build_engine.py"

# CUDA driver API values used through ctypes.
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
_CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1


# -- checks before TensorRT is touched ------------------------------------------------------------------


def read_engine(engine_path: Path, manifest: Optional[Manifest]) -> bytes:
    """The engine's bytes, after checking its size and sha256 against the manifest (when there is one)."""
    engine_path = Path(engine_path)
    if not engine_path.exists():
        raise EngineError(f"no engine at {engine_path}: the file does not exist")
    if engine_path.is_dir():
        raise EngineError(f"{engine_path} is a folder, not an engine file")
    try:
        data = engine_path.read_bytes()
    except OSError as error:
        raise EngineError(f"cannot read engine {engine_path}: {error.strerror}") from error
    if not data:
        raise EngineError(f"engine {engine_path} is empty; {REBUILD}")
    if manifest is not None:
        check_engine_bytes(engine_path, data, manifest)
    else:
        check_engine_header(engine_path, data)
    return data


def check_engine_header(engine_path: Path, data: bytes) -> None:
    """Without a manifest, the file must at least be a whole TensorRT engine: its header says so."""
    backend = next((b for b in BACKENDS.values() if data.startswith(b.plan_magic)), None)
    if backend is None:
        if data[:1] == b"\x08" or Path(engine_path).suffix.lower() == ".onnx":  # ModelProto starts with ir_version
            raise EngineError(
                f"{engine_path} is an ONNX model, not a TensorRT engine: build one with "
                f"`python build_engine.py --onnx {engine_path}`, then pass the .engine it writes"
            )
        raise EngineError(f"{engine_path} is not a TensorRT engine (its first bytes are no engine header); {REBUILD}")
    offset = backend.plan_size_offset
    if offset is None:
        return
    recorded = struct.unpack_from("<Q", data, offset)[0] if len(data) >= offset + 8 else "more"
    if recorded != len(data):
        raise EngineError(
            f"engine {engine_path} has {len(data)} bytes but its header says {recorded}: "
            f"the file is truncated or damaged; {REBUILD}"
        )


def check_engine_bytes(engine_path: Path, data: bytes, manifest: Manifest) -> None:
    import hashlib

    expected_bytes, expected_sha = manifest.engine.get("bytes"), manifest.engine.get("sha256")
    if expected_bytes is not None and len(data) != expected_bytes:
        raise EngineError(
            f"engine {engine_path} has {len(data)} bytes but its manifest {manifest_path(engine_path).name} says "
            f"{expected_bytes}: the file is truncated or was replaced; {REBUILD}"
        )
    if expected_sha and hashlib.sha256(data).hexdigest() != expected_sha:
        raise EngineError(
            f"engine {engine_path} does not match its manifest {manifest_path(engine_path).name} (sha256 differs): "
            f"the engine or the manifest was replaced; {REBUILD}"
        )


def source_onnx_path(engine_path: Path, manifest: Optional[Manifest], onnx: Optional[Path] = None) -> Optional[Path]:
    """Where the engine's source ONNX should be: ``onnx`` if given, else the manifest's (relative to it)."""
    if onnx is not None:
        return Path(onnx)
    if manifest is None or not manifest.onnx.get("path"):
        return None
    recorded = Path(manifest.onnx["path"])
    candidates = [recorded if recorded.is_absolute() else Path(engine_path).parent / recorded]
    if manifest.onnx.get("absolute"):
        candidates.append(Path(manifest.onnx["absolute"]))
    return next((path for path in candidates if path.is_file()), candidates[0])


def check_source_onnx(onnx_path: Optional[Path], manifest: Optional[Manifest], required: bool) -> None:
    """The ONNX must be the one the engine was built from (when the manifest records its sha256).

    ``required``: whether a missing file is an error (it is when the ONNX is to be run in the engine's place).
    """
    if onnx_path is not None and Path(onnx_path).is_dir():
        raise EngineError(f"the engine's source ONNX {onnx_path} is a folder, not an ONNX file")
    if onnx_path is None or not Path(onnx_path).is_file():
        if required:
            where = f" at {onnx_path}" if onnx_path is not None else ""
            raise EngineError(f"the engine's source ONNX{where} is missing: pass the matcher ONNX explicitly (--onnx)")
        return
    expected = manifest.onnx.get("sha256") if manifest is not None else None
    if expected and sha256_file(onnx_path) != expected:
        raise EngineError(
            f"{onnx_path} is not the ONNX the engine was built from (sha256 differs): rebuild the engine from it, "
            "or pass the original with --onnx"
        )


def runtime_backend(manifest: Optional[Manifest]) -> Optional[type[Backend]]:
    """The builder that made the engine (its runtime is the only one that loads it); None without a manifest."""
    if manifest is None:
        return None
    builder = manifest.builder.get("name")
    if builder not in BACKENDS:
        raise EngineError(f"engine manifest names an unknown builder {builder!r}: expected one of {', '.join(BACKENDS)}")
    return BACKENDS[builder]


def find_runtime(manifest: Optional[Manifest]) -> Optional[type[Backend]]:
    """An installed TensorRT package that can run the engine, or None (nothing is imported)."""
    wanted = runtime_backend(manifest)
    candidates = [wanted] if wanted else list(BACKENDS.values())
    return next((backend for backend in candidates if backend.available()), None)


def import_runtime(manifest: Optional[Manifest]) -> Backend:
    """The TensorRT package for the engine, through ``trt.engine.backends`` (the one place that imports it)."""
    backend = find_runtime(manifest)
    if backend is None:
        wanted = runtime_backend(manifest)
        what = wanted.module_name if wanted else " or ".join(b.module_name for b in BACKENDS.values())
        raise EngineError(f"the TensorRT runtime ({what}) is not installed: use --backend onnxruntime")
    return backend()


def check_runtime_version(manifest: Optional[Manifest], module_name: str, version: str) -> None:
    if manifest is None:
        return
    built = manifest.builder.get("version")
    if built and built != version:
        raise EngineError(
            f"the engine was built with {manifest.builder.get('name')} {built} but this machine runs "
            f"{module_name} {version}: engines only load on the exact version that built them; {REBUILD}"
        )


def target_capabilities(manifest: Optional[Manifest]) -> list[str]:
    """Compute capabilities the manifest targets ("8.9"); empty when unrecorded (the builder's own GPU)."""
    if manifest is None:
        return []
    target = (manifest.target or {}).get("compute_capability")
    if target is None:
        return []
    values = target if isinstance(target, (list, tuple)) else [target]
    return [str(v) for v in values]


def check_compute_capability(manifest: Optional[Manifest], device_capability: str) -> None:
    targets = target_capabilities(manifest)
    if targets and device_capability not in targets:
        raise EngineError(
            f"the engine was built for compute capability {', '.join(targets)} but this GPU is "
            f"{device_capability}: {REBUILD}"
        )


# -- the CUDA driver, through ctypes (no pycuda needed to ask whether there is a GPU) --------------------


def _load_libcuda():
    for name in ("libcuda.so.1", "libcuda.so", ctypes.util.find_library("cuda"), "nvcuda.dll"):
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def cuda_devices() -> list[str]:
    """Compute capability ("9.0") of each CUDA GPU the driver sees; empty without a driver or a GPU."""
    lib = _load_libcuda()
    if lib is None or lib.cuInit(0) != 0:
        return []
    count = ctypes.c_int()
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    capabilities = []
    for ordinal in range(count.value):
        device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        if lib.cuDeviceGet(ctypes.byref(device), ordinal) != 0:
            continue
        lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)
        capabilities.append(f"{major.value}.{minor.value}")
    return capabilities


def tensorrt_unavailable(manifest: Optional[Manifest]) -> Optional[str]:
    """Why the TensorRT backend cannot run here (a short phrase), or None when it can."""
    if not cuda_devices():
        return "no CUDA GPU was found"
    if find_runtime(manifest) is None:
        wanted = runtime_backend(manifest)
        return f"the TensorRT runtime ({wanted.module_name if wanted else 'tensorrt'}) is not installed"
    if importlib.util.find_spec("pycuda") is None:
        return "pycuda is not installed"
    return None


# -- reading the contract from an engine --------------------------------------------------------------


@dataclass(frozen=True)
class EngineIO:
    """What an engine says of itself: I/O dtypes and shapes (-1 for dynamic) and its profiles."""

    inputs: dict  # name -> (numpy dtype, shape)
    outputs: dict
    profiles: list[Profile]
    descriptor_dim: int
    scale_ori: bool


def read_engine_io(engine, trt) -> EngineIO:
    """Read I/O tensors and profiles from a deserialized engine; a ContractError unless it is a matcher."""
    inputs, outputs = {}, {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        record = (np.dtype(trt.nptype(engine.get_tensor_dtype(name))), tuple(engine.get_tensor_shape(name)))
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs)[name] = record
    shapes = {name: tuple(d if d >= 0 else None for d in shape) for name, (_, shape) in inputs.items()}
    try:
        descriptor_dim, scale_ori = infer_layout(list(inputs), shapes)
    except ContractError as error:
        raise ContractError(f"the engine cannot be served as a LightGlue matcher: {error}") from None
    missing = [spec.name for spec in OUTPUT_SPECS if spec.name not in outputs]
    if missing:
        raise ContractError(f"the engine cannot be served as a LightGlue matcher: it lacks the outputs {', '.join(missing)}")
    for spec in [*input_specs(descriptor_dim, scale_ori), *OUTPUT_SPECS]:
        dtype = (inputs.get(spec.name) or outputs[spec.name])[0]
        if not compatible_dtype(dtype, spec.dtype):
            raise ContractError(f"engine tensor {spec.name} is {dtype}, the matcher contract needs {spec.dtype}")
    profiles = profiles_from_engine(lambda name, i: engine.get_tensor_profile_shape(name, i), engine.num_optimization_profiles)
    return EngineIO(inputs, outputs, profiles, descriptor_dim, scale_ori)


def compatible_dtype(engine_dtype: np.dtype, contract_dtype: np.dtype) -> bool:
    """Equal, or both floating point (an engine may take float16 I/O; the runner converts)."""
    return engine_dtype == contract_dtype or (engine_dtype.kind == "f" and contract_dtype.kind == "f")


def profiles_from_engine(profile_shape: Callable[[str, int], list], count: int) -> list[Profile]:
    """Profiles from ``profile_shape(name, index) -> [min, opt, max]`` of ``kpts0`` and ``kpts1``."""
    profiles = []
    for index in range(count):
        kpts0 = [tuple(s) for s in profile_shape("kpts0", index)]
        kpts1 = [tuple(s) for s in profile_shape("kpts1", index)]
        profiles.append(
            Profile(
                f"profile{index}",
                tuple(s[0] for s in kpts0),
                tuple(s[1] for s in kpts0),
                tuple(s[1] for s in kpts1),
            )
        )
    return profiles


def profiles_from_manifest(manifest: Manifest) -> list[Profile]:
    return [Profile.from_record(record) for record in manifest.profiles]


def buffer_shapes(specs: list[TensorSpec], profile: Profile) -> dict[str, tuple[int, ...]]:
    """Shape of each tensor's buffers: the contract's shape at the profile's largest (B, N0, N1)."""
    return {spec.name: concrete_shape(spec, *profile.max_shape) for spec in specs}


# -- the session ---------------------------------------------------------------------------------------


class _CudaGraphs:
    """CUDA graph capture through the driver API (pycuda has no stream capture)."""

    def __init__(self):
        self.lib = _load_libcuda()

    def _check(self, result: int, what: str) -> None:
        if result != 0:
            raise EngineError(f"CUDA graph {what} failed (CUresult {result}); run without CUDA graphs")

    def capture(self, stream_handle: int, enqueue: Callable[[], None]) -> tuple[int, int]:
        """Capture what ``enqueue`` puts on the stream; return (graph, executable graph) handles."""
        lib, graph, executable = self.lib, ctypes.c_void_p(), ctypes.c_void_p()
        stream = ctypes.c_void_p(stream_handle)
        self._check(lib.cuStreamBeginCapture_v2(stream, _CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "capture")
        try:
            enqueue()
        finally:
            self._check(lib.cuStreamEndCapture(stream, ctypes.byref(graph)), "capture")
        self._check(lib.cuGraphInstantiateWithFlags(ctypes.byref(executable), graph, ctypes.c_ulonglong(0)), "instantiation")
        return graph.value, executable.value

    def launch(self, executable: int, stream_handle: int) -> None:
        self._check(self.lib.cuGraphLaunch(ctypes.c_void_p(executable), ctypes.c_void_p(stream_handle)), "launch")

    def destroy(self, graph: int, executable: int) -> None:
        self.lib.cuGraphExecDestroy(ctypes.c_void_p(executable))
        self.lib.cuGraphDestroy(ctypes.c_void_p(graph))


@dataclass
class _Slot:
    """Everything one optimization profile runs with (see the module docstring)."""

    context: object  # IExecutionContext bound to the profile
    stream: object  # pycuda Stream
    events: list  # pycuda Events: start, inputs copied, computed, outputs copied
    host: dict  # name -> page-locked flat numpy array (max size)
    device: dict  # name -> pycuda DeviceAllocation (max size)
    lock: threading.Lock = field(default_factory=threading.Lock)
    graphs: dict = field(default_factory=dict)  # input shapes -> (graph, executable)


class TensorRTSession(Runner):
    """A matcher engine on TensorRT: ``with TensorRTSession("sift.engine") as s: s.infer(feeds)``.

    ``onnx``: the source ONNX, checked against the manifest when present (default: the manifest's).
    ``device``: CUDA device ordinal. ``cuda_graphs``: capture and replay one CUDA graph per
    (profile, input shapes). The engine file and manifest are checked at construction; TensorRT,
    pycuda and the GPU are touched only by ``activate``.
    """

    backend = "tensorrt"

    def __init__(self, engine_path: Path, onnx: Optional[Path] = None, device: int = 0, cuda_graphs: bool = False):
        self.engine_path = Path(engine_path)
        self.manifest = load_manifest(self.engine_path)
        self._data = read_engine(self.engine_path, self.manifest)
        self.onnx_path = source_onnx_path(self.engine_path, self.manifest, onnx)
        check_source_onnx(self.onnx_path, self.manifest, required=False)
        profiles = specs = None
        if self.manifest is None:
            warnings.warn(
                f"engine {self.engine_path} has no manifest (built by trtexec?): its TensorRT version and "
                "target GPU could not be checked; its inputs and profiles are read from the engine",
                stacklevel=2,
            )
        else:
            profiles = profiles_from_manifest(self.manifest)
            if self.manifest.descriptor_dim is None:
                raise ContractError(f"engine {self.engine_path} is not a LightGlue matcher (its manifest has no matcher layout)")
            specs = input_specs(self.manifest.descriptor_dim, bool(self.manifest.scale_ori))
        super().__init__(f"TensorRT session of {self.engine_path}", specs, profiles)
        self.device = device
        self.cuda_graphs = cuda_graphs
        self.runtime_version = None
        self._cuda = self._cuda_context = self._graphs = None
        self._runtime = self._engine = None
        self._dtypes: dict[str, np.dtype] = {}
        self._slots: list[_Slot] = []

    # -- activation ----------------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        backend = import_runtime(self.manifest)
        self.runtime_version = f"{backend.name} {backend.version}"
        check_runtime_version(self.manifest, backend.name, backend.version)
        capabilities = cuda_devices()
        if not capabilities:
            raise EngineError("no CUDA GPU was found: TensorRT engines need one; use --backend onnxruntime")
        if not 0 <= self.device < len(capabilities):
            raise EngineError(f"CUDA device {self.device} does not exist: this machine has {len(capabilities)}")
        check_compute_capability(self.manifest, capabilities[self.device])
        try:
            import pycuda.driver as cuda
        except ImportError as error:
            raise EngineError(f"pycuda is needed to run TensorRT engines: {error}; use --backend onnxruntime") from error

        cuda.init()
        self._cuda = cuda
        self._cuda_context = cuda.Device(self.device).retain_primary_context()
        try:
            self._with_context(self._load, backend)
        except BaseException:
            self._with_context(self._free)
            self._detach()
            raise

    def _with_context(self, work: Callable, *args):
        """Run ``work`` with the session's CUDA context current on this thread (any thread may call)."""
        self._cuda_context.push()
        try:
            return work(*args)
        finally:
            self._cuda.Context.pop()

    def _load(self, backend: Backend) -> None:
        trt = backend.module
        self._logger = make_logger(backend)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self._data)
        if self._engine is None:
            detail = "; ".join(self._logger.errors[-3:]) or "no detail from TensorRT"
            raise EngineError(f"TensorRT cannot load engine {self.engine_path} ({detail}): {REBUILD}")
        io = read_engine_io(self._engine, trt)
        if self.manifest is None:
            self.profiles = io.profiles
            self.input_specs = input_specs(io.descriptor_dim, io.scale_ori)
        elif len(io.profiles) != len(self.profiles) or any(
            a.ranges != b.ranges for a, b in zip(io.profiles, self.profiles)
        ):
            raise EngineError(f"the profiles of engine {self.engine_path} differ from its manifest's: {REBUILD}")
        self._dtypes = {name: dtype for name, (dtype, _) in {**io.inputs, **io.outputs}.items()}
        if self.cuda_graphs:
            self._graphs = _CudaGraphs()
        for index, profile in enumerate(self.profiles):
            self._slots.append(self._make_slot(index, profile))

    def _make_slot(self, index: int, profile: Profile) -> _Slot:
        cuda = self._cuda
        context = self._engine.create_execution_context()
        if context is None:
            raise EngineError(f"TensorRT could not create an execution context for profile {profile.name} (out of GPU memory?)")
        stream = cuda.Stream()
        if not context.set_optimization_profile_async(index, stream.handle):
            raise EngineError(f"TensorRT refused optimization profile {index} ({profile.name}) of {self.engine_path}")
        stream.synchronize()
        host, device = {}, {}
        for name, shape in buffer_shapes([*self.input_specs, *OUTPUT_SPECS], profile).items():
            dtype = self._dtypes[name]
            host[name] = cuda.pagelocked_empty(int(np.prod(shape)), dtype)
            device[name] = cuda.mem_alloc(max(host[name].nbytes, 1))
            if not context.set_tensor_address(name, int(device[name])):
                raise EngineError(f"TensorRT refused the buffer of {name} for profile {profile.name}")
        return _Slot(context, stream, [cuda.Event() for _ in range(4)], host, device)

    # -- inference -----------------------------------------------------------------------------------------
    def infer_impl(self, feeds, profile_index):
        slot = self._slots[profile_index]
        with slot.lock:
            return self._with_context(self._run, slot, feeds)

    def _run(self, slot: _Slot, feeds: dict[str, np.ndarray]):
        cuda, context, stream = self._cuda, slot.context, slot.stream
        start, copied_in, computed, copied_out = slot.events
        staged = {}
        for name, array in feeds.items():
            if not context.set_input_shape(name, array.shape):
                raise ContractError(f"TensorRT refused shape {array.shape} for input {name}")
            staged[name] = slot.host[name][: array.size].reshape(array.shape)
            np.copyto(staged[name], array, casting="same_kind")

        start.record(stream)
        for name, view in staged.items():
            cuda.memcpy_htod_async(slot.device[name], view, stream)
        copied_in.record(stream)
        self._enqueue(slot, tuple((name, view.shape) for name, view in staged.items()))
        computed.record(stream)
        results = {}
        for spec in OUTPUT_SPECS:
            shape = tuple(context.get_tensor_shape(spec.name))
            results[spec.name] = slot.host[spec.name][: int(np.prod(shape))].reshape(shape)
            cuda.memcpy_dtoh_async(results[spec.name], slot.device[spec.name], stream)
        copied_out.record(stream)
        copied_out.synchronize()

        outputs = {spec.name: results[spec.name].astype(spec.dtype, copy=True) for spec in OUTPUT_SPECS}
        timings = {
            "h2d": copied_in.time_since(start) / 1e3,
            "compute": computed.time_since(copied_in) / 1e3,
            "d2h": copied_out.time_since(computed) / 1e3,
        }
        return outputs, timings

    def _enqueue(self, slot: _Slot, key: tuple) -> None:
        """Run the engine on the slot's stream; with CUDA graphs, replay the graph captured for ``key``."""
        handle = slot.stream.handle

        def execute():
            if not slot.context.execute_async_v3(handle):
                raise EngineError(f"TensorRT failed to run {self.engine_path}: " + "; ".join(self._logger.errors[-3:]))

        if self._graphs is None:
            execute()
        elif key in slot.graphs:
            self._graphs.launch(slot.graphs[key][1], handle)
        else:
            execute()  # the first run of a shape does TensorRT's deferred set-up, which capture must not see
            slot.graphs[key] = self._graphs.capture(handle, execute)

    # -- deactivation --------------------------------------------------------------------------------------
    def deactivate_impl(self) -> None:
        self._with_context(self._free)
        self._detach()

    def _free(self) -> None:
        """Free graphs, buffers, contexts, engine and runtime, in that order (with the context current)."""
        for slot in self._slots:
            slot.stream.synchronize()
            for graph, executable in slot.graphs.values():
                self._graphs.destroy(graph, executable)
            for allocation in slot.device.values():
                allocation.free()
            slot.context = None
        self._slots = []
        self._engine = self._runtime = None

    def _detach(self) -> None:
        """Release the retained primary context (after it was popped: pycuda's detach expects that)."""
        if self._cuda_context is not None:
            self._cuda_context.detach()
            self._cuda_context = None

    def summary(self) -> dict:
        return {"runtime_version": self.runtime_version, "device": self.device, "cuda_graphs": self.cuda_graphs}
