"""Matcher latency of every backend, measured side by side in one run, and the SIFT front-end's cost.

    python bench/matcher_bench.py                 # preset "full": N 512..4096 × B 1, 2, 4 (~10-12 min on 2 cores)
    python bench/matcher_bench.py --preset targets   # N 1024 and 2048 at B 1, the CPU targets only
    python bench/matcher_bench.py --quick         # preset "quick": N 256, B 1 (seconds; the tests run it)

Backends, all with the same weights (the official file when it is here, else the sharp test weights,
``trt.models.sharp``, whose bf16 accuracy gate decides whether the bf16 row counts for the targets):

* ``onnxruntime-cpu``: our ONNX on ONNX Runtime's CPU provider (``onnxruntime-cuda`` as well where the
  CUDA provider and a GPU exist), through ``OnnxRuntimeSession``, the runner the serving code uses;
* ``openvino-f32`` / ``openvino-bf16``: our ONNX on OpenVINO's CPU plugin through ``OpenVINOSession``
  (bf16: the mixed policy, where the CPU has AMX or AVX512-BF16), in the settings ``trt_infer.py`` uses:
  latency mode for one pair, throughput mode (the batch split across streams) for B > 1;
* ``tensorrt-fp32`` / ``tensorrt-fp16``: our engines (all of ``profiles/sift.toml``) through
  ``TensorRTSession``, where a CUDA GPU, TensorRT and pycuda exist;
* ``torch-ours``: our PyTorch module (``trt.models.lightglue``) on the CPU;
* ``kornia-reference``: ``kornia.feature.LightGlue`` at full depth (depth_confidence = width_confidence
  = -1) on the CPU, fp32: the ratios ("x ref") and the targets are to its time;
* ``kornia-bf16-autocast``: the same under ``torch.autocast("cpu", dtype=torch.bfloat16)``, what a
  PyTorch user on the same CPU would try first: the second reference ("x bf16 ref").

The CPU targets (``CPU_TARGETS``) are checked on the fastest CPU backend whose precision passed its
accuracy gate: f32 always, bf16 only when the bf16 gate (``trt.evaluation.bf16_gate``) passed for the
bench's model. The gate runs on the preset's ``gate_preset`` unless a record of the full gate is
beside the model already. The table and JSON name the CPU and its ISA features (``trt.runtime.cpu``):
ratios depend on both.

Method. Each (N, B) configuration is one request of random contract inputs with every row real
(``count = N``), the same arrays for every backend. Each backend makes ``warmup`` untimed calls; then
rounds follow, one call of every backend per round, in an order that rotates from round to round, so
that load from elsewhere on the machine hits all backends alike. Rounds go on until there are at least
``min_runs`` and the configuration's ``budget_s`` is spent (at most ``max_runs``). Reported: p50, p90,
p99 of the timed calls (with few calls, p99 is close to the slowest). torch and ONNX Runtime get the
same thread count, the machine's physical cores (``torch.set_num_threads``, ORT intra-op threads).

The two torch backends need seconds to minutes per call at large N·B on a small CPU, so they run only
up to ``slow_max_batch[N]`` pairs per request; the table and JSON say where they were skipped.

The SIFT front-end (``trt.features.sift.SIFT`` on an image file's pixels: grey conversion, resize,
detection, filtering, RootSIFT) is timed the same way against a bare ``cv2.SIFT_create(...)
.detectAndCompute`` with the same settings on the same already-resized 8-bit image. Ours returns fewer
keypoints: it keeps one per pixel (OpenCV gives a point one descriptor per dominant orientation).
"""

import gc
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from trt.errors import UserError
from trt.evaluation.runs import (
    MatcherWeights,
    cached_engine,
    cached_onnx,
    machine_info,
    named_preset,
    trained_weights,
    write_json,
)
from trt.extractors import Extractor, get_extractor
from trt.evaluation.kornia_reference import kornia_inputs, kornia_reference

