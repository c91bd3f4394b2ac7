"""Emulated ``pycuda.driver``: the part the TensorRT session uses, with pycuda 2026.1's names and semantics.

Context handling follows pycuda's ``src/cpp/cuda.hpp``: pycuda keeps a context stack per thread beside
the driver's and leaves only its top on the driver's stack (``context_push`` pops the driver's top first
when pycuda's stack is not empty); ``detach`` releases a primary context (``cuDevicePrimaryCtxRelease``,
which never pops) where it is current, pushes it first where it is not but the calling thread made it,
and does nothing from another thread. Objects that need a context (allocations, streams, events,
page-locked memory) need one current when they are made; freeing an allocation from a thread where its
context is not current and that did not make it fails with pycuda's "clean-up operation failed" warning
and leaks, as pycuda does.

Streams take pycuda's ``flags`` (passed to ``cuStreamCreate``: ``CU_STREAM_NON_BLOCKING`` = 1); events take
``event_flags`` (``cuEventCreate``): ``synchronize`` on an event made without BLOCKING_SYNC busy-waits
(counted in ``GPU.spin_waits``: ``cuEventSynchronize``'s docstring), and ``time_since`` refuses an event made
with DISABLE_TIMING. Calls without a stream use the legacy default stream, with its capture rules (``gpu``).
Every object belongs to the device of the context current when it was made.
"""

import enum as _enum

import threading as _threading
import warnings as _warnings

import numpy as _np

from _trt_emulator.gpu import GPU as _GPU
from _trt_emulator.gpu import CudaError as _CudaError
from _trt_emulator.gpu import Stream as _GpuStream
from _trt_emulator.gpu import compute_capabilities as _compute_capabilities
from _trt_emulator.gpu import now as _now


class Error(Exception):
    pass


class LogicError(Error):
    pass


class LaunchError(Error):
    pass


class MemoryError(Error):  # noqa: A001 - pycuda's name
    pass


class RuntimeError(Error):  # noqa: A001 - pycuda's name
    pass


class event_flags(_enum.IntFlag):  # noqa: N801 - pycuda's name; values of cuda.h's CUevent_flags
    DEFAULT = 0
    BLOCKING_SYNC = 1
    DISABLE_TIMING = 2
    INTERPROCESS = 4


_STREAM_NON_BLOCKING = 1  # CU_STREAM_NON_BLOCKING


def _raise(call: str, error: _CudaError):
    kind = MemoryError if error.code == "CUDA_ERROR_OUT_OF_MEMORY" else LogicError
    raise kind(f"{call} failed: {error}") from None


def init(flags=0):
    _GPU.initialized = True


def _need_init(call: str) -> None:
    if not _GPU.initialized:
        raise LogicError(f"{call} failed: initialization error")


def mem_get_info():
    """(free, total) bytes of device memory."""
    device = _acquire_context("mem_get_info")._device.ordinal
    return _GPU.total - _GPU.used(device), _GPU.total


class Device:
    def __init__(self, ordinal):
        _need_init("cuDeviceGet")
        if not 0 <= ordinal < Device.count():
            raise LogicError("cuDeviceGet failed: invalid device ordinal")
        self.ordinal = ordinal

    @staticmethod
    def count():
        _need_init("cuDeviceGetCount")
        return _GPU.device_count

    def name(self):
        return "Emulated GPU (SM %d.%d)" % self.compute_capability()

    def compute_capability(self):
        return _compute_capabilities()[self.ordinal]

    def total_memory(self):
        return _GPU.total

    def retain_primary_context(self):
        with _GPU.lock:
            _GPU.retains[self.ordinal] = _GPU.retains.get(self.ordinal, 0) + 1
        return Context(self)

    def __eq__(self, other):
        return isinstance(other, Device) and other.ordinal == self.ordinal

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(self.ordinal)


class Context:
    """A retained primary context (the only kind the emulator makes)."""

    def __init__(self, device: Device):
        self._device = device
        self._valid = True
        self._thread = _threading.get_ident()

    @property
    def handle(self):
        return _GPU.primary_handle(self._device.ordinal)

    def push(self):
        _prepare_context_switch()
        _GPU.driver_stack().append(self.handle)
        _GPU.pycuda_stack().append(self)

    @staticmethod
    def pop():
        _prepare_context_switch()
        stack = _GPU.pycuda_stack()
        if not stack:
            raise LogicError("context::pop failed: invalid device context - cannot pop non-current context")
        stack.pop()
        current = _current_context()
        if current is not None:
            _GPU.driver_stack().append(current.handle)

    @staticmethod
    def get_current():
        return _current_context()

    @staticmethod
    def get_device():
        current = _current_context()
        if current is None:
            raise LogicError("cuCtxGetDevice failed: invalid device context")
        return current._device

    @staticmethod
    def synchronize():
        _acquire_context("cuCtxSynchronize")
        for stream in list(_GPU.streams.values()):
            try:
                stream.run_until()
            except _CudaError as error:
                _raise("cuCtxSynchronize", error)

    def detach(self):
        if not self._valid:
            raise LogicError("context::detach failed: invalid device context - cannot detach from invalid context")
        active = _current_context() is self
        if active:
            _GPU.release_primary(self._device.ordinal)
        elif self._thread == _threading.get_ident():
            _GPU.driver_stack().append(self.handle)
            _GPU.release_primary(self._device.ordinal)  # pycuda's comment says the pop is implicit: for a primary context it is not
        # else: from another thread pycuda assumes the context is already gone, and does nothing
        self._valid = False
        if active:
            new_active = _current_context(except_=self)
            if new_active is not None:
                _GPU.driver_stack().append(new_active.handle)

    def __del__(self):
        if self._valid:  # pycuda's destructor detaches a context still valid
            try:
                self.detach()
            except Exception:
                pass

    def __eq__(self, other):
        return isinstance(other, Context) and other.handle == self.handle

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(self.handle) ^ id(self)


