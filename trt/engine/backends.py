"""The one place that imports TensorRT: an adapter per builder, holding every difference between them.

- ``tensorrt`` (full TensorRT 10+, NVIDIA's wheel or a system install): builds for the GPU it runs on,
  weakly typed (FP16 through ``BuilderFlag.FP16``, with FP32-critical layers pinned, see
  ``FP32_LAYER_PATTERNS``).
- ``tensorrt-rtx`` (module ``tensorrt_rtx``): builds ahead of time, also on a machine without a GPU,
  for the compute capabilities it is told (7.5-12.1); strongly typed, so precision comes from the ONNX
  types: an FP16 engine is built from an FP16 variant of the ONNX (``Backend.needs_fp16_onnx``); no
  timing cache (its API is kept but does nothing since 1.2).

Both are imported lazily, under their own names (the package itself is called ``trt``).
"""

import importlib
import importlib.util
import re
import sys
from functools import cached_property

from trt.errors import BuildError, UserError

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


def fp32_layer(name: str) -> bool:
    """Whether a layer named ``name`` is one ``FP32_LAYER_PATTERNS`` keeps in FP32."""
    return any(re.search(pattern, name) for pattern in FP32_LAYER_PATTERNS)


class Backend:
    """A TensorRT builder package; subclasses fill in what differs."""

    name: str  # as users type it: --builder NAME
    module_name: str  # Python module
    default_target: str | None = None  # compute capability built for when none is given
    needs_fp16_onnx = False  # FP16 needs an FP16 variant of the ONNX (strong typing)

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

    def target(self, target_sm: str | None) -> str | None:
        """The compute capability to record for this build, after checking ``target_sm``."""
        return target_sm

    def configure_target(self, config, target: str | None) -> None:
        pass

    def configure_precision(self, config, network, precision: str) -> list[str]:
        """Set precision flags; return the names of layers pinned to FP32."""
        return []

    def progress_monitor_base(self):
        """The ``IProgressMonitor`` class to subclass, or None where this version has none."""
        return getattr(self.module, "IProgressMonitor", None)

    def supports_timing_cache(self) -> bool:
        return hasattr(self.module.IBuilderConfig, "create_timing_cache")


class TensorRT(Backend):
    name = "tensorrt"
    module_name = "tensorrt"

    @property
    def needs_fp16_onnx(self) -> bool:
        return not hasattr(self.module.BuilderFlag, "FP16")  # a TensorRT without weak typing

    def target(self, target_sm):
        if target_sm is not None:
            raise UserError(
                "full TensorRT builds for the GPU it runs on: --target-sm is for --builder tensorrt-rtx "
                f"(asked for {target_sm})"
            )
        return None

    def configure_precision(self, config, network, precision):
        if precision != "fp16" or self.needs_fp16_onnx:
            return []
        trt = self.module
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = []
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            if not fp32_layer(layer.name):
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
    default_target = "8.9"
    needs_fp16_onnx = True

    def create_network(self, builder):
        flag = getattr(self.module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        return builder.create_network(0 if flag is None else 1 << int(flag))

    def targets(self) -> dict[str, object]:
        """Compute capabilities this version builds for: {"8.9": ComputeCapability.SM89, ...}."""
        members = self.module.ComputeCapability.__members__
        return {f"{m[2:-1]}.{m[-1]}": value for m, value in members.items() if re.fullmatch(r"SM\d{2,3}", m)}

    def target(self, target_sm):
        target = self.default_target if target_sm is None else str(target_sm)
        if target not in self.targets():
            raise UserError(f"tensorrt-rtx {self.version} cannot build for compute capability {target}: "
                            f"choose one of {', '.join(self.targets())}")
        return target

    def supports_timing_cache(self) -> bool:
        return False  # the API is there, but its operations are no-ops since tensorrt-rtx 1.2

    def configure_target(self, config, target):
        config.num_compute_capabilities = 1
        if not config.set_compute_capability(self.targets()[target], 0):
            raise BuildError(f"tensorrt-rtx refused compute capability {target}")


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


_LOGGERS: dict[str, object] = {}


def make_logger(backend: Backend, echo_warnings: bool = True):
    """The process's TensorRT logger for ``backend``: it keeps error messages (for BuildError) in ``errors``
    and prints warnings to stderr when ``echo_warnings``.

    One per module and process, because TensorRT keeps the first logger it is given and ignores (with a
    warning) any other; callers clear ``errors`` before a step whose errors they report.
    """
    logger = _LOGGERS.get(backend.module_name)
    if logger is None:
        base = backend.module.ILogger
        severity = base.Severity

        class CapturingLogger(base):
            def __init__(self):
                base.__init__(self)
                self.errors: list[str] = []
                self.echo_warnings = True

            def log(self, level, message):
                if level in (severity.INTERNAL_ERROR, severity.ERROR):
                    self.errors.append(message)
                elif level == severity.WARNING and self.echo_warnings:
                    print(f"[{backend.name}] {message}", file=sys.stderr)

        logger = _LOGGERS[backend.module_name] = CapturingLogger()
    logger.echo_warnings = echo_warnings
    logger.errors.clear()
    return logger


def make_progress_monitor(backend: Backend):
    """A tqdm progress bar per build phase, driven by TensorRT's ``IProgressMonitor``; None without one."""
    base = backend.progress_monitor_base()
    if base is None:
        return None
    from tqdm import tqdm

    class TqdmProgressMonitor(base):
        def __init__(self):
            base.__init__(self)
            self._bars: dict[str, tqdm] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = len(self._bars)
            self._bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=depth, leave=depth == 0,
                                          unit="step", dynamic_ncols=True, disable=None)  # None: off without a TTY

        def step_complete(self, phase_name, step):
            bar = self._bars.get(phase_name)
            if bar is not None:
                bar.update(step + 1 - bar.n)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            bar = self._bars.pop(phase_name, None)
            if bar is not None:
                bar.update(bar.total - bar.n)
                bar.close()

    return TqdmProgressMonitor()
