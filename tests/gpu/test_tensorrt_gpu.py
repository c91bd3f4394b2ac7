"""The TensorRT backend on a real GPU: build an engine, serve it, compare with ONNX Runtime.

Runs only where a CUDA GPU, a TensorRT runtime, pycuda and cuda-python exist; elsewhere every test skips
with the reason. Every installed builder is covered: tensorrt-rtx (the default engines, for an RTX GPU it
targets) and full TensorRT. ``scripts/gpu_check.sh`` runs this file; with ``tests/emulator`` first on
``PYTHONPATH`` it runs on the emulated runtime.
"""

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from trt.engine.backends import BACKENDS
from trt.engine.manifest import load_manifest
from trt.errors import EngineError, UserError
from trt.features.base import pack_pairs
from trt.gpu import cuda_devices
from trt.runtime.matcher import Matcher
from trt.runtime.onnxruntime_session import OnnxRuntimeSession
from trt.runtime.tensorrt_engine import tensorrt_unavailable
from trt.runtime.tensorrt_session import TensorRTSession

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[2]
GRAFFITI = "images/hpatches/v_graffiti"
PROFILES = ROOT / "profiles" / "sift.toml"  # its first two buckets: n512 (1-512) and n1024 (513-1024)


def build_for_this_gpu(onnx: Path, folder: Path, builder: str) -> Path:
    """Two-profile fp32 engine (B 1-4) for this GPU: no target given, each builder takes the local GPU."""
    from trt.engine.builder import build_engine

    profiles = folder / "two.toml"
    tables = re.split(r"(?m)^(?=\[\[profile\]\])", PROFILES.read_text())  # [batch] part, then one per bucket
    profiles.write_text("".join(tables[:3]))
    try:
        engine = build_engine(onnx, profiles=profiles, output=folder / f"{onnx.stem}.engine", builder=builder, progress=False)
    except UserError as error:
        pytest.skip(f"{builder} cannot build an engine for this GPU: {error}")
    reason = tensorrt_unavailable(load_manifest(engine))
    if reason:
        pytest.skip(f"{builder}: {reason}")
    return engine


@pytest.fixture(scope="module", params=list(BACKENDS))
def gpu_engines(request, tmp_path_factory) -> dict:
    """Engines of both test models built by one builder (each installed builder in turn)."""
    if not cuda_devices():
        pytest.skip("no CUDA GPU")
    if not BACKENDS[request.param].available():
        pytest.skip(f"{request.param} is not installed")
    folder = tmp_path_factory.mktemp(f"gpu_engines_{request.param}")
    return {name: build_for_this_gpu(request.getfixturevalue(name), folder, request.param)
            for name in ("sift_nn_onnx", "sift_onnx")}


def random_pairs(rng, sizes):
    from trt.features.base import Features

    pairs = []
    for n0, n1 in sizes:
        side = []
        for n in (n0, n1):
            desc = rng.normal(size=(n, 128)).astype(np.float32)
            desc /= np.linalg.norm(desc, axis=1, keepdims=True)
            side.append(Features((rng.uniform(0, 1, (n, 2)) * [640, 480]).astype(np.float32), desc, (640.0, 480.0),
                                 rng.uniform(0, 1, n).astype(np.float32), rng.uniform(1, 20, n).astype(np.float32),
                                 rng.uniform(0, 6.28, n).astype(np.float32)))
        pairs.append(tuple(side))
    return pairs


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def test_session_equals_onnxruntime_in_every_profile(gpu_engines):
    engine = gpu_engines["sift_onnx"]
    rng = np.random.default_rng(0)
    requests = [pack_pairs(random_pairs(rng, sizes), max(s[0] for s in sizes), max(s[1] for s in sizes), 0.0)
                for sizes in ([(100, 80)], [(300, 512), (512, 200)], [(600, 700)], [(1024, 1024)] * 2)]
    with TensorRTSession(engine) as trt_session, OnnxRuntimeSession(trt_session.onnx_path) as ort:
        for feeds in requests:
            got, want = trt_session.infer(feeds), ort.infer(feeds)
            assert set(trt_session.last_timings) >= {"h2d", "compute", "d2h", "total"}
            assert agreement(got["matches0"], want["matches0"]) >= 0.95
            close = got["matches0"] == want["matches0"]
            np.testing.assert_allclose(got["mscores0"][close], want["mscores0"][close], atol=1e-3)


def test_session_from_worker_threads_and_closed_from_another(gpu_engines):
    """Exact equality across runs needs the same kernels every run: with tensorrt-rtx the session compiles each
    shape's specialised kernels before its first run (``eager_kernels``), so no run uses fallback kernels."""
    engine = gpu_engines["sift_nn_onnx"]
    rng = np.random.default_rng(1)
    requests = [pack_pairs(random_pairs(rng, [(n, n)]), n, n, 0.1) for n in (200, 400, 700, 1000)]
    session = TensorRTSession(engine, eager_kernels=True).activate()
    expected = [session.infer(feeds) for feeds in requests]
    results, errors = {}, []

    def work(index):
        try:
            for _ in range(3):
                results[index] = session.infer(requests[index % len(requests)])
        except Exception as error:  # surfaced below: a worker's exception must not vanish
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for index, outputs in results.items():
        np.testing.assert_array_equal(outputs["matches0"], expected[index % len(requests)]["matches0"])

    def close():  # the session is still active here: this thread is the one that releases the GPU
        try:
            session.deactivate()
        except Exception as error:
            errors.append(error)

    closer = threading.Thread(target=close)
    closer.start()
    closer.join()
    assert not errors and not session.is_active and session._cuda_context is None
    with TensorRTSession(engine, eager_kernels=True) as other:  # the device is usable after the cross-thread close
        np.testing.assert_array_equal(other.infer(requests[0])["matches0"], expected[0]["matches0"])


