"""ONNX Runtime backend: runs a matcher or extractor ONNX (an engine's source model) where TensorRT cannot run.

Same interface as the TensorRT session; the contract (matcher or extractor) is read from the model.
Given the profiles of the engine it stands in for, it takes the same requests the engine would (and
refuses the same ones), so results and batching do not depend on the backend; without them it takes
any shape (the contract's ``dynamic_profile``).
"""

import os
import time
from pathlib import Path
from typing import Optional, Sequence

from trt.errors import EngineError
from trt.fileio import check_regular_file
from trt.runtime.base import Profile, Runner, contract_from_io, network_settings


def physical_cores() -> int:
    """Physical CPU cores this process may use (hyper-threads share a core's arithmetic units)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = set()
    try:
        with open("/proc/cpuinfo") as file:
            physical_id = "0"
            for line in file:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "physical id":
                    physical_id = value
                elif key == "core id":
                    cores.add((physical_id, value))
    except OSError:
        pass
    return max(1, min(len(cores) or available, available))


class OnnxRuntimeSession(Runner):
    """A matcher or extractor ONNX on ONNX Runtime (CPU by default): ``with OnnxRuntimeSession(path) as s: s.infer(feeds)``.

    ``profiles``: the engine's profiles when standing in for one, else any shape is taken.
    ``providers``: ONNX Runtime execution providers, CPU when None. Session options: intra-op threads
    = physical cores (``threads`` overrides), graph optimisation ``ORT_ENABLE_ALL``. ``memory_arena``:
    ONNX Runtime's CPU arena, which keeps each session's peak intermediates allocated; the 19 sessions of
    the adaptive stages turn it off (at N = 1024 it held 830 MB more for the same speed, measured).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        onnx_path: Path,
        profiles: Optional[Sequence[Profile]] = None,
        providers: Optional[Sequence[str]] = None,
        threads: Optional[int] = None,
        memory_arena: bool = True,
    ):
        super().__init__(f"ONNX Runtime session of {onnx_path}", profiles=profiles)
        self.onnx_path = Path(onnx_path)
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        self.threads = threads or physical_cores()
        self.memory_arena = memory_arena
        self._session = None

    def activate_impl(self) -> None:
        import onnxruntime

        check_regular_file(self.onnx_path, "ONNX model", EngineError)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = self.memory_arena
        try:
            session = onnxruntime.InferenceSession(str(self.onnx_path), options, providers=self.providers)
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise EngineError(f"ONNX Runtime cannot load {self.onnx_path}: {error}") from error
        inputs = {i.name: tuple(i.shape) for i in session.get_inputs()}
        outputs = {o.name: tuple(o.shape) for o in session.get_outputs()}
        self.metadata = dict(session.get_modelmeta().custom_metadata_map)
        self.contract = contract_from_io(inputs, outputs, network_settings(self.metadata), str(self.onnx_path))
        self._session = session

    def infer_impl(self, feeds, profile_index):
        start = time.perf_counter()
        names = self.contract.output_names
        values = self._session.run(names, feeds)
        return dict(zip(names, values)), {"compute": time.perf_counter() - start}

    def deactivate_impl(self) -> None:
        self._session = None
