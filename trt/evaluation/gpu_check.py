"""The one-command GPU check (``scripts/gpu_check.sh``): build an engine for this GPU, serve it, compare its
matches with ONNX Runtime's, and time every profile with and without CUDA graphs; one JSON report.

    python -m trt.evaluation.gpu_check --output out/gpu_check.json

The report says what ran: the GPU, the TensorRT runtime and its module file, and whether that runtime
is the emulated one of ``tests/emulator`` (``"emulated": true``), whose latencies are those of ONNX
Runtime on the CPU and say nothing of a GPU. ``could_not_run`` lists, in plain words, every part that did not
run and why: a missing runtime or package, a GPU the installed builder cannot target (tensorrt-rtx has no
SM 9.0: H100 and H200 need full TensorRT, as in NVIDIA's TensorRT container), a failed step, and each test of
``tests/gpu`` that was skipped or failed (read from the JUnit file ``scripts/gpu_check.sh`` has pytest write).

Latencies are measured with tensorrt-rtx's EAGER kernel specialisation (``eager_kernels``): every timed run
uses the shape's specialised kernels, never the fallback kernels LAZY runs while it compiles; full TensorRT
chooses its kernels at build time (``kernel_specialization`` in the report says which applied).
"""

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Optional

import numpy as np

from trt.cli import run
from trt.fileio import write_text_atomic

PROFILES = Path(__file__).resolve().parents[2] / "profiles" / "sift.toml"
PAIR = ("images/hpatches/v_graffiti/1.ppm", "images/hpatches/v_graffiti/2.ppm")


def environment() -> dict:
    from trt.engine.backends import BACKENDS
    from trt.gpu import cuda_devices
    from trt.runtime.tensorrt_engine import tensorrt_unavailable

    runtimes = {}
    for backend in BACKENDS.values():
        spec = importlib.util.find_spec(backend.module_name)
        runtimes[backend.name] = spec.origin if spec else None
    return {
        "python": platform.python_version(),
        "gpus": cuda_devices(),
        "runtimes": runtimes,
        "emulated": importlib.util.find_spec("_trt_emulator") is not None,
        "tensorrt_backend": tensorrt_unavailable(None) or "available",
    }


def missing_pieces(environment_: dict) -> list[str]:
    """What keeps parts of the check from running here, in plain words (empty when nothing does)."""
    from trt.engine.backends import TensorRTRTX

    found = []
    gpus = environment_["gpus"]
    if environment_.get("emulated"):
        found.append("the GPU, TensorRT, pycuda and cuda-python are the emulated ones of tests/emulator: nothing ran "
                     "on a GPU, and the latencies are ONNX Runtime's on the CPU")
    if not gpus:
        found.append("no CUDA GPU was found: nothing ran on a GPU")
    if environment_["tensorrt_backend"] != "available":
        found.append(f"the TensorRT backend cannot run here: {environment_['tensorrt_backend']}")
    rtx_only = environment_["runtimes"].get("tensorrt") is None and environment_["runtimes"].get("tensorrt-rtx")
    if gpus and rtx_only and TensorRTRTX.available() and gpus[0] not in TensorRTRTX().targets():
        found.append(f"tensorrt-rtx cannot target this GPU (compute capability {gpus[0]}; it builds for "
                     f"{', '.join(TensorRTRTX().targets())}) and full TensorRT is not installed: run the check in "
                     "NVIDIA's TensorRT container (nvcr.io/nvidia/tensorrt) with pycuda and cuda-python")
    return found


def pytest_outcomes(junit: Optional[Path]) -> dict:
    """Passed, failed and skipped tests of the tests/gpu run (with the reasons), from its JUnit XML file."""
    if junit is None or not Path(junit).is_file():
        return {}
    outcomes = {"passed": [], "failed": {}, "skipped": {}}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        name = case.get("name")
        problem = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        if problem is None:
            outcomes["passed"].append(name)
        else:
            lines = (problem.get("message") or "").splitlines()
            outcomes["skipped" if problem.tag == "skipped" else "failed"][name] = lines[0][:300] if lines else ""
    return outcomes


def match_set_iou(a, b) -> float:
    sets = [{tuple(m) for m in matches.tolist()} for matches in (a, b)]
    return len(sets[0] & sets[1]) / max(1, len(sets[0] | sets[1]))


def profile_latency(engine: Path, cuda_graphs: bool, iterations: int) -> dict:
    """Median and p90 milliseconds of one request at each profile's opt shape, and device memory per profile
    (tensorrt-rtx with EAGER kernel specialisation: see the module docstring)."""
    from trt.contract import BATCH, KEYPOINTS0, KEYPOINTS1
    from trt.features.base import Features, pack_pairs
    from trt.runtime.tensorrt_session import TensorRTSession

    rng = np.random.default_rng(0)

    def features(n: int) -> Features:
        desc = rng.normal(size=(n, 128)).astype(np.float32)
        desc /= np.linalg.norm(desc, axis=1, keepdims=True)
        return Features((rng.uniform(0, 1, (n, 2)) * [640, 480]).astype(np.float32), desc, (640.0, 480.0),
                        rng.uniform(0, 1, n).astype(np.float32), rng.uniform(1, 20, n).astype(np.float32),
                        rng.uniform(0, 6.28, n).astype(np.float32))

    results = {}
    with TensorRTSession(engine, cuda_graphs=cuda_graphs, eager_kernels=True) as session:
        for profile in session.profiles:
            dims = profile.opt_dims
            batch, n0, n1 = dims[BATCH], dims[KEYPOINTS0], dims[KEYPOINTS1]
            feeds = pack_pairs([(features(n0), features(n1)) for _ in range(batch)], n0, n1, 0.1)
            for _ in range(3):  # warm-up: graph capture, the first-run set-up (the kernels are compiled eagerly)
                session.infer(feeds)
            times = []
            for _ in range(iterations):
                start = time.perf_counter()
                session.infer(feeds)
                times.append((time.perf_counter() - start) * 1e3)
            results[profile.name] = {"shape": [batch, n0, n1], "p50_ms": round(float(np.median(times)), 3),
                                     "p90_ms": round(float(np.percentile(times, 90)), 3),
                                     "device_memory_bytes": session.device_memory[profile.name]}
    return results