OUTPUT_DIR = Path("out/bench")
REFERENCE = "kornia-reference"
BF16_REFERENCE = "kornia-bf16-autocast"  # the second reference: what a PyTorch user would try for speed
# CPU targets, p50 over the reference's at B = 1: the fastest CPU backend that passed its accuracy gate,
# and ONNX Runtime on its own.
CPU_TARGETS = {1024: 0.18, 2048: 0.15}
ONNXRUNTIME_BACKEND = "onnxruntime-cpu"
ONNXRUNTIME_TARGETS = {1024: 0.52, 2048: 0.42}
CPU_BACKENDS = ("onnxruntime-cpu", "openvino-f32", "openvino-bf16")
SIFT_IMAGE = "images/lightglue_assets/sacre_coeur1.jpg"

PRESETS = {
    "full": {
        "keypoints": (512, 1024, 2048, 4096),
        "batches": (1, 2, 4),
        "warmup": 1,
        "min_runs": 3,
        "max_runs": 50,
        "budget_s": 6.0,  # per configuration, after the warm-up
        "slow_max_batch": {512: 4, 1024: 4, 2048: 2, 4096: 1},  # torch backends: most pairs per request
        "engine_precisions": ("fp32", "fp16"),
        "sift_budget_s": 6.0,
        "gate_preset": "standard",
    },
    "targets": {  # the CPU targets only: N = 1024 and 2048 at B = 1, more runs each (~4 min on 2 cores)
        "keypoints": (1024, 2048),
        "batches": (1,),
        "warmup": 1,
        "min_runs": 5,
        "max_runs": 30,
        "budget_s": 15.0,
        "slow_max_batch": {1024: 1, 2048: 1},
        "engine_precisions": ("fp32", "fp16"),
        "sift_budget_s": 2.0,
        "gate_preset": "standard",
    },
    "quick": {
        "keypoints": (256,),
        "batches": (1,),
        "warmup": 1,
        "min_runs": 3,
        "max_runs": 5,
        "budget_s": 0.5,
        "slow_max_batch": {256: 1},
        "engine_precisions": ("fp16",),
        "sift_budget_s": 0.5,
        "gate_preset": "smoke",
    },
}


def get_preset(name: str) -> dict:
    return named_preset(PRESETS, name, "bench")


@dataclass
class Backend:
    """A way to run the matcher: ``prepare(feeds)`` returns a call that runs that request once."""

    name: str
    device: str
    prepare: Callable[[dict], Callable[[], object]]
    slow: bool = False  # torch on the CPU: limited to ``slow_max_batch``
    close: Callable[[], None] = field(default=lambda: None)
    max_batch: Optional[int] = None  # runs requests of at most this many pairs

    def runs(self, n: int, batch: int, conf: dict) -> bool:
        """Whether it runs requests of ``batch`` pairs of N = ``n``."""
        slow_limit = conf["slow_max_batch"].get(n, 0) if self.slow else batch
        return batch <= min(slow_limit, self.max_batch or batch)


# -- the backends ------------------------------------------------------------------------------------------


def runner_backend(name: str, device: str, runner) -> Backend:
    """A ``trt.runtime`` runner (ONNX Runtime or TensorRT session), activated now."""
    runner.activate()
    return Backend(name, device, lambda feeds: lambda: runner.infer(feeds), close=runner.deactivate)


def openvino_backends(onnx_path: Path, threads: int, batches, notes: list[str]) -> list[Backend]:
    """``openvino-f32`` and, on a bf16-capable CPU, ``openvino-bf16``, as ``trt_infer.py`` serves an engine
    built with the default profiles (``profiles/sift.toml``): a latency-mode session for B = 1, its
    fixed-shape models compiled (a warmed-up server; every bench size is a profile's opt), and a
    throughput-mode one for batches (when ``batches`` has any). ``openvino-bf16-dynamic``: B = 1 on the
    dynamic model alone, what a pair between the profiles' opts gets."""
    from trt.engine.profiles import PROFILES_DIR, read_profile_file
    from trt.runtime.base import Profile
    from trt.runtime.cpu import cpu_info
    from trt.runtime.openvino_session import OpenVINOSession, openvino_unavailable

    reason = openvino_unavailable()
    if reason:
        notes.append(f"OpenVINO backends skipped: {reason}")
        return []
    profiles = [Profile.from_ranges(bucket.name, {symbol: tuple(r) for symbol, r in bucket.dimensions().items()})
                for bucket in read_profile_file(PROFILES_DIR / "sift.toml").buckets]
    variants = [("f32", True)]
    if cpu_info().bf16_unsupported():
        notes.append(f"openvino-bf16 skipped: {cpu_info().bf16_unsupported()}")
    else:
        variants += [("bf16", True), ("bf16", False)]
    modes = ["latency"] + (["throughput"] if max(batches) > 1 else [])
    backends = []
    for precision, fixed in variants:
        sessions = [OpenVINOSession(onnx_path, profiles=profiles, precision=precision, mode=mode, threads=threads,
                                    fixed_shapes=fixed and mode == "latency").activate()
                    for mode in (modes if fixed else ["latency"])]
        sessions[0].compile_fixed_shapes()

        def prepare(feeds, sessions=sessions):
            session = sessions[0] if feeds["kpts0"].shape[0] == 1 else sessions[-1]
            return lambda: session.infer(feeds)

        def close(sessions=sessions):
            for session in sessions:
                session.deactivate()

        name = f"openvino-{precision}" + ("" if fixed else "-dynamic")
        backends.append(Backend(name, "cpu", prepare, close=close, max_batch=None if fixed else 1))
    return backends


