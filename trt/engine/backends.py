"""The one place that imports TensorRT: an adapter per builder, holding every difference between them.

- ``tensorrt`` (full TensorRT 10+, NVIDIA's wheel or a system install): builds for the GPU it runs on,
  weakly typed (FP16 through ``BuilderFlag.FP16``, with FP32-critical layers pinned, see
  ``FP32_LAYER_PATTERNS``). At run time the session captures CUDA graphs itself.
- ``tensorrt-rtx`` (module ``tensorrt_rtx``): builds ahead of time, also on a machine without a GPU,
  for one or several compute capabilities (7.5-12.1; by default the local GPU, else its documented
  default, every RTX GPU from Ampere on); strongly typed, so precision comes from the ONNX types: an
  FP16 engine is built from an FP16 variant of the ONNX (``Backend.needs_fp16_onnx``); no timing cache
  (its API is kept but does nothing since 1.2). At run time it compiles kernels just in time, kept in
  a runtime cache, and captures CUDA graphs itself when its runtime config asks it to.

Both are imported lazily, under their own names (the package itself is called ``trt``).
"""

import importlib
import importlib.util
import re
import sys
import threading
import time
from functools import cached_property

from trt.errors import BuildError, EngineError, UserError
from trt.gpu import cuda_devices
from trt.precision import reduced

BUILDERS = ("auto", "tensorrt", "tensorrt-rtx")
PRECISIONS = ("fp32", "fp16")

# Layers kept in FP32 when full TensorRT builds with FP16 enabled: a layer whose name matches one of
# these (re.search on the TensorRT layer name, which the ONNX parser takes from the ONNX node name)
# runs and outputs FP32. The names are those of our exported matcher (trt/onnx/export.py).
FP32_LAYER_PATTERNS = (
    r"normalize",  # keypoint normalisation by the image size, where a helper is named for it
    r"posenc",  # rotary position encoding: cos/sin of pixel-scaled arguments lose digits in FP16
    r"log_assignment",  # assignment scores, matchability and the double log-softmax
    r"log_softmax|LogSoftmax",  # log-softmaxes; the assignment's log-sum-exps (ReduceMax, Exp, ReduceSum) are above
    r"LayerNormalization",  # the variance of 512 trained activations overflows FP16
    r"^/[A-Za-z]+(_\d+)?$",  # top-level ops of the matcher: keypoint normalisation, match filtering
)


def fp32_layer(name: str, fp16_scopes: tuple[str, ...] | None = None) -> bool:
    """Whether a layer named ``name`` is one ``FP32_LAYER_PATTERNS`` keeps in FP32.

    ``fp16_scopes``: the FP16 region an extractor graph names in its metadata (``lightglue.fp16_scopes``,
    its dense encoder): then every layer outside it is kept FP32, and the normalisations inside it.
    """
    if fp16_scopes is not None:
        return not reduced(name, tuple(fp16_scopes))
    return any(re.search(pattern, name) for pattern in FP32_LAYER_PATTERNS)


class Backend:
    """A TensorRT builder package; subclasses fill in what differs."""

    name: str  # as users type it: --builder NAME
    module_name: str  # Python module
    # The first bytes of the engines it serializes (read without TensorRT to refuse other files early),
    # and where the header records the engine's size in bytes (little-endian uint64), if known.
    plan_magic: bytes
    plan_size_offset: int | None = None
    needs_fp16_onnx = False  # FP16 needs an FP16 variant of the ONNX (strong typing)
    runtime_cache_suffix: str | None = None  # X.engine + suffix: the runtime's kernel cache beside the engine
    runtime_captures_graphs = False  # the runtime captures CUDA graphs itself (else the session does)

    @cached_property
    def module(self):
        return importlib.import_module(self.module_name)

    @property
    def version(self) -> str:
        return self.module.__version__

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec(cls.module_name) is not None

    def create_network(self, builder):
        return builder.create_network(0)

    def target(self, target_sm: str | None) -> list[str] | None:
        """The compute capabilities ("8.9") this build is for, after checking ``target_sm`` ("8.6,8.9"); None
        where they cannot be known (full TensorRT on a machine whose GPU cannot be read)."""
        raise NotImplementedError

    def configure_target(self, config, targets: list[str] | None) -> None:
        pass

    def configure_precision(self, config, network, precision: str, fp16_scopes: tuple[str, ...] | None = None) -> list[str]:
        """Set precision flags; return the names of layers pinned to FP32 (``fp32_layer``)."""
        return []

    def progress_monitor_base(self):
        """The ``IProgressMonitor`` class to subclass, or None where this version has none."""
        return getattr(self.module, "IProgressMonitor", None)

    def supports_timing_cache(self) -> bool:
        return hasattr(self.module.IBuilderConfig, "create_timing_cache")

    # -- serving -------------------------------------------------------------------------------------------
    def create_execution_context(self, engine, runtime_cache=None, fixed_shapes: bool = False,
                                 cuda_graphs: bool = False, eager_kernels: bool = False) -> tuple[object, tuple]:
        """An execution context that holds activation memory for the one profile it is bound to
        (``ON_PROFILE_CHANGE``: the default ``STATIC`` sizes every context for the largest profile).

        Returns the context and the objects it uses by reference, to be kept while it lives.
        ``fixed_shapes``: the context always runs one shape; ``cuda_graphs``: replay CUDA graphs;
        ``eager_kernels``: compile shape-specialised kernels before a new shape's first run (tensorrt-rtx).
        """
        strategy = self.module.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE
        return engine.create_execution_context(strategy), ()

    def create_runtime_cache(self, engine):
        """A runtime kernel cache (None for runtimes without one)."""
        return None


