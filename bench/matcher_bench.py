#!/usr/bin/env python3
"""Matcher latency of every backend side by side (ONNX Runtime, OpenVINO f32 and bf16, TensorRT, our torch
module, kornia's LightGlue in fp32 and bf16 autocast), and the SIFT front-end against bare OpenCV. The work is
in trt/evaluation/bench.py.

    python bench/matcher_bench.py                         # preset "full" (~10-12 min on 2 cores, with the bf16 gate)
    python bench/matcher_bench.py --preset targets        # N 1024 and 2048 at B 1: the CPU targets only
    python bench/matcher_bench.py --quick                 # preset "quick": N 256, B 1
    python bench/matcher_bench.py --output-dir /tmp/bench --weights weights/sift_lightglue.pth
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trt.cli import run  # noqa: E402
from trt.evaluation.runs import add_run_arguments  # noqa: E402
from trt.evaluation.bench import OUTPUT_DIR, PRESETS, main  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    presets = parser.add_mutually_exclusive_group()
    presets.add_argument("--preset", choices=PRESETS, default="full")
    presets.add_argument("--quick", dest="preset", action="store_const", const="quick", help="same as --preset quick")
    add_run_arguments(parser, OUTPUT_DIR)  # without trained weights: seeded random ones
    return parser.parse_args(argv)


def cli(argv=None) -> Path:
    args = parse_args(argv)
    path = main(args.preset, args.data_dir, args.output_dir, weights=args.weights, models_dir=args.models_dir,
                overwrite=args.overwrite)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run(cli)
