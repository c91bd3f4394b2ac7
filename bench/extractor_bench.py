#!/usr/bin/env python3
"""Learned extractor latency per image size, every backend side by side (our ONNX on ONNX Runtime, our engines
on TensorRT where a GPU is, our torch module, kornia's ALIKED and DISK). The work is in
trt/evaluation/extractor_bench.py.

    python bench/extractor_bench.py                         # preset "full": ALIKED, DISK, SuperPoint, 2 sizes
    python bench/extractor_bench.py --quick                 # preset "quick": ALIKED at 128x160
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trt.cli import run  # noqa: E402
from trt.evaluation.extractor_bench import OUTPUT_DIR, PRESETS, main  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    presets = parser.add_mutually_exclusive_group()
    presets.add_argument("--preset", choices=PRESETS, default="full")
    presets.add_argument("--quick", dest="preset", action="store_const", const="quick", help="same as --preset quick")
    parser.add_argument("--output-dir", type=Path, default=OUTPUT_DIR, help=f"where the JSON goes (default {OUTPUT_DIR})")
    parser.add_argument("--models-dir", type=Path, default=None, help="export cache (default: OUTPUT_DIR/models)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="shared data, for ALIKED's checkpoint (default: $LG_DATA_DIR or ../shared/data)")
    parser.add_argument("--overwrite", action="store_true", help="export (and build engines) again even if cached")
    return parser.parse_args(argv)


def cli(argv=None) -> Path:
    args = parse_args(argv)
    path = main(args.preset, args.data_dir, args.output_dir, models_dir=args.models_dir, overwrite=args.overwrite)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run(cli)
