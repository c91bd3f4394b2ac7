"""Emulated pycuda (tests/emulator): only ``pycuda.driver``, see ``_trt_emulator``."""

VERSION = (2026, 1)
VERSION_TEXT = "2026.1"
