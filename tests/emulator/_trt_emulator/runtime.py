"""The emulated TensorRT runtime: an engine is its manifest's source ONNX, run on ONNX Runtime.

``make_runtime(module, flavour)`` gives the classes one emulated module exposes; ``flavour`` is "tensorrt-rtx"
or "tensorrt" (the builder names of the manifest). What the emulator refuses, as TensorRT does:

- an engine of another builder or version, or (tensorrt-rtx) built for none of the GPU's compute capability;
- an input shape outside the active profile (``set_input_shape`` returns False), and output shapes stay -1
  until every input shape is set;
- ``set_tensor_address`` of a pointer that is not 256-byte aligned or not inside a live device allocation of
  the context's device (``NvInferRuntime.h``, ``setTensorAddress``: "The pointer must have at least 256-byte
  alignment"; the address must "point to a device buffer of sufficient size and alignment");
- ``execute_async_v3`` without every shape and address, on an unknown stream or one of another device, or
  during stream capture where capture is not allowed: before the context's first (warm-up) run, on
  tensorrt-rtx without user-allocated memory (``is_stream_capturable`` is False then), and on a capture
  another call has invalidated. Such a failed launch during capture sets the CUDA runtime's last error of the
  thread (``_trt_emulator.gpu``), and an enqueue that finds a last error left behind fails with it (TensorRT
  checks its launches with the runtime API) until someone clears it;
- a runtime cache of another GPU or version, or deserialized without a current CUDA context.

Versions: full TensorRT's ``ICudaEngine`` has ``get_device_memory_size_for_profile_v2`` and
``device_memory_size_v2`` from 10.1 on only (NVIDIA's C++ API member lists of 10.0.0 and 10.8.0), the v1 names
through 10.x; tensorrt-rtx the v2 only. The emulated ``tensorrt`` takes its version from
``TRT_EMULATOR_TENSORRT_VERSION``.

tensorrt-rtx's own CUDA graphs (``CudaGraphStrategy.WHOLE_GRAPH_CAPTURE``) are captured on the caller's stream
by the same capture rules, so they can fail (a legacy-stream call by another thread while a blocking stream
captures): the run then goes on without a graph, as the runtime's documentation leaves it, and the failure is
counted in ``RUNTIME_CAPTURE_FAILURES``.

Activation memory per profile is an emulated size (``activation_bytes``), reserved on the emulated GPU
as the allocation strategy says: STATIC the largest profile's, ON_PROFILE_CHANGE the active one's,
USER_MANAGED none. tensorrt-rtx's just-in-time kernel compilation is counted in ``COMPILED`` (per
engine, GPU and, when specialized, shape), and kept in the runtime cache; its runtime CUDA graphs in
``RUNTIME_GRAPHS``. Its ``DynamicShapesKernelSpecializationStrategy`` as the tensorrt_rtx docstring states it:
LAZY runs a new shape on fallback kernels while the specialised ones compile in the background (ready for the
next run), EAGER compiles them before the run, NONE always runs fallback kernels; every run on fallback
kernels is counted in ``FALLBACK_RUNS``.
"""

import hashlib
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np

from _trt_emulator.gpu import GPU, THREAD_LOCAL, CudaError, compute_capability

ENGINES_VARIABLE = "TRT_EMULATOR_ENGINES"
CACHE_FORMAT = "emulated-tensorrt-rtx-runtime-cache/1"
COMPILED: list[tuple] = []  # every kernel compilation: (engine sha256, compute capability, shapes or "generic")
BUILDS: list[dict] = []  # every build of the emulated full TensorRT: {"flags", "strongly_typed", "fp32_layers"}
RUNTIME_GRAPHS: list[tuple] = []  # every CUDA graph the runtime captured itself: (engine sha256, shapes)
FALLBACK_RUNS: list[tuple] = []  # tensorrt-rtx runs on fallback (not shape-specialized) kernels: COMPILED's keys
RUNTIME_CAPTURE_FAILURES: list[tuple] = []  # every capture of its own that failed: (engine sha256, shapes)
_lock = threading.Lock()


