"""TensorRT backend: a serialized engine served with pycuda buffers and streams.

Before an engine is deserialized it is checked, so that a wrong engine ends in an ``EngineError``
that says to rebuild rather than in a crash inside TensorRT:

1. the file against its manifest (``X.engine.json``): size and sha256;
2. the source ONNX, when it is present, against the manifest's sha256;
3. the TensorRT runtime (``tensorrt`` or ``tensorrt_rtx``, after the manifest's builder) and its
   version, which must equal the builder's;
4. a CUDA GPU, found before TensorRT is touched (TensorRT may crash without one), whose compute
   capability must be one of the manifest's targets.

An engine without a manifest (built by ``trtexec``) is tried with every installed runtime, with a
warning that versions could not be checked: its inputs, dtypes and profiles are read from the engine
itself and must follow the matcher or the extractor contract (an extractor's network settings, which
an engine does not hold, then come from its source ONNX's metadata).

Execution model, chosen for use from worker threads: one *slot* per optimization profile, made once
at activation, holding an execution context bound to that profile (holding activation memory for that
profile alone: ``ON_PROFILE_CHANGE``), its own CUDA stream, CUDA events, and page-locked host and device
buffers sized for the profile's largest shape. A lock per slot makes calls that land on the same
profile take turns; calls on different profiles run concurrently. Every call pushes the session's CUDA
context (the device's primary context, the one TensorRT's runtime API uses) and pops it when done, so
any thread may call. ``deactivate`` waits for the calls in flight, then frees everything and releases
the primary context, also from a thread other than the one that activated the session.

With ``cuda_graphs=True`` each profile runs at one fixed shape, its opt (requests are padded to it:
``Runner.request_profiles``), so each slot's context holds exactly one CUDA graph: tensorrt-rtx
captures and replays it itself (``CudaGraphStrategy``, after compiling that shape's kernels); with full
TensorRT the session captures it as trtexec does (an ordinary warm-up run, a stream synchronize, then
capture of one enqueue) and falls back to ordinary runs, with a warning, where capture fails.
tensorrt-rtx keeps the kernels it compiles just in time in ``X.engine.rtxcache`` (read at activation,
written atomically at deactivation), so a second process starts without compiling.

Only ``activate`` imports TensorRT, pycuda and cuda-python (graph capture and the context stack, which
pycuda does not reach); the pure parts (checks, profile reading, buffer sizes) are functions tested
without a GPU.
"""

import importlib.util
import struct
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from trt.contract import TensorSpec, concrete_shape
from trt.engine.backends import BACKENDS, Backend, make_logger
from trt.engine.manifest import Manifest, load_manifest, manifest_path
from trt.errors import ContractError, EngineError, UserError
from trt.fileio import sha256_file, write_bytes_atomic
from trt.gpu import cuda_devices
from trt.runtime.base import (Profile, Runner, contract_from_io, contract_from_manifest, describe_dims,
                              manifest_network_settings, network_settings)

REBUILD = "rebuild it on this machine with build_engine.py"


# -- checks before TensorRT is touched ------------------------------------------------------------------


def read_engine(engine_path: Path, manifest: Optional[Manifest], deserialized: bool = False) -> bytes:
    """The engine's bytes, after checking its size and sha256 against the manifest (when there is one).

    Without a manifest the header is checked (``check_engine_header``); ``deserialized``: the caller hands
    the bytes to TensorRT, which is then the judge of a header this module does not know.
    """
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
        check_engine_header(engine_path, data, unknown_ok=deserialized)
    return data


def check_engine_header(engine_path: Path, data: bytes, unknown_ok: bool = False) -> None:
    """Without a manifest, the file must at least be a whole TensorRT engine: its header says so.

    The header is not documented: the magic of each builder was read off its engines (see
    ``Backend.plan_magic``). ``unknown_ok``: a header of none of them passes (TensorRT, about to
    deserialize the file, decides), so that an engine of a TensorRT version with another header is not
    refused on a guess; an ONNX file and a known header with the wrong size never pass.
    """
    backend = next((b for b in BACKENDS.values() if data.startswith(b.plan_magic)), None)
    if backend is None:
        if data[:1] == b"\x08" or Path(engine_path).suffix.lower() == ".onnx":  # ModelProto starts with ir_version
            raise EngineError(
                f"{engine_path} is an ONNX model, not a TensorRT engine: build one with "
                f"`python build_engine.py --onnx {engine_path}`, then pass the .engine it writes"
            )
        if unknown_ok:
            return
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


