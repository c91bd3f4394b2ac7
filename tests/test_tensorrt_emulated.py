"""The TensorRT session's real code on the emulated runtime (tests/emulator), the build targets and the
Makefile's TARGET_SM, against the ONNX Runtime session: issue 9's defects, each with its test.

Two engines are built once: the SIFT matcher (random weights) through ``make engine`` for three
tensorrt-rtx targets, and through ``make engine`` with the emulator's full-TensorRT stand-in first on the
path (which must get no target). In-process tests swap the emulated modules in for the real ones
(``emulated``); command-line tests put ``tests/emulator`` first on ``PYTHONPATH``.
"""

import importlib
import json
import re
import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import profile_toml
from test_runtime import make_standin_onnx

from trt.contract import keypoint_dims
from trt.engine.backends import TensorRT, TensorRTRTX
from trt.engine.manifest import load_manifest, manifest_path
from trt.errors import BuildError, ContractError, EngineError, UserError
from trt.features.base import pack_pairs
from trt.runtime import tensorrt_engine as tre
from trt.runtime import tensorrt_session as trs
from trt.jobs.job import JOB_FILE
from trt.runtime.matcher import Matcher
from trt.runtime.onnxruntime_session import OnnxRuntimeSession

ROOT = Path(__file__).resolve().parents[1]
EMULATOR = ROOT / "tests" / "emulator"
EMULATED = ("tensorrt", "tensorrt_rtx", "pycuda", "cuda", "_trt_emulator")
PROFILES = profile_toml(("n64", 1, 64, 64), ("n128", 65, 128, 128), batch=(1, 1, 2))
GRAFFITI = "images/hpatches/v_graffiti"

pytestmark = pytest.mark.skipif(not TensorRTRTX.available(), reason="tensorrt-rtx is not installed")


def make(*args: str, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [pythonpath, str(ROOT)]))}
    return subprocess.run(["make", "-C", str(ROOT), f"PYTHON={sys.executable}", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def emulator_env(**variables) -> dict:
    return {**os.environ, "PYTHONPATH": f"{EMULATOR}{os.pathsep}{ROOT}", **variables}


@pytest.fixture(scope="session")
def rtx_engine(sift_onnx, tmp_path_factory) -> Path:
    """`make engine TARGET_SM=8.6,8.9,12.0`: one tensorrt-rtx engine for three GPU families (two profiles)."""
    folder = tmp_path_factory.mktemp("rtx")
    (folder / "small.toml").write_text(PROFILES)
    engine = folder / "sift.engine"
    done = make("engine", "EXTRACTOR=sift", "WEIGHTS=random", f"ONNX={sift_onnx}", f"PROFILES={folder / 'small.toml'}",
                f"OUT={engine}", "TARGET_SM=8.6,8.9,12.0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--target-sm 8.6,8.9,12.0" in done.stdout
    return engine


@pytest.fixture(scope="session")
def full_onnx(tmp_path_factory) -> Path:
    """A small stand-in matcher (mutual nearest neighbours of the descriptors): quick to build."""
    return make_standin_onnx(tmp_path_factory.mktemp("standin") / "standin.onnx")


@pytest.fixture(scope="session")
def full_engine(full_onnx, tmp_path_factory) -> Path:
    """`make engine` where full TensorRT is installed (the emulator's stand-in, first on the path)."""
    folder = tmp_path_factory.mktemp("full")
    (folder / "small.toml").write_text(PROFILES)
    engine = folder / "standin.engine"
    variables = [f"ONNX={full_onnx}", f"PROFILES={folder / 'small.toml'}", f"OUT={engine}"]
    refused = make("engine", "EXTRACTOR=sift", "WEIGHTS=random", *variables, "TARGET_SM=8.9", pythonpath=str(EMULATOR))
    assert refused.returncode != 0 and "full TensorRT builds for the GPU it runs on" in refused.stderr
    done = make("engine", "EXTRACTOR=sift", "WEIGHTS=random", *variables, pythonpath=str(EMULATOR))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--target-sm" not in done.stdout
    return engine


@contextmanager
def emulated_modules():
    """The emulated tensorrt, tensorrt_rtx, pycuda and cuda-python in place of the real ones; yields the GPU."""
    saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] in EMULATED}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(EMULATOR))
    try:
        yield importlib.import_module("_trt_emulator.gpu").GPU
    finally:
        sys.path.remove(str(EMULATOR))
        for name in [name for name in sys.modules if name.split(".")[0] in EMULATED]:
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.fixture
def emulated(monkeypatch, rtx_engine):
    monkeypatch.setenv("TRT_EMULATOR_ENGINES", str(rtx_engine.parent))
    with emulated_modules() as gpu:
        yield gpu


