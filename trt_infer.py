#!/usr/bin/env python
"""Match images with a LightGlue engine: TensorRT on a GPU, else the engine's ONNX on OpenVINO or ONNX Runtime.

    python trt_infer.py --engine weights/sift.engine img0.jpg img1.jpg --output matches.json --viz matches.png
    python trt_infer.py --engine weights/sift.engine --pairs pairs.txt --output-dir matches/
    python trt_infer.py --engine weights/sift.engine --pairs pairs.txt --output-dir matches/ --ray [ADDRESS]
    python trt_infer.py --engine weights/sift.engine --pairs exhaustive --image-dir photos/ --output-dir matches/
    python trt_infer.py --engine weights/aliked_lightglue.engine img0.jpg img1.jpg   # + its extractor engine

Images go through SIFT on the host, or through the learned extractor engine the matcher engine's
manifest names (make engine EXTRACTOR=aliked builds both), on the same backend as the matcher.

A pairs file has one "image0 image1" per line (paths relative to the pairs file's folder, or to
--image-dir; blank lines and lines starting with # are skipped). Instead of a file, --pairs exhaustive
(every pair) or sequential[:K] (each image with the next K in name order, 10 by default: video frames)
pairs the images of --image-dir, as hloc's pairs_from_exhaustive does. Each pair's matches go to
OUTPUT_DIR/<image0>__<image1>.<format>, or with --format hloc into OUTPUT_DIR/features.h5 and
matches.h5. Outputs are written atomically; a rerun skips the pairs already done. A bad pair is
reported with its line and skipped: the job ends with exit status 3 when some pairs failed. A run
that fails leaves no file or folder it created. See docs/jobs.md, trt/jobs/ (pairs jobs, Ray, hloc and
COLMAP outputs), trt/runtime/outputs.py (file layout) and trt/runtime/matcher.py (the Python API).
"""

import argparse
from pathlib import Path
from typing import Optional

from trt.cli import run
from trt.contract import DEFAULT_THRESHOLD
from trt.engine.manifest import manifest_path
from trt.errors import UserError
from trt.extractors import EXTRACTORS
from trt.fileio import CreatedPaths
from trt.jobs.pairs import pairing
from trt.runtime.matcher import BACKENDS, DEFAULT_RESIZE, Matcher
from trt.precision import SERVE_PRECISION_ALIASES, canonical_precision
from trt.runtime.openvino_session import PRECISIONS
from trt.validation import (
    DEFAULT_MAX_PIXELS,
    MAX_KEYPOINTS,
    MAX_RESIZE,
    MIN_KEYPOINTS,
    MIN_RESIZE,
    check_distinct_paths,
    confidence_arg,
    max_keypoints_arg,
    max_pixels_arg,
    path_arg,
    pixel_limit,
    resize_arg,
    threshold_arg,
)


