"""A TensorRT engine file and what it holds, checked before and right after TensorRT loads it.

Before an engine is deserialized it is checked, so that a wrong engine ends in an ``EngineError``
that says to rebuild rather than in a crash inside TensorRT:

1. the file against its manifest (``X.engine.json``): size and sha256;
2. the source ONNX, when it is present, against the manifest's sha256;
3. the TensorRT runtime (``tensorrt`` or ``tensorrt_rtx``, after the manifest's builder) and its
   version, which must equal the builder's;
4. a CUDA GPU, found before TensorRT is touched (TensorRT may crash without one), whose compute
   capability must be one of the manifest's targets.

After deserialization, ``read_engine_io`` reads the engine's I/O tensors, contract and profiles, and
``check_bindings`` refuses an engine whose I/O tensors are not exactly its contract's (an extra input
or output would have no address, and every enqueue would fail). Nothing here imports TensorRT: the
deserialized engine is passed in.
"""

import hashlib
import importlib.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from trt.engine.backends import BACKENDS, Backend
from trt.engine.manifest import Manifest, manifest_path
from trt.errors import ContractError, EngineError
from trt.fileio import check_regular_file, read_file_bytes, sha256_file
from trt.gpu import cuda_devices
from trt.runtime.base import Profile, contract_from_io

REBUILD = "rebuild it on this machine with build_engine.py"


# -- checks before TensorRT is touched ------------------------------------------------------------------


def read_engine(engine_path: Path, manifest: Optional[Manifest], deserialized: bool = False) -> bytes:
    """The engine's bytes, after checking its size and sha256 against the manifest (when there is one).

    Without a manifest the header is checked (``check_engine_header``); ``deserialized``: the caller hands
    the bytes to TensorRT, which is then the judge of a header this module does not know.
    """
    engine_path = Path(engine_path)
    data = read_file_bytes(engine_path, "engine", EngineError)
    if not data:
        raise EngineError(f"engine {engine_path} is empty; {REBUILD}")
    if manifest is not None:
        check_engine_bytes(engine_path, data, manifest)
    else:
        check_engine_header(engine_path, data, unknown_ok=deserialized)
    return data


def check_engine_header(engine_path: Path, data: bytes, unknown_ok: bool = False) -> None:
    """Without a manifest, the file must at least be a whole TensorRT engine: its header says so.

    The header is not documented: the magic of each builder was read off its engines (see
    ``Backend.plan_magic``). ``unknown_ok``: a header of none of them passes (TensorRT, about to
    deserialize the file, decides), so that an engine of a TensorRT version with another header is not
    refused on a guess; an ONNX file and a known header with the wrong size never pass.
    """
    backend = next((b for b in BACKENDS.values() if data.startswith(b.plan_magic)), None)
    if backend is None:
        if data[:1] == b"\x08" or Path(engine_path).suffix.lower() == ".onnx":  # ModelProto starts with ir_version
            raise EngineError(
                f"{engine_path} is an ONNX model, not a TensorRT engine: build one with "
                f"`python build_engine.py --onnx {engine_path}`, then pass the .engine it writes"
            )
        if unknown_ok:
            return
        raise EngineError(f"{engine_path} is not a TensorRT engine (its first bytes are no engine header); {REBUILD}")
    offset = backend.plan_size_offset
    if offset is None:
        return
    recorded = struct.unpack_from("<Q", data, offset)[0] if len(data) >= offset + 8 else "more"
    if recorded != len(data):
        raise EngineError(
            f"engine {engine_path} has {len(data)} bytes but its header says {recorded}: "
            f"the file is truncated or damaged; {REBUILD}"
        )


def check_engine_bytes(engine_path: Path, data: bytes, manifest: Manifest) -> None:
    expected_bytes, expected_sha = manifest.engine.get("bytes"), manifest.engine.get("sha256")
    if expected_bytes is not None and len(data) != expected_bytes:
        raise EngineError(
            f"engine {engine_path} has {len(data)} bytes but its manifest {manifest_path(engine_path).name} says "
            f"{expected_bytes}: the file is truncated or was replaced; {REBUILD}"
        )
    if expected_sha and hashlib.sha256(data).hexdigest() != expected_sha:
        raise EngineError(
            f"engine {engine_path} does not match its manifest {manifest_path(engine_path).name} (sha256 differs): "
            f"the engine or the manifest was replaced; {REBUILD}"
        )