def random_features(rng, n: int):
    from trt.features.base import Features

    desc = rng.normal(size=(n, 128)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    return Features((rng.uniform(0, 1, (n, 2)) * [640, 480]).astype(np.float32), desc, (640.0, 480.0),
                    rng.uniform(0, 1, n).astype(np.float32), rng.uniform(1, 20, n).astype(np.float32),
                    rng.uniform(0, 6.28, n).astype(np.float32))


def request(rng, batch: int, n0: int, n1: int) -> dict:
    pairs = [(random_features(rng, n0), random_features(rng, n1)) for _ in range(batch)]
    return pack_pairs(pairs, n0, n1, 0.0)


def assert_same_outputs(got: dict, want: dict) -> None:
    for name in ("matches0", "matches1"):
        np.testing.assert_array_equal(got[name], want[name])
    for name in ("mscores0", "mscores1"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-6)


# --- build targets (defects 1 and 2) ------------------------------------------------------------------


def test_rtx_builds_for_the_local_gpu_else_its_documented_default(monkeypatch):
    backend = TensorRTRTX()
    monkeypatch.setattr("trt.engine.backends.cuda_devices", lambda: [])
    assert backend.target(None) == ["8.0", "8.6", "8.9", "12.0", "12.1"]  # Ampere on; Turing only when asked for
    monkeypatch.setattr("trt.engine.backends.cuda_devices", lambda: ["12.0"])
    assert backend.target(None) == ["12.0"]
    monkeypatch.setattr("trt.engine.backends.cuda_devices", lambda: ["9.0"])  # a GPU tensorrt-rtx does not target
    assert backend.target(None) == backend.default_targets()
    assert backend.target("7.5,8.6") == ["7.5", "8.6"]
    with pytest.raises(UserError, match="cannot build for compute capability 9.0"):
        backend.target("8.9,9.0")
    full = TensorRT()
    monkeypatch.setattr("trt.engine.backends.cuda_devices", lambda: ["9.0"])
    assert full.target(None) == ["9.0"]  # the GPU full TensorRT builds on
    monkeypatch.setattr("trt.engine.backends.cuda_devices", lambda: [])
    assert full.target(None) is None
    with pytest.raises(UserError, match="--target-sm is for --builder tensorrt-rtx"):
        full.target("8.9")


@pytest.mark.slow
def test_make_engine_lists_every_target(rtx_engine):
    manifest = load_manifest(rtx_engine)
    assert manifest.builder["name"] == "tensorrt-rtx"
    assert manifest.target == {"compute_capability": ["8.6", "8.9", "12.0"]}


@pytest.mark.slow
def test_make_engine_passes_no_target_to_full_tensorrt(full_engine):
    manifest = load_manifest(full_engine)
    assert manifest.builder == {"name": "tensorrt", "version": "10.14.1.48"}
    assert manifest.target == {"compute_capability": ["8.9"]}  # the (emulated) local GPU, read at build time


# --- the emulator itself ------------------------------------------------------------------------------


def public(obj) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


# pycuda 2026.1 (src/wrapper/wrap_cudadrv.cpp, pycuda/driver.py): the names the emulator may have
PYCUDA_DRIVER = {
    "init", "Device", "Context", "Stream", "Event", "mem_alloc", "mem_get_info", "pagelocked_empty",
    "memcpy_htod_async", "memcpy_dtoh_async", "memcpy_htod", "DeviceAllocation", "Error", "LogicError", "LaunchError",
    "MemoryError", "RuntimeError", "event_flags",
}
# Full TensorRT 10's ICudaEngine names that tensorrt-rtx dropped (NVIDIA's C++ API member lists): the v1 sizes
FULL_TENSORRT_ONLY = {"ICudaEngine": {"get_device_memory_size_for_profile", "device_memory_size"}}
PYCUDA_CLASSES = {
    "Device": {"count", "name", "compute_capability", "total_memory", "retain_primary_context", "make_context",
               "get_attribute", "can_access_peer", "pci_bus_id"},
    "Context": {"attach", "detach", "push", "pop", "get_device", "synchronize", "get_current", "set_limit", "get_limit",
                "get_cache_config", "set_cache_config", "get_api_version", "enable_peer_access",
                "disable_peer_access", "get_shared_config", "set_shared_config", "handle"},
    "Stream": {"synchronize", "is_done", "wait_for_event", "handle"},
    "Event": {"record", "synchronize", "query", "time_since", "time_till", "ipc_handle", "from_ipc_handle"},
    "DeviceAllocation": {"free", "as_buffer", "get_device_alloc"},
}


def test_emulator_has_only_what_the_real_bindings_have():
    import cuda.bindings.driver as real_driver
    import cuda.bindings.runtime as real_runtime
    import tensorrt_rtx as real_rtx

    with emulated_modules():
        import cuda.bindings.driver as driver
        import cuda.bindings.runtime as runtime
        import pycuda.driver as cuda
        import tensorrt
        import tensorrt_rtx

        assert tensorrt_rtx.Runtime is not real_rtx.Runtime  # the emulation, not the real module
        for module in (tensorrt_rtx, tensorrt):
            assert public(module) <= public(real_rtx), public(module) - public(real_rtx)
            for name in ("Runtime", "ICudaEngine", "IExecutionContext", "IRuntimeConfig", "IRuntimeCache", "IHostMemory"):
                if hasattr(module, name):
                    allowed = FULL_TENSORRT_ONLY.get(name, set()) if module is tensorrt else set()
                    extra = public(getattr(module, name)) - public(getattr(real_rtx, name)) - allowed
                    assert not extra, f"{module.__name__}.{name} has {extra}, which tensorrt_rtx has not"
        for name in ("IRuntimeConfig", "IRuntimeCache", "CudaGraphStrategy", "ComputeCapability"):
            assert not hasattr(tensorrt, name)  # tensorrt-rtx only
        assert not hasattr(tensorrt.ICudaEngine, "create_runtime_config")
        assert not hasattr(tensorrt.IExecutionContext, "is_stream_capturable")
        assert public(driver) <= public(real_driver), public(driver) - public(real_driver)
        for name in ("CUresult", "CUstreamCaptureMode", "CUstream_flags"):
            assert {(m.name, int(m)) for m in getattr(driver, name)} <= {(m.name, int(m)) for m in getattr(real_driver, name)}
            with pytest.raises(TypeError):  # cuda-python's enums are not subscriptable: getattr, as the session does
                getattr(driver, name)["CUDA_SUCCESS"]
        assert public(runtime) <= public(real_runtime), public(runtime) - public(real_runtime)
        assert {(m.name, int(m)) for m in runtime.cudaError_t} <= {(m.name, int(m)) for m in real_runtime.cudaError_t}
        assert public(cuda) <= PYCUDA_DRIVER, public(cuda) - PYCUDA_DRIVER
        for name, allowed in PYCUDA_CLASSES.items():
            assert public(getattr(cuda, name)) <= allowed, (name, public(getattr(cuda, name)) - allowed)


def test_emulated_gpu_refuses_what_cuda_and_tensorrt_refuse(emulated, rtx_engine):
    import cuda.bindings.driver as driver
    import pycuda.driver as cuda
    import tensorrt_rtx as trt

    from trt.engine.backends import make_logger

    cuda.init()
    with pytest.raises(cuda.LogicError, match="no currently active context"):
        cuda.mem_alloc(16)
    context = cuda.Device(0).retain_primary_context()
    context.push()
    try:
        backend = TensorRTRTX()
        backend.__dict__["module"] = trt
        logger = make_logger(backend, echo_warnings=False)
        engine = trt.Runtime(logger).deserialize_cuda_engine(rtx_engine.read_bytes())
        ctx = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE)
        stream = cuda.Stream()
        assert ctx.set_optimization_profile_async(1, stream.handle)
        assert not ctx.set_input_shape("kpts0", (1, 64, 2))  # profile n128 starts at 65 keypoints
        assert "outside profile 1" in logger.errors[-1]
        assert ctx.set_input_shape("kpts0", (1, 100, 2))
        assert tuple(ctx.get_tensor_shape("matches0")) == (-1, -1)  # until every input shape is set
        assert not ctx.execute_async_v3(stream.handle)
        rng = np.random.default_rng(0)
        feeds = request(rng, 1, 100, 80)
        buffers = {}
        for name, array in feeds.items():
            assert ctx.set_input_shape(name, array.shape)
        for name in [*feeds, "matches0", "matches1", "mscores0", "mscores1"]:
            shape = tuple(ctx.get_tensor_shape(name))
            buffers[name] = cuda.mem_alloc(int(np.prod(shape)) * 4)
            ctx.set_tensor_address(name, int(buffers[name]))
        for name, array in feeds.items():
            cuda.memcpy_htod_async(buffers[name], np.ascontiguousarray(array), stream)
        assert ctx.execute_async_v3(stream.handle)
        out = np.full((1, 100), 7, np.int32)
        cuda.memcpy_dtoh_async(out, buffers["matches0"], stream)
        assert (out == 7).all()  # nothing has run: work waits for the stream
        handle = driver.CUstream(stream.handle)
        mode = driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
        assert driver.cuStreamBeginCapture(handle, mode) == (driver.CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,)
        stream.synchronize()
        assert (out != 7).any()
        assert driver.cuStreamBeginCapture(handle, mode) == (driver.CUresult.CUDA_SUCCESS,)
        assert not ctx.is_stream_capturable(stream.handle)
        assert not ctx.execute_async_v3(stream.handle)  # tensorrt-rtx: manual capture needs user-allocated memory
        assert "user-allocated memory" in logger.errors[-1]
        assert driver.cuStreamEndCapture(handle) == (driver.CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, None)
        ctx = None
    finally:
        cuda.Context.pop()
        context.detach()