def check_source_onnx(onnx_path: Optional[Path], manifest: Optional[Manifest], required: bool,
                      flag: str = "--onnx") -> None:
    """The ONNX must be the one the engine was built from (when the manifest records its sha256).

    ``required``: whether a missing file is an error (it is when the ONNX is to be run in the engine's place);
    ``flag``: the command-line flag that names it, for the messages.
    """
    if onnx_path is not None and Path(onnx_path).is_dir():
        raise EngineError(f"the engine's source ONNX {onnx_path} is a folder, not an ONNX file")
    if onnx_path is None or not Path(onnx_path).is_file():
        if required:
            where = f" at {onnx_path}" if onnx_path is not None else ""
            raise EngineError(f"the engine's source ONNX{where} is missing: pass it explicitly ({flag})")
        return
    expected = manifest.onnx.get("sha256") if manifest is not None else None
    if expected and sha256_file(onnx_path) != expected:
        raise EngineError(
            f"{onnx_path} is not the ONNX the engine was built from (sha256 differs): rebuild the engine from it, "
            f"or pass the original with {flag}"
        )


def runtime_backend(manifest: Optional[Manifest]) -> Optional[type[Backend]]:
    """The builder that made the engine (its runtime is the only one that loads it); None without a manifest."""
    if manifest is None:
        return None
    builder = manifest.builder.get("name")
    if builder not in BACKENDS:
        raise EngineError(f"engine manifest names an unknown builder {builder!r}: expected one of {', '.join(BACKENDS)}")
    return BACKENDS[builder]


def runtime_candidates(manifest: Optional[Manifest]) -> list[type[Backend]]:
    """The installed runtimes to try, in order (nothing is imported): the builder's own; every installed one
    without a manifest."""
    wanted = runtime_backend(manifest)
    return [backend for backend in ([wanted] if wanted else BACKENDS.values()) if backend.available()]


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


# -- can TensorRT run here? ---------------------------------------------------------------------------