def source_onnx_path(engine_path: Path, manifest: Optional[Manifest], onnx: Optional[Path] = None) -> Optional[Path]:
    """Where the engine's source ONNX should be: ``onnx`` if given, else the manifest's (relative to it)."""
    if onnx is not None:
        return Path(onnx)
    if manifest is None or not manifest.onnx.get("path"):
        return None
    recorded = Path(manifest.onnx["path"])
    candidates = [recorded if recorded.is_absolute() else Path(engine_path).parent / recorded]
    if manifest.onnx.get("absolute"):
        candidates.append(Path(manifest.onnx["absolute"]))
    return next((path for path in candidates if path.is_file()), candidates[0])


def check_source_onnx(onnx_path: Optional[Path], manifest: Optional[Manifest], required: bool,
                      flag: str = "--onnx") -> None:
    """The ONNX must be the one the engine was built from (when the manifest records its sha256).

    ``required``: whether a missing file is an error (it is when the ONNX is to be run in the engine's place);
    ``flag``: the command-line flag that names it, for the messages.
    """
    if onnx_path is None or not os.path.lexists(onnx_path):
        if required:
            where = f" at {onnx_path}" if onnx_path is not None else ""
            raise EngineError(f"the engine's source ONNX{where} is missing: pass it explicitly ({flag})")
        return
    check_regular_file(onnx_path, "the engine's source ONNX", EngineError)
    expected = manifest.onnx.get("sha256") if manifest is not None else None
    if expected and sha256_file(onnx_path) != expected:
        raise EngineError(
            f"{onnx_path} is not the ONNX the engine was built from (sha256 differs): rebuild the engine from it, "
            f"or pass the original with {flag}"
        )


def runtime_backend(manifest: Optional[Manifest]) -> Optional[type[Backend]]:
    """The builder that made the engine (its runtime is the only one that loads it); None without a manifest."""
    if manifest is None:
        return None
    builder = manifest.builder.get("name")
    if builder not in BACKENDS:
        raise EngineError(f"engine manifest names an unknown builder {builder!r}: expected one of {', '.join(BACKENDS)}")
    return BACKENDS[builder]


def runtime_candidates(manifest: Optional[Manifest]) -> list[type[Backend]]:
    """The installed runtimes to try, in order (nothing is imported): the builder's own; every installed one
    without a manifest."""
    wanted = runtime_backend(manifest)
    return [backend for backend in ([wanted] if wanted else BACKENDS.values()) if backend.available()]


def check_runtime_version(manifest: Optional[Manifest], module_name: str, version: str) -> None:
    if manifest is None:
        return
    built = manifest.builder.get("version")
    if built and built != version:
        raise EngineError(
            f"the engine was built with {manifest.builder.get('name')} {built} but this machine runs "
            f"{module_name} {version}: engines only load on the exact version that built them; {REBUILD}"
        )


def target_capabilities(manifest: Optional[Manifest]) -> list[str]:
    """Compute capabilities the manifest targets ("8.9"); empty when unrecorded (the builder's own GPU)."""
    if manifest is None:
        return []
    target = (manifest.target or {}).get("compute_capability")
    if target is None:
        return []
    values = target if isinstance(target, (list, tuple)) else [target]
    return [str(v) for v in values]


def check_compute_capability(manifest: Optional[Manifest], device_capability: str) -> None:
    targets = target_capabilities(manifest)
    if targets and device_capability not in targets:
        raise EngineError(
            f"the engine was built for compute capability {', '.join(targets)} but this GPU is "
            f"{device_capability}: {REBUILD}"
        )


# -- can TensorRT run here? ---------------------------------------------------------------------------


