"""Which CUDA GPUs this machine has, asked without TensorRT (which may crash without a driver).

The answer comes from pycuda where it imports, so that an emulated pycuda (``tests/emulator``) stands in
for the device, and otherwise from the driver library through ctypes: ``auto`` backend choices and
builds for the local GPU must know about a GPU even where pycuda is not installed.
"""

import ctypes
import ctypes.util

# CUDA driver API attribute numbers (cuda.h, CUdevice_attribute)
_COMPUTE_CAPABILITY_MAJOR = 75
_COMPUTE_CAPABILITY_MINOR = 76


def cuda_devices() -> list[str]:
    """Compute capability ("8.9") of each CUDA GPU, by device ordinal; empty without a driver or a GPU."""
    try:
        import pycuda.driver as cuda
    except ImportError:  # no pycuda, or a pycuda that cannot load libcuda
        return _driver_devices()
    try:
        cuda.init()
        return ["%d.%d" % cuda.Device(ordinal).compute_capability() for ordinal in range(cuda.Device.count())]
    except cuda.Error:  # a driver without a usable GPU
        return []


def _load_libcuda():
    for name in ("libcuda.so.1", "libcuda.so", ctypes.util.find_library("cuda"), "nvcuda.dll"):
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _driver_devices() -> list[str]:
    lib = _load_libcuda()
    if lib is None or lib.cuInit(0) != 0:
        return []
    count = ctypes.c_int()
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    capabilities = []
    for ordinal in range(count.value):
        device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        if lib.cuDeviceGet(ctypes.byref(device), ordinal) != 0:
            continue
        lib.cuDeviceGetAttribute(ctypes.byref(major), _COMPUTE_CAPABILITY_MAJOR, device)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), _COMPUTE_CAPABILITY_MINOR, device)
        capabilities.append(f"{major.value}.{minor.value}")
    return capabilities
