#!/usr/bin/env python3
"""A bounded soak of trt_serve.py on 127.0.0.1: concurrent clients, bad requests mixed in, one matcher replica
killed mid-run (ray.kill). Every good request must come back with the matches of a fresh in-process matcher (or a
retryable 503, then retried), every bad one with its 4xx; memory and descriptors of the server's processes are
printed at start and end, and the server must be healthy at the end. Exit status 1 when any of that fails.
The work is in trt/evaluation/serve_load.py.

    python bench/serve_soak.py --engine weights/sift_lightglue.engine --requests 2000 --seconds 600
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trt.cli import run  # noqa: E402
from trt.datasets import shared_data_dir  # noqa: E402
from trt.evaluation import serve_load  # noqa: E402
from trt.runtime.matcher import Matcher  # noqa: E402
from trt.serve.server import MatchServer, ServerOptions  # noqa: E402
from trt.validation import path_arg, positive_int_arg  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", type=path_arg, required=True, help="a SIFT matcher engine (its ONNX beside it)")
    parser.add_argument("--requests", type=positive_int_arg(1_000_000), default=400, help="requests in all, at most")
    parser.add_argument("--seconds", type=float, default=300.0, help="stop sending after this many seconds")
    parser.add_argument("--clients", type=positive_int_arg(1024), default=8, help="concurrent HTTP clients")
    parser.add_argument("--replicas", type=positive_int_arg(64), default=2, help="matcher replicas (one is killed)")
    parser.add_argument("--max-keypoints", type=positive_int_arg(4096), default=512, help="SIFT keypoints per image")
    parser.add_argument("--no-kill", action="store_true", help="kill no replica")
    parser.add_argument("--data-dir", type=path_arg, default=shared_data_dir(), help="folder of the test photos")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    options = {"engine": args.engine, "max_num_keypoints": args.max_keypoints, "mode": "throughput"}
    pairs = serve_load.default_pairs(args.data_dir)
    server_options = ServerOptions(matcher_options=options, port=serve_load.free_port(), replicas=args.replicas)
    with MatchServer(server_options) as server:
        with Matcher.from_engine(**options, threads=server.plan.threads) as matcher:
            expected, features = serve_load.expected_records(matcher, pairs)
        good = serve_load.good_calls(pairs, features, {"max_keypoints": args.max_keypoints})
        bad = serve_load.bad_calls(pairs[0][0].read_bytes(), int(server_options.max_body_mb * (1 << 20)))
        report = serve_load.soak(server.url, good, expected, bad, args.requests, args.clients, args.seconds,
                                 kill_at=None if args.no_kill else 0.3)
    print(f"machine: {serve_load.describe_machine()}; {server.plan.describe()}")
    for line in report.lines():
        print(line)
    if not report.passed:
        sys.exit(1)


if __name__ == "__main__":
    run(main)
