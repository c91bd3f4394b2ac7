#!/usr/bin/env python
"""Match images with a LightGlue engine: TensorRT on a GPU, else the engine's ONNX on OpenVINO or ONNX Runtime.

    python trt_infer.py --engine weights/sift.engine img0.jpg img1.jpg --output matches.json --viz matches.png
    python trt_infer.py --engine weights/sift.engine --pairs pairs.txt --output-dir matches/

A pairs file has one "image0 image1" per line (paths relative to the pairs file's folder; blank lines
and lines starting with # are skipped); each pair's matches go to OUTPUT_DIR/<image0>__<image1>.<format>.
Outputs are written atomically: a failed run leaves no partial file. See trt/runtime/outputs.py for
the file layout and trt/runtime/matcher.py for the Python API.
"""

import argparse
from pathlib import Path

from trt.cli import run
from trt.contract import DEFAULT_THRESHOLD
from trt.extractors import EXTRACTORS
from trt.runtime.matcher import BACKENDS, DEFAULT_RESIZE, Matcher
from trt.runtime.openvino_session import PRECISIONS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", type=Path, help="two images to match (or use --pairs)")
    parser.add_argument("--engine", type=Path, required=True, help="the .engine file (its manifest X.engine.json beside it)")
    parser.add_argument("--onnx", type=Path, help="the engine's source ONNX, if not where its manifest says")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: TensorRT where a CUDA GPU, TensorRT and pycuda exist, else OpenVINO (CPU), "
                             "else ONNX Runtime")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="OpenVINO: f32, or mixed bf16; auto: bf16 where the CPU has AMX or AVX512-BF16 and "
                             "the bf16 accuracy gate passed for the model, else f32")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="match score threshold")
    parser.add_argument("--max-keypoints", type=int, help="keypoints per image (default: 4096, or what the engine holds)")
    parser.add_argument("--resize", type=int, default=DEFAULT_RESIZE,
                        help="long side of the image SIFT runs on, in pixels; 0 for the original size")
    parser.add_argument("--extractor", choices=sorted(EXTRACTORS), help="feature type, for engines that do not record it")
    parser.add_argument("--cuda-graphs", action="store_true", help="TensorRT: replay CUDA graphs per shape")
    parser.add_argument("--output", type=Path, help="matches of the pair: .json or .npz")
    parser.add_argument("--viz", type=Path, help="picture of the matches: .png")
    parser.add_argument("--pairs", type=Path, help="text file of image pairs, one 'image0 image1' per line")
    parser.add_argument("--output-dir", type=Path, help="with --pairs: folder for one matches file per pair")
    parser.add_argument("--format", choices=("json", "npz"), default="json", help="with --pairs: file format")
    args = parser.parse_args(argv)
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
    if args.max_keypoints is not None and args.max_keypoints < 2:
        parser.error("--max-keypoints must be at least 2")
    if args.resize < 0:
        parser.error("--resize must be positive, or 0 for the original size")
    return args


def make_matcher(args) -> Matcher:
    return Matcher.from_engine(
        args.engine, backend=args.backend, onnx=args.onnx, threshold=args.threshold,
        max_num_keypoints=args.max_keypoints, extractor=args.extractor, resize=args.resize or None,
        cuda_graphs=args.cuda_graphs, precision=args.precision,
        mode="throughput" if args.pairs is not None else "latency",
    )


def backend_label(summary: dict) -> str:
    """"openvino bf16", "onnxruntime", ...: the backend, and the precision where the backend chose one."""
    return " ".join(filter(None, (summary["backend"], summary.get("runtime_precision"))))


def format_timings(timings: dict) -> str:
    stages = [f"{k} {timings[k] * 1e3:.1f} ms" for k in ("extract", "match") if k in timings]
    inner = [f"{k} {timings[k] * 1e3:.1f}" for k in ("h2d", "compute", "d2h") if k in timings]
    return ", ".join(stages) + (f" ({', '.join(inner)} ms)" if inner else "")


def match_one(args) -> list[Path]:
    """Match the two images; write --output and --viz; return the paths written."""
    from trt.runtime.jobs import prepare_pair, run_pair

    job = prepare_pair(*args.images, output=args.output, viz=args.viz)
    with make_matcher(args) as matcher:
        result, written = run_pair(matcher, job)
    for index, (path, keypoints) in enumerate(zip(args.images, (result.keypoints0, result.keypoints1))):
        print(f"image{index} {path}: {len(keypoints)} keypoints")
    print(f"matches: {len(result)} (threshold {args.threshold:g}, {backend_label(result.engine)})")
    print(f"time: {format_timings(result.timings)}")
    for path in written:
        print(f"wrote {path}")
    return written


def match_pairs(args) -> list[Path]:
    """Match every pair of --pairs into --output-dir; return the paths written."""
    from trt.runtime.jobs import match_pairs_file, read_pairs

    read_pairs(args.pairs)  # a bad pairs file is reported before the engine is loaded
    with make_matcher(args) as matcher:
        run = match_pairs_file(matcher, args.pairs, args.output_dir, args.format)
        backend = backend_label(matcher.summary)
    pairs = len(run.written)
    print(f"{pairs} pairs, {run.matches / pairs:.1f} matches per pair ({backend})")
    print(f"time: {format_timings(run.timings)} in total")
    print(f"wrote {pairs} files to {args.output_dir}")
    return run.written


def main(argv=None) -> list[Path]:
    args = parse_args(argv)
    return match_pairs(args) if args.pairs is not None else match_one(args)


if __name__ == "__main__":
    run(main)
