"""A stand-in for full TensorRT (tests/emulator): builds go to the real tensorrt-rtx builder through a
builder config without the compute-capability API (full TensorRT has none: it builds for the GPU it runs on,
so a build that tries to name a target fails here as there; its flags are tensorrt-rtx's, so FP16 comes from an
FP16 graph as for a strongly typed TensorRT), and the runtime is emulated (``_trt_emulator``):
no runtime config or cache, and the session captures CUDA graphs itself.
"""

import os as _os

import tensorrt_rtx_bindings as _rtx
from tensorrt_rtx_bindings import (  # noqa: F401 - names full TensorRT 10 shares with tensorrt-rtx
    BuilderFlag,
    DataType,
    Dims,
    ExecutionContextAllocationStrategy,
    ILogger,
    IProgressMonitor,
    Logger,
    MemoryPoolType,
    NetworkDefinitionCreationFlag,
    OnnxParser,
    TensorIOMode,
    float16,
    float32,
    int32,
    int64,
    nptype,
)

from _trt_emulator.runtime import make_runtime as _make_runtime

__version__ = _os.environ.get("TRT_EMULATOR_TENSORRT_VERSION", "10.14.1.48")  # version-dependent API: _trt_emulator
_TARGET_API = ("num_compute_capabilities", "set_compute_capability", "get_compute_capability")


class IBuilderConfig:
    """The real builder config, without what only tensorrt-rtx has (build targets)."""

    def __init__(self, config):
        object.__setattr__(self, "_config", config)

    def __getattr__(self, name):
        if name in _TARGET_API:
            raise AttributeError(f"'tensorrt.IBuilderConfig' object has no attribute '{name}'")
        return getattr(self._config, name)

    def __setattr__(self, name, value):
        if name in _TARGET_API:
            raise AttributeError(f"'tensorrt.IBuilderConfig' object has no attribute '{name}'")
        setattr(self._config, name, value)


class Builder:
    def __init__(self, logger):
        self._builder = _rtx.Builder(logger)

    def __getattr__(self, name):
        return getattr(self._builder, name)

    def create_builder_config(self):
        return IBuilderConfig(self._builder.create_builder_config())

    def build_serialized_network(self, network, config):
        return self._builder.build_serialized_network(network, config._config)


globals().update(_make_runtime(__import__(__name__), "tensorrt"))
