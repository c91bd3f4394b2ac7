"""A stand-in for full TensorRT 10 (tests/emulator): builds go to the real tensorrt-rtx builder, behind the parts
of full TensorRT's build API that tensorrt-rtx lacks, and the runtime is emulated (``_trt_emulator``): no
runtime config or cache, and the session captures CUDA graphs itself.

Build API, as TensorRT 10's Python API documents it:

- no compute-capability targets on the builder config (full TensorRT builds for the GPU it runs on), so a
  build that tries to name one fails here as there;
- weak typing: ``create_network(0)`` makes a weakly typed network; ``BuilderFlag`` has ``FP16``, ``BF16``,
  ``INT8``, ``OBEY_PRECISION_CONSTRAINTS`` and ``PREFER_PRECISION_CONSTRAINTS`` (values of NvInfer.h), and a
  layer has ``precision`` and ``set_output_type``. ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: "Setting
  layer precision and layer output types is not allowed" (an error here, and the build fails), and reduced
  precision comes from the types, so a precision flag on a strongly typed network fails the build too. Layer
  precisions without OBEY/PREFER_PRECISION_CONSTRAINTS are only preferences (TensorRT's "Precision Control"
  page): the build warns that they are not enforced;
- the engine is the tensorrt-rtx engine of the FP32 network (the emulated runtime runs the source ONNX
  anyway) under full TensorRT's header (``ftrt``, ``trt.engine.backends.TensorRT.plan_magic``), which only the
  emulated ``tensorrt`` runtime loads. Each build's flags and pinned layers go to ``_trt_emulator.runtime.BUILDS``.
"""

import enum as _enum
import os as _os

import numpy as _np
import tensorrt_rtx_bindings as _rtx
from tensorrt_rtx_bindings import (  # noqa: F401 - names full TensorRT 10 shares with tensorrt-rtx
    DataType,
    Dims,
    ExecutionContextAllocationStrategy,
    ILogger,
    IProgressMonitor,
    Logger,
    MemoryPoolType,
    NetworkDefinitionCreationFlag,
    TensorIOMode,
    float16,
    float32,
    int32,
    int64,
    nptype,
)

from _trt_emulator.runtime import BUILDS as _BUILDS
from _trt_emulator.runtime import make_runtime as _make_runtime

__version__ = _os.environ.get("TRT_EMULATOR_TENSORRT_VERSION", "10.14.1.48")  # version-dependent API: _trt_emulator
_TARGET_API = ("num_compute_capabilities", "set_compute_capability", "get_compute_capability")
# Full TensorRT 10's precision flags, which tensorrt-rtx (strongly typed only) does not have (NvInfer.h values)
_PRECISION_FLAGS = {"FP16": 0, "INT8": 1, "OBEY_PRECISION_CONSTRAINTS": 9, "PREFER_PRECISION_CONSTRAINTS": 10, "BF16": 16}
_REDUCED = ("FP16", "INT8", "BF16")
_CONSTRAINTS = ("OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS")
BuilderFlag = _enum.IntEnum("BuilderFlag", {**{m: int(v) for m, v in _rtx.BuilderFlag.__members__.items()},
                                            **_PRECISION_FLAGS})


class IBuilderConfig:
    """The real builder config, without what only tensorrt-rtx has (build targets), with full TensorRT's
    precision flags (kept here: tensorrt-rtx has none)."""

    def __init__(self, config):
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_precision_flags", set())

    def __getattr__(self, name):
        if name in _TARGET_API:
            raise AttributeError(f"'tensorrt.IBuilderConfig' object has no attribute '{name}'")
        return getattr(self._config, name)

    def __setattr__(self, name, value):
        if name in _TARGET_API:
            raise AttributeError(f"'tensorrt.IBuilderConfig' object has no attribute '{name}'")
        setattr(self._config, name, value)

    def set_flag(self, flag):
        if flag.name in _PRECISION_FLAGS:
            self._precision_flags.add(flag.name)
        else:
            self._config.set_flag(getattr(_rtx.BuilderFlag, flag.name))

    def clear_flag(self, flag):
        if flag.name in _PRECISION_FLAGS:
            self._precision_flags.discard(flag.name)
        else:
            self._config.clear_flag(getattr(_rtx.BuilderFlag, flag.name))

    def get_flag(self, flag):
        if flag.name in _PRECISION_FLAGS:
            return flag.name in self._precision_flags
        return self._config.get_flag(getattr(_rtx.BuilderFlag, flag.name))


