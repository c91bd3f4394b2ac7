#!/usr/bin/env python
"""Serve a LightGlue engine over HTTP on Ray Serve: requests batched by profile, replicas per GPU or CPU share.

    python trt_serve.py --engine weights/sift_lightglue.engine                  # http://127.0.0.1:8000
    python trt_serve.py --engine E --host 0.0.0.0 --port 8000 --replicas 2 --max-batch-size 8 --batch-wait-ms 5
    python trt_serve.py --engine E --ray HEAD_IP:6379                           # join a Ray cluster

    curl -F image0=@a.jpg -F image1=@b.jpg http://127.0.0.1:8000/match         # the record trt_infer.py writes

Routes: POST /match (multipart image0, image1; optional threshold, max_keypoints, resize), POST
/match_features (JSON or npz features), GET /healthz, GET /info. The engine runs as trt_infer.py runs it
(the same backend choice and notice; the matcher flags below are its flags, the server's defaults).
SIGTERM or SIGINT stops it: Serve shut down, the local Ray instance stopped. See docs/online-serving.md and
trt/serve/.
"""

import argparse

from trt.cli import run
from trt.serve.server import (
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BODY_MB,
    DEFAULT_PORT,
    MatchServer,
    ServerOptions,
)
from trt.validation import positive_int_arg
from trt_infer import add_matcher_arguments, matcher_options


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds, not {text!r}") from None
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"must be from 0 to 10000 ms, not {text}")
    return value


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected megabytes, not {text!r}") from None
    if not 0 < value <= 4096:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 4096 MB, not {text}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_matcher_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=positive_int_arg(65535), default=DEFAULT_PORT, help="HTTP port")
    parser.add_argument("--replicas", type=positive_int_arg(4096),
                        help="matcher replicas (default: one per GPU; on CPUs 1, with threads = cores / replicas)")
    parser.add_argument("--ray", metavar="ADDRESS", help="join the Ray cluster at ADDRESS (HOST:PORT, or auto) "
                                                         "instead of starting a local instance")
    parser.add_argument("--max-batch-size", type=positive_int_arg(256), default=DEFAULT_MAX_BATCH_SIZE,
                        help="requests one replica matches together at most (then split by profile)")
    parser.add_argument("--batch-wait-ms", type=_milliseconds, default=DEFAULT_BATCH_WAIT_MS,
                        help="how long the first request of a batch waits for others")
    parser.add_argument("--max-body-mb", type=_megabytes, default=DEFAULT_MAX_BODY_MB,
                        help="larger request bodies are refused (413)")
    parser.add_argument("--metrics-port", type=positive_int_arg(65535),
                        help="export Prometheus metrics (Serve's and the matcher's) on this port (local Ray only; on "
                             "a cluster, the port its nodes were started with)")
    args = parser.parse_args(argv)
    if args.ray and args.metrics_port:
        parser.error("--metrics-port sets up a local Ray instance; a cluster exports metrics on the port its nodes "
                     "were started with (ray start --metrics-export-port)")
    return args


def server_options(args) -> ServerOptions:
    return ServerOptions(
        matcher_options=matcher_options(args, mode="throughput"), host=args.host, port=args.port,
        replicas=args.replicas, ray_address=args.ray, max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms, max_body_mb=args.max_body_mb, max_pixels=args.max_pixels,
        metrics_port=args.metrics_port,
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    with MatchServer(server_options(args)) as server:
        for line in server.describe():
            print(line, flush=True)
        server.wait()
        print("stopping", flush=True)


if __name__ == "__main__":
    run(main)
