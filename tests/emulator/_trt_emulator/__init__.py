"""The shared core of the emulated TensorRT runtime, pycuda and cuda-python under ``tests/emulator``.

Put ``tests/emulator`` first on ``PYTHONPATH`` and ``import tensorrt_rtx`` / ``tensorrt`` / ``pycuda.driver``
/ ``cuda.bindings.driver`` give these emulations, so that the project's real TensorRT session code runs
end to end on a machine without a GPU:

- ``gpu``: the emulated GPUs (one per compute capability in ``TRT_EMULATOR_COMPUTE_CAPABILITY``). Device memory
  is host numpy arrays behind 256-byte-aligned integer addresses; streams keep their work in order and run it
  when synchronized (so a missing synchronize reads stale data, as on a GPU); stream capture records work into
  graphs that replay exactly what they recorded, under CUDA's capture rules (capture modes, calls forbidden
  during capture, the legacy default stream against blocking streams, the runtime's per-thread last error);
  the driver's and pycuda's per-thread context stacks follow pycuda 2026.1's source and the CUDA driver API.
- ``runtime``: ``Runtime``, ``ICudaEngine``, ``IExecutionContext`` (and tensorrt-rtx's ``IRuntimeConfig``,
  ``IRuntimeCache``). ``deserialize_cuda_engine`` finds the engine's manifest (``X.engine.json`` beside an
  engine the process opened, named on the command line or in ``$TRT_EMULATOR_ENGINES``) and runs its source ONNX on ONNX
  Runtime with the shapes and device addresses the context was given.
- ``sitecustomize`` (run by Python at start-up from the path) records the engine files the process opens,
  so that manifests are found for engines served through the Python API too.

Only names the real packages have exist on the emulated modules (``tests/test_tensorrt_emulated.py``
checks them against the installed ``tensorrt_rtx`` and ``cuda.bindings``); what is emulated refuses what
the real runtime refuses. ``tensorrt`` stands in for full TensorRT 10, build path included (see its
docstring). Environment: ``TRT_EMULATOR_COMPUTE_CAPABILITY`` (each GPU's, comma-separated, default 8.9),
``TRT_EMULATOR_MEMORY_MIB`` (device memory per GPU, default 16384), ``TRT_EMULATOR_ENGINES`` (engines or
manifests to know, separated by ``os.pathsep``), ``TRT_EMULATOR_TENSORRT_VERSION`` (the emulated full
TensorRT's version, default 10.14.1.48).
"""

import os

OPENED_ENGINES: set[str] = set()  # engine files this process opened (sitecustomize's audit hook)


def remember_opened_engines(event: str, args: tuple) -> None:
    """An audit hook: ``deserialize_cuda_engine`` gets only bytes; the engine files the process read name
    the manifests to look in."""
    if event == "open" and isinstance(args[0], (str, os.PathLike)) and str(args[0]).endswith(".engine"):
        OPENED_ENGINES.add(os.path.abspath(args[0]))
