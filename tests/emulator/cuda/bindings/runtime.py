"""Emulated ``cuda.bindings.runtime``: the CUDA runtime's per-thread last error (``cudaGetLastError``), which the
emulated TensorRT sets when its kernel launches fail during a capture (``_trt_emulator.gpu``)."""

import enum as _enum

from _trt_emulator.gpu import GPU as _GPU


class cudaError_t(_enum.IntEnum):  # noqa: N801 - cuda-python's name; values of driver_types.h
    cudaSuccess = 0
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901
    cudaErrorStreamCaptureImplicit = 906


def cudaGetLastError():  # noqa: N802 - cuda-python's name
    """Returns the last error from a runtime call in this thread and resets it to cudaSuccess."""
    return (getattr(cudaError_t, _GPU.take_last_error()),)