def test_cuda_graphs_equal_plain_runs(gpu_engines):
    """Each profile at its opt shape with one graph: matches equal those of the plain session."""
    engine = gpu_engines["sift_nn_onnx"]
    rng = np.random.default_rng(5)
    pairs = random_pairs(rng, [(150, 300), (512, 90), (700, 1000), (1024, 600)])
    pairs = [(a, b) for a, b in pairs] * 2  # capture, then replay
    with Matcher(TensorRTSession(engine, eager_kernels=True), threshold=0.1) as plain:
        want = [plain.match_features(a, b) for a, b in pairs]
    with Matcher(TensorRTSession(engine, cuda_graphs=True), threshold=0.1) as graphs:
        got = [graphs.match_features(a, b) for a, b in pairs]
    for a, b in zip(got, want):
        assert agreement(a.matches0, b.matches0) >= 0.99
    if load_manifest(engine).builder["name"] == "tensorrt-rtx":
        assert engine.with_name(engine.name + ".rtxcache").stat().st_size > 0  # its kernels, kept for the next process


def test_streams_are_non_blocking_and_capture_survives_a_neighbour_thread(gpu_engines, monkeypatch):
    """On the real driver: the slots' streams are CU_STREAM_NON_BLOCKING (cuStreamGetFlags), and with full
    TensorRT the session's own capture (THREAD_LOCAL) survives another thread that allocates device memory
    and copies on the legacy default stream while it captures."""
    import pycuda.driver as cuda
    from cuda.bindings import driver

    engine = gpu_engines["sift_nn_onnx"]
    outcomes = []

    def neighbour():
        context = cuda.Device(0).retain_primary_context()
        context.push()
        try:
            buffer = cuda.mem_alloc(1 << 20)
            cuda.memcpy_htod(buffer, np.zeros(1 << 18, np.float32))
            buffer.free()
            outcomes.append("ok")
        except cuda.Error as error:
            outcomes.append(str(error))
        finally:
            cuda.Context.pop()
            context.detach()

    begin = driver.cuStreamBeginCapture

    def begin_then_neighbour(*args):
        result = begin(*args)
        thread = threading.Thread(target=neighbour)
        thread.start()
        thread.join()
        return result

    monkeypatch.setattr(driver, "cuStreamBeginCapture", begin_then_neighbour)
    rng = np.random.default_rng(6)
    pair = random_pairs(rng, [(512, 512)])
    feeds = pack_pairs(pair, 512, 512, 0.1)
    with TensorRTSession(engine, cuda_graphs=True, eager_kernels=True) as session:
        for slot in session._slots:
            assert driver.cuStreamGetFlags(driver.CUstream(slot.stream.handle)) == (
                driver.CUresult.CUDA_SUCCESS, int(driver.CUstream_flags.CU_STREAM_NON_BLOCKING))
        first = session.infer(feeds)
        second = session.infer(feeds)  # a replay where the capture succeeded
        np.testing.assert_array_equal(first["matches0"], second["matches0"])
        if not session._backend.runtime_captures_graphs:
            assert session._slots[0].graph is not None and outcomes == ["ok"], outcomes


def test_engine_for_another_gpu_is_refused(gpu_engines, tmp_path):
    engine = gpu_engines["sift_nn_onnx"]
    copy = tmp_path / engine.name
    copy.symlink_to(engine)
    manifest = json.loads(Path(f"{engine}.json").read_text())
    manifest["target"] = {"compute_capability": ["5.0"]}
    Path(f"{copy}.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="compute capability 5.0"):
        TensorRTSession(copy).activate()


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "trt_infer.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))})


def test_cli_on_tensorrt_matches_onnxruntime(gpu_engines, data_dir, tmp_path):
    """trt_infer.py on the GPU engine against the ONNX Runtime run of its ONNX: match-set IoU >= 0.95 (fp32)."""
    engine = gpu_engines["sift_nn_onnx"]
    images = [data_dir / GRAFFITI / "1.ppm", data_dir / GRAFFITI / "2.ppm"]
    records = {}
    for name, flags in (("tensorrt", ["--backend", "tensorrt"]), ("graphs", ["--backend", "tensorrt", "--cuda-graphs"]),
                        ("onnxruntime", ["--backend", "onnxruntime"])):
        out = tmp_path / f"{name}.json"
        done = run_cli("--engine", engine, *images, *flags, "--output", out)
        assert done.returncode == 0, done.stderr
        records[name] = json.loads(out.read_text())
    for name in ("tensorrt", "graphs"):
        assert records[name]["engine"]["backend"] == "tensorrt"
        assert set(records[name]["timings"]) >= {"h2d", "compute", "d2h"}
        np.testing.assert_allclose(records[name]["keypoints0"], records["onnxruntime"]["keypoints0"])
        sets = [{tuple(m) for m in records[b]["matches"]} for b in (name, "onnxruntime")]
        iou = len(sets[0] & sets[1]) / max(1, len(sets[0] | sets[1]))
        assert len(sets[1]) > 50 and iou >= 0.95, f"{name}: IoU {iou:.3f} of {len(sets[0])} and {len(sets[1])} matches"
        print(f"\n{name}: match-set IoU {iou:.4f}; timings {records[name]['timings']}")
