"""Part of the emulated TensorRT runtime (``_trt_emulator``), run by Python at start-up when tests/emulator is
on the path: it remembers the engine files the process opens, whose manifests the emulator then reads."""

import sys

import _trt_emulator

sys.addaudithook(_trt_emulator.remember_opened_engines)
