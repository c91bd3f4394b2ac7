"""Emulated ``cuda.bindings.driver``: the stream-capture, graph and context-stack calls the TensorRT session
makes, with cuda-python's names, return tuples and CUresult values, on the emulated GPU (``_trt_emulator``).
"""

import enum as _enum

from _trt_emulator.gpu import GPU as _GPU
from _trt_emulator.gpu import CudaError as _CudaError


class _EnumType(_enum.EnumMeta):
    """cuda-python's enums (``FastEnum``) take attribute access and calls by value, not ``Enum[name]``."""

    def __getitem__(cls, name):
        raise TypeError(f"type '{cls.__name__}' is not subscriptable")


class CUresult(_enum.IntEnum, metaclass=_EnumType):  # values of cuda.h
    CUDA_SUCCESS = 0
    CUDA_ERROR_INVALID_VALUE = 1
    CUDA_ERROR_OUT_OF_MEMORY = 2
    CUDA_ERROR_INVALID_CONTEXT = 201
    CUDA_ERROR_INVALID_HANDLE = 400
    CUDA_ERROR_ILLEGAL_STATE = 401
    CUDA_ERROR_ILLEGAL_ADDRESS = 700
    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900
    CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901
    CUDA_ERROR_STREAM_CAPTURE_IMPLICIT = 906
    CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD = 908


class CUstreamCaptureMode(_enum.IntEnum, metaclass=_EnumType):
    CU_STREAM_CAPTURE_MODE_GLOBAL = 0
    CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1
    CU_STREAM_CAPTURE_MODE_RELAXED = 2


class CUstream_flags(_enum.IntEnum, metaclass=_EnumType):  # noqa: N801 - cuda-python's name
    CU_STREAM_DEFAULT = 0
    CU_STREAM_NON_BLOCKING = 1


def _result(code: str) -> CUresult:
    return getattr(CUresult, code)


class _Handle:
    def __init__(self, init_value=0):
        self._value = int(init_value)

    def __int__(self):
        return self._value

    def getPtr(self):
        return id(self)


class CUstream(_Handle):
    pass


class CUcontext(_Handle):
    pass


class CUgraph(_Handle):
    pass


class CUgraphExec(_Handle):
    pass


_graphs: dict[int, object] = {}  # handle -> captured _trt_emulator.gpu.Graph
_executables: dict[int, object] = {}


def _stream(hStream):
    stream = _GPU.streams.get(int(hStream))
    if stream is None:
        raise KeyError(hStream)
    return stream


def cuStreamBeginCapture(hStream, mode):
    try:
        stream = _stream(hStream)
    except KeyError:
        return (CUresult.CUDA_ERROR_INVALID_HANDLE,)
    mode = CUstreamCaptureMode(int(mode)).name.removeprefix("CU_STREAM_CAPTURE_MODE_")
    return (_result(stream.begin_capture(mode)),)


def cuStreamGetFlags(hStream):
    try:
        stream = _stream(hStream)
    except KeyError:
        return CUresult.CUDA_ERROR_INVALID_HANDLE, None
    return CUresult.CUDA_SUCCESS, int(CUstream_flags.CU_STREAM_DEFAULT if stream.blocking else CUstream_flags.CU_STREAM_NON_BLOCKING)


def cuStreamEndCapture(hStream):
    try:
        stream = _stream(hStream)
    except KeyError:
        return CUresult.CUDA_ERROR_INVALID_HANDLE, None
    code, graph = stream.end_capture()
    if graph is None:
        return _result(code), None
    handle = CUgraph(next(_GPU.handles))
    _graphs[int(handle)] = graph
    return CUresult.CUDA_SUCCESS, handle


def cuGraphInstantiate(hGraph, flags):
    graph = _graphs.get(int(hGraph)) if hGraph is not None else None
    if graph is None:
        return CUresult.CUDA_ERROR_INVALID_VALUE, None
    handle = CUgraphExec(next(_GPU.handles))
    _executables[int(handle)] = type(graph)(graph.work)  # an executable graph outlives its graph
    return CUresult.CUDA_SUCCESS, handle


def cuGraphLaunch(hGraphExec, hStream):
    executable = _executables.get(int(hGraphExec))
    try:
        stream = _stream(hStream)
    except KeyError:
        return (CUresult.CUDA_ERROR_INVALID_HANDLE,)
    if executable is None:
        return (CUresult.CUDA_ERROR_INVALID_VALUE,)
    try:
        executable.launch(stream)
    except _CudaError as error:
        return (_result(error.code),)
    return (CUresult.CUDA_SUCCESS,)


def cuGraphDestroy(hGraph):
    return (CUresult.CUDA_SUCCESS if _graphs.pop(int(hGraph), None) is not None else CUresult.CUDA_ERROR_INVALID_VALUE,)


def cuGraphExecDestroy(hGraphExec):
    found = _executables.pop(int(hGraphExec), None) is not None
    return (CUresult.CUDA_SUCCESS if found else CUresult.CUDA_ERROR_INVALID_VALUE,)


def cuCtxPopCurrent():
    stack = _GPU.driver_stack()
    if not stack:
        return CUresult.CUDA_ERROR_INVALID_CONTEXT, None
    return CUresult.CUDA_SUCCESS, CUcontext(stack.pop())


def cuCtxPushCurrent(ctx):
    _GPU.driver_stack().append(int(ctx))
    return (CUresult.CUDA_SUCCESS,)