def activation_bytes(profile_max_shapes: dict[str, tuple]) -> int:
    """The emulator's stand-in for a profile's activation memory: 64 bytes per element of its largest inputs."""
    return 64 * sum(int(np.prod(shape)) for shape in profile_max_shapes.values())


def _current_device() -> int:
    """The device TensorRT works on: the current context's (the CUDA runtime's current device, 0 by default)."""
    device = GPU.current_device()
    return 0 if device is None else device


def _gpu_capability() -> str:
    return "%d.%d" % compute_capability(_current_device())


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


def known_manifests() -> list[Path]:
    """Manifests the emulator may find an engine's in: of engines or manifests named in $TRT_EMULATOR_ENGINES,
    of engine files the process opened (``sitecustomize``), of engines named on the command line, and of every
    engine in a folder named there."""
    from _trt_emulator import OPENED_ENGINES

    found = []
    names = [n for n in os.environ.get(ENGINES_VARIABLE, "").split(os.pathsep) if n] + sorted(OPENED_ENGINES) + sys.argv[1:]
    for name in names:
        path = Path(name)
        try:
            if path.is_dir():
                found += sorted(path.glob("*.engine.json"))
            elif path.suffix == ".json" and path.is_file():
                found.append(path)
            elif Path(f"{path}.json").is_file():
                found.append(Path(f"{path}.json"))
        except OSError:
            continue
    return found


def find_manifest(sha256: str) -> tuple[Path, dict] | None:
    for path in known_manifests():
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("engine", {}).get("sha256") == sha256:
            return path, record
    return None


class EngineModel:
    """What an engine computes: its manifest's I/O and profiles, its source ONNX on ONNX Runtime."""

    def __init__(self, manifest_path: Path, record: dict, sha256: str):
        import onnxruntime

        self.sha256 = sha256
        self.inputs = [(t["name"], np.dtype(t["dtype"]), t["shape"]) for t in record["inputs"]]
        self.outputs = [(t["name"], np.dtype(t["dtype"]), t["shape"]) for t in record["outputs"]]
        self.profiles = [{name: {k: tuple(v) for k, v in shapes.items()} for name, shapes in p["shapes"].items()}
                         for p in record["profiles"]]
        onnx = Path(record["onnx"]["path"])
        if not onnx.is_absolute():
            onnx = manifest_path.parent / onnx
        if not onnx.is_file() and record["onnx"].get("absolute"):
            onnx = Path(record["onnx"]["absolute"])
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])

    def output_shapes(self, input_shapes: dict[str, tuple]) -> dict[str, tuple]:
        """Output shapes from the input shapes set so far: symbolic dimensions stay -1 until every input is set."""
        complete = all(name in input_shapes for name, _, _ in self.inputs)
        symbols = {}
        for name, _, shape in self.inputs:
            for dim, value in zip(shape, input_shapes.get(name, ())):
                if isinstance(dim, str):
                    symbols[dim] = value
        return {name: tuple(d if isinstance(d, int) and d >= 0 else (symbols.get(d, -1) if complete else -1)
                            for d in shape) for name, _, shape in self.outputs}

    def run(self, shapes: dict[str, tuple], addresses: dict[str, int]) -> None:
        """Read the inputs at their addresses, run the ONNX, write the outputs at theirs (on the emulated GPU)."""
        feeds = {}
        for name, dtype, _ in self.inputs:
            nbytes = int(np.prod(shapes[name])) * dtype.itemsize
            feeds[name] = GPU.view(addresses[name], nbytes).view(dtype).reshape(shapes[name]).copy()
        names = [name for name, _, _ in self.outputs]
        expected = self.output_shapes(shapes)
        for (name, dtype, _), value in zip(self.outputs, self.session.run(names, feeds)):
            value = np.ascontiguousarray(value, dtype)
            if value.shape != expected[name]:
                raise CudaError("CUDA_ERROR_ILLEGAL_ADDRESS", f"{name}: ONNX gives {value.shape}, engine {expected[name]}")
            GPU.view(addresses[name], value.nbytes)[:] = value.reshape(-1).view(np.uint8)


