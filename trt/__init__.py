"""LightGlue TensorRT build-and-serve pipeline.

Importing this package needs numpy only: torch, onnx, TensorRT and pycuda are imported lazily by the
modules that use them, so the serving side runs on a machine with just a runtime installed.
"""

__version__ = "0.1.0"