def test_a_captured_graph_replays_its_own_shapes_and_addresses(emulated, full_engine, monkeypatch):
    """Full TensorRT: capture at one shape, then run another shape on the context: the graph still runs
    what it captured (which is why a context must keep one shape per graph)."""
    import cuda.bindings.driver as driver
    import cuda.bindings.runtime as runtime
    import pycuda.driver as cuda
    import tensorrt as trt

    from trt.engine.backends import make_logger

    monkeypatch.setenv("TRT_EMULATOR_ENGINES", str(full_engine))
    cuda.init()
    context = cuda.Device(0).retain_primary_context()
    context.push()
    try:
        backend = TensorRT()
        backend.__dict__["module"] = trt
        engine = trt.Runtime(make_logger(backend, echo_warnings=False)).deserialize_cuda_engine(full_engine.read_bytes())
        ctx = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE)
        stream = cuda.Stream()
        rng = np.random.default_rng(1)
        first, second = request(rng, 1, 20, 30), request(rng, 1, 40, 10)
        buffers = {name: cuda.mem_alloc(2 * 64 * 128 * 4) for name in [*first, "matches0", "matches1", "mscores0", "mscores1"]}
        for name, buffer in buffers.items():
            ctx.set_tensor_address(name, int(buffer))

        def load(feeds):
            for name, array in feeds.items():
                ctx.set_input_shape(name, array.shape)
                cuda.memcpy_htod_async(buffers[name], np.ascontiguousarray(array), stream)

        def matches0(n0):
            out = np.empty((1, n0), np.int32)
            cuda.memcpy_dtoh_async(out, buffers["matches0"], stream)
            stream.synchronize()
            return out

        load(first)
        handle = driver.CUstream(stream.handle)
        mode = driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
        stream.synchronize()
        assert driver.cuStreamBeginCapture(handle, mode)[0] == driver.CUresult.CUDA_SUCCESS
        assert not ctx.execute_async_v3(stream.handle)  # the first enqueue's deferred set-up cannot be captured
        assert driver.cuStreamEndCapture(handle)[0] == driver.CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        # trtexec's endCaptureOnError: clear the runtime error the failed launch left behind
        assert runtime.cudaGetLastError() == (runtime.cudaError_t.cudaErrorStreamCaptureInvalidated,)
        assert runtime.cudaGetLastError() == (runtime.cudaError_t.cudaSuccess,)
        assert ctx.execute_async_v3(stream.handle)  # warm-up
        want_first = matches0(20)
        assert driver.cuStreamBeginCapture(handle, mode)[0] == driver.CUresult.CUDA_SUCCESS
        assert ctx.execute_async_v3(stream.handle)
        error, graph = driver.cuStreamEndCapture(handle)
        error, executable = driver.cuGraphInstantiate(graph, 0)
        load(second)  # the context now has the second request's shapes (and its data in the buffers)
        assert ctx.execute_async_v3(stream.handle)
        want_second = matches0(40)
        load(first)
        ctx.set_input_shape("kpts0", (1, 40, 2))  # shapes of the context no longer those captured
        assert driver.cuGraphLaunch(executable, handle) == (driver.CUresult.CUDA_SUCCESS,)
        np.testing.assert_array_equal(matches0(20), want_first)
        assert not np.array_equal(want_first[0, :10], want_second[0, :10])
        driver.cuGraphExecDestroy(executable)
        driver.cuGraphDestroy(graph)
        for buffer in buffers.values():
            buffer.free()
        ctx = None
    finally:
        cuda.Context.pop()
        context.detach()


# --- the session on the emulator: results equal ONNX Runtime's (defects 3, 4, 5) ----------------------


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_session_from_threads_equals_onnxruntime(emulated, rtx_engine, sift_onnx, cuda_graphs):
    rng = np.random.default_rng(2)
    sizes = [(1, 30, 50), (2, 64, 64), (1, 100, 70), (2, 128, 90)] if not cuda_graphs else [(1, 64, 64), (1, 128, 128)]
    requests = [request(rng, *size) for size in sizes]
    with OnnxRuntimeSession(sift_onnx) as ort:
        expected = [ort.infer(feeds) for feeds in requests]
    session = trs.TensorRTSession(rtx_engine, cuda_graphs=cuda_graphs)
    errors, results = [], {}

    def work(index):
        try:
            for round_ in range(3):
                results[index, round_] = session.infer(requests[index % len(requests)])
        except Exception as error:  # surfaced below: a worker's exception must not vanish
            errors.append(error)

    with session:
        assert_same_outputs(session.infer(requests[0]), expected[0])
        assert set(session.last_timings) >= {"h2d", "compute", "d2h", "total"}
        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    for (index, _), outputs in results.items():
        assert_same_outputs(outputs, expected[index % len(requests)])


