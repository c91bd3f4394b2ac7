"""Emulated ``cuda.bindings`` (cuda-python): only ``driver``."""

__version__ = "13.5.0"
