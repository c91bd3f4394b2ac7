"""Export LightGlue to a clean, TensorRT-ready ONNX file that follows the matcher tensor contract.

    python export.py --extractor_type=sift --lightglue_path weights/sift_lightglue.onnx --dynamic

Weights: the official checkpoint (weights/<extractor>_lightglue.pth, downloaded when absent), a file
(--weights), a seeded random state dict for tests (--random-weights SEED), or the hand-set
nearest-neighbour weights (--nearest-neighbour-weights, not trained: a descriptor-space baseline), or
the sharp test weights (--sharp-weights SEED: those plus seeded residual updates, for accuracy checks).
"""

import argparse
import warnings
from pathlib import Path

from trt.cli import run
from trt.extractors import EXTRACTORS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extractor_type", "--extractor", default="sift",
                        help=f"feature type the matcher was trained for: {', '.join(EXTRACTORS)}")
    parser.add_argument("--lightglue_path", "--output", type=Path, default=None,
                        help="output ONNX file (default: weights/<extractor>_lightglue.onnx)")
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamic batch and keypoint counts (needed for engines with profiles)")
    parser.add_argument("--batch_size", type=int, default=None, help="static export: pairs per call (1)")
    parser.add_argument("--num_keypoints", type=int, default=None, help="static export: keypoints per image (1024)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (17)")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--weights", type=Path, default=None, help="a LightGlue checkpoint (.pth)")
    weights.add_argument("--random-weights", type=int, metavar="SEED", default=None,
                         help="seeded random weights of the official layout (tests and smoke runs only)")
    weights.add_argument("--nearest-neighbour-weights", action="store_true",
                         help="hand-set weights that reduce LightGlue to dual-softmax mutual nearest neighbours")
    weights.add_argument("--sharp-weights", type=int, metavar="SEED", default=None,
                         help="nearest-neighbour weights plus seeded residual updates: peaked attention and "
                              "assignment, for backend and precision checks (not trained)")
    parser.add_argument("--weights-dir", type=Path, default=Path("weights"),
                        help="where official checkpoints are looked for and downloaded to")
    return parser.parse_args()


def main() -> Path:
    from trt.onnx.export import export_matcher

    args = parse_args()
    static_flags = [flag for flag, value in (("--batch_size", args.batch_size), ("--num_keypoints", args.num_keypoints))
                    if value is not None]
    if args.dynamic and static_flags:
        warnings.warn(f"{' and '.join(static_flags)} ignored: --dynamic exports take any batch and keypoint count",
                      stacklevel=1)
    static = {"batch_size": 1 if args.batch_size is None else args.batch_size,
              "num_keypoints": 1024 if args.num_keypoints is None else args.num_keypoints}
    output = args.lightglue_path or args.weights_dir / f"{args.extractor_type}_lightglue.onnx"
    path = export_matcher(
        args.extractor_type, output,
        weights=args.weights, random_seed=args.random_weights, nearest_neighbour=args.nearest_neighbour_weights,
        sharp_seed=args.sharp_weights,
        dynamic=args.dynamic, **static, opset=args.opset,
        weights_dir=args.weights_dir,
    )
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run(main)
