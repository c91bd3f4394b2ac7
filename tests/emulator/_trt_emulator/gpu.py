"""The emulated GPU: memory, streams, graphs and context stacks (see the package docstring)."""

import itertools
import os
import threading
import time

import numpy as np

COMPUTE_CAPABILITY_VARIABLE = "TRT_EMULATOR_COMPUTE_CAPABILITY"
MEMORY_VARIABLE = "TRT_EMULATOR_MEMORY_MIB"
ALIGNMENT = 256  # cudaMalloc's guarantee


class CudaError(Exception):
    """A CUDA driver error; ``code`` is the CUresult name (CUDA_ERROR_ILLEGAL_ADDRESS, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def compute_capability() -> tuple[int, int]:
    major, _, minor = os.environ.get(COMPUTE_CAPABILITY_VARIABLE, "8.9").partition(".")
    return int(major), int(minor or 0)


class Stream:
    """Work in issue order; it runs when the stream (or an event on it) is synchronized."""

    def __init__(self, gpu: "Gpu"):
        self.gpu = gpu
        self.handle = next(gpu.handles)
        self.pending: list = []
        self.capture: list | None = None  # work recorded while capturing
        self.capture_thread = None
        self.capture_invalidated = False
        self.lock = threading.RLock()
        gpu.streams[self.handle] = self

    def enqueue(self, work) -> None:
        with self.lock:
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

    def begin_capture(self, thread_local: bool) -> str:
        with self.lock:
            if self.capture is not None:
                return "CUDA_ERROR_ILLEGAL_STATE"
            if self.pending:
                # Stricter than the driver, on purpose: work not yet synchronized (TensorRT's deferred set-up in
                # the first enqueue) must not reach a graph; trtexec synchronizes before it captures.
                return "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"
            self.capture, self.capture_invalidated = [], False
            self.capture_thread = threading.get_ident() if thread_local else None
            return "CUDA_SUCCESS"

    def end_capture(self) -> tuple[str, "Graph | None"]:
        with self.lock:
            if self.capture is None:
                return "CUDA_ERROR_ILLEGAL_STATE", None
            if self.capture_thread not in (None, threading.get_ident()):
                return "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD", None
            work, invalidated = self.capture, self.capture_invalidated
            self.capture = None
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
    """The one emulated device, its memory, streams and the per-thread context stacks."""

    def __init__(self):
        self.lock = threading.RLock()
        self.total = int(os.environ.get(MEMORY_VARIABLE, "16384")) << 20
        self.allocations: dict[int, np.ndarray] = {}  # address -> bytes
        self.reserved: dict[int, int] = {}  # token -> bytes the runtime holds internally (never addressed)
        self.streams: dict[int, Stream] = {}
        self.handles = itertools.count(0x5000, 0x10)
        self._next_address = 0x7F00_0000_0000
        self.initialized = False
        self.primary_handle = 0xC0_0000
        self.primary_retains = 0
        self._local = threading.local()

    # -- memory --------------------------------------------------------------------------------------------
    @property
    def used(self) -> int:
        with self.lock:
            return sum(a.nbytes for a in self.allocations.values()) + sum(self.reserved.values())

    def alloc(self, nbytes: int) -> int:
        with self.lock:
            if self.used + nbytes > self.total:
                raise CudaError("CUDA_ERROR_OUT_OF_MEMORY", "out of memory")
            address = self._next_address
            self._next_address += -(-max(nbytes, 1) // ALIGNMENT) * ALIGNMENT + ALIGNMENT  # a gap between allocations
            self.allocations[address] = np.zeros(nbytes, np.uint8)
            return address

    def free(self, address: int) -> None:
        with self.lock:
            if self.allocations.pop(address, None) is None:
                raise CudaError("CUDA_ERROR_INVALID_VALUE", "invalid argument")

    def reserve(self, nbytes: int) -> int:
        with self.lock:
            if self.used + nbytes > self.total:
                raise CudaError("CUDA_ERROR_OUT_OF_MEMORY", "out of memory")
            token = next(self.handles)
            self.reserved[token] = nbytes
            return token

    def unreserve(self, token: int) -> None:
        with self.lock:
            self.reserved.pop(token, None)

    def view(self, address: int, nbytes: int) -> np.ndarray:
        """The bytes [address, address + nbytes), which must lie inside one live allocation."""
        with self.lock:
            for base, data in self.allocations.items():
                if base <= address and address + nbytes <= base + data.nbytes:
                    return data[address - base : address - base + nbytes]
        raise CudaError("CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered")

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

    def context_current(self) -> bool:
        """Whether this thread has the (retained) primary context current."""
        stack = self.driver_stack()
        return bool(stack) and stack[-1] == self.primary_handle and self.primary_retains > 0

    def release_primary(self) -> None:
        """cuDevicePrimaryCtxRelease: at zero retains the context is destroyed with everything in it."""
        with self.lock:
            if self.primary_retains <= 0:
                raise CudaError("CUDA_ERROR_INVALID_CONTEXT", "invalid device context")
            self.primary_retains -= 1
            if self.primary_retains == 0:
                self.allocations.clear()
                self.reserved.clear()
                self.streams.clear()


def now() -> float:
    return time.perf_counter()


GPU = Gpu()