def onnxruntime_backends(onnx_path: Path, threads: int) -> list[Backend]:
    import onnxruntime

    from trt.gpu import cuda_devices
    from trt.runtime.onnxruntime_session import OnnxRuntimeSession

    backends = [runner_backend("onnxruntime-cpu", "cpu", OnnxRuntimeSession(onnx_path, threads=threads))]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers() and cuda_devices():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        session = OnnxRuntimeSession(onnx_path, providers=providers, threads=threads)
        backends.append(runner_backend("onnxruntime-cuda", "cuda", session))
    return backends


def tensorrt_backends(onnx_path: Path, precisions, notes: list[str], overwrite: bool) -> list[Backend]:
    from trt.runtime.tensorrt_engine import tensorrt_unavailable
    from trt.runtime.tensorrt_session import TensorRTSession

    reason = tensorrt_unavailable(None)
    if reason:
        notes.append(f"{onnx_path.stem}: TensorRT backends skipped: {reason}")
        return []
    backends = []
    for precision in precisions:
        try:
            session = TensorRTSession(cached_engine(onnx_path, precision, overwrite))
            backends.append(runner_backend(f"tensorrt-{precision}", "cuda", session))
        except UserError as error:
            notes.append(f"{onnx_path.stem} tensorrt-{precision} skipped: {error}")
    return backends


def torch_backends(extractor: Extractor, weights: MatcherWeights) -> list[Backend]:
    import torch

    from trt.models.lightglue import LightGlue
    from trt.models.weights import load_state_dict_strict

    ours = LightGlue(extractor).eval()
    state_dict = weights.state_dict(ours)
    load_state_dict_strict(ours, state_dict, f"{weights.kind} weights")
    reference = kornia_reference(extractor, state_dict)

    def run_ours(feeds):
        tensors = tuple(torch.from_numpy(value) for value in feeds.values())
        return lambda: _no_grad(ours, *tensors)

    def run_reference(feeds):
        data = kornia_inputs(feeds)
        return lambda: _no_grad(reference, data)

    def run_reference_bf16(feeds):
        data = kornia_inputs(feeds)
        return lambda: _no_grad(reference, data, autocast=torch.bfloat16)

    return [Backend("torch-ours", "cpu", run_ours, slow=True), Backend(REFERENCE, "cpu", run_reference, slow=True),
            Backend(BF16_REFERENCE, "cpu", run_reference_bf16, slow=True)]


def _no_grad(module, *args, autocast=None):
    import contextlib

    import torch

    precision = torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext()
    with torch.inference_mode(), precision:
        return module(*args)


# -- timing ------------------------------------------------------------------------------------------------


