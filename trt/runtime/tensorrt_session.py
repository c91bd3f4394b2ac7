"""TensorRT backend: a serialized engine served with pycuda buffers and streams.

The engine file is checked before TensorRT is touched and its I/O after it loads
(``trt.runtime.tensorrt_engine``); each profile's context, stream, events and buffers are a *slot*
(``trt.runtime.tensorrt_memory``); full TensorRT's CUDA graphs are captured as trtexec does
(``trt.runtime.tensorrt_graphs``). An engine without a manifest (built by ``trtexec``) is tried with every
installed runtime, with a warning that versions could not be checked.

Execution model, chosen for use from worker threads: one slot per optimization profile, made once at
activation, holding an execution context bound to that profile (holding activation memory for that
profile alone: ``ON_PROFILE_CHANGE``). A lock per slot makes calls that land on the same profile take
turns; calls on different profiles run concurrently. Every call pushes the session's CUDA context (the
device's primary context, the one TensorRT's runtime API uses) and pops it when done, so any thread may
call. ``deactivate`` waits for the calls in flight, then frees everything and releases the primary
context, also from a thread other than the one that activated the session.

With ``cuda_graphs=True`` each profile runs at one fixed shape, its opt (requests are padded to it:
``Runner.request_profiles``, which ``Runner.infer`` also selects from), so each slot's context holds
exactly one CUDA graph: tensorrt-rtx captures and replays it itself (``CudaGraphStrategy``, after
compiling that shape's kernels); with full TensorRT the session captures it and falls back to ordinary
runs, with a warning, where capture fails. tensorrt-rtx keeps the kernels it compiles just in time in
``X.engine.rtxcache`` (read at activation, written atomically at deactivation), so a second process
starts without compiling; ``eager_kernels`` makes it compile each new shape's specialised kernels before
the first run at that shape (``DynamicShapesKernelSpecializationStrategy.EAGER``) instead of running
fallback kernels meanwhile (LAZY, the default): results and timings then never come from fallback kernels.

Only ``activate`` imports TensorRT, pycuda and cuda-python (graph capture, the runtime's last error and
the context stack, which pycuda does not reach).
"""

import threading
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from trt.contract import concrete_shape
from trt.engine.backends import BACKENDS, Backend, make_logger
from trt.engine.manifest import load_manifest
from trt.errors import ContractError, EngineError, UserError
from trt.fileio import write_bytes_atomic
from trt.gpu import cuda_devices
from trt.runtime import tensorrt_graphs
from trt.runtime.base import (Profile, Runner, contract_from_manifest, describe_dims, manifest_network_settings,
                              network_settings)
from trt.runtime.tensorrt_engine import (REBUILD, check_bindings, check_compute_capability, check_runtime_version,
                                         check_source_onnx, profiles_from_manifest, read_engine, read_engine_io,
                                         runtime_backend, runtime_candidates, source_onnx_path)
from trt.runtime.tensorrt_memory import (Slot, activation_bytes, allocate_buffers, free_buffers, make_events,
                                         make_stream)