class ILayer:
    """A layer of the network with full TensorRT's precision API (``precision``, ``set_output_type``)."""

    def __init__(self, layer, network):
        object.__setattr__(self, "_layer", layer)
        object.__setattr__(self, "_network", network)
        object.__setattr__(self, "_precision", None)
        object.__setattr__(self, "_output_types", {})

    def __getattr__(self, name):
        return getattr(self._layer, name)

    def _refuse_on_strongly_typed(self, call: str) -> bool:
        if self._network.strongly_typed:
            self._network.logger.log(ILogger.Severity.ERROR, f"{self._layer.name}: {call} is not allowed on a strongly "
                                                             "typed network")
            return True
        return False

    @property
    def precision(self):
        return self._precision if self._precision is not None else DataType.FLOAT

    @precision.setter
    def precision(self, dtype):
        if not self._refuse_on_strongly_typed("setPrecision"):
            object.__setattr__(self, "_precision", dtype)

    @property
    def precision_is_set(self):
        return self._precision is not None

    def set_output_type(self, index, dtype):
        if not self._refuse_on_strongly_typed("setOutputType"):
            self._output_types[index] = dtype

    def get_output_type(self, index):
        return self._output_types.get(index, self._layer.get_output_type(index))

    def output_type_is_set(self, index):
        return index in self._output_types


class INetworkDefinition:
    """The tensorrt-rtx network, weakly typed unless created STRONGLY_TYPED."""

    def __init__(self, network, strongly_typed: bool, logger):
        self._network, self.strongly_typed, self.logger = network, strongly_typed, logger
        self._layers: dict[int, ILayer] = {}

    def __getattr__(self, name):
        return getattr(self._network, name)

    def get_layer(self, index):
        if index not in self._layers:
            self._layers[index] = ILayer(self._network.get_layer(index), self)
        return self._layers[index]


class OnnxParser(_rtx.OnnxParser):
    def __init__(self, network, logger):
        super().__init__(network._network, logger)


class Builder:
    def __init__(self, logger):
        self._builder = _rtx.Builder(logger)
        self._logger = logger

    def __getattr__(self, name):
        return getattr(self._builder, name)

    def create_network(self, flags=0):
        strongly_typed = bool(int(flags) & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
        return INetworkDefinition(self._builder.create_network(int(flags)), strongly_typed, self._logger)

    def create_builder_config(self):
        return IBuilderConfig(self._builder.create_builder_config())

    def build_serialized_network(self, network, config):
        error, warning = ILogger.Severity.ERROR, ILogger.Severity.WARNING
        flags = config._precision_flags
        reduced = [flag for flag in _REDUCED if flag in flags]
        if network.strongly_typed and reduced:
            self._logger.log(error, f"BuilderFlag {', '.join(reduced)} on a strongly typed network: its types decide "
                                    "its precision")
            return None
        pinned = [layer.name for layer in network._layers.values()
                  if layer.precision_is_set or any(layer.output_type_is_set(i) for i in range(layer.num_outputs))]
        if pinned and not any(flag in flags for flag in _CONSTRAINTS):
            self._logger.log(warning, f"{len(pinned)} layer precisions are preferences only: set "
                                      "OBEY_PRECISION_CONSTRAINTS or PREFER_PRECISION_CONSTRAINTS to enforce them")
        serialized = self._builder.build_serialized_network(network._network, config._config)
        if serialized is None:
            return None
        _BUILDS.append({"flags": sorted(flags), "strongly_typed": network.strongly_typed, "fp32_layers": pinned})
        data = bytearray(memoryview(serialized))
        data[:4] = b"ftrt"  # full TensorRT's header
        return _np.frombuffer(bytes(data), _np.uint8)


globals().update(_make_runtime(__import__(__name__), "tensorrt"))