def interleaved_times(calls: dict[str, Callable[[], object]], warmup: int, min_runs: int, max_runs: int,
                      budget_s: float) -> dict[str, list[float]]:
    """Seconds per timed call of each entry, measured in rotating rounds (see the module docstring)."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times = {name: [] for name in names}
    started = time.perf_counter()
    rounds = 0
    while rounds < min_runs or (rounds < max_runs and time.perf_counter() - started < budget_s):
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
        rounds += 1
    return times


def latency_summary(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"runs": len(ms), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min())}


def bench_feeds(extractor: Extractor, batch: int, n: int) -> dict[str, np.ndarray]:
    """A request of B pairs of N keypoints each, every row real."""
    from trt.onnx.export import example_inputs

    feeds = example_inputs(extractor, batch, n, n, seed=n + batch)
    feeds["count0"][:] = n
    feeds["count1"][:] = n
    return feeds


def bench_matchers(backends: list[Backend], extractor: Extractor, conf: dict) -> list[dict]:
    """One row per (N, B, backend): latency summary, or the reason it was skipped."""
    rows = []
    for n in conf["keypoints"]:
        for batch in conf["batches"]:
            feeds = bench_feeds(extractor, batch, n)
            running = [b for b in backends if b.runs(n, batch, conf)]
            times = interleaved_times({b.name: b.prepare(feeds) for b in running}, conf["warmup"], conf["min_runs"],
                                      conf["max_runs"], conf["budget_s"])
            base = {"keypoints": n, "batch": batch}
            references = {key: latency_summary(times[name])["p50_ms"] for key, name in
                          (("ratio_to_reference", REFERENCE), ("ratio_to_bf16_reference", BF16_REFERENCE)) if name in times}
            for backend in backends:
                row = {**base, "backend": backend.name, "device": backend.device}
                if backend.name in times:
                    row.update(latency_summary(times[backend.name]))
                    row.update({key: row["p50_ms"] / p50 for key, p50 in references.items()})
                elif backend.slow:
                    row["skipped"] = f"more than {conf['slow_max_batch'].get(n, 0)} pair(s) at N={n} (slow backend)"
                else:
                    row["skipped"] = f"more than {backend.max_batch} pair(s) (B = 1 only)"
                rows.append(row)
            summary = ", ".join(f"{b} {latency_summary(t)['p50_ms']:.0f} ms" for b, t in times.items())
            print(f"N={n} B={batch}: {summary}", file=sys.stderr, flush=True)
            del feeds
            gc.collect()
    return rows


def bench_sift(image_path: Path, conf: dict) -> dict:
    """Our SIFT front-end against bare OpenCV SIFT with the same settings on the same resized image."""
    import cv2

    from trt.features.image import read_image, to_grayscale_float
    from trt.features.sift import SIFT, resize_long_side

    image = read_image(image_path)
    ours = SIFT()
    settings = ours.conf
    gray, _ = resize_long_side(to_grayscale_float(image), settings["resize"])
    gray = (gray * np.float32(255)).astype(np.uint8)
    bare = cv2.SIFT_create(nfeatures=settings["max_num_keypoints"], nOctaveLayers=settings["num_octaves"],
                           contrastThreshold=settings["detection_threshold"], edgeThreshold=settings["edge_threshold"])
    calls = {"sift-ours": lambda: ours(image), "opencv-bare": lambda: bare.detectAndCompute(gray, None)}
    times = interleaved_times(calls, conf["warmup"], conf["min_runs"], conf["max_runs"], conf["sift_budget_s"])
    rows = {name: latency_summary(t) for name, t in times.items()}
    rows["sift-ours"]["keypoints"] = len(ours(image))
    rows["opencv-bare"]["keypoints"] = len(bare.detect(gray, None))
    rows["sift-ours"]["ratio_to_opencv"] = rows["sift-ours"]["p50_ms"] / rows["opencv-bare"]["p50_ms"]
    return {"image": str(image_path), "image_size": [image.shape[1], image.shape[0]],
            "resized": [gray.shape[1], gray.shape[0]], "settings": settings, "results": rows}


def target_row(rows: list[dict], n: int, backends) -> Optional[dict]:
    """The fastest B = 1 row at N = ``n`` among ``backends`` that has a ratio to the reference."""
    candidates = [r for r in rows if r["backend"] in backends and r["keypoints"] == n and r["batch"] == 1
                  and "ratio_to_reference" in r]
    return min(candidates, key=lambda r: r["ratio_to_reference"], default=None)


def cpu_target_check(rows: list[dict], bf16_gate_passed: bool) -> list[dict]:
    """The CPU targets at B = 1: the fastest CPU backend whose precision passed its gate (bf16 only when
    the bf16 gate passed), and ONNX Runtime on its own."""
    eligible = [b for b in CPU_BACKENDS if b != "openvino-bf16" or bf16_gate_passed]
    checks = []
    for label, backends, targets in (("best CPU backend", eligible, CPU_TARGETS),
                                     (ONNXRUNTIME_BACKEND, [ONNXRUNTIME_BACKEND], ONNXRUNTIME_TARGETS)):
        for n, limit in targets.items():
            row = target_row(rows, n, backends)
            if row is not None:
                checks.append({"target": label, "keypoints": n, "batch": 1, "backend": row["backend"],
                               "ratio": row["ratio_to_reference"], "limit": limit,
                               "met": row["ratio_to_reference"] <= limit})
    return checks


def bench_bf16_gate(onnx_path: Path, conf: dict, data_dir: Path, threads: int, notes: list[str]) -> Optional[dict]:
    """The bf16 gate's record for the bench's model: the full gate's record beside it when there is one,
    else a fresh run on the preset's ``gate_preset`` (written beside the model when that is the full
    gate). None where bf16 cannot run here."""
    from trt.evaluation.bf16_gate import run_gate
    from trt.evaluation.bf16_record import write_record
    from trt.evaluation.datasets import get_preset
    from trt.runtime.cpu import cpu_info
    from trt.runtime.openvino_session import GATE_PRESET, bf16_gate_record, openvino_unavailable

    reason = openvino_unavailable() or cpu_info().bf16_unsupported()
    if reason:
        notes.append(f"bf16 gate not run: {reason}")
        return None
    record, _ = bf16_gate_record(onnx_path)
    if record is not None:
        return record
    record = run_gate(onnx_path, get_preset(conf["gate_preset"]), data_dir, threads=threads)
    if record["preset"] == GATE_PRESET:
        record["file"] = write_record(record)
    return record


# -- report ------------------------------------------------------------------------------------------------


def format_table(record: dict) -> str:
    machine = record["machine"]
    lines = [f"CPU: {machine['cpu']}, {machine['cores']} physical cores ({machine['logical_cpus']} logical); "
             f"ISA: {' '.join(name for name, has in machine['isa_features'].items() if has) or 'unknown'}; "
             f"bf16: {machine['bf16']}",
             f"{'N':>5} {'B':>2}  {'backend':<20} {'runs':>4} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'x ref':>6} "
             f"{'x bf16 ref':>10}"]
    previous = None
    for row in record["matcher"]:
        config = (row["keypoints"], row["batch"])
        head = f"{row['keypoints']:>5} {row['batch']:>2}" if config != previous else " " * 8
        previous = config
        if "skipped" in row:
            lines.append(f"{head}  {row['backend']:<20} skipped: {row['skipped']}")
            continue
        ratio, ratio_bf16 = (f"{row[key]:.2f}" if key in row else "-"
                             for key in ("ratio_to_reference", "ratio_to_bf16_reference"))
        lines.append(f"{head}  {row['backend']:<20} {row['runs']:>4} {row['p50_ms']:>9.1f} {row['p90_ms']:>9.1f} "
                     f"{row['p99_ms']:>9.1f} {ratio:>6} {ratio_bf16:>10}")
    gate = record.get("bf16_gate")
    if gate is not None:
        lines.append(f"bf16 gate ({gate['preset']} preset): {'passed' if gate['passed'] else 'FAILED'}: {gate['summary']}")
    for check in record["cpu_target"]:
        verdict = "met" if check["met"] else "MISSED"
        lines.append(f"target N={check['keypoints']} B=1, {check['target']}: {check['backend']} at {check['ratio']:.2f}x "
                     f"the reference (target <= {check['limit']:.2f}x): {verdict}")
    sift = record.get("sift")
    if sift:
        ours, bare = sift["results"]["sift-ours"], sift["results"]["opencv-bare"]
        lines.append(f"SIFT on {Path(sift['image']).name} resized to {sift['resized'][0]}x{sift['resized'][1]}: "
                     f"ours p50 {ours['p50_ms']:.1f} ms ({ours['keypoints']} kpts), bare OpenCV p50 "
                     f"{bare['p50_ms']:.1f} ms ({bare['keypoints']} kpts): {ours['ratio_to_opencv']:.2f}x")
    lines += [f"note: {note}" for note in record["notes"]]
    return "\n".join(lines)


def plot_latency(record: dict, path: Path) -> Optional[Path]:
    """p50 latency against keypoints, one panel per batch size and one line per backend, so that every
    measured row is shown (PNG); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        record["notes"].append("matplotlib is not installed: no plot")
        return None
    rows = [r for r in record["matcher"] if "p50_ms" in r]
    batches = sorted({r["batch"] for r in rows}) or [1]
    keypoints = sorted({r["keypoints"] for r in record["matcher"]})
    figure, panels = plt.subplots(1, len(batches), figsize=(6.5 * len(batches), 4.8), squeeze=False)
    colours = {backend: f"C{i}" for i, backend in enumerate(dict.fromkeys(r["backend"] for r in record["matcher"]))}
    for axes, batch in zip(panels[0], batches):
        for backend, colour in colours.items():
            points = [(r["keypoints"], r["p50_ms"]) for r in rows if r["backend"] == backend and r["batch"] == batch]
            if points:
                x, y = zip(*points)
                axes.plot(x, y, marker="o", color=colour, label=backend)
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set_xticks(keypoints, labels=[str(n) for n in keypoints])
        axes.set_xlabel("keypoints per image (N0 = N1)")
        axes.set_ylabel(f"p50 latency (ms), batch {batch}")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    machine = record["machine"]
    figure.suptitle(f"LightGlue matcher latency, {machine['cpu']}, {machine['cores']} cores, bf16: {machine['bf16']}",
                    fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# -- the step ----------------------------------------------------------------------------------------------


def main(conf="full", data_dir: Optional[Path] = None, output_dir: Path = OUTPUT_DIR,
         weights: Optional[Path] = None, models_dir: Optional[Path] = None, overwrite: bool = False) -> Path:
    """Run the bench preset ``conf`` (a name or a dict); write ``bench-<name>.json`` and ``.png`` into
    ``output_dir`` and return the JSON's path. ``data_dir``: the shared data (SIFT image); ``weights``:
    trained weights to use (default: ``weights/sift_lightglue.pth`` when official, else the sharp test
    weights, seed 0);
    ``models_dir``: where exports are cached (default ``output_dir/models``)."""
    import cv2
    import torch

    from trt.datasets import shared_data_dir
    from trt.runtime.onnxruntime_session import physical_cores

    conf = get_preset(conf) if isinstance(conf, str) else conf
    output_dir = Path(output_dir)
    models_dir = Path(models_dir) if models_dir is not None else output_dir / "models"
    data_dir = Path(data_dir) if data_dir is not None else shared_data_dir()
    extractor = get_extractor("sift")
    trained, weights_note = trained_weights(extractor, weights)
    chosen = trained or MatcherWeights.sharp(0)
    notes = [weights_note]
    onnx_path = cached_onnx(models_dir, extractor.name, chosen, overwrite=overwrite)
    threads = physical_cores()
    gate = bench_bf16_gate(onnx_path, conf, data_dir, threads, notes)

    previous_threads, previous_cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    backends = []
    try:
        backends += onnxruntime_backends(onnx_path, threads)
        backends += openvino_backends(onnx_path, threads, conf["batches"], notes)
        backends += tensorrt_backends(onnx_path, conf["engine_precisions"], notes, overwrite)
        backends += torch_backends(extractor, chosen)
        rows = bench_matchers(backends, extractor, conf)
        image = data_dir / SIFT_IMAGE
        sift = None
        if image.is_file():
            sift = bench_sift(image, conf)
        else:
            notes.append(f"SIFT bench skipped: {image} not found (set LG_DATA_DIR)")
    finally:
        for backend in backends:
            backend.close()
        torch.set_num_threads(previous_threads)
        cv2.setNumThreads(previous_cv_threads)

    record = {
        "preset": conf,
        "machine": machine_info(threads),
        "weights": {"kind": chosen.kind, "path": chosen.path, "seed": chosen.seed, "onnx": onnx_path},
        "backends": [{"name": b.name, "device": b.device} for b in backends],
        "matcher": rows,
        "bf16_gate": gate,
        "cpu_target": cpu_target_check(rows, bool(gate and gate["passed"])),
        "sift": sift,
        "notes": notes,
    }
    plot = plot_latency(record, output_dir / f"bench-{conf['name']}.png")
    record["plot"] = plot
    path = write_json(output_dir / f"bench-{conf['name']}.json", record)
    print(format_table(record))
    return path