def add_matcher_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``matcher_options`` (trt_serve.py takes them too)."""
    parser.add_argument("--engine", type=path_arg, required=True, help="the .engine file (its manifest X.engine.json beside it)")
    parser.add_argument("--onnx", type=path_arg, help="the engine's source ONNX, if not where its manifest says")
    parser.add_argument("--extractor-engine", type=path_arg,
                        help="the learned extractor's engine, if the matcher engine's manifest names none (trtexec) or "
                             "to use another")
    parser.add_argument("--extractor-onnx", type=path_arg,
                        help="the extractor engine's source ONNX, if not where its manifest says (or, without an "
                             "extractor engine, the extractor ONNX to run on ONNX Runtime)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: TensorRT where a CUDA GPU, TensorRT and pycuda exist, else OpenVINO (CPU), "
                             "else ONNX Runtime")
    parser.add_argument("--precision", type=lambda text: canonical_precision(text, SERVE_PRECISION_ALIASES),
                        choices=PRECISIONS, default="auto",
                        help="OpenVINO: f32 (or fp32, build_engine.py's spelling), or mixed bf16; auto: bf16 where "
                             "the CPU has AMX or AVX512-BF16 and the bf16 accuracy gate passed for the model, else f32")
    parser.add_argument("--threshold", type=threshold_arg, default=DEFAULT_THRESHOLD,
                        help="match score threshold, 0 <= threshold < 1 (scores lie in (0, 1])")
    parser.add_argument("--max-keypoints", type=max_keypoints_arg,
                        help=f"keypoints per image, {MIN_KEYPOINTS} to {MAX_KEYPOINTS} (default: what the engine holds; "
                             "SIFT at most 4096, a learned extractor at most its K)")
    parser.add_argument("--resize", type=resize_arg, default=DEFAULT_RESIZE,
                        help=f"long side of the image the extractor runs on, {MIN_RESIZE} to {MAX_RESIZE} pixels; 0 for "
                             "the original size")
    parser.add_argument("--max-pixels", type=max_pixels_arg, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse larger images, read from the file header before decoding (default {DEFAULT_MAX_PIXELS})")
    parser.add_argument("--extractor", choices=sorted(EXTRACTORS), help="feature type, for engines that do not record it")
    parser.add_argument("--cuda-graphs", action="store_true", help="TensorRT: replay CUDA graphs per shape")
    parser.add_argument("--depth-confidence", type=confidence_arg, default=None,
                        help="adaptive depth: stop once this share of points is confident (default 0.95 where the "
                             "stages are exported and the weights trained; -1: every layer); docs/adaptive.md")
    parser.add_argument("--width-confidence", type=confidence_arg, default=None,
                        help="adaptive width: prune points whose matchability is at most 1 - this (default 0.99; -1: none)")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", type=path_arg, help="two images to match (or use --pairs)")
    add_matcher_arguments(parser)
    parser.add_argument("--output", type=path_arg, help="matches of the pair: .json or .npz")
    parser.add_argument("--viz", type=path_arg,
                        help="picture of the matches, in the format its suffix names (.png, .jpg, .webp, ...)")
    parser.add_argument("--pairs", type=path_arg,
                        help="text file of image pairs, one 'image0 image1' per line; or 'exhaustive' (every pair) or "
                             "'sequential[:K]' (each image with the next K) of the images in --image-dir")
    parser.add_argument("--output-dir", type=path_arg, help="with --pairs: folder for one matches file per pair")
    parser.add_argument("--format", choices=("json", "npz", "hloc"), default="json",
                        help="with --pairs: one json/npz file per pair, or hloc's features.h5 and matches.h5")
    parser.add_argument("--image-dir", type=path_arg,
                        help="with --pairs: folder the pairs file's image paths are relative to, or the images to pair")
    parser.add_argument("--overwrite", action="store_true", help="with --pairs: redo pairs whose output exists")
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="with --pairs: match on Ray actors; a local Ray instance, or the cluster at ADDRESS")
    parser.add_argument("--workers", type=int, help="with --ray: matcher actors (default: one per GPU, else per node)")
    parser.add_argument("--colmap-db", type=path_arg, help="with --pairs: also write a COLMAP database of the matches")
    args = parser.parse_args(argv)
    folder = next((path for path in args.images if path.is_dir()), None)
    if folder is not None:
        parser.error(f"{folder} is a folder: to match its images, give --pairs exhaustive (every pair) or "
                     f"--pairs sequential[:K] (each with the next K) with --image-dir {folder} --output-dir DIR")
    if args.pairs is None:
        if len(args.images) != 2:
            parser.error("give two images, or --pairs FILE --output-dir DIR")
        if args.output_dir is not None:
            parser.error("--output-dir goes with --pairs; for one pair use --output")
    else:
        if args.images:
            parser.error("give either two images or --pairs, not both")
        if args.output_dir is None:
            parser.error("--pairs needs --output-dir")
        if args.output is not None or args.viz is not None:
            parser.error("--output and --viz are for one pair; with --pairs use --output-dir")
    try:
        generated = args.pairs is not None and pairing(args.pairs)
    except UserError as error:
        parser.error(f"--pairs {error}")
    if generated and args.image_dir is None:
        parser.error(f"--pairs {args.pairs} pairs the images of a folder: give it with --image-dir FOLDER")
    pairs_only = [flag for flag, value in (("--image-dir", args.image_dir), ("--overwrite", args.overwrite),
                  ("--ray", args.ray), ("--workers", args.workers), ("--colmap-db", args.colmap_db)) if value]
    if args.pairs is None and pairs_only:
        parser.error(f"{pairs_only[0]} goes with --pairs")
    if args.workers is not None and (args.ray is None or args.workers < 1):
        parser.error("--workers N (N >= 1) goes with --ray")
    return args


def matcher_options(args, mode: Optional[str] = None) -> dict:
    """The arguments of ``Matcher.from_engine`` (Ray workers and Serve replicas build their own matcher from
    them); ``mode``: OpenVINO's, by default "throughput" for pairs jobs and "latency" for one pair."""
    return dict(
        engine=args.engine, backend=args.backend, onnx=args.onnx, threshold=args.threshold,
        max_keypoints=args.max_keypoints, extractor=args.extractor, resize=args.resize or None,
        cuda_graphs=args.cuda_graphs, extractor_engine=args.extractor_engine, extractor_onnx=args.extractor_onnx,
        precision=args.precision, mode=mode or ("throughput" if args.pairs is not None else "latency"),
        depth_confidence=args.depth_confidence, width_confidence=args.width_confidence,
    )