def test_cuda_graphs_run_each_profile_at_its_opt_shape_with_one_graph(emulated, full_engine, full_onnx, monkeypatch):
    """Full TensorRT: one context and one captured graph per profile, at the profile's opt; requests of
    other sizes are padded to it (Matcher) and their matches equal ONNX Runtime's."""
    import cuda.bindings.driver as driver

    monkeypatch.setenv("TRT_EMULATOR_ENGINES", str(full_engine))
    captures = []
    begin = driver.cuStreamBeginCapture
    monkeypatch.setattr(driver, "cuStreamBeginCapture", lambda *args: captures.append(args) or begin(*args))
    rng = np.random.default_rng(3)
    pairs = [(random_features(rng, n0), random_features(rng, n1)) for n0, n1 in ((10, 60), (64, 3), (90, 70), (128, 100))]
    with Matcher(OnnxRuntimeSession(full_onnx), threshold=0.0) as reference:
        want = [reference.match_features(*pair) for pair in pairs * 2]
    session = trs.TensorRTSession(full_engine, cuda_graphs=True)
    with Matcher(session, threshold=0.0) as matcher:
        got = [matcher.match_features(*pair) for pair in pairs * 2]  # capture, then replay
        assert [slot.shape for slot in session._slots] == [keypoint_dims(1, 64, 64), keypoint_dims(1, 128, 128)]
        assert all(slot.graph is not None for slot in session._slots)
        with pytest.raises(ContractError, match="fits none of the engine's profiles"):
            session.infer(request(rng, 1, 30, 30))  # not padded to an opt shape
        with pytest.raises(ContractError, match="runs at its opt shape only"):
            session.infer_impl(request(rng, 1, 30, 30), 0)
    assert len(captures) == 2  # one graph per profile, not per (N0, N1)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.matches, b.matches)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_failed_capture_falls_back_to_plain_runs_with_tensorrts_error(emulated, full_engine, full_onnx, monkeypatch):
    import cuda.bindings.driver as driver

    monkeypatch.setenv("TRT_EMULATOR_ENGINES", str(full_engine))
    monkeypatch.setattr(driver, "cuStreamBeginCapture", lambda *args: (driver.CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,))
    rng = np.random.default_rng(4)
    feeds = request(rng, 1, 64, 64)
    with OnnxRuntimeSession(full_onnx) as ort:
        want = ort.infer(feeds)
    with trs.TensorRTSession(full_engine, cuda_graphs=True) as session:
        with pytest.warns(UserWarning, match="capture failed for profile n64 .*CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED.*without a graph"):
            assert_same_outputs(session.infer(feeds), want)
        assert_same_outputs(session.infer(feeds), want)  # no second try, no second warning
        assert session._slots[0].graph is None


def test_contexts_hold_activation_memory_of_their_own_profile(emulated, rtx_engine):
    with trs.TensorRTSession(rtx_engine) as session:
        sizes = [session._engine.get_device_memory_size_for_profile_v2(i) for i in range(2)]
        assert sizes[0] < sizes[1]
        assert sum(nbytes for _, nbytes in emulated.reserved.values()) == sum(sizes)  # STATIC: 2 x the largest
        assert {name: m["activation"] for name, m in session.device_memory.items()} == dict(zip(["n64", "n128"], sizes))
        assert session.summary()["device_memory"]["n128"]["io"] > session.summary()["device_memory"]["n64"]["io"]


def test_runtime_cache_is_kept_beside_the_engine(emulated, rtx_engine, tmp_path, monkeypatch):
    from _trt_emulator import runtime

    for name in (rtx_engine.name, manifest_path(rtx_engine).name):
        shutil.copy(rtx_engine.parent / name, tmp_path / name)
    engine = tmp_path / rtx_engine.name
    monkeypatch.setenv("TRT_EMULATOR_ENGINES", str(engine))
    feeds = request(np.random.default_rng(5), 1, 64, 64)
    cache = Path(f"{engine}.rtxcache")

    def compilations(**options) -> int:
        before = len(runtime.COMPILED)
        with trs.TensorRTSession(engine, **options) as session:
            session.infer(feeds)
        return len(runtime.COMPILED) - before

    assert compilations(cuda_graphs=True) == 2  # the engine's kernels, and those specialized for the opt shape
    assert cache.is_file() and {p.name for p in tmp_path.iterdir()} == {engine.name, cache.name, f"{engine.name}.json"}
    assert compilations(cuda_graphs=True) == 0  # a new process starts from the cache
    assert len(runtime.RUNTIME_GRAPHS) == 2  # one per run: tensorrt-rtx captured the graph itself
    monkeypatch.setenv("TRT_EMULATOR_COMPUTE_CAPABILITY", "12.0")
    with pytest.warns(UserWarning, match="runtime cache .* is not used .*another GPU"):
        assert compilations() == 2
    assert json.loads(cache.read_bytes())["compute_capability"] == "12.0"


# --- closing (defect 6) and error paths (defect 7) ----------------------------------------------------


def test_close_waits_for_requests_and_releases_from_another_thread(emulated, rtx_engine):
    import pycuda.driver as cuda

    session = trs.TensorRTSession(rtx_engine).activate()
    feeds = request(np.random.default_rng(6), 1, 40, 40)
    slot = session._slots[0]
    slot.lock.acquire()  # a request in flight on profile n64
    left_current = []

    def close():
        session.deactivate()
        left_current.append((list(emulated.driver_stack()), cuda.Context.get_current()))

    closer = threading.Thread(target=close)
    closer.start()
    time.sleep(0.2)
    assert closer.is_alive() and emulated.allocations  # close waits for it
    slot.lock.release()
    closer.join(timeout=10)
    assert not closer.is_alive()
    assert emulated.primary_retains == 0 and not emulated.allocations and not emulated.reserved
    assert left_current == [([], None)]  # nothing left pushed on the closing thread
    assert emulated.driver_stack() == [] and cuda.Context.get_current() is None
    with pytest.raises(UserError, match="not active"):
        session.infer(feeds)


def test_a_request_that_waited_for_a_closed_session_fails_cleanly(emulated, rtx_engine):
    session = trs.TensorRTSession(rtx_engine).activate()
    feeds = request(np.random.default_rng(7), 1, 40, 40)
    outcome = []
    slot = session._slots[0]
    slot.lock.acquire()
    waiter = threading.Thread(target=lambda: outcome.append(pytest.raises(UserError, session.infer_impl, feeds, 0)))
    waiter.start()
    closer = threading.Thread(target=session.deactivate)
    closer.start()
    time.sleep(0.2)
    slot.lock.release()
    waiter.join(10)
    closer.join(10)
    assert "closed" in str(outcome[0].value)
    assert emulated.primary_retains == 0 and not emulated.allocations


def test_output_shapes_of_minus_one_are_an_engine_error(emulated, rtx_engine):
    feeds = request(np.random.default_rng(8), 1, 40, 40)
    del feeds["threshold"]
    with trs.TensorRTSession(rtx_engine) as session:
        with pytest.raises(EngineError, match=r"no shape for the outputs matches0 \(-1, -1\).*not every input shape is set"):
            session.infer_impl(feeds, 0)