class TensorRTSession(Runner):
    """A matcher or extractor engine on TensorRT: ``with TensorRTSession("sift.engine") as s: s.infer(feeds)``.

    ``onnx``: the source ONNX, checked against the manifest when present (default: the manifest's); an
    extractor engine without a manifest reads its network settings from it.
    ``device``: CUDA device ordinal (``cuda_device``; ``Runner.device`` stays "cuda"). ``cuda_graphs``: each
    profile runs at its opt shape and replays one CUDA graph. ``eager_kernels``: tensorrt-rtx compiles each new
    shape's kernels before running it (see the module docstring). The engine file and manifest are checked at
    construction; TensorRT, pycuda and the GPU are touched only by ``activate``. The engine's bytes are held
    only until TensorRT has deserialized them (a re-activation reads and checks the file again).
    """

    backend = "tensorrt"
    device = "cuda"

    def __init__(self, engine_path: Path, onnx: Optional[Path] = None, device: int = 0, cuda_graphs: bool = False,
                 eager_kernels: bool = False):
        self.engine_path = Path(engine_path)
        self.manifest = load_manifest(self.engine_path)
        self._data: Optional[bytes] = read_engine(self.engine_path, self.manifest, deserialized=True)
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
        self.cuda_device = device
        self.cuda_graphs = cuda_graphs
        self.eager_kernels = eager_kernels
        self.runtime_version = None
        self.device_memory: dict[str, dict[str, int]] = {}  # profile -> bytes of "activation" and "io" memory
        self._backend: Optional[Backend] = None
        self._cuda = self._driver = self._cuda_runtime = self._cuda_context = None
        self._runtime = self._engine = self._logger = self._runtime_cache = None
        self._dtypes: dict[str, np.dtype] = {}
        self._slots: list[Slot] = []
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
        if not 0 <= self.cuda_device < len(capabilities):
            raise EngineError(f"CUDA device {self.cuda_device} does not exist: this machine has {len(capabilities)}")
        check_compute_capability(self.manifest, capabilities[self.cuda_device])
        try:
            import pycuda.driver as cuda
            from cuda.bindings import driver, runtime
        except ImportError as error:
            raise EngineError(f"pycuda and cuda-python are needed to run TensorRT engines ({error}): "
                              "pip install '.[gpu]', or use --backend onnxruntime") from error

        if self._data is None:  # a re-activation: the file is read and checked again
            self._data = read_engine(self.engine_path, self.manifest, deserialized=True)
        cuda.init()
        self._cuda, self._driver, self._cuda_runtime = cuda, driver, runtime
        self._cuda_context = cuda.Device(self.cuda_device).retain_primary_context()
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
        self._data = None  # TensorRT holds the engine now (136 MB for ALIKED's matcher)
        self.runtime_version = f"{self._backend.name} {self._backend.version}"
        io = read_engine_io(self._engine, self._backend.module, self._network_settings)
        check_bindings(io, self.engine_path)
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

    def _make_slot(self, index: int, profile: Profile) -> Slot:
        cuda, engine = self._cuda, self._engine
        shape = profile.opt_dims if self.cuda_graphs else None
        context, keep_alive = self._backend.create_execution_context(
            engine, self._runtime_cache, fixed_shapes=shape is not None, cuda_graphs=self.cuda_graphs,
            eager_kernels=self.eager_kernels)
        if context is None:
            raise EngineError(f"TensorRT could not create an execution context for profile {profile.name} (out of GPU memory?)")
        stream = make_stream(cuda, self._driver)
        if not context.set_optimization_profile_async(index, stream.handle):
            raise EngineError(f"TensorRT refused optimization profile {index} ({profile.name}) of {self.engine_path}")
        stream.synchronize()
        sized_for = profile.at_opt() if shape is not None else profile
        try:
            host, device = allocate_buffers(cuda, context, [*self.contract.inputs, *self.contract.outputs], sized_for,
                                            self._dtypes)
        except ValueError as refused:
            raise EngineError(f"TensorRT refused the buffer of {refused} for profile {profile.name}: "
                              f"{self._tensorrt_errors()}") from None
        self.device_memory[profile.name] = {"activation": activation_bytes(engine, index),
                                            "io": sum(array.nbytes for array in host.values())}
        return Slot(profile, context, keep_alive, stream, make_events(cuda), host, device, shape)

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

    def _run(self, slot: Slot, feeds: dict[str, np.ndarray]):
        cuda, context, stream = self._cuda, slot.context, slot.stream
        if slot.shape is not None:
            expected = {spec.name: concrete_shape(spec, slot.shape) for spec in self.contract.inputs}
            if any(feeds[name].shape != shape for name, shape in expected.items()):
                raise ContractError(
                    f"with CUDA graphs, profile {slot.profile.name} runs at its opt shape only ({describe_dims(slot.shape)}): "
                    "pad requests to it (Matcher does)")
        start, copied_in, computed, copied_out = slot.events
        self._logger.errors.clear()  # this thread's: what TensorRT reports from here on is this request's
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

    def _enqueue(self, slot: Slot) -> None:
        """Run the engine on the slot's stream: its captured graph where it has one, else one enqueue, after
        which a fixed-shape slot of full TensorRT captures its graph (once)."""
        if slot.graph is not None:
            failure = tensorrt_graphs.launch(self._driver, slot.graph, slot.stream.handle)
            if failure:
                raise EngineError(f"CUDA graph launch failed for profile {slot.profile.name} of {self.engine_path} "
                                  f"({failure})")
            return
        self._execute(slot)
        if slot.shape is not None and not slot.capture_tried and not self._backend.runtime_captures_graphs:
            slot.capture_tried = True
            # The run above did TensorRT's deferred set-up, which capture must not see; capture starts on an
            # idle stream (trtexec: enqueue, synchronize, capture).
            slot.stream.synchronize()
            captured = tensorrt_graphs.capture(self._driver, self._cuda_runtime, slot.stream.handle,
                                               lambda: slot.context.execute_async_v3(slot.stream.handle),
                                               self._tensorrt_errors)
            if isinstance(captured, str):
                warnings.warn(f"CUDA graph capture failed for profile {slot.profile.name} ({captured}): it runs "
                              "without a graph", stacklevel=5)
            else:
                slot.graph = captured

    def _execute(self, slot: Slot) -> None:
        if not slot.context.execute_async_v3(slot.stream.handle):
            raise EngineError(f"TensorRT failed to run {self.engine_path}: {self._tensorrt_errors()}")

    def _tensorrt_errors(self) -> str:
        return "; ".join(self._logger.errors[-3:]) or "no detail from TensorRT"

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
                tensorrt_graphs.destroy(self._driver, slot.graph)
            free_buffers(slot.device)
            slot.host.clear()
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
        return {"runtime_version": self.runtime_version, "cuda_device": self.cuda_device,
                "cuda_graphs": self.cuda_graphs, "eager_kernels": self.eager_kernels,
                "device_memory": dict(self.device_memory)}