def make_matcher(args) -> Matcher:
    return Matcher.from_engine(**matcher_options(args))


def format_timings(timings: dict) -> str:
    """"extract 80.1 ms (compute 70.2 ms), match 40.3 ms (h2d 0.1, compute 40.0, d2h 0.1 ms)": each stage, and
    the backend's parts of it (a learned extractor's as ``extract_<part>``)."""
    parts = []
    for stage, prefix in (("extract", "extract_"), ("match", "")):
        if stage not in timings:
            continue
        inner = [f"{k} {timings[prefix + k] * 1e3:.1f}" for k in ("h2d", "compute", "d2h") if prefix + k in timings]
        parts.append(f"{stage} {timings[stage] * 1e3:.1f} ms" + (f" ({', '.join(inner)} ms)" if inner else ""))
    return ", ".join(parts)


def match_one(args) -> list[Path]:
    """Match the two images; write --output and --viz; return the paths written."""
    from trt.jobs.job import prepare_pair, run_pair
    from trt.runtime.outputs import backend_label, format_device_memory, weights_label

    check_distinct_paths(
        {"--output": args.output, "--viz": args.viz},
        {"image0": args.images[0], "image1": args.images[1], "--engine": args.engine,
         "the engine's manifest": manifest_path(args.engine), "--onnx": args.onnx,
         "--extractor-engine": args.extractor_engine, "--extractor-onnx": args.extractor_onnx,
         "the extractor engine's manifest": args.extractor_engine and manifest_path(args.extractor_engine)},
    )
    with CreatedPaths() as created:  # a failure leaves no folder made for --output or --viz
        job = prepare_pair(*args.images, output=created.track(args.output) if args.output else None,
                           viz=created.track(args.viz) if args.viz else None)
        with make_matcher(args) as matcher:
            result, written = run_pair(matcher, job)
    for index, (path, keypoints) in enumerate(zip(args.images, (result.keypoints0, result.keypoints1))):
        print(f"image{index} {path}: {len(keypoints)} keypoints")
    print(f"matches: {len(result)} (threshold {args.threshold:g}, {backend_label(result.engine)}, "
          f"{weights_label(result.engine)})")
    print(f"layers: {result.layers}" + (f", pruned {result.pruned0} + {result.pruned1} keypoints"
                                        if result.pruned0 or result.pruned1 else ""))
    print(f"time: {format_timings(result.timings)}")
    memory = format_device_memory(result.engine)
    if memory:
        print(memory)
    for path in written:
        print(f"wrote {path}")
    return written


def match_pairs(args):
    """Match every pair of --pairs into --output-dir; print the summary; return the job's report."""
    from trt.jobs.job import run_pairs_file

    report = run_pairs_file(
        args.pairs, args.output_dir, matcher_options(args), fmt=args.format, image_dir=args.image_dir,
        overwrite=args.overwrite, ray=args.ray, workers=args.workers, colmap_db=args.colmap_db,
    )
    for line in report.lines():
        print(line)
    report.raise_for_failures()
    return report


def main(argv=None):
    args = parse_args(argv)
    with pixel_limit(args.max_pixels):
        return match_pairs(args) if args.pairs is not None else match_one(args)


if __name__ == "__main__":
    run(main)
