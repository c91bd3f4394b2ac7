#!/usr/bin/env python3
"""Engine build time against the number of optimization profiles, for the SIFT matcher.

    python bench/build_bench.py                        # tensorrt-rtx, its default targets, 1, 2 and 4 profiles
    python bench/build_bench.py --counts 1 4 --onnx weights/sift_lightglue.onnx

Exports the matcher with seeded random weights (unless --onnx is given), then builds it with the first
1, 2, 4 buckets of profiles/sift.toml and prints one line per build: profiles, seconds, engine MiB.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trt.cli import run  # noqa: E402
from trt.engine.backends import get_backend  # noqa: E402
from trt.engine.builder import ConfigFromProfiles, EngineBytesFromNetwork, NetworkFromOnnxPath  # noqa: E402
from trt.engine.profiles import PROFILES_DIR, GraphSignature, load_profiles  # noqa: E402


def bench(onnx: Path, counts: list[int], builder: str, target_sm: str | None) -> list[tuple[int, float, int]]:
    backend = get_backend(builder)
    target = backend.target(target_sm)
    profiles = load_profiles(GraphSignature.from_onnx(onnx), PROFILES_DIR / "sift.toml")
    results = []
    for count in counts:
        started = time.perf_counter()
        network = NetworkFromOnnxPath(onnx, backend)
        engine = EngineBytesFromNetwork(network, ConfigFromProfiles(profiles[:count], target=target, progress=False))()
        results.append((count, time.perf_counter() - started, len(engine)))
        print(f"{count} profile(s): {results[-1][1]:7.1f} s  {len(engine) / 2**20:7.1f} MiB", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, default=None, help="SIFT matcher ONNX (default: export one, random weights)")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4], help="profile counts to build with")
    parser.add_argument("--builder", default="tensorrt-rtx", choices=("auto", "tensorrt", "tensorrt-rtx"))
    parser.add_argument("--target-sm", default=None, help="tensorrt-rtx compute capabilities, e.g. 8.9 or 8.6,8.9 (default: the builder's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        onnx = args.onnx
        if onnx is None:
            from trt.onnx.export import export_matcher

            onnx = export_matcher(extractor="sift", random_seed=0, dynamic=True, output=Path(scratch) / "sift.onnx")
        print(f"{get_backend(args.builder).name}, {onnx}")
        bench(onnx, args.counts, args.builder, args.target_sm)


if __name__ == "__main__":
    run(main)