def _current_context(except_=None):
    stack = _GPU.pycuda_stack()
    while stack:
        top = stack[-1]
        if top is not except_ and top._valid:
            return top
        stack.pop()
    return None


def _prepare_context_switch():
    if _GPU.pycuda_stack():
        driver = _GPU.driver_stack()
        if driver:
            driver.pop()


def _acquire_context(call: str) -> Context:
    context = _current_context()
    if context is None:
        raise LogicError(f"{call} failed: invalid device context - no currently active context?")
    return context


class DeviceAllocation:
    def __init__(self, nbytes):
        self._context = _acquire_context("cuMemAlloc")
        try:
            self._address = _GPU.alloc(nbytes, self._context._device.ordinal)
        except _CudaError as error:
            _raise("cuMemAlloc", error)
        self._valid = True

    def __int__(self):
        return self._address

    __index__ = __int__

    def free(self):
        if not self._valid:
            raise LogicError("device_allocation::free failed: invalid resource handle")
        context = self._context
        current = _current_context() is context
        if not context._valid or (not current and context._thread != _threading.get_ident()):
            # pycuda's scoped_context_activation refuses a dead or out-of-thread context, and the clean-up
            # catch turns that into a warning: the memory stays allocated
            _warnings.warn("PyCUDA WARNING: a clean-up operation failed (dead context maybe?)")
        else:
            try:
                _GPU.free(self._address)
            except _CudaError as error:
                _raise("cuMemFree", error)
        self._valid = False


def mem_alloc(bytesize):
    return DeviceAllocation(bytesize)


def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
    _acquire_context("cuMemHostAlloc")
    try:
        _GPU.check_unsafe_call("cuMemHostAlloc")
    except _CudaError as error:
        _raise("cuMemHostAlloc", error)
    return _np.empty(shape, dtype, order=order)


class Stream:
    def __init__(self, flags=0):
        self._context = _acquire_context("cuStreamCreate")
        self._stream = _GpuStream(_GPU, self._context._device.ordinal, blocking=not int(flags) & _STREAM_NON_BLOCKING)

    @property
    def handle(self):
        return self._stream.handle

    def synchronize(self):
        try:
            self._stream.run_until()
        except _CudaError as error:
            _raise("cuStreamSynchronize", error)

    def is_done(self):
        return not self._stream.pending


def _submit(call: str, work, stream) -> None:
    """Put ``work`` on ``stream``; without one, run it at once on the legacy default stream of the current device."""
    try:
        if stream is not None:
            stream._stream.enqueue(work)
            return
        _GPU.use_legacy_stream(call, _acquire_context(call)._device.ordinal)
        work()
    except _CudaError as error:
        _raise(call, error)


def _htod(dest, src):
    source = _np.asarray(src)
    if not source.flags.c_contiguous:
        raise TypeError("expected a contiguous buffer")
    address = int(dest)

    def copy():
        _GPU.view(address, source.nbytes)[:] = source.reshape(-1).view(_np.uint8)

    return copy


def memcpy_htod_async(dest, src, stream=None):
    _submit("cuMemcpyHtoDAsync", _htod(dest, src), stream)


def memcpy_htod(dest, src):
    _submit("cuMemcpyHtoD", _htod(dest, src), None)


def memcpy_dtoh_async(dest, src, stream=None):
    if not (dest.flags.c_contiguous and dest.flags.writeable):
        raise TypeError("expected a writable contiguous buffer")
    address = int(src)

    def copy():
        dest.reshape(-1).view(_np.uint8)[:] = _GPU.view(address, dest.nbytes)

    _submit("cuMemcpyDtoHAsync", copy, stream)


class Event:
    def __init__(self, flags=0):
        _acquire_context("cuEventCreate")
        self._flags = event_flags(int(flags))
        self._time = None
        self._marker = None
        self._stream = None

    def record(self, stream=None):
        if stream is None:
            raise LogicError("the emulator records events on a Stream only")
        self._time = None

        def mark():
            self._time = _now()

        self._marker, self._stream = mark, stream._stream
        _submit("cuEventRecord", mark, stream)
        return self

    def synchronize(self):
        if not self._flags & event_flags.BLOCKING_SYNC:
            with _GPU.lock:
                _GPU.spin_waits += 1  # cuEventSynchronize: without CU_EVENT_BLOCKING_SYNC the CPU thread busy-waits
        if self._stream is not None:
            try:
                self._stream.run_until(self._marker)
            except _CudaError as error:
                _raise("cuEventSynchronize", error)
        return self

    def query(self):
        return self._time is not None

    def time_since(self, event):
        if (self._flags | event._flags) & event_flags.DISABLE_TIMING:
            raise LogicError("cuEventElapsedTime failed: invalid resource handle")  # CUDA_ERROR_INVALID_HANDLE
        if self._time is None or event._time is None:
            raise LogicError("cuEventElapsedTime failed: device not ready")
        return (self._time - event._time) * 1e3

    def time_till(self, event):
        return event.time_since(self)