def test_engine_without_manifest_is_tried_with_every_runtime(emulated, rtx_engine, sift_onnx, tmp_path, monkeypatch):
    """Full TensorRT (the stand-in) is installed and tried first; the engine is tensorrt-rtx's."""
    engine = tmp_path / "trtexec.engine"
    shutil.copy(rtx_engine, engine)
    monkeypatch.setenv("TRT_EMULATOR_ENGINES", str(manifest_path(rtx_engine)))
    with pytest.warns(UserWarning, match="no manifest"):
        session = trs.TensorRTSession(engine, onnx=sift_onnx)
    with session:
        assert session.runtime_version.startswith("tensorrt-rtx")
        assert [p.ranges for p in session.profiles] == [p.ranges for p in tre.profiles_from_manifest(load_manifest(rtx_engine))]
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damaged inside: no runtime loads it
    engine.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="no manifest"):
        with pytest.raises(EngineError, match=r"tensorrt 10.14.1.48: .* \| tensorrt-rtx 1.7.1.116: .*rebuild"):
            trs.TensorRTSession(engine).activate()
    assert emulated.primary_retains == 0


def test_an_unknown_engine_header_is_left_to_tensorrt_when_it_deserializes(emulated, rtx_engine, sift_onnx, tmp_path,
                                                                           monkeypatch):
    """The header magic is read off the engines of the builders here, not documented: the TensorRT session lets
    TensorRT judge a header it does not know; the ONNX Runtime stand-in, which never deserializes, refuses it."""
    engine = tmp_path / "other-version.engine"
    data = bytearray(rtx_engine.read_bytes())
    data[:4] = b"qtrt"
    engine.write_bytes(bytes(data))
    monkeypatch.setenv("TRT_EMULATOR_ENGINES", str(manifest_path(rtx_engine)))
    with pytest.warns(UserWarning, match="no manifest"):
        session = trs.TensorRTSession(engine, onnx=sift_onnx)  # no header error before TensorRT is asked
    with pytest.raises(EngineError, match="rebuild"):
        session.activate()
    with pytest.raises(EngineError, match="is not a TensorRT engine"):
        Matcher.from_engine(engine, backend="onnxruntime", onnx=sift_onnx)


def test_profiles_that_differ_from_the_manifest_are_refused(emulated, rtx_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("TRT_EMULATOR_ENGINES", str(manifest_path(rtx_engine)))  # what the engine really holds
    engine = tmp_path / rtx_engine.name
    shutil.copy(rtx_engine, engine)
    record = json.loads(manifest_path(rtx_engine).read_text())
    record["profiles"][1]["keypoints0"] = [65, 100, 100]
    manifest_path(engine).write_text(json.dumps(record))
    with pytest.raises(EngineError, match="profiles of engine .* differ from its manifest"):
        trs.TensorRTSession(engine).activate()
    assert emulated.primary_retains == 0 and emulated.driver_stack() == []


def test_auto_falls_back_on_a_gpu_the_engine_was_not_built_for(emulated, rtx_engine, monkeypatch, capsys):
    monkeypatch.setenv("TRT_EMULATOR_COMPUTE_CAPABILITY", "9.0")  # a datacenter GPU tensorrt-rtx does not target
    assert "compute capability 9.0" in tre.tensorrt_unavailable(load_manifest(rtx_engine))
    with Matcher.from_engine(rtx_engine, backend="auto") as matcher:
        assert matcher.summary["backend"] != "tensorrt"
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "not one the engine was built for (8.6, 8.9, 12.0)" in notices[0]
    with pytest.raises(EngineError, match="built for compute capability 8.6, 8.9, 12.0 but this GPU is 9.0"):
        Matcher.from_engine(rtx_engine, backend="tensorrt")
    monkeypatch.setenv("TRT_EMULATOR_COMPUTE_CAPABILITY", "12.0")
    assert tre.tensorrt_unavailable(load_manifest(rtx_engine)) is None


# --- trt_infer.py end to end on the emulator (the acceptance runs) --------------------------------------


@pytest.fixture(scope="module")
def image_pairs(data_dir, tmp_path_factory) -> tuple[list[Path], Path]:
    """Two small images (SIFT finds fewer than 64 keypoints: profile n64) and two larger (n128), and a
    pairs file whose pairs fall into both profiles."""
    folder = tmp_path_factory.mktemp("images")
    images = []
    for index, (name, crop) in enumerate([("2.ppm", (slice(0, 50), slice(0, 60))), ("2.ppm", (slice(2, 52), slice(3, 63))),
                                          ("1.ppm", (slice(0, 320), slice(0, 400))), ("3.ppm", (slice(0, 320), slice(0, 400)))]):
        image = cv2.imread(str(data_dir / GRAFFITI / name))[crop]
        images.append(folder / f"image{index}.png")
        cv2.imwrite(str(images[-1]), image)
    pairs = folder / "pairs.txt"
    pairs.write_text("image0.png image1.png\nimage2.png image3.png\nimage1.png image3.png\n")
    return images, pairs


def run_cli(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "trt_infer.py"), *map(str, args), "--threshold", "0",
                           "--max-keypoints", "128"], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["single", "pairs"])
def test_trt_infer_on_the_emulator_equals_onnxruntime(rtx_engine, image_pairs, tmp_path, mode):
    images, pairs = image_pairs
    runs = {"onnxruntime": ["--backend", "onnxruntime"], "tensorrt": ["--backend", "tensorrt"],
            "graphs": ["--backend", "tensorrt", "--cuda-graphs"]}
    records = {}
    for name, flags in runs.items():
        out = tmp_path / name
        args = (images[2], images[3], "--output", out / "m.json") if mode == "single" else ("--pairs", pairs, "--output-dir", out)
        done = run_cli("--engine", rtx_engine, *args, *flags, env=emulator_env())
        assert done.returncode == 0, done.stderr
        if name != "onnxruntime":
            assert re.search(r"\btensorrt[,)]", done.stdout) and "device memory: n64" in done.stdout
        records[name] = {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.name != JOB_FILE}
    sizes = {len(r["keypoints0"]) > 64 or len(r["keypoints1"]) > 64 for r in records["onnxruntime"].values()}
    assert sizes == ({True} if mode == "single" else {False, True})  # the pairs file crosses profiles
    for name in ("tensorrt", "graphs"):
        assert records[name].keys() == records["onnxruntime"].keys()
        for file, record in records[name].items():
            want = records["onnxruntime"][file]
            assert record["engine"]["backend"] == "tensorrt" and record["matches"] == want["matches"]
            np.testing.assert_allclose(record["scores"], want["scores"], atol=1e-6)


# --- issue 22: the second review against NVIDIA's docs and samples, one test per row --------------------


