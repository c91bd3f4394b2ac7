"""Emulated tensorrt_rtx (tests/emulator): the real builder API of the installed bindings, and an emulated
runtime (``Runtime``, ``ICudaEngine``, ``IExecutionContext``, ``IRuntimeConfig``, ``IRuntimeCache``) that runs an engine's source ONNX on ONNX Runtime; see ``_trt_emulator``.

Engines build for real (on the CPU) with this module as with the real one.
"""

from tensorrt_rtx_bindings import *  # noqa: F401,F403 - the real API; the runtime classes are replaced below
from tensorrt_rtx_bindings import __version__  # noqa: F401

from _trt_emulator.runtime import make_runtime as _make_runtime

globals().update(_make_runtime(__import__(__name__), "tensorrt-rtx"))
