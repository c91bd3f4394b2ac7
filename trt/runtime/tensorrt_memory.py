"""What one optimization profile of a TensorRT session runs with (a *slot*), and how it is made and freed.

A slot holds an execution context bound to its profile, its own CUDA stream, four CUDA events (start,
inputs copied, computed, outputs copied) and page-locked host and device buffers sized for the
profile's largest shape (or its opt shape where it runs one shape: CUDA graphs). pycuda makes the stream,
events and buffers; the context (the session's primary context) must be current on the calling thread.

NVIDIA's word for each choice is cited where it is made:

- streams are non-blocking (``CU_STREAM_NON_BLOCKING``): a blocking stream synchronizes implicitly with the
  legacy default stream, so that any legacy-stream call by another library in the process (PyTorch, ONNX
  Runtime's CUDA provider) during a capture on it invalidates the capture;
- events are blocking-sync (``CU_EVENT_BLOCKING_SYNC``), as trtexec's ``TrtCudaEvent`` makes them: the
  waiting thread sleeps instead of spinning a CPU core per request in flight;
- the activation memory per profile comes from ``get_device_memory_size_for_profile_v2`` where TensorRT has
  it (10.1 on, and tensorrt-rtx), else the v1 call of TensorRT 10.0.
"""

import threading
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from trt.contract import TensorSpec, concrete_shape
from trt.runtime.base import Profile


@dataclass
class Slot:
    """Everything one optimization profile runs with (see the module docstring)."""

    profile: Profile
    context: object  # IExecutionContext bound to the profile
    keep_alive: tuple  # what the context holds by reference (its runtime config)
    stream: object  # pycuda Stream, non-blocking
    events: list  # pycuda Events, blocking-sync: start, inputs copied, computed, outputs copied
    host: dict  # name -> page-locked flat numpy array (max size)
    device: dict  # name -> pycuda DeviceAllocation (max size)
    shape: Optional[dict[str, int]] = None  # the dimensions every request runs at (CUDA graphs): the opt
    lock: threading.Lock = field(default_factory=threading.Lock)
    graph: object = None  # executable CUDA graph of one enqueue, captured by the session (full TensorRT)
    capture_tried: bool = False  # a slot whose capture failed runs without a graph from then on


def buffer_shapes(specs: list[TensorSpec], profile: Profile) -> dict[str, tuple[int, ...]]:
    """Shape of each tensor's buffers: the contract's shape at the profile's largest dimensions."""
    return {spec.name: concrete_shape(spec, profile.max_dims) for spec in specs}


def activation_bytes(engine, profile_index: int) -> int:
    """Device memory an execution context needs for the profile's activations.

    ``ICudaEngine.get_device_memory_size_for_profile_v2`` exists from TensorRT 10.1 on (NVIDIA's C++ API
    member lists: 10.0.0 has ``getDeviceMemorySizeForProfile`` only, 10.8.0 both; tensorrt-rtx has the v2
    only); the v1 call is TensorRT 10.0's, which ``available()`` accepts all the same.
    """
    size_v2 = getattr(engine, "get_device_memory_size_for_profile_v2", None)
    if size_v2 is not None:
        return int(size_v2(profile_index))
    return int(engine.get_device_memory_size_for_profile(profile_index))


def make_stream(cuda, driver):
    """A pycuda stream created with ``CU_STREAM_NON_BLOCKING`` (pycuda's ``Stream(flags)`` passes its flags to
    ``cuStreamCreate``, whose docstring says such a stream "should perform no implicit synchronization with
    stream 0"). The CUDA programming guide (stream capture, "Prohibited and unhandled operations"): while a
    stream not created non-blocking is capturing, any use of the legacy stream is invalid and invalidates the
    capture."""
    return cuda.Stream(flags=int(driver.CUstream_flags.CU_STREAM_NON_BLOCKING))


def make_events(cuda, count: int = 4) -> list:
    """Blocking-sync events (pycuda ``event_flags.BLOCKING_SYNC``): ``Event.synchronize`` then waits without
    spinning, as trtexec's ``TrtCudaEvent(blocking=true)`` does (samples/common/sampleDevice.h,
    ``cudaEventBlockingSync``). Timing stays enabled: ``time_since`` needs it."""
    return [cuda.Event(cuda.event_flags.BLOCKING_SYNC) for _ in range(count)]


def allocate_buffers(cuda, context, specs: list[TensorSpec], sized_for: Profile, dtypes: dict) -> tuple[dict, dict]:
    """Page-locked host and device buffers for every tensor of ``specs``, each device buffer bound to the
    context with ``set_tensor_address`` (TensorRT 10's migration guide: an address for every I/O tensor
    before ``enqueueV3``; ``setTensorAddress``: "The pointer must have at least 256-byte alignment", which
    ``cuMemAlloc`` guarantees). Returns (host, device); a refused binding raises ``ValueError`` naming it."""
    host, device = {}, {}
    try:
        for name, tensor_shape in buffer_shapes(specs, sized_for).items():
            host[name] = cuda.pagelocked_empty(int(np.prod(tensor_shape)), dtypes[name])
            device[name] = cuda.mem_alloc(max(host[name].nbytes, 1))
            if not context.set_tensor_address(name, int(device[name])):
                raise ValueError(name)
    except BaseException:
        free_buffers(device)
        raise
    return host, device


def free_buffers(device: dict) -> None:
    for allocation in device.values():
        allocation.free()
    device.clear()
