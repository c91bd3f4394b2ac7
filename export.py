"""Export LightGlue, and the learned extractor feeding it, to clean, TensorRT-ready ONNX files that follow the
matcher and extractor tensor contracts.

    python export.py --extractor-type sift --lightglue-path weights/sift_lightglue.onnx --dynamic
    python export.py --extractor-type aliked --extractor-path weights/aliked-n16.onnx --dynamic
    python export.py --extractor-type aliked --extractor-path weights/aliked-n16.onnx \\
        --lightglue-path weights/aliked_lightglue.onnx --dynamic

--stages also writes the matcher's stages into X.stages/ beside X.onnx, for adaptive depth and width
(early stopping and point pruning, docs/adaptive.md).

--extractor-path alone exports only the extractor, --lightglue-path alone (or neither) only the matcher,
both export both (and write neither unless both succeed).

Matcher weights: the official checkpoint (weights/<extractor>_lightglue.pth, downloaded when absent), a
file (--weights), a seeded random state dict for tests (--random-weights SEED), or the hand-set
nearest-neighbour weights (--nearest-neighbour-weights, not trained: a descriptor-space baseline), or
the sharp test weights (--sharp-weights SEED: those plus seeded residual updates, for accuracy checks).
Extractor weights: the official checkpoint of --extractor-model (weights/aliked-n16.pth,
superpoint_v1.pth, depth-save.pth; downloaded when absent), a file (--extractor-weights), or seeded
random weights of the official layout (--extractor-random-weights SEED).

Options are spelled with hyphens, as here; the underscore spellings of earlier versions (--extractor_type,
--lightglue_path, --max_num_keypoints, ...) are accepted too.
"""

import argparse
import warnings
from contextlib import ExitStack
from pathlib import Path

from trt.cli import ArgumentParser, OneSpellingHelp, run, spellings
from trt.extractor_contract import DEFAULT_MAX_KEYPOINTS
from trt.extractors import EXTRACTORS, NETWORKS


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=OneSpellingHelp)
    parser.add_argument(*spellings("--extractor-type", "--extractor"), dest="extractor_type", default="sift",
                        help=f"feature type the matcher was trained for: {', '.join(EXTRACTORS)}")
    parser.add_argument(*spellings("--lightglue-path", "--output"), dest="lightglue_path", type=Path, default=None,
                        help="output ONNX file of the matcher (default: weights/<extractor>_lightglue.onnx)")
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamic batch, keypoint counts and image sizes (needed for engines with profiles)")
    parser.add_argument(*spellings("--batch-size"), dest="batch_size", type=int, default=None,
                        help="static export: pairs (or images) per call (1)")
    parser.add_argument(*spellings("--num-keypoints"), dest="num_keypoints", type=int, default=None,
                        help="static export: keypoints per image (1024)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (17)")
    parser.add_argument("--stages", action="store_true",
                        help="also export the matcher as stages into X.stages/ beside it (with --dynamic): adaptive "
                             "depth and width on OpenVINO and ONNX Runtime (docs/adaptive.md)")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--weights", type=Path, default=None, help="a LightGlue checkpoint (.pth)")
    weights.add_argument(*spellings("--random-weights"), dest="random_weights", type=int, metavar="SEED", default=None,
                         help="seeded random weights of the official layout (tests and smoke runs only)")
    weights.add_argument(*spellings("--nearest-neighbour-weights"), dest="nearest_neighbour_weights",
                         action="store_true",
                         help="hand-set weights that reduce LightGlue to dual-softmax mutual nearest neighbours")
    weights.add_argument(*spellings("--sharp-weights"), dest="sharp_weights", type=int, metavar="SEED", default=None,
                         help="nearest-neighbour weights plus seeded residual updates: peaked attention and "
                              "assignment, for backend and precision checks (not trained)")
    parser.add_argument(*spellings("--weights-dir"), dest="weights_dir", type=Path, default=Path("weights"),
                        help="where official checkpoints are looked for and downloaded to")

    extractor = parser.add_argument_group("extractor network (aliked, superpoint, disk)")
    extractor.add_argument(*spellings("--extractor-path"), dest="extractor_path", type=Path, default=None,
                           help="output ONNX file of the extractor network")
    extractor.add_argument(*spellings("--extractor-model"), dest="extractor_model", choices=list(NETWORKS), default=None,
                           help="network variant (default: cvg/LightGlue's for the type: aliked-n16, superpoint, disk)")
    extractor_weights = extractor.add_mutually_exclusive_group()
    extractor_weights.add_argument(*spellings("--extractor-weights"), dest="extractor_weights", type=Path, default=None,
                                   help="the network's checkpoint (default: weights/<official file name>)")
    extractor_weights.add_argument(*spellings("--extractor-random-weights"), dest="extractor_random_weights", type=int,
                                   metavar="SEED", default=None,
                                   help="seeded random weights of the official layout (tests and smoke runs only)")
    extractor.add_argument(*spellings("--max-keypoints", "--max-num-keypoints"), dest="max_num_keypoints", type=int,
                           default=None, metavar="K",
                           help=f"keypoints per image the network finds at most, fixed in the graph: its K, which "
                                f"caps trt_infer.py's --max-keypoints (default {DEFAULT_MAX_KEYPOINTS}, at most 3840)")
    extractor.add_argument(*spellings("--detection-threshold"), dest="detection_threshold", type=float, default=None,
                           help="detection score threshold (default: the reference's, 0.2 ALIKED, 0.0005 SuperPoint, "
                                "0 DISK)")
    extractor.add_argument(*spellings("--nms-radius"), dest="nms_radius", type=int, default=None,
                           help="non-maximum suppression radius (default: the reference's, 2 ALIKED and DISK, "
                                "4 SuperPoint)")
    extractor.add_argument(*spellings("--img-size"), dest="img_size", type=int, nargs="+", default=None, metavar="PIXELS",
                           help="static export: image HEIGHT [WIDTH] (480 640)")
    return parser.parse_args(argv)