def engine_copy(engine: Path, folder: Path, edit=None, monkeypatch=None) -> Path:
    """The engine and its manifest copied into ``folder``, the manifest edited by ``edit(record)``; the emulator
    is told to read that manifest (what the engine "holds")."""
    copy = folder / engine.name
    shutil.copy(engine, copy)
    record = json.loads(manifest_path(engine).read_text())
    record["onnx"]["path"] = str((engine.parent / record["onnx"]["path"]).resolve())
    if edit is not None:
        edit(record)
    manifest_path(copy).write_text(json.dumps(record))
    if monkeypatch is not None:
        monkeypatch.setenv("TRT_EMULATOR_ENGINES", str(manifest_path(copy)))
    return copy


def test_tensorrt_10_0_serves_without_the_v2_memory_size(emulated, full_engine, tmp_path, monkeypatch):
    """Row 1: TensorRT 10.0's ICudaEngine has get_device_memory_size_for_profile only (v2 came with 10.1)."""
    monkeypatch.setenv("TRT_EMULATOR_TENSORRT_VERSION", "10.0.1.6")
    engine = engine_copy(full_engine, tmp_path, lambda r: r["builder"].update(version="10.0.1.6"), monkeypatch)
    with trs.TensorRTSession(engine) as session:
        assert session.runtime_version == "tensorrt 10.0.1.6"
        with pytest.raises(AttributeError):  # the call the session made before: a crash at activation
            session._engine.get_device_memory_size_for_profile_v2(0)
        assert session.device_memory["n64"]["activation"] == session._engine.get_device_memory_size_for_profile(0) > 0
        assert session.infer(request(np.random.default_rng(20), 1, 30, 40))["matches0"].shape == (1, 30)


def test_streams_never_block_and_events_never_spin(emulated, rtx_engine):
    """Rows 2 and 4: blocking-sync events (trtexec's TrtCudaEvent), non-blocking streams."""
    import cuda.bindings.driver as driver
    import pycuda.driver as cuda

    with trs.TensorRTSession(rtx_engine) as session:
        session.infer(request(np.random.default_rng(21), 1, 40, 40))
        assert emulated.spin_waits == 0
        non_blocking = int(driver.CUstream_flags.CU_STREAM_NON_BLOCKING)
        assert all(driver.cuStreamGetFlags(driver.CUstream(slot.stream.handle)) == (driver.CUresult.CUDA_SUCCESS,
                                                                                   non_blocking)
                   for slot in session._slots)
        session._cuda_context.push()
        try:
            spinning = cuda.Event()  # default flags: cuEventSynchronize busy-waits
            spinning.record(session._slots[0].stream).synchronize()
            assert emulated.spin_waits == 1
            untimed = cuda.Event(cuda.event_flags.DISABLE_TIMING).record(session._slots[0].stream).synchronize()
            with pytest.raises(cuda.LogicError, match="cuEventElapsedTime"):
                untimed.time_since(spinning)
        finally:
            cuda.Context.pop()


@contextmanager
def neighbour_during_capture(gpu):
    """Another thread of the process (PyTorch, ONNX Runtime's CUDA provider) that, while any capture is under
    way, allocates device memory (a "potentially unsafe" call) and copies on the legacy default stream.
    Yields the list of its outcomes: "ok", or the error it got."""
    import pycuda.driver as cuda

    outcomes = []

    def work():
        context = cuda.Device(0).retain_primary_context()
        context.push()
        try:
            buffer = cuda.mem_alloc(256)
            cuda.memcpy_htod(buffer, np.zeros(64, np.float32))
            buffer.free()
            outcomes.append("ok")
        except cuda.Error as error:
            outcomes.append(str(error))
        finally:
            cuda.Context.pop()
            context.detach()

    def hook(stream):
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()

    gpu.capture_hooks.append(hook)
    try:
        yield outcomes
    finally:
        gpu.capture_hooks.remove(hook)


def graphs_session_run(engine, onnx, rng):
    feeds = request(rng, 1, 64, 64)
    with OnnxRuntimeSession(onnx) as ort:
        want = ort.infer(feeds)
    with trs.TensorRTSession(engine, cuda_graphs=True) as session:
        for _ in range(3):  # capture (or its failure), then replays or plain runs
            assert_same_outputs(session.infer(feeds), want)
        return session._slots[0].graph is not None


def test_capture_survives_a_neighbour_thread_thread_local_and_non_blocking(emulated, full_engine, full_onnx,
                                                                           monkeypatch):
    """Row 4 and the capture rules: the session's capture (THREAD_LOCAL, non-blocking stream) survives another
    thread's allocation and legacy-stream copy; a GLOBAL capture or a blocking stream does not."""
    from trt.runtime import tensorrt_graphs

    monkeypatch.setenv("TRT_EMULATOR_ENGINES", str(full_engine))
    rng = np.random.default_rng(22)
    with neighbour_during_capture(emulated) as outcomes:
        assert graphs_session_run(full_engine, full_onnx, rng)
    assert outcomes == ["ok"]

    monkeypatch.setattr(tensorrt_graphs, "CAPTURE_MODE", "CU_STREAM_CAPTURE_MODE_GLOBAL")
    with neighbour_during_capture(emulated) as outcomes, pytest.warns(UserWarning, match="capture failed .*invalidated"):
        assert not graphs_session_run(full_engine, full_onnx, rng)  # the runs go on without a graph
    assert "cuMemAlloc failed" in outcomes[0] and "not permitted when stream is capturing" in outcomes[0]

    monkeypatch.undo()
    monkeypatch.setenv("TRT_EMULATOR_ENGINES", str(full_engine))
    monkeypatch.setattr(trs, "make_stream", lambda cuda, driver: cuda.Stream())  # flags 0: blocking
    with neighbour_during_capture(emulated) as outcomes, pytest.warns(UserWarning, match="capture failed"):
        assert not graphs_session_run(full_engine, full_onnx, rng)
    assert "legacy stream" in outcomes[0]


def test_a_failed_capture_leaves_no_runtime_error_behind(emulated, full_engine, full_onnx, monkeypatch):
    """Row 3: trtexec clears the runtime's last error after a failed capture; without that the next plain
    enqueue fails with the capture's error."""
    from trt.runtime import tensorrt_graphs

    monkeypatch.setenv("TRT_EMULATOR_ENGINES", str(full_engine))
    monkeypatch.setattr(trs, "make_stream", lambda cuda, driver: cuda.Stream())  # a capture that fails
    rng = np.random.default_rng(23)
    with neighbour_during_capture(emulated), pytest.warns(UserWarning, match="capture failed"):
        assert not graphs_session_run(full_engine, full_onnx, rng)  # three runs: the 2nd and 3rd run plain
    monkeypatch.setattr(tensorrt_graphs, "clear_last_error", lambda runtime: None)
    with neighbour_during_capture(emulated), pytest.warns(UserWarning, match="capture failed"):
        with pytest.raises(EngineError, match="cudaErrorStreamCaptureInvalidated"):
            graphs_session_run(full_engine, full_onnx, rng)