def make_runtime(module, flavour: str) -> dict:
    """The runtime classes of an emulated TensorRT module (``module`` gives its real enums and logger)."""
    trt = module
    rtx = flavour == "tensorrt-rtx"
    has_v2 = rtx or _version(trt.__version__) >= (10, 1)  # the *_v2 memory sizes
    has_v1 = not rtx  # the v1 memory sizes: full TensorRT 10 (deprecated from 10.1, still there)
    strategies = trt.ExecutionContextAllocationStrategy
    dtypes = {np.dtype(np.float32): trt.DataType.FLOAT, np.dtype(np.float16): trt.DataType.HALF,
              np.dtype(np.int32): trt.DataType.INT32, np.dtype(np.int64): trt.DataType.INT64,
              np.dtype(np.bool_): trt.DataType.BOOL}

    def log_error(logger, message: str) -> None:
        logger.log(trt.ILogger.Severity.ERROR, message)

    class IRuntimeCache:
        def __init__(self, logger):
            self._logger = logger
            self._kernels: set = set()

        def serialize(self):
            record = {"format": CACHE_FORMAT, "version": trt.__version__, "compute_capability": _gpu_capability(),
                      "kernels": sorted(json.dumps(k) for k in self._kernels)}
            return np.frombuffer(json.dumps(record).encode(), np.uint8)  # a buffer, as IHostMemory is

        def deserialize(self, blob):
            if not GPU.context_current():
                log_error(self._logger, "IRuntimeCache::deserialize: no current CUDA context")
                return False
            try:
                record = json.loads(bytes(blob))
            except ValueError:
                return False
            if (not isinstance(record, dict) or record.get("format") != CACHE_FORMAT
                    or record.get("version") != trt.__version__ or record.get("compute_capability") != _gpu_capability()):
                return False
            self._kernels = {tuple(json.loads(k)) for k in record["kernels"]}
            return True

        def reset(self):
            self._kernels.clear()
            return True

        def _compile(self, key: tuple) -> None:
            """Compile a kernel unless the cache holds it."""
            if key not in self._kernels:
                with _lock:
                    COMPILED.append(key)
                self._kernels.add(key)

    class IRuntimeConfig:
        def __init__(self, logger):
            self._logger = logger
            self._strategy = strategies.STATIC
            self._cache = None
            self.cuda_graph_strategy = trt.CudaGraphStrategy.DISABLED
            self.dynamic_shapes_kernel_specialization_strategy = trt.DynamicShapesKernelSpecializationStrategy.LAZY

        def set_execution_context_allocation_strategy(self, strategy=strategies.STATIC):
            self._strategy = strategy

        def get_execution_context_allocation_strategy(self):
            return self._strategy

        def create_runtime_cache(self):
            return IRuntimeCache(self._logger)

        def set_runtime_cache(self, cache=None):
            self._cache = cache
            return True

        def get_runtime_cache(self):
            return self._cache

    class IExecutionContext:
        def __init__(self, engine, strategy, config=None):
            self._engine, self._strategy, self._config = engine, strategy, config
            self._profile = 0
            self._shapes: dict[str, tuple] = {}
            self._addresses: dict[str, int] = {}
            self._reservation = None
            self._user_memory = None
            self._warmed_up = False  # TensorRT's deferred set-up runs in the first enqueue
            self._runtime_graphs: dict = {}  # tensorrt-rtx's own graphs: (shapes, addresses) -> Graph
            self._device = _current_device()
            if strategy == strategies.STATIC:
                self._reserve(engine._memory_size())
            elif strategy == strategies.ON_PROFILE_CHANGE:
                self._reserve(engine._profile_memory_size(0))

        def __del__(self):
            if self._reservation is not None:
                GPU.unreserve(self._reservation)

        def _reserve(self, nbytes: int) -> None:
            if self._reservation is not None:
                GPU.unreserve(self._reservation)
            self._reservation = GPU.reserve(nbytes, self._device)

        @property
        def engine(self):
            return self._engine

        @property
        def active_optimization_profile(self):
            return self._profile

        def set_optimization_profile_async(self, profile_index, stream_handle):
            if not 0 <= profile_index < self._engine.num_optimization_profiles:
                log_error(self._engine._logger, f"setOptimizationProfileAsync: profile {profile_index} out of range")
                return False
            if profile_index != self._profile:
                self._profile, self._shapes = profile_index, {}
                if self._strategy == strategies.ON_PROFILE_CHANGE:
                    self._reserve(self._engine._profile_memory_size(profile_index))
            return True

        def set_input_shape(self, name, shape):
            shape = tuple(int(d) for d in shape)
            limits = self._engine._model.profiles[self._profile].get(name)
            if limits is None:
                log_error(self._engine._logger, f"setInputShape: {name} is not an input")
                return False
            low, high = limits["min"], limits["max"]
            if len(shape) != len(low) or any(not lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
                log_error(self._engine._logger, f"setInputShape: {name} {shape} is outside profile {self._profile} "
                                                f"(min {low}, max {high})")
                return False
            self._shapes[name] = shape
            return True

        def get_tensor_shape(self, name):
            if name in self._shapes:
                return trt.Dims(self._shapes[name])
            outputs = self._engine._model.output_shapes(self._shapes)
            return trt.Dims(outputs[name]) if name in outputs else self._engine.get_tensor_shape(name)

        @property
        def all_binding_shapes_specified(self):
            return not self.infer_shapes()

        def infer_shapes(self):
            return [name for name, _, _ in self._engine._model.inputs if name not in self._shapes]

        def set_tensor_address(self, name, memory):
            if name not in self._engine._names:
                log_error(self._engine._logger, f"setTensorAddress: no tensor {name}")
                return False
            address = int(memory)
            if address % 256:
                log_error(self._engine._logger, f"setTensorAddress: the address of {name} ({address:#x}) is not "
                                                "256-byte aligned")
                return False
            if GPU.device_of(address) != self._device:
                log_error(self._engine._logger, f"setTensorAddress: the address of {name} ({address:#x}) is not "
                                                f"device memory of GPU {self._device}")
                return False
            self._addresses[name] = address
            return True

        def get_tensor_address(self, name):
            return self._addresses.get(name, 0)

        def set_device_memory(self, memory, size):
            if self._strategy != strategies.USER_MANAGED:
                log_error(self._engine._logger, "setDeviceMemory: the context was not created with USER_MANAGED memory")
                return
            if size < self._engine._profile_memory_size(self._profile):
                log_error(self._engine._logger, "setDeviceMemory: the memory is smaller than the profile needs")
                return
            self._user_memory = (int(memory), int(size))

        if rtx:
            def is_stream_capturable(self, stream):
                return self._user_memory is not None

        def execute_async_v3(self, stream_handle):
            logger, model = self._engine._logger, self._engine._model
            stream = GPU.streams.get(int(stream_handle))
            if stream is not None and stream.device != self._device:
                stream = None  # a stream of another device's context is no stream here
            missing = self.infer_shapes()
            unbound = [name for name in self._engine._names if name not in self._addresses]
            if stream is None or missing or unbound:
                log_error(logger, f"enqueueV3: {'an unknown stream' if stream is None else ''}"
                                  f"{' input shapes not set: ' + ', '.join(missing) if missing else ''}"
                                  f"{' no address for: ' + ', '.join(unbound) if unbound else ''}")
                return False
            left_behind = GPU.take_last_error()
            if left_behind != "cudaSuccess":
                log_error(logger, f"enqueueV3: CUDA runtime error {left_behind} (from an earlier call)")
                return False
            if self._strategy == strategies.USER_MANAGED and self._user_memory is None:
                log_error(logger, "enqueueV3: USER_MANAGED context without device memory")
                return False
            if stream.capture is not None:
                refusal = None
                if rtx and self._user_memory is None:
                    refusal = "stream capture needs user-allocated memory (REQUIRE_USER_ALLOCATION)"
                elif not self._warmed_up:
                    refusal = "the first enqueue does deferred set-up that cannot be captured"
                elif stream.capture_invalidated:
                    refusal = "the stream's capture was invalidated by an earlier call"
                if refusal:
                    stream.invalidate_capture()
                    GPU.set_last_error("cudaErrorStreamCaptureInvalidated")
                    log_error(logger, f"enqueueV3: {refusal}")
                    return False
            shapes, addresses = dict(self._shapes), dict(self._addresses)
            work = lambda: model.run(shapes, addresses)  # noqa: E731
            if rtx:
                self._just_in_time(shapes, addresses, stream, work)
            else:
                stream.enqueue(work)
            self._warmed_up = True
            return True

        def _just_in_time(self, shapes: dict, addresses: dict, stream, work) -> None:
            """tensorrt-rtx: shape-specialized kernels as the config's strategy says; ``work`` on the stream, from
            its own CUDA graph (captured once per shapes and addresses) where the config asks for them."""
            config, engine = self._config, self._engine
            kernels = trt.DynamicShapesKernelSpecializationStrategy
            strategy = config.dynamic_shapes_kernel_specialization_strategy if config else kernels.LAZY
            key = (engine._model.sha256, _gpu_capability(), json.dumps(sorted(shapes.items())))
            cache = engine._cache_for(config)
            if strategy == kernels.NONE or (strategy == kernels.LAZY and key not in cache._kernels):
                with _lock:
                    FALLBACK_RUNS.append(key)  # this run uses the fallback kernels
            if strategy != kernels.NONE:
                cache._compile(key)  # EAGER before the run; LAZY in the background, ready for the next run
            graphs = config.cuda_graph_strategy if config else trt.CudaGraphStrategy.DISABLED
            if graphs != trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE or stream.capture is not None:
                stream.enqueue(work)
                return
            graph_key = (key[2], json.dumps(sorted(addresses.items())))
            graph = self._runtime_graphs.get(graph_key)
            if graph is None:
                graph = self._capture(stream, work, key[2])
                if graph is None:
                    stream.enqueue(work)  # the run goes on without a graph
                    return
                self._runtime_graphs[graph_key] = graph
            graph.launch(stream)

        def _capture(self, stream, work, shapes_key: str):
            """The runtime's own capture of ``work`` on the caller's stream (work already queued stays queued)."""
            sha256 = self._engine._model.sha256
            if stream.begin_capture(THREAD_LOCAL, require_idle=False) != "CUDA_SUCCESS":
                graph = None
            else:
                try:
                    stream.enqueue(work)
                except CudaError:
                    pass  # an invalidated capture: end_capture says so
                _, graph = stream.end_capture()
            with _lock:
                (RUNTIME_GRAPHS if graph is not None else RUNTIME_CAPTURE_FAILURES).append((sha256, shapes_key))
            return graph

    class ICudaEngine:
        def __init__(self, model: EngineModel, logger):
            self._model, self._logger = model, logger
            self._names = [name for name, _, _ in model.inputs] + [name for name, _, _ in model.outputs]
            self._tensors = {name: (dtype, shape, trt.TensorIOMode.INPUT) for name, dtype, shape in model.inputs}
            self._tensors.update({name: (dtype, shape, trt.TensorIOMode.OUTPUT) for name, dtype, shape in model.outputs})
            self._private_cache = None

        def _cache_for(self, config):
            cache = config.get_runtime_cache() if config is not None else None
            if cache is None:  # without a cache set, the runtime compiles into one of its own
                self._private_cache = self._private_cache or IRuntimeCache(self._logger)
                cache = self._private_cache
            return cache

        @property
        def num_io_tensors(self):
            return len(self._names)

        @property
        def num_optimization_profiles(self):
            return len(self._model.profiles)

        def get_tensor_name(self, index):
            return self._names[index]

        def get_tensor_mode(self, name):
            return self._tensors[name][2]

        def get_tensor_dtype(self, name):
            return dtypes[self._tensors[name][0]]

        def get_tensor_shape(self, name):
            return trt.Dims(tuple(d if isinstance(d, int) else -1 for d in self._tensors[name][1]))

        def get_tensor_profile_shape(self, name, profile_index):
            shapes = self._model.profiles[profile_index][name]
            return [trt.Dims(shapes[k]) for k in ("min", "opt", "max")]

        def _profile_memory_size(self, profile_index):
            return activation_bytes({n: s["max"] for n, s in self._model.profiles[profile_index].items()})

        def _memory_size(self):
            return max(self._profile_memory_size(i) for i in range(self.num_optimization_profiles))

        if has_v2:
            def get_device_memory_size_for_profile_v2(self, profile_index):
                return self._profile_memory_size(profile_index)

            @property
            def device_memory_size_v2(self):
                return self._memory_size()

        if has_v1:
            def get_device_memory_size_for_profile(self, profile_index):
                return self._profile_memory_size(profile_index)

            @property
            def device_memory_size(self):
                return self._memory_size()

        def create_execution_context(self, strategy=strategies.STATIC):
            config = None
            if rtx and isinstance(strategy, IRuntimeConfig):
                config, strategy = strategy, strategy.get_execution_context_allocation_strategy()
            elif not isinstance(strategy, strategies):
                raise TypeError(f"create_execution_context(): incompatible argument {strategy!r}")
            try:
                context = IExecutionContext(self, strategy, config)
            except CudaError as error:
                log_error(self._logger, f"createExecutionContext: {error}")
                return None
            if rtx:  # just-in-time compilation of the engine's kernels for this GPU
                self._cache_for(config)._compile((self._model.sha256, _gpu_capability(), "generic"))
            return context

        if rtx:
            def create_runtime_config(self):
                return IRuntimeConfig(self._logger)

    class Runtime:
        def __init__(self, logger):
            if not isinstance(logger, trt.ILogger):
                raise TypeError("Runtime(): incompatible constructor arguments: a tensorrt ILogger is needed")
            self._logger = logger

        @property
        def logger(self):
            return self._logger

        def deserialize_cuda_engine(self, serialized_engine):
            data = bytes(serialized_engine)
            if data[:4] != (b"vtrt" if rtx else b"ftrt"):
                log_error(self._logger, "Serialization assertion failed: the engine's magic tag is not this runtime's")
                return None
            sha256 = hashlib.sha256(data).hexdigest()
            found = find_manifest(sha256)
            if found is None:
                log_error(self._logger, f"the emulator knows no engine with sha256 {sha256[:12]}…: it reads the "
                                        f"manifests of engines named on the command line or in ${ENGINES_VARIABLE}")
                return None
            path, record = found
            builder, targets = record.get("builder", {}), record.get("target", {}).get("compute_capability")
            if builder.get("name") != flavour or builder.get("version") != trt.__version__:
                log_error(self._logger, "Serialization assertion failed: the engine's magic tag or version does not "
                                        f"match ({builder.get('name')} {builder.get('version')} engine, "
                                        f"{flavour} {trt.__version__} runtime)")
                return None
            targets = [targets] if isinstance(targets, str) else targets
            if targets and _gpu_capability() not in targets:
                log_error(self._logger, f"the engine was built for compute capability {', '.join(targets)}, "
                                        f"not this GPU's {_gpu_capability()}")
                return None
            return ICudaEngine(EngineModel(path, record, sha256), self._logger)

    classes = {"Runtime": Runtime, "ICudaEngine": ICudaEngine, "IExecutionContext": IExecutionContext}
    if rtx:
        classes.update(IRuntimeConfig=IRuntimeConfig, IRuntimeCache=IRuntimeCache)
    for name, cls in classes.items():
        cls.__module__, cls.__qualname__ = module.__name__, name
    return classes
