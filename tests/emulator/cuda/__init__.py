"""Emulated cuda-python (tests/emulator): ``cuda.bindings.driver`` and ``.runtime``, see ``_trt_emulator``."""