def test_tensorrt_rtx_capture_can_fail_and_the_run_goes_on(emulated, rtx_engine, sift_onnx, monkeypatch):
    """The runtime's own capture follows the same rules: on a blocking stream a neighbour's legacy-stream copy
    makes it fail (results stay right, no graph); on the session's non-blocking stream it succeeds."""
    from _trt_emulator import runtime

    rng = np.random.default_rng(24)
    graphs, failures = len(runtime.RUNTIME_GRAPHS), len(runtime.RUNTIME_CAPTURE_FAILURES)
    with neighbour_during_capture(emulated) as outcomes:
        graphs_session_run(rtx_engine, sift_onnx, rng)
    assert outcomes == ["ok"] and len(runtime.RUNTIME_GRAPHS) == graphs + 1
    monkeypatch.setattr(trs, "make_stream", lambda cuda, driver: cuda.Stream())
    with neighbour_during_capture(emulated) as outcomes:
        graphs_session_run(rtx_engine, sift_onnx, rng)
    assert "legacy stream" in outcomes[0] and len(runtime.RUNTIME_CAPTURE_FAILURES) > failures


def keypoint_ranges(record: dict, index: int, low: int, opt: int, high: int) -> None:
    """Set profile ``index`` of a manifest record to N0 = N1 in [low, high], opt ``opt``."""
    profile = record["profiles"][index]
    profile["keypoints0"] = profile["keypoints1"] = [low, opt, high]
    for name, shapes in profile["shapes"].items():
        if name[:-1] in ("kpts", "desc", "scales", "oris"):
            for key, value in zip(("min", "opt", "max"), (low, opt, high)):
                shapes[key][1] = value


def test_overlapping_profiles_with_graphs_run_where_the_request_was_padded(emulated, full_engine, full_onnx,
                                                                           tmp_path, monkeypatch):
    """Row 5: profiles 1-64 (opt 32) and 1-128 (opt 64): a 50-point pair is padded to 64, the second profile's
    opt, and must run there, not on the smaller first profile that also holds 64."""
    def overlap(record):
        keypoint_ranges(record, 0, 1, 32, 64)
        keypoint_ranges(record, 1, 1, 64, 128)

    engine = engine_copy(full_engine, tmp_path, overlap, monkeypatch)
    rng = np.random.default_rng(25)
    pair = (random_features(rng, 50), random_features(rng, 50))
    with Matcher(OnnxRuntimeSession(full_onnx), threshold=0.0) as reference:
        want = reference.match_features(*pair)
    session = trs.TensorRTSession(engine, cuda_graphs=True)
    with Matcher(session, threshold=0.0) as matcher:
        np.testing.assert_array_equal(matcher.match_features(*pair).matches, want.matches)
        padded = request(rng, 1, 64, 64)
        with pytest.raises(ContractError, match="profile n64 runs at its opt shape only"):
            session.infer_impl(padded, 0)  # where the smallest full profile would have sent it


def test_an_engine_with_an_output_outside_the_contract_is_refused_at_activation(emulated, rtx_engine, tmp_path,
                                                                                 monkeypatch):
    """Row 6: an extra output would have no address, and every enqueue would fail."""
    engine = engine_copy(rtx_engine, tmp_path, lambda r: r["outputs"].append(
        {"name": "debug_scores", "dtype": "float32", "shape": ["B", "N0"]}), monkeypatch)
    with pytest.raises(EngineError, match="I/O tensors that the matcher contract does not know: debug_scores"):
        trs.TensorRTSession(engine).activate()
    assert emulated.primary_retains == 0


def test_a_second_gpu_is_judged_and_served_by_its_ordinal(emulated, rtx_engine, sift_onnx, monkeypatch):
    """Rows 7 and 8, and set_tensor_address's checks: device 0 is an SM 9.0 the engine does not target,
    device 1 an SM 8.9 it does; buffers live on device 1; a misaligned, a host or another device's pointer is
    refused."""
    import pycuda.driver as cuda

    monkeypatch.setenv("TRT_EMULATOR_COMPUTE_CAPABILITY", "9.0,8.9")
    manifest = load_manifest(rtx_engine)
    assert "device 0, compute capability 9.0" in tre.tensorrt_unavailable(manifest)
    assert tre.tensorrt_unavailable(manifest, device=1) is None
    assert "device 2 does not exist" in tre.tensorrt_unavailable(manifest, device=2)
    feeds = request(np.random.default_rng(26), 1, 40, 50)
    with OnnxRuntimeSession(sift_onnx) as ort:
        want = ort.infer(feeds)
    with trs.TensorRTSession(rtx_engine, device=1) as session:
        assert_same_outputs(session.infer(feeds), want)
        assert session.device == "cuda" and session.summary()["cuda_device"] == 1
        assert set(emulated.allocation_device.values()) == {1}
        context, buffer = session._slots[0].context, session._slots[0].device["kpts0"]
        session._cuda_context.push()
        try:
            assert context.set_tensor_address("kpts0", int(buffer))  # what the session does
            assert not context.set_tensor_address("kpts0", int(buffer) + 4)
            host = cuda.pagelocked_empty(1024, np.float32)
            assert not context.set_tensor_address("kpts0", host.ctypes.data - host.ctypes.data % 256)
            other = cuda.Device(0).retain_primary_context()
            other.push()
            elsewhere = cuda.mem_alloc(1024)
            cuda.Context.pop()
            assert not context.set_tensor_address("kpts0", int(elsewhere))
            assert "not device memory of GPU 1" in session._logger.errors[-1]
            other.push()
            elsewhere.free()
            cuda.Context.pop()
            assert context.set_tensor_address("kpts0", int(buffer))
        finally:
            cuda.Context.pop()
    with pytest.raises(EngineError, match="built for compute capability 8.6, 8.9, 12.0 but this GPU is 9.0"):
        trs.TensorRTSession(rtx_engine, device=0).activate()


def test_engine_bytes_are_dropped_once_deserialized_and_read_again_on_reactivation(emulated, rtx_engine):
    """Row 9."""
    session = trs.TensorRTSession(rtx_engine)
    with session:
        assert session._data is None
    with session:  # a second activation reads and checks the file again
        assert session._data is None and session.infer(request(np.random.default_rng(27), 1, 20, 20))


