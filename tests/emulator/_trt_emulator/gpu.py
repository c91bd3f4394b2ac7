"""The emulated GPUs: memory, streams, graphs, context stacks and stream-capture rules (see the package docstring).

Stream capture follows the CUDA documentation (``cuStreamBeginCapture`` and ``cuThreadExchangeStreamCaptureMode``
docstrings of cuda-python; CUDA C++ Programming Guide, "Stream Capture", "Prohibited and Unhandled Operations"):

- a capture ends on the stream, and (unless RELAXED) on the thread, that began it;
- a "potentially unsafe" call (here: device and page-locked allocation, freeing) is prohibited on a thread that
  has a capture of its own not begun RELAXED, and on any thread while another thread has a capture begun
  GLOBAL; THREAD_LOCAL captures in other threads are ignored. A prohibited call fails with
  CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and invalidates the capture it conflicts with;
- while a stream created without ``CU_STREAM_NON_BLOCKING`` is capturing, any use of the legacy default stream
  (pycuda calls without a stream) fails with CUDA_ERROR_STREAM_CAPTURE_IMPLICIT and invalidates that capture;
  a non-blocking stream's capture is unaffected;
- synchronizing a capturing stream is prohibited and invalidates its capture;
- the CUDA runtime keeps a last error per thread, set by a failed runtime call (TensorRT's own kernel launches
  into an invalidated capture) and reset by ``cudaGetLastError``.

Devices: ``TRT_EMULATOR_COMPUTE_CAPABILITY`` lists one compute capability per device ("8.9" or "8.9,12.0");
each device has its own primary context and memory.
"""

import itertools
import os
import threading
import time

import numpy as np

COMPUTE_CAPABILITY_VARIABLE = "TRT_EMULATOR_COMPUTE_CAPABILITY"
MEMORY_VARIABLE = "TRT_EMULATOR_MEMORY_MIB"
ALIGNMENT = 256  # cudaMalloc's guarantee
GLOBAL, THREAD_LOCAL, RELAXED = "GLOBAL", "THREAD_LOCAL", "RELAXED"


