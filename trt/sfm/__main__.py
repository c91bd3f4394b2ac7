"""Reconstruct a folder of photos with a LightGlue engine and with COLMAP's SIFT: what make sfm runs.

    python -m trt.sfm --images photos/ --output out/sfm --engine weights/sift_lightglue.engine

See trt/sfm/pipeline.py for the steps and the files written.
"""

import argparse
from pathlib import Path

from trt.cli import ArgumentParser, run
from trt.runtime.matcher import BACKENDS, DEFAULT_RESIZE
from trt.jobs.pairs import EXHAUSTIVE
from trt.sfm.pipeline import SFM_KEYPOINTS, SFM_THRESHOLD, run_sfm
from trt.validation import confidence_arg


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m trt.sfm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="folder of photos (searched recursively)")
    parser.add_argument("--output", type=Path, required=True, help="folder for the model, database and h5 files")
    parser.add_argument("--engine", type=Path, required=True, help="the matcher engine (its manifest beside it)")
    parser.add_argument("--onnx", type=Path, help="the engine's source ONNX, if not where its manifest says")
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--pairs", default=EXHAUSTIVE,
                        help="'exhaustive' (every pair), 'sequential[:K]' (each image with the next K) or a pairs file "
                             "of image paths below --images")
    parser.add_argument("--threshold", type=float, default=SFM_THRESHOLD,
                        help=f"match score threshold (default {SFM_THRESHOLD}: verification drops the wrong matches)")
    parser.add_argument("--max-keypoints", type=int, default=SFM_KEYPOINTS, help="keypoints per image")
    parser.add_argument("--resize", type=int, default=DEFAULT_RESIZE, help="long side SIFT runs on; 0 for the original size")
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help="match on Ray (see trt_infer.py)")
    parser.add_argument("--workers", type=int, help="with --ray: matcher actors")
    parser.add_argument("--seed", type=int, default=0, help="COLMAP's random seed (repeatable runs)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the COLMAP SIFT reconstruction")
    parser.add_argument("--depth-confidence", type=confidence_arg, default=None,
                        help="adaptive depth (see trt_infer.py; default 0.95 where the stages are exported, -1: off)")
    parser.add_argument("--width-confidence", type=confidence_arg, default=None,
                        help="adaptive width (see trt_infer.py; default 0.99 where the stages are exported, -1: off)")
    args = parser.parse_args(argv)
    if args.max_keypoints is not None and args.max_keypoints < 2:
        parser.error("--max-keypoints must be at least 2")
    if args.workers is not None and (args.ray is None or args.workers < 1):
        parser.error("--workers N (N >= 1) goes with --ray")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    options = dict(engine=args.engine, backend=args.backend, onnx=args.onnx, threshold=args.threshold,
                   max_keypoints=args.max_keypoints, resize=args.resize or None,
                   depth_confidence=args.depth_confidence, width_confidence=args.width_confidence)
    return run_sfm(args.images, args.output, options, pairs=args.pairs, baseline=not args.no_baseline,
                   ray=args.ray, workers=args.workers, seed=args.seed)


if __name__ == "__main__":
    run(main)
