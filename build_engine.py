#!/usr/bin/env python3
"""Build a TensorRT engine (and its manifest X.engine.json) from an exported LightGlue ONNX.

    python build_engine.py --onnx weights/sift_lightglue.onnx                 # profiles/sift.toml, tensorrt-rtx or tensorrt
    python build_engine.py --onnx m.onnx --builder tensorrt-rtx --target-sm 8.6,8.9,12.0  # one engine, three GPU families
    python build_engine.py --onnx m.onnx --print-trtexec                      # the equivalent trtexec and tensorrt_rtx commands
    python build_engine.py --onnx weights/aliked-n16.onnx --output weights/aliked_lightglue.extractor.engine
    python build_engine.py --onnx weights/aliked_lightglue.onnx --extractor-engine weights/aliked_lightglue.extractor.engine

A matcher whose stages were exported (export.py --stages: X.stages/ beside X.onnx) also gets an engine per
stage, with the same profiles, in X.engine.stages/ (trt/engine/stage_engines.py): TensorRT then serves
adaptive depth and width (docs/adaptive.md).

The work is done in trt/engine/ (build_engine, trtexec_command); this file only reads the flags.
"""

import argparse
import sys
from dataclasses import asdict, fields
from pathlib import Path

from trt.cli import ArgumentParser, run
from trt.errors import UserError
from trt.precision import BUILD_PRECISION_ALIASES, canonical_precision
from trt.engine.backends import BUILDERS, PRECISIONS
from trt.engine.builder import DEFAULTS, MAX_WORKSPACE_MIB, OPT_LEVELS, BuildOptions, build_engine
from trt.engine.stage_engines import build_stage_engines
from trt.engine.trtexec import format_command, stand_in_onnx, tensorrt_rtx_command, trtexec_command
from trt.validation import path_arg, positive_int_arg


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=path_arg, required=True,
                        help="exported matcher or extractor (or any ONNX with fixed input shapes)")
    parser.add_argument("--profiles", type=path_arg, default=None,
                        help="profile file (default: profiles/<extractor>.toml for a matcher, "
                             "profiles/extractors/<extractor>.toml for an extractor, the extractor read from the ONNX "
                             "metadata lightglue.extractor; an ONNX with fixed input shapes needs none)")
    parser.add_argument("--extractor-engine", type=path_arg, default=None, metavar="ENGINE",
                        help="matcher only: the extractor engine serving it (built first); its descriptor size and "
                             "feature type are checked, and the matcher's manifest names it")
    parser.add_argument("--output", type=path_arg, default=None, help="engine path (default: the ONNX path with .engine)")
    parser.add_argument("--precision", type=lambda text: canonical_precision(text, BUILD_PRECISION_ALIASES),
                        choices=PRECISIONS, default=DEFAULTS.precision,
                        help="fp32 or fp16 (mixed: FP32-critical layers stay FP32); f32 and f16, trt_infer.py's "
                             "spelling, are taken too")
    parser.add_argument("--builder", choices=BUILDERS, default=DEFAULTS.builder,
                        help="auto: full TensorRT where installed, else tensorrt-rtx")
    parser.add_argument("--target-sm", default=DEFAULTS.target_sm, metavar="X.Y[,X.Y...]",
                        help="tensorrt-rtx: compute capabilities to build for, e.g. 8.6,8.9,12.0 (default: the "
                             "local GPU, else every RTX GPU from Ampere on); full TensorRT builds for the local GPU")
    parser.add_argument("--workspace", dest="workspace_mib", type=positive_int_arg(MAX_WORKSPACE_MIB),
                        default=DEFAULTS.workspace_mib, metavar="MIB",
                        help="builder workspace limit in MiB (default: TensorRT's)")
    parser.add_argument("--timing-cache", type=path_arg, default=DEFAULTS.timing_cache, metavar="FILE",
                        help="timing cache: read if it exists, updated after the build")
    parser.add_argument("--opt-level", type=int, choices=OPT_LEVELS, default=DEFAULTS.opt_level, metavar="0-5",
                        help="builder optimization level (default: TensorRT's, 3)")
    parser.add_argument("--print-trtexec", action="store_true",
                        help="print the equivalent trtexec command (full TensorRT) and tensorrt_rtx command (what "
                             "this script builds with tensorrt-rtx), and exit without building")
    parser.add_argument("--stand-in", metavar="ROLE:NAME",
                        help="with --print-trtexec, for an --onnx not exported yet: read the graph from a stand-in "
                             "with seeded random weights (same inputs and layers), matcher:<feature type> or "
                             "extractor:<network>, so that the commands need no weights (make trtexec passes it)")
    parser.add_argument("--no-gate", dest="gate", action="store_false", default=DEFAULTS.gate,
                        help="fp16: build even if the FP16 model's matches differ from FP32's (IoU < 0.95)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=DEFAULTS.progress,
                        help="no progress (bars on a terminal, one line per build phase otherwise)")
    return parser.parse_args(argv)


def main(argv=None) -> Path | None:
    args = parse_args(argv)
    options = BuildOptions(**{f.name: getattr(args, f.name) for f in fields(BuildOptions)})
    if args.print_trtexec:
        with stand_in_onnx(args.onnx, args.stand_in) as graph:
            graph = None if graph == args.onnx else graph
            full = trtexec_command(args.onnx, args.profiles, args.output, options, graph)
            rtx = tensorrt_rtx_command(args.onnx, args.profiles, args.output, options, graph)
        print("# full TensorRT (builds for the GPU it runs on):")
        print(format_command(full))
        print("# tensorrt-rtx, as build_engine.py (make engine) builds"
              + (" (from the mixed-FP16 ONNX it writes beside the engine)" if options.precision == "fp16" else "") + ":")
        print(format_command(rtx))
        return None
    if args.stand_in is not None:
        raise UserError("--stand-in goes with --print-trtexec")
    path = build_engine(args.onnx, args.profiles, args.output, **asdict(options), extractor_engine=args.extractor_engine)
    stages = build_stage_engines(args.onnx, args.profiles, path, **asdict(options))
    if stages is not None:
        print(f"the engines of the stages (adaptive depth and width): {stages.parent}", file=sys.stderr)
    print(path)
    return path


if __name__ == "__main__":
    run(main)