# dest -> the documented flag, for the warnings
EXTRACTOR_FLAGS = {"extractor_model": "--extractor-model", "extractor_weights": "--extractor-weights",
                   "extractor_random_weights": "--extractor-random-weights", "max_num_keypoints": "--max-keypoints",
                   "detection_threshold": "--detection-threshold", "nms_radius": "--nms-radius",
                   "img_size": "--img-size"}


def main(argv=None) -> list[Path]:
    from trt.fileio import atomic_path
    from trt.onnx.export import export_matcher
    from trt.onnx.export_extractor import check_max_keypoints, export_extractor
    from trt.onnx.export_stages import export_matcher_and_stages
    from trt.stages import stages_folder

    args = parse_args(argv)
    static_flags = [flag for flag, value in (("--batch-size", args.batch_size), ("--num-keypoints", args.num_keypoints),
                                             ("--img-size", args.img_size)) if value is not None]
    if args.dynamic and static_flags:
        warnings.warn(f"{' and '.join(static_flags)} ignored: --dynamic exports take any batch and keypoint count",
                      stacklevel=1)
    if args.extractor_path is None:
        unused = [flag for name, flag in EXTRACTOR_FLAGS.items() if getattr(args, name) is not None]
        if unused:
            warnings.warn(f"{', '.join(unused)} ignored: no --extractor-path, so no extractor is exported", stacklevel=1)
    batch_size = 1 if args.batch_size is None else args.batch_size
    jobs = []
    if args.extractor_path is not None:
        height, width = (480, 640) if args.img_size is None else (args.img_size * 2)[:2]
        jobs.append((export_extractor, args.extractor_path, dict(
            extractor=args.extractor_type, network=args.extractor_model, weights=args.extractor_weights,
            random_seed=args.extractor_random_weights,
            max_num_keypoints=DEFAULT_MAX_KEYPOINTS if args.max_num_keypoints is None else args.max_num_keypoints,
            detection_threshold=args.detection_threshold, nms_radius=args.nms_radius, dynamic=args.dynamic,
            batch_size=batch_size, image_size=(height, width), opset=args.opset, weights_dir=args.weights_dir)))
    if args.lightglue_path is not None or args.extractor_path is None:
        output = args.lightglue_path or args.weights_dir / f"{args.extractor_type}_lightglue.onnx"
        jobs.append((export_matcher_and_stages if args.stages else export_matcher, output, dict(
            extractor=args.extractor_type, weights=args.weights, random_seed=args.random_weights,
            nearest_neighbour=args.nearest_neighbour_weights, sharp_seed=args.sharp_weights, dynamic=args.dynamic,
            batch_size=batch_size,
            num_keypoints=1024 if args.num_keypoints is None else args.num_keypoints, opset=args.opset,
            weights_dir=args.weights_dir, **({"folder": stages_folder(output)} if args.stages else {}))))
    # Every checkpoint first (downloaded when absent): a missing one ends the run before any export starts.
    from trt.extractors import get_extractor, get_network
    from trt.models.networks import WEIGHTS_HINT
    from trt.models.weights import resolve_weights

    if args.extractor_path is not None:
        check_max_keypoints(jobs[0][2]["max_num_keypoints"])  # flags before any file is fetched
    if args.extractor_path is not None and args.extractor_random_weights is None:
        resolve_weights(get_network(args.extractor_type, args.extractor_model), args.extractor_weights,
                        args.weights_dir, hint=WEIGHTS_HINT, announce=False)
    if len(jobs) > 1 and args.random_weights is None and not args.nearest_neighbour_weights and args.sharp_weights is None:
        resolve_weights(get_extractor(args.extractor_type), args.weights, args.weights_dir, announce=False)
    # Each file lands only when every export succeeded: no extractor without its matcher, or the reverse.
    with ExitStack() as stack:
        staged = [stack.enter_context(atomic_path(output)) for _, output, _ in jobs]
        for (export, _, kwargs), tmp in zip(jobs, staged):
            export(output=tmp, **kwargs)
    for _, output, _ in jobs:
        print(f"wrote {output}")
    return [output for _, output, _ in jobs]


if __name__ == "__main__":
    run(main)
