#!/usr/bin/env python3
"""Matcher accuracy against ground truth on the shared data (HPatches v_graffiti homographies, rotated and
scaled Sacre-Coeur similarities), per weights, precision and backend. The work is in trt/evaluation/eval.py.

    python bench/eval.py                                        # preset "standard" into out/eval/
    python bench/eval.py --preset smoke --output-dir /tmp/eval  # one pair
    python bench/eval.py --weights weights/sift_lightglue.pth --precisions fp32
    python bench/eval.py --extractors sift aliked                # ALIKED beside SIFT (make eval EXTRACTOR=aliked)
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trt.cli import run  # noqa: E402
from trt.evaluation.runs import add_run_arguments  # noqa: E402
from trt.evaluation.datasets import PRESETS  # noqa: E402
from trt.evaluation.eval import BACKENDS, OUTPUT_DIR, PRECISIONS, main  # noqa: E402
from trt.extractors import DEFAULT_NETWORKS  # noqa: E402
from trt.validation import confidence_arg  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=PRESETS, default="standard",
                        help="; ".join(f"{name}: {conf['description']}" for name, conf in PRESETS.items()))
    add_run_arguments(parser, OUTPUT_DIR)  # the nearest-neighbour weights are always evaluated
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=None,
                        help="default: onnxruntime, openvino where it is installed, and tensorrt where a GPU, "
                             "TensorRT and pycuda exist")
    parser.add_argument("--extractors", nargs="+", choices=["sift", *DEFAULT_NETWORKS], default=["sift"],
                        help="feature types, side by side (learned ones with their official checkpoint, from weights/ "
                             "or the shared data's aliked/); default: sift")
    parser.add_argument("--anchor", action="store_true",
                        help="also run cvg's pipeline in kornia (kornia's ALIKED/DISK and LightGlue, same files) "
                             "for each learned extractor with trained weights: ours must equal it within noise")
    parser.add_argument("--depth-confidence", type=confidence_arg, default=None,
                        help="adaptive depth of the trained weights' runs beside full depth (FP32, ONNX Runtime and "
                             "OpenVINO; docs/adaptive.md): default 0.95; -1 for both: no adaptive runs")
    parser.add_argument("--width-confidence", type=confidence_arg, default=None,
                        help="adaptive width of those runs: default 0.99; -1: no pruning")
    return parser.parse_args(argv)


def cli(argv=None) -> Path:
    args = parse_args(argv)
    path = main(args.preset, args.data_dir, args.output_dir, weights=args.weights, models_dir=args.models_dir,
                precisions=args.precisions, backends=args.backends, overwrite=args.overwrite, extractors=args.extractors,
                anchor=args.anchor, depth_confidence=args.depth_confidence, width_confidence=args.width_confidence)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run(cli)