class TensorRT(Backend):
    name = "tensorrt"
    module_name = "tensorrt"
    plan_magic = b"ftrt"  # what torch-tensorrt checks for; the rest of the header is not documented

    @property
    def needs_fp16_onnx(self) -> bool:
        return not hasattr(self.module.BuilderFlag, "FP16")  # a TensorRT without weak typing

    def target(self, target_sm):
        if target_sm is not None:
            raise UserError(
                "full TensorRT builds for the GPU it runs on: --target-sm is for --builder tensorrt-rtx "
                f"(asked for {target_sm})"
            )
        return cuda_devices()[:1] or None  # the GPU TensorRT builds on: device 0, where it can be read

    def configure_precision(self, config, network, precision, fp16_scopes=None):
        if precision != "fp16" or self.needs_fp16_onnx:
            return []
        trt = self.module
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = []
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            if not fp32_layer(layer.name, fp16_scopes):
                continue
            layer.precision = trt.float32
            for output in range(layer.num_outputs):
                if layer.get_output_type(output) in (trt.float32, trt.float16):
                    layer.set_output_type(output, trt.float32)
            pinned.append(layer.name)
        return pinned


class TensorRTRTX(Backend):
    name = "tensorrt-rtx"
    module_name = "tensorrt_rtx"
    plan_magic = b"vtrt"  # read from tensorrt-rtx 1.7 engines, which record their size at bytes 16-23
    plan_size_offset = 16
    needs_fp16_onnx = True
    runtime_cache_suffix = ".rtxcache"
    runtime_captures_graphs = True

    def create_network(self, builder):
        flag = getattr(self.module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        return builder.create_network(0 if flag is None else 1 << int(flag))

    def targets(self) -> dict[str, object]:
        """Compute capabilities this version builds for: {"8.9": ComputeCapability.SM89, ...}."""
        members = self.module.ComputeCapability.__members__
        return {f"{m[2:-1]}.{m[-1]}": value for m, value in members.items() if re.fullmatch(r"SM\d{2,3}", m)}

    def default_targets(self) -> list[str]:
        """What tensorrt-rtx builds for when told nothing (its documentation, "CPU-Only AOT"): every RTX GPU
        from Ampere (8.0) on; Turing (7.5) only when asked for. Set explicitly, so the manifest is exact."""
        return [target for target in self.targets() if _capability(target) >= (8, 0)]

    def target(self, target_sm):
        known = self.targets()
        if target_sm is None:
            local = cuda_devices()[:1]
            return local if local and local[0] in known else self.default_targets()
        wanted = list(dict.fromkeys(part.strip() for part in str(target_sm).split(",") if part.strip()))
        unknown = [target for target in wanted if target not in known]
        if unknown or not wanted:
            raise UserError(f"tensorrt-rtx {self.version} cannot build for compute capability "
                            f"{', '.join(unknown) or repr(target_sm)}: choose one or several (comma-separated) "
                            f"of {', '.join(known)}")
        return wanted

    def supports_timing_cache(self) -> bool:
        return False  # the API is there, but its operations are no-ops since tensorrt-rtx 1.2

    def configure_target(self, config, targets):
        config.num_compute_capabilities = len(targets)
        for index, target in enumerate(targets):
            if not config.set_compute_capability(self.targets()[target], index):
                raise BuildError(f"tensorrt-rtx refused compute capability {target}")

    def create_execution_context(self, engine, runtime_cache=None, fixed_shapes=False, cuda_graphs=False,
                                 eager_kernels=False):
        trt = self.module
        config = engine.create_runtime_config()
        config.set_execution_context_allocation_strategy(trt.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE)
        if runtime_cache is not None and not config.set_runtime_cache(runtime_cache):
            raise EngineError("tensorrt-rtx refused the runtime cache")
        # DynamicShapesKernelSpecializationStrategy (tensorrt_rtx docstring): LAZY compiles a new shape's
        # specialised kernels in the background and runs a fallback kernel until they are ready, EAGER compiles
        # them "in a blocking fashion" before the run. A context that always runs one shape, or one whose
        # results and timings must not come from fallback kernels (eager_kernels), compiles at once (and caches
        # them); with varying shapes LAZY keeps a new shape's first requests fast.
        kernels = trt.DynamicShapesKernelSpecializationStrategy
        eager = fixed_shapes or eager_kernels
        config.dynamic_shapes_kernel_specialization_strategy = kernels.EAGER if eager else kernels.LAZY
        # Manual stream capture needs an engine built for user-allocated memory (REQUIRE_USER_ALLOCATION):
        # the runtime's own capture needs nothing of the kind and captures after the kernels are ready.
        graphs = trt.CudaGraphStrategy
        config.cuda_graph_strategy = graphs.WHOLE_GRAPH_CAPTURE if cuda_graphs else graphs.DISABLED
        return engine.create_execution_context(config), (config,)

    def create_runtime_cache(self, engine):
        return engine.create_runtime_config().create_runtime_cache()


def _capability(target: str) -> tuple[int, ...]:
    return tuple(int(part) for part in target.split("."))


BACKENDS = {backend.name: backend for backend in (TensorRT, TensorRTRTX)}


def get_backend(name: str = "auto") -> Backend:
    """The builder asked for; ``auto`` takes full TensorRT where installed, else tensorrt-rtx."""
    if name == "auto":
        for backend in BACKENDS.values():
            if backend.available():
                return backend()
        raise UserError("no TensorRT builder installed: pip install tensorrt (GPU machines) or tensorrt-rtx")
    if name not in BACKENDS:
        raise UserError(f"unknown builder {name!r}: choose one of {', '.join(BUILDERS)}")
    backend = BACKENDS[name]
    if not backend.available():
        raise UserError(f"builder {name} is not installed (no Python module {backend.module_name})")
    return backend()


_LOGGERS: dict = {}  # module -> its logger


# Warnings that mean the engine would not work: tensorrt-rtx logs a profile it cannot honour at its
# maximum ("Profile kMAX values are not self-consistent. ... tensor volume exceeds ...") as a warning,
# and writes the engine anyway. The logger files these with the errors, so the build fails.
FATAL_WARNINGS = (r"not self-consistent",)


def make_logger(backend: Backend, echo_warnings: bool = True):
    """The process's TensorRT logger for ``backend``: it keeps error messages (for BuildError) in ``errors``,
    with the warnings ``FATAL_WARNINGS`` names, and prints warnings to stderr when ``echo_warnings``.

    One per module and process, because TensorRT keeps the first logger it is given and ignores (with a
    warning) any other. ``errors`` is the calling thread's own list (TensorRT logs an API call's errors on
    the thread that made the call), so that sessions serving from several threads never read each other's
    errors; callers clear it before a step whose errors they report.
    """
    logger = _LOGGERS.get(backend.module)
    if logger is None:
        base = backend.module.ILogger
        severity = base.Severity

        class CapturingLogger(base):
            def __init__(self):
                base.__init__(self)
                self._local = threading.local()
                self.echo_warnings = True

            @property
            def errors(self) -> list[str]:
                """This thread's error messages."""
                if not hasattr(self._local, "errors"):
                    self._local.errors = []
                return self._local.errors

            def log(self, level, message):
                if level in (severity.INTERNAL_ERROR, severity.ERROR):
                    self.errors.append(message)
                elif level == severity.WARNING:
                    if any(re.search(pattern, message) for pattern in FATAL_WARNINGS):
                        self.errors.append(message)
                    elif self.echo_warnings:
                        print(f"[{backend.name}] {message}", file=sys.stderr)

        logger = _LOGGERS[backend.module] = CapturingLogger()
    logger.echo_warnings = echo_warnings
    logger.errors.clear()
    return logger


# Without a terminal (CI logs, ``| tee``) bars would print nothing useful: phases up to this depth print one line
# each when they finish, with their time, so a log shows where the build's time goes.
LOGGED_PHASE_DEPTH = 1


def make_progress_monitor(backend: Backend, stream=None):
    """TensorRT's ``IProgressMonitor`` reporting the build: a tqdm bar per phase on a terminal, else one line per
    phase (``build: <phase> done in 1.2 s``, nested phases indented, to ``LOGGED_PHASE_DEPTH``) on ``stream``
    (default stderr); None where this TensorRT has no progress monitor."""
    base = backend.progress_monitor_base()
    if base is None:
        return None
    stream = stream or sys.stderr
    interactive = hasattr(stream, "isatty") and stream.isatty()
    from tqdm import tqdm

    class ProgressMonitor(base):
        def __init__(self):
            base.__init__(self)
            self._bars: dict[str, tqdm] = {}
            self._started: dict[str, tuple[float, int]] = {}  # phase -> (start time, depth), for the log lines

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = len(self._started)
            self._started[phase_name] = (time.perf_counter(), depth)
            if interactive:
                self._bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=depth, leave=depth == 0,
                                              unit="step", dynamic_ncols=True, file=stream)

        def step_complete(self, phase_name, step):
            bar = self._bars.get(phase_name)
            if bar is not None:
                bar.update(step + 1 - bar.n)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            started, depth = self._started.pop(phase_name, (None, 0))
            bar = self._bars.pop(phase_name, None)
            if bar is not None:
                bar.update(bar.total - bar.n)
                bar.close()
            elif started is not None and depth <= LOGGED_PHASE_DEPTH:
                print(f"build: {'  ' * depth}{phase_name} done in {time.perf_counter() - started:.1f} s", file=stream,
                      flush=True)

    return ProgressMonitor()
