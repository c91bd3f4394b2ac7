"""Emulated cuda-python (tests/emulator): only ``cuda.bindings.driver``, see ``_trt_emulator``."""