class CudaError(Exception):
    """A CUDA driver error; ``code`` is the CUresult name (CUDA_ERROR_ILLEGAL_ADDRESS, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def compute_capabilities() -> list[tuple[int, int]]:
    """The compute capability of each emulated device, by ordinal."""
    found = []
    for part in os.environ.get(COMPUTE_CAPABILITY_VARIABLE, "8.9").split(","):
        major, _, minor = part.strip().partition(".")
        found.append((int(major), int(minor or 0)))
    return found


def compute_capability(ordinal: int = 0) -> tuple[int, int]:
    return compute_capabilities()[ordinal]


class Stream:
    """Work in issue order; it runs when the stream (or an event on it) is synchronized."""

    def __init__(self, gpu: "Gpu", device: int, blocking: bool = True):
        self.gpu = gpu
        self.device = device
        self.blocking = blocking  # created without CU_STREAM_NON_BLOCKING: synchronizes with the legacy stream
        self.handle = next(gpu.handles)
        self.pending: list = []
        self.capture: list | None = None  # work recorded while capturing
        self.capture_mode = None
        self.capture_thread = None
        self.capture_invalidated = False
        self.lock = threading.RLock()
        gpu.streams[self.handle] = self

    def enqueue(self, work) -> None:
        with self.lock:
            if self.capture is not None and self.capture_invalidated:
                raise CudaError("CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", "operation failed due to a previous error "
                                                                         "during capture")
            (self.pending if self.capture is None else self.capture).append(work)

    def run_until(self, marker=None) -> None:
        """Run pending work in order, up to and including ``marker`` (all of it without one)."""
        with self.lock:
            if self.capture is not None:
                self.capture_invalidated = True
                raise CudaError("CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", "operation not permitted when stream is capturing")
            while self.pending:
                work = self.pending.pop(0)
                try:
                    work()
                except CudaError:
                    self.pending.clear()  # the error is sticky for what was queued behind it
                    raise
                if work is marker:
                    return

    def begin_capture(self, mode: str, require_idle: bool = True) -> str:
        """``require_idle``: refuse a stream with unsynchronized work (a user's capture; see below)."""
        with self.lock:
            if self.capture is not None:
                return "CUDA_ERROR_ILLEGAL_STATE"
            if require_idle and self.pending:
                # Stricter than the driver, on purpose: work not yet synchronized (TensorRT's deferred set-up in
                # the first enqueue) must not reach a graph; trtexec synchronizes before it captures.
                return "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"
            self.capture, self.capture_invalidated = [], False
            self.capture_mode, self.capture_thread = mode, threading.get_ident()
        self.gpu.run_capture_hooks(self)
        return "CUDA_SUCCESS"

    def end_capture(self) -> tuple[str, "Graph | None"]:
        with self.lock:
            if self.capture is None:
                return "CUDA_ERROR_ILLEGAL_STATE", None
            if self.capture_mode != RELAXED and self.capture_thread != threading.get_ident():
                return "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD", None
            work, invalidated = self.capture, self.capture_invalidated
            self.capture = self.capture_mode = self.capture_thread = None
            return ("CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", None) if invalidated else ("CUDA_SUCCESS", Graph(work))

    def invalidate_capture(self) -> None:
        with self.lock:
            self.capture_invalidated = True


class Graph:
    """Captured work: each item keeps the shapes, addresses and sizes it was recorded with."""

    def __init__(self, work: list):
        self.work = list(work)

    def launch(self, stream: Stream) -> None:
        for work in self.work:
            stream.enqueue(work)


class Gpu:
    """The emulated devices, their memory, streams, the per-thread context stacks and CUDA runtime errors."""

    def __init__(self):
        self.lock = threading.RLock()
        self.total = int(os.environ.get(MEMORY_VARIABLE, "16384")) << 20  # per device
        self.allocations: dict[int, np.ndarray] = {}  # address -> bytes
        self.allocation_device: dict[int, int] = {}  # address -> device ordinal
        self.reserved: dict[int, tuple[int, int]] = {}  # token -> (device, bytes) the runtime holds internally
        self.streams: dict[int, Stream] = {}
        self.handles = itertools.count(0x5000, 0x10)
        self._next_address = 0x7F00_0000_0000
        self.initialized = False
        self.retains: dict[int, int] = {}  # device -> retains of its primary context
        self.capture_hooks: list = []  # called with the stream right after a capture begins (tests: a neighbour)
        self.spin_waits = 0  # event synchronizations that busy-waited (events made without BLOCKING_SYNC)
        self._local = threading.local()

    @property
    def device_count(self) -> int:
        return len(compute_capabilities())

    @staticmethod
    def primary_handle(device: int) -> int:
        return 0xC0_0000 + device

    @property
    def primary_retains(self) -> int:
        """Retains of every device's primary context together."""
        return sum(self.retains.values())

    # -- memory --------------------------------------------------------------------------------------------
    def used(self, device: int) -> int:
        with self.lock:
            return (sum(a.nbytes for address, a in self.allocations.items() if self.allocation_device[address] == device)
                    + sum(nbytes for owner, nbytes in self.reserved.values() if owner == device))

    def alloc(self, nbytes: int, device: int) -> int:
        self.check_unsafe_call("cuMemAlloc")
        with self.lock:
            if self.used(device) + nbytes > self.total:
                raise CudaError("CUDA_ERROR_OUT_OF_MEMORY", "out of memory")
            address = self._next_address
            self._next_address += -(-max(nbytes, 1) // ALIGNMENT) * ALIGNMENT + ALIGNMENT  # a gap between allocations
            self.allocations[address] = np.zeros(nbytes, np.uint8)
            self.allocation_device[address] = device
            return address

    def free(self, address: int) -> None:
        self.check_unsafe_call("cuMemFree")
        with self.lock:
            if self.allocations.pop(address, None) is None:
                raise CudaError("CUDA_ERROR_INVALID_VALUE", "invalid argument")
            del self.allocation_device[address]

    def reserve(self, nbytes: int, device: int) -> int:
        with self.lock:
            if self.used(device) + nbytes > self.total:
                raise CudaError("CUDA_ERROR_OUT_OF_MEMORY", "out of memory")
            token = next(self.handles)
            self.reserved[token] = (device, nbytes)
            return token

    def unreserve(self, token: int) -> None:
        with self.lock:
            self.reserved.pop(token, None)

    def device_of(self, address: int) -> int | None:
        """The device whose live allocation holds ``address``, or None (host memory, freed memory)."""
        with self.lock:
            for base, data in self.allocations.items():
                if base <= address < base + max(data.nbytes, 1):
                    return self.allocation_device[base]
        return None

    def view(self, address: int, nbytes: int) -> np.ndarray:
        """The bytes [address, address + nbytes), which must lie inside one live allocation."""
        with self.lock:
            for base, data in self.allocations.items():
                if base <= address and address + nbytes <= base + data.nbytes:
                    return data[address - base : address - base + nbytes]
        raise CudaError("CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered")

    # -- stream capture ------------------------------------------------------------------------------------
    def captures(self) -> list[Stream]:
        return [stream for stream in list(self.streams.values()) if stream.capture is not None]

    def check_unsafe_call(self, call: str) -> None:
        """A potentially unsafe call: refused, and the conflicting captures invalidated, where the rules say."""
        me = threading.get_ident()
        conflicts = [s for s in self.captures()
                     if (s.capture_thread == me and s.capture_mode != RELAXED)
                     or (s.capture_thread != me and s.capture_mode == GLOBAL)]
        if conflicts:
            for stream in conflicts:
                stream.invalidate_capture()
            raise CudaError("CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
                            f"{call}: operation not permitted when stream is capturing")

    def use_legacy_stream(self, call: str, device: int) -> None:
        """The legacy default stream is used: refused while a blocking stream of the device is capturing; else
        it waits for the blocking streams (its implicit synchronization), as the legacy stream does."""
        blocking = [s for s in self.captures() if s.blocking and s.device == device]
        if blocking:
            for stream in blocking:
                stream.invalidate_capture()
            raise CudaError("CUDA_ERROR_STREAM_CAPTURE_IMPLICIT",
                            f"{call}: operation would make the legacy stream depend on a capturing blocking stream")
        for stream in list(self.streams.values()):
            if stream.blocking and stream.device == device:
                stream.run_until()

    def run_capture_hooks(self, stream: Stream) -> None:
        for hook in list(self.capture_hooks):
            hook(stream)

    # -- the CUDA runtime's last error (per thread) ----------------------------------------------------------
    def set_last_error(self, name: str) -> None:
        self._local.last_error = name

    def take_last_error(self) -> str:
        """cudaGetLastError: this thread's last runtime error, reset to cudaSuccess."""
        error = getattr(self._local, "last_error", "cudaSuccess")
        self._local.last_error = "cudaSuccess"
        return error

    # -- contexts ------------------------------------------------------------------------------------------
    def driver_stack(self) -> list[int]:
        """This thread's CUDA context stack (context handles), as the driver keeps it."""
        if not hasattr(self._local, "driver"):
            self._local.driver = []
        return self._local.driver

    def pycuda_stack(self) -> list:
        """This thread's pycuda context stack (pycuda keeps its own, beside the driver's)."""
        if not hasattr(self._local, "pycuda"):
            self._local.pycuda = []
        return self._local.pycuda

    def current_device(self) -> int | None:
        """The device whose (retained) primary context is current on this thread, or None."""
        stack = self.driver_stack()
        if not stack:
            return None
        device = stack[-1] - self.primary_handle(0)
        return device if 0 <= device < self.device_count and self.retains.get(device, 0) > 0 else None

    def context_current(self) -> bool:
        return self.current_device() is not None

    def release_primary(self, device: int) -> None:
        """cuDevicePrimaryCtxRelease: at zero retains the context is destroyed with everything in it."""
        with self.lock:
            if self.retains.get(device, 0) <= 0:
                raise CudaError("CUDA_ERROR_INVALID_CONTEXT", "invalid device context")
            self.retains[device] -= 1
            if self.retains[device] == 0:
                del self.retains[device]
                for address in [a for a, owner in self.allocation_device.items() if owner == device]:
                    del self.allocations[address], self.allocation_device[address]
                for token in [t for t, (owner, _) in self.reserved.items() if owner == device]:
                    del self.reserved[token]
                for handle in [h for h, s in self.streams.items() if s.device == device]:
                    del self.streams[handle]


def now() -> float:
    return time.perf_counter()


GPU = Gpu()