def _installed(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def tensorrt_unavailable(manifest: Optional[Manifest]) -> Optional[str]:
    """Why the TensorRT backend cannot run the engine here (a short phrase), or None when it can.

    Nothing heavy is imported: the GPU is asked through pycuda or the driver (``trt.gpu``).
    """
    devices = cuda_devices()
    if not devices:
        return "no CUDA GPU was found"
    if not runtime_candidates(manifest):
        wanted = runtime_backend(manifest)
        return f"the TensorRT runtime ({wanted.module_name if wanted else 'tensorrt or tensorrt_rtx'}) is not installed"
    for module_name, package in (("pycuda", "pycuda"), ("cuda.bindings", "cuda-python")):
        if not _installed(module_name):
            return f"{package} is not installed"
    targets = target_capabilities(manifest)
    if targets and devices[0] not in targets:
        return f"this GPU (compute capability {devices[0]}) is not one the engine was built for ({', '.join(targets)})"
    return None


# -- reading the contract from an engine --------------------------------------------------------------


@dataclass(frozen=True)
class EngineIO:
    """What an engine says of itself: I/O dtypes and shapes (-1 for dynamic), its contract and profiles."""

    inputs: dict  # name -> (numpy dtype, shape)
    outputs: dict
    contract: object  # MatcherContract or ExtractorContract
    profiles: list[Profile]


def read_engine_io(engine, trt, settings: Callable[[], dict] = dict) -> EngineIO:
    """Read I/O tensors, contract and profiles from a deserialized engine; a ContractError unless it is a
    matcher or an extractor. ``settings``: gives an extractor's network settings (asked for an extractor
    only: an engine does not hold them)."""
    inputs, outputs = {}, {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        record = (np.dtype(trt.nptype(engine.get_tensor_dtype(name))), tuple(engine.get_tensor_shape(name)))
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs)[name] = record
    shapes = {name: tuple(d if d >= 0 else None for d in shape) for name, (_, shape) in {**inputs, **outputs}.items()}
    contract = contract_from_io({name: shapes[name] for name in inputs}, {name: shapes[name] for name in outputs},
                                settings() if "image" in inputs else {}, "the engine")
    for spec in [*contract.inputs, *contract.outputs]:
        dtype = (inputs.get(spec.name) or outputs[spec.name])[0]
        if not compatible_dtype(dtype, spec.dtype):
            raise ContractError(f"engine tensor {spec.name} is {dtype}, the {contract.kind} contract needs {spec.dtype}")
    profiles = profiles_from_engine(lambda name, i: engine.get_tensor_profile_shape(name, i),
                                    engine.num_optimization_profiles, contract)
    return EngineIO(inputs, outputs, contract, profiles)


def compatible_dtype(engine_dtype: np.dtype, contract_dtype: np.dtype) -> bool:
    """Equal, or both floating point (an engine may take float16 I/O; the runner converts)."""
    return engine_dtype == contract_dtype or (engine_dtype.kind == "f" and contract_dtype.kind == "f")


def profiles_from_engine(profile_shape: Callable[[str, int], list], count: int, contract) -> list[Profile]:
    """Profiles from ``profile_shape(name, index) -> [min, opt, max]`` of the inputs that carry the
    contract's dimensions (``contract.axes``)."""
    profiles = []
    for index in range(count):
        shapes = {name: [tuple(s) for s in profile_shape(name, index)] for name in {n for n, _ in contract.axes.values()}}
        ranges = {symbol: tuple(shape[axis] for shape in shapes[name]) for symbol, (name, axis) in contract.axes.items()}
        profiles.append(Profile.from_ranges(f"profile{index}", ranges))
    return profiles


def profiles_from_manifest(manifest: Manifest) -> list[Profile]:
    return [Profile.from_record(record) for record in manifest.profiles]


def buffer_shapes(specs: list[TensorSpec], profile: Profile) -> dict[str, tuple[int, ...]]:
    """Shape of each tensor's buffers: the contract's shape at the profile's largest dimensions."""
    return {spec.name: concrete_shape(spec, profile.max_dims) for spec in specs}


# -- the session ---------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """Everything one optimization profile runs with (see the module docstring)."""

    profile: Profile
    context: object  # IExecutionContext bound to the profile
    keep_alive: tuple  # what the context holds by reference (its runtime config)
    stream: object  # pycuda Stream
    events: list  # pycuda Events: start, inputs copied, computed, outputs copied
    host: dict  # name -> page-locked flat numpy array (max size)
    device: dict  # name -> pycuda DeviceAllocation (max size)
    shape: Optional[dict[str, int]] = None  # the dimensions every request runs at (CUDA graphs): the opt
    lock: threading.Lock = field(default_factory=threading.Lock)
    graph: object = None  # executable CUDA graph of one enqueue, captured by the session (full TensorRT)
    capture_tried: bool = False  # a slot whose capture failed runs without a graph from then on


class TensorRTSession(Runner):
    """A matcher or extractor engine on TensorRT: ``with TensorRTSession("sift.engine") as s: s.infer(feeds)``.

    ``onnx``: the source ONNX, checked against the manifest when present (default: the manifest's); an
    extractor engine without a manifest reads its network settings from it.
    ``device``: CUDA device ordinal. ``cuda_graphs``: each profile runs at its opt shape and replays one
    CUDA graph (see the module docstring). The engine file and manifest are checked at construction;
    TensorRT, pycuda and the GPU are touched only by ``activate``.
    """

    backend = "tensorrt"
    device = "cuda"

    def __init__(self, engine_path: Path, onnx: Optional[Path] = None, device: int = 0, cuda_graphs: bool = False):
        self.engine_path = Path(engine_path)
        self.manifest = load_manifest(self.engine_path)
        self._data = read_engine(self.engine_path, self.manifest, deserialized=True)
        self.onnx_path = source_onnx_path(self.engine_path, self.manifest, onnx)
        check_source_onnx(self.onnx_path, self.manifest, required=False)
        profiles = contract = None
        if self.manifest is None:
            warnings.warn(
                f"engine {self.engine_path} has no manifest (built by trtexec?): its TensorRT version and "
                "target GPU could not be checked; its inputs and profiles are read from the engine",
                stacklevel=2,
            )
        else:
            profiles = profiles_from_manifest(self.manifest)
            contract = contract_from_manifest(self.manifest, f"engine {self.engine_path}")
        super().__init__(f"TensorRT session of {self.engine_path}", contract, profiles)
        self.device = device
        self.cuda_graphs = cuda_graphs
        self.runtime_version = None
        self.device_memory: dict[str, dict[str, int]] = {}  # profile -> bytes of "activation" and "io" memory
        self._backend: Optional[Backend] = None
        self._cuda = self._driver = self._cuda_context = None
        self._runtime = self._engine = self._logger = self._runtime_cache = None
        self._dtypes: dict[str, np.dtype] = {}
        self._slots: list[_Slot] = []
        self._closed = False
        self._release_lock = threading.Lock()

    @property
    def request_profiles(self) -> Optional[list[Profile]]:
        """With CUDA graphs every request of a profile runs at its opt shape."""
        if self.cuda_graphs and self.profiles:
            return [profile.at_opt() for profile in self.profiles]
        return self.profiles

    @property
    def runtime_cache_path(self) -> Optional[Path]:
        """``X.engine.rtxcache`` for tensorrt-rtx (kernels compiled just in time); None for full TensorRT."""
        suffix = self._backend.runtime_cache_suffix if self._backend is not None else None
        return self.engine_path.with_name(self.engine_path.name + suffix) if suffix else None

    # -- activation ----------------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        candidates = runtime_candidates(self.manifest)
        if not candidates:
            wanted = runtime_backend(self.manifest)
            what = wanted.module_name if wanted else " or ".join(b.module_name for b in BACKENDS.values())
            raise EngineError(f"the TensorRT runtime ({what}) is not installed: use --backend onnxruntime")
        backends = [backend() for backend in candidates]
        for backend in backends:  # with a manifest, the one runtime that built the engine
            check_runtime_version(self.manifest, backend.name, backend.version)
        capabilities = cuda_devices()
        if not capabilities:
            raise EngineError("no CUDA GPU was found: TensorRT engines need one; use --backend onnxruntime")
        if not 0 <= self.device < len(capabilities):
            raise EngineError(f"CUDA device {self.device} does not exist: this machine has {len(capabilities)}")
        check_compute_capability(self.manifest, capabilities[self.device])
        try:
            import pycuda.driver as cuda
            from cuda.bindings import driver
        except ImportError as error:
            raise EngineError(f"pycuda and cuda-python are needed to run TensorRT engines ({error}): "
                              "pip install '.[gpu]', or use --backend onnxruntime") from error

        cuda.init()
        self._cuda, self._driver = cuda, driver
        self._cuda_context = cuda.Device(self.device).retain_primary_context()
        self._closed = False
        try:
            self._with_context(self._load, backends)
        except BaseException:
            self._release()
            raise

    def _with_context(self, work: Callable, *args):
        """Run ``work`` with the session's CUDA context current on this thread (any thread may call)."""
        self._cuda_context.push()
        try:
            return work(*args)
        finally:
            self._cuda.Context.pop()

    def _load(self, backends: list[Backend]) -> None:
        self._backend, self._engine = self._deserialize(backends)
        self.runtime_version = f"{self._backend.name} {self._backend.version}"
        io = read_engine_io(self._engine, self._backend.module, self._network_settings)
        if self.manifest is None:
            self.profiles, self.contract = io.profiles, io.contract
        elif io.contract != self.contract:
            raise EngineError(f"engine {self.engine_path} is {io.contract.describe()}, but its manifest records "
                              f"{self.contract.describe()}: {REBUILD}")
        elif len(io.profiles) != len(self.profiles) or any(
            a.ranges != b.ranges for a, b in zip(io.profiles, self.profiles)
        ):
            raise EngineError(f"the profiles of engine {self.engine_path} differ from its manifest's: {REBUILD}")
        self._dtypes = {name: dtype for name, (dtype, _) in {**io.inputs, **io.outputs}.items()}
        self._runtime_cache = self._load_runtime_cache()
        for index, profile in enumerate(self.profiles):
            self._slots.append(self._make_slot(index, profile))

    def _deserialize(self, backends: list[Backend]) -> tuple[Backend, object]:
        """The engine, from the first of ``backends`` whose runtime loads it; an EngineError naming each failure."""
        failures = []
        for backend in backends:
            logger = make_logger(backend)
            runtime = backend.module.Runtime(logger)
            engine = runtime.deserialize_cuda_engine(self._data)
            if engine is not None:
                self._logger, self._runtime = logger, runtime
                return backend, engine
            failures.append(f"{backend.name} {backend.version}: {'; '.join(logger.errors[-3:]) or 'no detail from TensorRT'}")
        raise EngineError(f"TensorRT cannot load engine {self.engine_path} ({' | '.join(failures)}): {REBUILD}")

    def _network_settings(self) -> dict:
        """An extractor engine's network settings: its manifest's, else its source ONNX's metadata."""
        if self.manifest is not None:
            return manifest_network_settings(self.manifest)
        if self.onnx_path is None or not self.onnx_path.is_file():
            raise ContractError(f"extractor engine {self.engine_path} has no manifest: its network's stride and padding "
                                "come from its source ONNX, which is not given (--extractor-onnx)")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = onnxruntime.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        return network_settings(session.get_modelmeta().custom_metadata_map)

    def _load_runtime_cache(self):
        """The runtime's kernel cache, filled from ``runtime_cache_path`` when that file fits this GPU and version."""
        cache = self._backend.create_runtime_cache(self._engine)
        path = self.runtime_cache_path
        if cache is None or path is None or not path.is_file():
            return cache
        try:
            loaded = cache.deserialize(path.read_bytes())
        except OSError as error:
            loaded, why = False, error.strerror
        else:
            why = f"it was made for another GPU, driver or {self._backend.name} version"
        if not loaded:
            warnings.warn(f"runtime cache {path} is not used ({why}): kernels are compiled again and the file is "
                          "rewritten at close", stacklevel=4)
        return cache

    def _make_slot(self, index: int, profile: Profile) -> _Slot:
        cuda, engine = self._cuda, self._engine
        shape = profile.opt_dims if self.cuda_graphs else None
        context, keep_alive = self._backend.create_execution_context(
            engine, self._runtime_cache, fixed_shapes=shape is not None, cuda_graphs=self.cuda_graphs)
        if context is None:
            raise EngineError(f"TensorRT could not create an execution context for profile {profile.name} (out of GPU memory?)")
        stream = cuda.Stream()
        if not context.set_optimization_profile_async(index, stream.handle):
            raise EngineError(f"TensorRT refused optimization profile {index} ({profile.name}) of {self.engine_path}")
        stream.synchronize()
        host, device = {}, {}
        sized_for = profile.at_opt() if shape is not None else profile
        for name, tensor_shape in buffer_shapes([*self.contract.inputs, *self.contract.outputs], sized_for).items():
            host[name] = cuda.pagelocked_empty(int(np.prod(tensor_shape)), self._dtypes[name])
            device[name] = cuda.mem_alloc(max(host[name].nbytes, 1))
            if not context.set_tensor_address(name, int(device[name])):
                raise EngineError(f"TensorRT refused the buffer of {name} for profile {profile.name}")
        self.device_memory[profile.name] = {
            "activation": int(engine.get_device_memory_size_for_profile_v2(index)),
            "io": sum(array.nbytes for array in host.values()),
        }
        return _Slot(profile, context, keep_alive, stream, [cuda.Event() for _ in range(4)], host, device, shape)

    # -- inference -----------------------------------------------------------------------------------------
    def infer_impl(self, feeds, profile_index):
        slots = self._slots
        if not slots:
            raise UserError(f"{self.name} is closed")
        slot = slots[profile_index]
        with slot.lock:
            if self._closed:  # deactivated while this request waited for the slot
                raise UserError(f"{self.name} was closed before the request ran")
            return self._with_context(self._run, slot, feeds)

    def _run(self, slot: _Slot, feeds: dict[str, np.ndarray]):
        cuda, context, stream = self._cuda, slot.context, slot.stream
        if slot.shape is not None:
            expected = {spec.name: concrete_shape(spec, slot.shape) for spec in self.contract.inputs}
            if any(feeds[name].shape != shape for name, shape in expected.items()):
                raise ContractError(
                    f"with CUDA graphs, profile {slot.profile.name} runs at its opt shape only ({describe_dims(slot.shape)}): "
                    "pad requests to it (Matcher does)")
        start, copied_in, computed, copied_out = slot.events
        staged = {}
        for name, array in feeds.items():
            if not context.set_input_shape(name, array.shape):
                raise ContractError(f"TensorRT refused shape {array.shape} for input {name}")
            staged[name] = slot.host[name][: array.size].reshape(array.shape)
            np.copyto(staged[name], array, casting="same_kind")
        shapes = {spec.name: tuple(context.get_tensor_shape(spec.name)) for spec in self.contract.outputs}
        unknown = [f"{name} {shape}" for name, shape in shapes.items() if any(d < 0 for d in shape)]
        if unknown:
            raise EngineError(f"TensorRT gives no shape for the outputs {', '.join(unknown)} of {self.engine_path}: "
                              "not every input shape is set")

        start.record(stream)
        for name, view in staged.items():
            cuda.memcpy_htod_async(slot.device[name], view, stream)
        copied_in.record(stream)
        self._enqueue(slot)
        computed.record(stream)
        results = {}
        for name, shape in shapes.items():
            results[name] = slot.host[name][: int(np.prod(shape))].reshape(shape)
            cuda.memcpy_dtoh_async(results[name], slot.device[name], stream)
        copied_out.record(stream)
        copied_out.synchronize()

        outputs = {spec.name: results[spec.name].astype(spec.dtype, copy=True) for spec in self.contract.outputs}
        timings = {
            "h2d": copied_in.time_since(start) / 1e3,
            "compute": computed.time_since(copied_in) / 1e3,
            "d2h": copied_out.time_since(computed) / 1e3,
        }
        return outputs, timings

    def _enqueue(self, slot: _Slot) -> None:
        """Run the engine on the slot's stream: its captured graph where it has one, else one enqueue, after
        which a fixed-shape slot of full TensorRT captures its graph (once)."""
        if slot.graph is not None:
            self._launch(slot)
            return
        self._execute(slot)
        if slot.shape is not None and not slot.capture_tried and not self._backend.runtime_captures_graphs:
            slot.capture_tried = True
            # The run above did TensorRT's deferred set-up, which capture must not see; capture starts on an
            # idle stream (trtexec: enqueue, synchronize, capture).
            slot.stream.synchronize()
            slot.graph = self._capture(slot)

    def _execute(self, slot: _Slot) -> None:
        if not slot.context.execute_async_v3(slot.stream.handle):
            raise EngineError(f"TensorRT failed to run {self.engine_path}: {self._tensorrt_errors()}")

    def _tensorrt_errors(self) -> str:
        return "; ".join(self._logger.errors[-3:]) or "no detail from TensorRT"

    def _capture(self, slot: _Slot):
        """An executable CUDA graph of one enqueue on the slot's stream, or None (with a warning) where the
        driver or TensorRT refuses capture: the slot then runs without a graph, as trtexec does."""
        driver = self._driver
        success = driver.CUresult.CUDA_SUCCESS
        stream = driver.CUstream(slot.stream.handle)
        (error,) = driver.cuStreamBeginCapture(stream, driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        if error != success:
            return self._capture_failed(slot, error.name)
        try:
            enqueued = slot.context.execute_async_v3(slot.stream.handle)
        except BaseException:
            driver.cuStreamEndCapture(stream)  # leave the stream usable; the original error goes on
            raise
        error, graph = driver.cuStreamEndCapture(stream)
        if not enqueued or error != success:
            if error == success:
                driver.cuGraphDestroy(graph)
            return self._capture_failed(slot, error.name if enqueued else self._tensorrt_errors())
        error, executable = driver.cuGraphInstantiate(graph, 0)
        driver.cuGraphDestroy(graph)  # the executable graph is all a launch needs
        return executable if error == success else self._capture_failed(slot, error.name)

    def _capture_failed(self, slot: _Slot, detail: str) -> None:
        warnings.warn(f"CUDA graph capture failed for profile {slot.profile.name} ({detail}): it runs without a graph",
                      stacklevel=2)
        return None

    def _launch(self, slot: _Slot) -> None:
        driver = self._driver
        (error,) = driver.cuGraphLaunch(slot.graph, driver.CUstream(slot.stream.handle))
        if error != driver.CUresult.CUDA_SUCCESS:
            raise EngineError(f"CUDA graph launch failed for profile {slot.profile.name} of {self.engine_path} ({error.name})")

    # -- deactivation --------------------------------------------------------------------------------------
    def deactivate_impl(self) -> None:
        """Wait for the requests in flight (each holds its slot's lock), then free everything; any thread may call."""
        with self._release_lock:
            if self._cuda_context is None:
                return
            self._closed = True
            slots = list(self._slots)
            for slot in slots:
                slot.lock.acquire()
            try:
                self._release()
            finally:
                for slot in slots:
                    slot.lock.release()

    def _release(self) -> None:
        """Free everything, then release the retained primary context; from any thread.

        pycuda's ``Context.detach`` releases a primary context only where it is current: from another
        thread it does nothing, and where it pushes the context itself it leaves it pushed, because
        ``cuDevicePrimaryCtxRelease`` never pops the context stack (CUDA driver API). So: push, free,
        detach, then pop the released context off this thread's stack through the driver.
        """
        cuda, driver, context = self._cuda, self._driver, self._cuda_context
        outer = cuda.Context.get_current()  # the caller's own context, if any, which detach pushes back
        context.push()
        try:
            self._free()
        finally:
            context.detach()
            self._cuda_context = None
            if outer is not None:
                driver.cuCtxPopCurrent()
            driver.cuCtxPopCurrent()
            if outer is not None:
                driver.cuCtxPushCurrent(driver.CUcontext(outer.handle))

    def _free(self) -> None:
        """Save the runtime cache, then free graphs, buffers, contexts, engine and runtime (the context is current)."""
        for slot in self._slots:
            slot.stream.synchronize()
        self._save_runtime_cache()
        for slot in self._slots:
            if slot.graph is not None:
                self._driver.cuGraphExecDestroy(slot.graph)
            for allocation in slot.device.values():
                allocation.free()
            slot.host.clear()
            slot.device.clear()
            slot.graph = slot.context = slot.stream = None
            slot.keep_alive, slot.events = (), []
        self._slots = []
        self._runtime_cache = self._engine = self._runtime = None

    def _save_runtime_cache(self) -> None:
        path = self.runtime_cache_path
        if self._runtime_cache is None or path is None:
            return
        try:
            write_bytes_atomic(path, bytes(memoryview(self._runtime_cache.serialize())))
        except UserError as error:  # a read-only engine folder: the next process compiles again
            warnings.warn(f"the runtime cache is not saved: {error}", stacklevel=4)

    def summary(self) -> dict:
        return {"runtime_version": self.runtime_version, "device": self.device, "cuda_graphs": self.cuda_graphs,
                "device_memory": dict(self.device_memory)}