def _installed(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def tensorrt_unavailable(manifest: Optional[Manifest], device: int = 0) -> Optional[str]:
    """Why the TensorRT backend cannot run the engine on CUDA device ``device`` here (a short phrase), or None
    when it can.

    Nothing heavy is imported: the GPUs are asked through pycuda or the driver (``trt.gpu``).
    """
    devices = cuda_devices()
    if not devices:
        return "no CUDA GPU was found"
    if not 0 <= device < len(devices):
        return f"CUDA device {device} does not exist (this machine has {len(devices)})"
    if not runtime_candidates(manifest):
        wanted = runtime_backend(manifest)
        return f"the TensorRT runtime ({wanted.module_name if wanted else 'tensorrt or tensorrt_rtx'}) is not installed"
    for module_name, package in (("pycuda", "pycuda"), ("cuda.bindings", "cuda-python")):
        if not _installed(module_name):
            return f"{package} is not installed"
    targets = target_capabilities(manifest)
    if targets and devices[device] not in targets:
        return (f"this GPU (device {device}, compute capability {devices[device]}) is not one the engine was built "
                f"for ({', '.join(targets)})")
    return None


# -- reading the contract from an engine --------------------------------------------------------------


@dataclass(frozen=True)
class EngineIO:
    """What an engine says of itself: I/O dtypes and shapes (-1 for dynamic), its contract and profiles."""

    inputs: dict  # name -> (numpy dtype, shape)
    outputs: dict
    contract: object  # MatcherContract or ExtractorContract
    profiles: list[Profile]


def read_engine_io(engine, trt, settings: Callable[[], dict] = dict) -> EngineIO:
    """Read I/O tensors, contract and profiles from a deserialized engine; a ContractError unless it is a
    matcher, an extractor or a matcher stage. ``settings``: gives an extractor's network settings, or a
    stage's (asked for those only: an engine does not hold them)."""
    inputs, outputs = {}, {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        record = (np.dtype(trt.nptype(engine.get_tensor_dtype(name))), tuple(engine.get_tensor_shape(name)))
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs)[name] = record
    shapes = {name: tuple(d if d >= 0 else None for d in shape) for name, (_, shape) in {**inputs, **outputs}.items()}
    # An extractor's network settings, and a matcher stage's kind and layout, are not in the engine. A stage
    # takes states (layers, assignments) or keypoints without a threshold (the encoder).
    stage = "state0" in inputs or ("kpts0" in inputs and "threshold" not in inputs)
    recorded = settings() if "image" in inputs or stage else {}
    contract = contract_from_io({name: shapes[name] for name in inputs}, {name: shapes[name] for name in outputs},
                                recorded, "the engine")
    for spec in [*contract.inputs, *contract.outputs]:
        dtype = (inputs.get(spec.name) or outputs[spec.name])[0]
        if not compatible_dtype(dtype, spec.dtype):
            raise ContractError(f"engine tensor {spec.name} is {dtype}, the {contract.kind} contract needs {spec.dtype}")
    profiles = profiles_from_engine(lambda name, i: engine.get_tensor_profile_shape(name, i),
                                    engine.num_optimization_profiles, contract)
    return EngineIO(inputs, outputs, contract, profiles)


def check_bindings(io: EngineIO, engine_path: Path) -> None:
    """The engine's I/O tensors must be exactly its contract's: TensorRT's ``enqueueV3`` needs an address for
    every I/O tensor (``IExecutionContext.execute_async_v3``: "all input and output tensor addresses must be
    set"), and the session binds the contract's only, so an extra output would fail every request."""
    expected = {spec.name for spec in [*io.contract.inputs, *io.contract.outputs]}
    extra = [name for name in [*io.inputs, *io.outputs] if name not in expected]
    if extra:
        raise EngineError(f"engine {engine_path} has I/O tensors that the {io.contract.kind} contract does not know: "
                          f"{', '.join(extra)}; {REBUILD} from an ONNX exported by export.py")


def compatible_dtype(engine_dtype: np.dtype, contract_dtype: np.dtype) -> bool:
    """Equal, or both floating point (an engine may take float16 I/O; the runner converts)."""
    return engine_dtype == contract_dtype or (engine_dtype.kind == "f" and contract_dtype.kind == "f")


def profiles_from_engine(profile_shape: Callable[[str, int], list], count: int, contract) -> list[Profile]:
    """Profiles from ``profile_shape(name, index) -> [min, opt, max]`` of the inputs that carry the
    contract's dimensions (``contract.axes``)."""
    profiles = []
    for index in range(count):
        shapes = {name: [tuple(s) for s in profile_shape(name, index)] for name in {n for n, _ in contract.axes.values()}}
        ranges = {symbol: tuple(shape[axis] for shape in shapes[name]) for symbol, (name, axis) in contract.axes.items()}
        profiles.append(Profile.from_ranges(f"profile{index}", ranges))
    return profiles


def profiles_from_manifest(manifest: Manifest) -> list[Profile]:
    return [Profile.from_record(record) for record in manifest.profiles]