def gpu_check(output: Path, data_dir: Path, onnx: Optional[Path] = None, iterations: int = 20,
              pytest_status: Optional[int] = None, junit: Optional[Path] = None) -> dict:
    """Run the check; write and return the report (a failed step is recorded, and the rest still runs)."""
    from trt.engine.builder import build_engine
    from trt.engine.manifest import load_manifest
    from trt.runtime.matcher import Matcher

    report = {"environment": environment(), "tests_gpu_exit_status": pytest_status, "tests_gpu": pytest_outcomes(junit),
              "steps": {}, "could_not_run": []}
    report["could_not_run"] += missing_pieces(report["environment"])
    for name, why in {**report["tests_gpu"].get("skipped", {}), **report["tests_gpu"].get("failed", {})}.items():
        report["could_not_run"].append(f"tests/gpu {name}: {why or 'failed'}")
    steps = report["steps"]
    with tempfile.TemporaryDirectory(prefix="gpu_check.") as scratch:
        try:
            if onnx is None:
                from trt.onnx.export import export_matcher

                onnx = export_matcher(extractor="sift", nearest_neighbour=True, dynamic=True,
                                      output=Path(scratch) / "sift_nn.onnx")
            started = time.perf_counter()
            engine = build_engine(onnx, PROFILES, Path(scratch) / "sift.engine", progress=False)
            manifest = load_manifest(engine)
            steps["build"] = {"ok": True, "seconds": round(time.perf_counter() - started, 1), "builder": manifest.builder,
                              "target": manifest.target, "profiles": [p.name for p in manifest.profiles]}
            report["kernel_specialization"] = ("eager (tensorrt-rtx compiles each shape's kernels before its first run)"
                                               if manifest.builder["name"] == "tensorrt-rtx" else
                                               "at build time (full TensorRT)")
        except Exception as error:  # recorded in the report: the check goes on with what it can do
            steps["build"] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            return _write(output, report)
        images = [str(data_dir / name) for name in PAIR]
        results = {}
        for backend, graphs in (("onnxruntime", False), ("tensorrt", False), ("tensorrt", True)):
            name = backend + ("+cuda-graphs" if graphs else "")
            try:
                with Matcher.from_engine(engine, backend=backend, cuda_graphs=graphs) as matcher:
                    results[name] = matcher.match(*images)
                timings = results[name].timings
                steps[f"serve {name}"] = {"ok": True, "matches": len(results[name]),
                                          "timings_ms": {k: round(v * 1e3, 3) for k, v in timings.items() if k != "batch"}}
            except Exception as error:
                steps[f"serve {name}"] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        if "onnxruntime" in results:
            report["iou_against_onnxruntime"] = {name: round(match_set_iou(r.matches, results["onnxruntime"].matches), 4)
                                                 for name, r in results.items() if name != "onnxruntime"}
        for graphs in (False, True):
            name = "with cuda graphs" if graphs else "without cuda graphs"
            try:
                report.setdefault("latency_per_profile", {})[name] = profile_latency(engine, graphs, iterations)
            except Exception as error:
                steps[f"latency {name}"] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    return _write(output, report)


def _write(output: Path, report: dict) -> dict:
    report["could_not_run"] += [f"{name}: {step['error']}" for name, step in report["steps"].items() if not step["ok"]]
    write_text_atomic(output, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


def main(argv=None) -> dict:
    from trt.datasets import shared_data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("out/gpu_check.json"), help="the JSON report")
    parser.add_argument("--onnx", type=Path, help="SIFT matcher ONNX (default: export one with the nearest-neighbour weights)")
    parser.add_argument("--iterations", type=int, default=20, help="timed requests per profile")
    parser.add_argument("--pytest-status", type=int, help="exit status of the tests/gpu run, recorded in the report")
    parser.add_argument("--junit", type=Path, help="the tests/gpu run's JUnit XML file: its skips and failures are listed")
    args = parser.parse_args(argv)
    report = gpu_check(args.output, shared_data_dir(), args.onnx, args.iterations, args.pytest_status, args.junit)
    print("\ncould not run here:" if report["could_not_run"] else "\neverything ran", file=sys.stderr)
    for line in report["could_not_run"]:
        print(f"  - {line}", file=sys.stderr)
    if not all(step["ok"] for step in report["steps"].values()):
        sys.exit(1)
    return report


if __name__ == "__main__":
    run(main)
