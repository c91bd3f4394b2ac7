#!/usr/bin/env python3
"""Throughput and p50 / p99 latency of trt_serve.py's POST /match with N concurrent clients on 127.0.0.1, beside
an in-process Matcher loop on the same pairs in the same run, and the batching factor. The work is in
trt/evaluation/serve_load.py.

    python bench/serve_bench.py --engine weights/sift_lightglue.engine --clients 16 --requests 64
    python bench/serve_bench.py --engine E --max-keypoints 2048 --replicas 1 --output out/serve-bench.json
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trt.cli import run  # noqa: E402
from trt.datasets import shared_data_dir  # noqa: E402
from trt.evaluation import serve_load  # noqa: E402
from trt.fileio import write_text_atomic  # noqa: E402
from trt.runtime.matcher import Matcher  # noqa: E402
from trt.serve.server import MatchServer, ServerOptions  # noqa: E402
from trt.validation import path_arg, positive_int_arg  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", type=path_arg, required=True, help="a SIFT matcher engine (its ONNX beside it)")
    parser.add_argument("--clients", type=positive_int_arg(4096), default=16, help="concurrent HTTP clients")
    parser.add_argument("--requests", type=positive_int_arg(100_000), default=64, help="requests (pairs) in all")
    parser.add_argument("--max-keypoints", type=positive_int_arg(4096), default=2048, help="SIFT keypoints per image")
    parser.add_argument("--replicas", type=positive_int_arg(64), help="matcher replicas (default: trt_serve.py's)")
    parser.add_argument("--max-batch-size", type=positive_int_arg(256), default=8)
    parser.add_argument("--data-dir", type=path_arg, default=shared_data_dir(), help="folder of the test photos")
    parser.add_argument("--output", type=path_arg, help="write the figures as JSON here too")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    # Ray runs its workers at nice 15 by default; on a machine shared with other work that would starve the
    # replicas against the in-process loop (nice 0) and measure the neighbours, not Serve.
    os.environ.setdefault("RAY_worker_niceness", "0")
    options = {"engine": args.engine, "max_keypoints": args.max_keypoints, "mode": "throughput"}
    pairs = serve_load.default_pairs(args.data_dir)
    server_options = ServerOptions(matcher_options=options, port=serve_load.free_port(), replicas=args.replicas,
                                   max_batch_size=args.max_batch_size)
    with MatchServer(server_options) as server:
        with Matcher.from_engine(**options, threads=server.plan.threads) as matcher:
            figures = serve_load.bench(server.url, matcher, pairs, args.requests, args.clients,
                                       {"max_keypoints": args.max_keypoints})
        figures.update(machine=serve_load.describe_machine(), replicas=server.plan.describe(),
                       engine=str(args.engine), max_keypoints=args.max_keypoints, max_batch_size=args.max_batch_size)
    local, served = figures["in_process"], figures["served"]
    print(f"machine: {figures['machine']} (shared with other work: compare the two rows, not runs)")
    print(f"in-process Matcher loop: {local['pairs_per_s']} pairs/s, p50 {local['p50_ms']} ms, p99 {local['p99_ms']} ms")
    print(f"served, {args.clients} clients:  {served['pairs_per_s']} pairs/s, p50 {served['p50_ms']} ms, "
          f"p99 {served['p99_ms']} ms ({figures['replicas']}; failed: {figures['failed'] or 'none'})")
    print(f"served / in-process throughput: {figures['served_over_in_process']}; requests per Serve batch "
          f"{figures['requests_per_serve_batch']}, pairs per engine call {figures['pairs_per_engine_call']}")
    if args.output:
        write_text_atomic(args.output, json.dumps(figures, indent=1) + "\n")
        print(f"wrote {args.output}")
    return figures


if __name__ == "__main__":
    run(main)