def test_each_thread_reads_only_its_own_tensorrt_errors(emulated, rtx_engine):
    """Row 10: one logger per module (TensorRT keeps the first), its errors per thread."""
    with trs.TensorRTSession(rtx_engine) as session:
        errors, together = {}, threading.Barrier(2)

        def refuse(name, shape):
            session._logger.errors.clear()
            together.wait()
            session._slots[0].context.set_input_shape(name, shape)  # outside profile n64: TensorRT logs an error
            together.wait()  # both have logged before either reads
            errors[name] = list(session._logger.errors)

        threads = [threading.Thread(target=refuse, args=(name, (1, 500, 2))) for name in ("kpts0", "kpts1")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [len(found) for found in errors.values()] == [1, 1]
        assert all(name in found[0] for name, found in errors.items())


def test_eager_kernels_never_run_fallback_kernels(emulated, rtx_engine, tmp_path, monkeypatch):
    """Rows 12-13: LAZY (the default) runs a new shape's first request on fallback kernels, EAGER compiles
    the shape's kernels first; gpu_check and the GPU equality tests use EAGER."""
    from _trt_emulator import runtime

    engine = engine_copy(rtx_engine, tmp_path, monkeypatch=monkeypatch)  # a fresh runtime cache
    feeds = request(np.random.default_rng(28), 1, 33, 35)
    for eager, fallback in ((False, 1), (True, 0)):
        before = len(runtime.FALLBACK_RUNS)
        with trs.TensorRTSession(engine, eager_kernels=eager) as session:
            first = session.infer(feeds)
            assert_same_outputs(session.infer(feeds), first)
        assert len(runtime.FALLBACK_RUNS) - before == fallback
        Path(f"{engine}.rtxcache").unlink()


def test_full_tensorrt_builds_weakly_typed_fp16_with_fp32_layers_pinned(emulated, sift_onnx, full_onnx, full_engine,
                                                                        tmp_path, monkeypatch):
    """The emulated full TensorRT build path: FP16 as a builder flag on a weakly typed network, the FP32-critical
    layers pinned under OBEY_PRECISION_CONSTRAINTS, full TensorRT's own engine header; the same flags on a
    strongly typed network are refused, as TensorRT 10's NetworkDefinitionCreationFlag.STRONGLY_TYPED says."""
    import tensorrt
    from _trt_emulator import runtime

    from trt.engine.backends import get_backend
    from trt.engine.builder import ConfigFromProfiles, EngineBytesFromNetwork, NetworkFromOnnxPath
    from trt.engine.profiles import GraphSignature, load_profiles

    backend = get_backend("tensorrt")
    assert backend.module is tensorrt and not backend.needs_fp16_onnx  # weak typing: FP16 by flag
    profiles_file = tmp_path / "small.toml"
    profiles_file.write_text(PROFILES)
    parsed = NetworkFromOnnxPath(sift_onnx, backend, echo_warnings=False)()
    built = ConfigFromProfiles(load_profiles(GraphSignature.from_onnx(sift_onnx), profiles_file), "fp16",
                               progress=False)(parsed)
    assert built.config.get_flag(tensorrt.BuilderFlag.FP16) and built.config.get_flag(
        tensorrt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    layers = {parsed.network.get_layer(i).name: parsed.network.get_layer(i) for i in range(parsed.network.num_layers)}
    assert built.pinned_fp32 and any("log_assignment" in name for name in built.pinned_fp32)
    assert all(layers[name].precision == tensorrt.float32 for name in built.pinned_fp32)
    assert any(not layer.precision_is_set for layer in layers.values())  # the rest is TensorRT's to choose

    standin = NetworkFromOnnxPath(full_onnx, backend, echo_warnings=False)()
    standin_profiles = load_profiles(GraphSignature.from_onnx(full_onnx), profiles_file)
    data = EngineBytesFromNetwork(standin, ConfigFromProfiles(standin_profiles, "fp16", progress=False)(standin))()
    assert data[:4] == b"ftrt" and runtime.BUILDS[-1]["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    assert full_engine.read_bytes()[:4] == b"ftrt"  # make engine with full TensorRT: its header
    tre.check_engine_header(full_engine, full_engine.read_bytes())

    monkeypatch.setattr(type(backend), "create_network",  # a strongly typed network, given FP16 by flag
                        lambda self, builder: builder.create_network(1 << int(tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
    strongly = NetworkFromOnnxPath(full_onnx, backend, echo_warnings=False)()
    with pytest.raises(BuildError, match="strongly typed network"):
        EngineBytesFromNetwork(strongly, ConfigFromProfiles(standin_profiles, "fp16", progress=False)(strongly))()
    strongly.network.get_layer(0).precision = tensorrt.float32
    assert not strongly.network.get_layer(0).precision_is_set
    assert "not allowed on a strongly typed network" in strongly.logger.errors[-1]


def test_gpu_check_says_what_could_not_run(tmp_path):
    """scripts/gpu_check.sh on an H100/H200 with only tensorrt-rtx: the report says full TensorRT is needed, and
    lists each skipped or failed test of tests/gpu with its reason (from the JUnit file pytest wrote)."""
    from trt.evaluation.gpu_check import missing_pieces, pytest_outcomes

    environment = {"gpus": ["9.0"], "runtimes": {"tensorrt": None, "tensorrt-rtx": "/site-packages/tensorrt_rtx"},
                   "tensorrt_backend": "available"}
    (found,) = missing_pieces(environment)
    assert "tensorrt-rtx cannot target this GPU (compute capability 9.0" in found and "nvcr.io/nvidia/tensorrt" in found
    assert missing_pieces({**environment, "gpus": ["8.9"]}) == []
    assert len(missing_pieces({**environment, "gpus": [], "tensorrt_backend": "no CUDA GPU was found"})) == 2
    assert "nothing ran on a GPU" in missing_pieces({**environment, "gpus": ["8.9"], "emulated": True})[0]
    junit = tmp_path / "tests.xml"
    junit.write_text('<testsuites><testsuite><testcase name="test_a[tensorrt]"/>'
                     '<testcase name="test_b[tensorrt-rtx]"><skipped message="tensorrt-rtx: this GPU is not one&#10;more"/>'
                     '</testcase><testcase name="test_c[tensorrt]"><failure message="AssertionError: x"/></testcase>'
                     '</testsuite></testsuites>')
    assert pytest_outcomes(junit) == {"passed": ["test_a[tensorrt]"],
                                      "skipped": {"test_b[tensorrt-rtx]": "tensorrt-rtx: this GPU is not one"},
                                      "failed": {"test_c[tensorrt]": "AssertionError: x"}}
    assert pytest_outcomes(tmp_path / "absent.xml") == {}
