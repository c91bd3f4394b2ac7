#!/usr/bin/env python3
"""The bf16 accuracy gate for a matcher ONNX: OpenVINO's mixed bf16 against its f32 on make eval's datasets
(precision at 3 px, AUC at 5 px, match-set IoU). The work is in trt/evaluation/bf16_gate.py.

    python bench/bf16_gate.py --onnx weights/sift_lightglue-sharp.onnx   # writes weights/sift_lightglue-sharp.bf16-gate.json

The record beside the model is what ``trt_infer.py --precision auto`` reads: bf16 runs only for a model whose
gate passed (on a CPU with AMX or AVX512-BF16).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trt.cli import run  # noqa: E402
from trt.evaluation.datasets import PRESETS  # noqa: E402
from trt.runtime.openvino_session import GATE_PRESET  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, required=True, help="the matcher ONNX to gate (on features of its own extractor)")
    parser.add_argument("--preset", choices=PRESETS, default=GATE_PRESET,
                        help=f"evaluation preset (only {GATE_PRESET!r} makes a record that --precision auto trusts)")
    parser.add_argument("--data-dir", type=Path, default=None, help="shared data (default: $LG_DATA_DIR or ../shared/data)")
    return parser.parse_args(argv)


def cli(argv=None) -> Path:
    from trt.evaluation.bf16_gate import main

    args = parse_args(argv)
    path = main(args.onnx, args.preset, args.data_dir)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run(cli)
