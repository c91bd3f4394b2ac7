"""Emulated ``cuda.bindings`` (cuda-python): ``driver`` and ``runtime``, the parts the TensorRT session uses."""

__version__ = "13.5.0"
