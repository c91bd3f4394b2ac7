"""Build a TensorRT engine from an ONNX graph and its optimization profiles, in small steps.

Each step is a loader in Polygraphy's style: ``__init__`` stores arguments (a value, or a callable
returning one), ``__call__`` does the work, so the chain reads as one expression and each step runs
alone in a test::

    network = NetworkFromOnnxPath("sift.onnx", get_backend("tensorrt-rtx"))
    config = ConfigFromProfiles(profiles, target=["8.6", "8.9", "12.0"])
    SaveEngine(EngineBytesFromNetwork(network, config), "sift.engine", manifest=...)()

``build_engine`` chains them, times them and writes ``X.engine`` with its manifest ``X.engine.json``.
Writes are atomic (temporary files ``.X.engine.*.tmp`` beside the output, renamed into place): a
failed or killed build leaves the previous engine and manifest as they were. The engine is renamed
first and the manifest right after it; the manifest records the engine's sha256 and size, so a reader
can tell the pair apart in the instant between the two renames. Temporary files of a build killed
while writing are removed by the next build of the same output (two concurrent builds of one output
are not supported).
"""

import hashlib
import os
import sys
import warnings
import shutil
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple

from trt.engine.backends import PRECISIONS, Backend, get_backend, make_logger, make_progress_monitor
from trt.engine.manifest import Manifest, ProfileRecord, TensorRecord, load_manifest, manifest_path, weights_record
from trt.engine.profiles import GraphSignature, KeypointProfile, load_profiles
from trt.errors import BuildError, ContractError, EngineError, UserError
from trt.fileio import atomic_path, check_writable, read_file_bytes, sha256_file, write_bytes_atomic
from trt.precision import BUILD_PRECISION_ALIASES, canonical_precision
from trt.validation import check_distinct_paths, check_input_file, check_integer, check_path

OPT_LEVELS = range(0, 6)
MAX_WORKSPACE_MIB = 1 << 24  # 16 TiB; TensorRT takes the limit in bytes as a 64-bit size


@dataclass(frozen=True)
class BuildOptions:
    """Every build setting, with its default: the one place the CLI and ``build_engine`` take them from."""

    precision: str = "fp32"  # fp32 | fp16
    builder: str = "auto"  # auto | tensorrt | tensorrt-rtx (auto: full TensorRT where installed)
    # tensorrt-rtx: compute capabilities, "8.9" or "8.6,8.9,12.0"; None: the local GPU if it has one that
    # tensorrt-rtx supports, else every RTX GPU from Ampere on. Full TensorRT: always the local GPU (None).
    target_sm: str | None = None
    workspace_mib: int | None = None  # builder workspace limit; None: TensorRT's default (the device memory)
    timing_cache: Path | None = None  # read before the build if it exists, written after it
    opt_level: int | None = None  # builder optimization level 0-5; None: TensorRT's default (3)
    progress: bool = True  # TensorRT's progress monitor: bars on a terminal, else a line per phase
    gate: bool = True  # FP16: refuse the build when the FP16 graph matches unlike the FP32 one (trt.engine.gate)

    def check(self) -> "BuildOptions":
        if canonical_precision(self.precision, BUILD_PRECISION_ALIASES) != self.precision:
            return replace(self, precision=canonical_precision(self.precision, BUILD_PRECISION_ALIASES)).check()
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.opt_level is not None and self.opt_level not in OPT_LEVELS:
            raise UserError(f"optimization level must be 0-5, not {self.opt_level}")
        if self.workspace_mib is not None:
            check_integer(self.workspace_mib, "the workspace (MiB)", 1, MAX_WORKSPACE_MIB)
        return self


DEFAULTS = BuildOptions()


def _value(value_or_callable):
    """Polygraphy's convention: a step takes a value or a callable that returns one."""
    return value_or_callable() if callable(value_or_callable) else value_or_callable


class ParsedNetwork(NamedTuple):
    backend: Backend
    builder: object
    network: object
    parser: object
    logger: object


class BuilderConfig(NamedTuple):
    config: object
    profiles_seen: list[dict]  # per profile: input name -> {"min", "opt", "max"}, read back from TensorRT
    pinned_fp32: list[str]  # layers kept in FP32 (full TensorRT, FP16)
    keep_alive: tuple  # Python objects TensorRT holds by reference (progress monitor, timing cache)


class NetworkFromOnnxPath:
    """ONNX path → (builder, network, parser); a parser error is a BuildError naming every failing node."""

    def __init__(self, path: Path, backend: Backend, echo_warnings: bool = True):
        self.path, self.backend, self.echo_warnings = Path(path), backend, echo_warnings

    def __call__(self) -> ParsedNetwork:
        module = self.backend.module
        logger = make_logger(self.backend, self.echo_warnings)
        builder = module.Builder(logger)
        if not builder:
            raise BuildError(f"{self.backend.name} could not create a builder: {'; '.join(logger.errors)}")
        network = self.backend.create_network(builder)
        parser = module.OnnxParser(network, logger)
        if not parser.parse_from_file(str(self.path)) or parser.num_errors:
            raise BuildError(f"the {self.backend.name} ONNX parser rejected {self.path}:\n" + parser_errors(parser, logger))
        return ParsedNetwork(self.backend, builder, network, parser, logger)


def parser_errors(parser, logger=None) -> str:
    """One line per parser error: node index, name and op, and TensorRT's description."""
    lines = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        node, name, op = (_call(error, attribute) for attribute in ("node", "node_name", "node_operator"))
        where = f"node {node}" + (f" {name!r}" if name else "") + (f" ({op})" if op else "")
        lines.append(f"  {where}: {error.desc()}")
    if not lines and logger is not None:
        lines = [f"  {message}" for message in logger.errors]
    return "\n".join(lines) or "  (no error reported)"


def _call(obj, attribute: str):
    method = getattr(obj, attribute, None)  # node_name and node_operator are TensorRT 10+
    return method() if method is not None else None


class ConfigFromProfiles:
    """network → builder config with every profile as a separate optimization profile, in order.

    Called with the parsed network (Polygraphy's ``CreateConfig`` is called with builder and network).
    """

    def __init__(self, profiles: list[KeypointProfile], precision: str = DEFAULTS.precision,
                 target: list[str] | None = None, workspace_mib: int | None = DEFAULTS.workspace_mib,
                 opt_level: int | None = DEFAULTS.opt_level, timing_cache: bytes | None = None,
                 progress: bool = DEFAULTS.progress, fp16_scopes: tuple[str, ...] | None = None):
        self.profiles, self.precision, self.target = profiles, precision, target  # compute capabilities
        self.workspace_mib, self.opt_level, self.timing_cache, self.progress = workspace_mib, opt_level, timing_cache, progress
        self.fp16_scopes = fp16_scopes  # an extractor graph's FP16 region (full TensorRT pins the rest to FP32)

    def __call__(self, parsed: ParsedNetwork) -> BuilderConfig:
        config = parsed.builder.create_builder_config()
        keep_alive = self._settings(config, parsed.backend)
        pinned = parsed.backend.configure_precision(config, parsed.network, self.precision, self.fp16_scopes)
        names = [parsed.network.get_input(i).name for i in range(parsed.network.num_inputs)]
        seen = []
        for profile in self.profiles:
            trt_profile = profile.to_trt(parsed.builder, names)
            if config.add_optimization_profile(trt_profile) < 0:
                raise BuildError(f"TensorRT rejected optimization profile {profile.name!r}: " + "; ".join(parsed.logger.errors))
            seen.append({n: dict(zip(("min", "opt", "max"), map(list, trt_profile.get_shape(n)))) for n in names})
        if config.num_optimization_profiles != len(self.profiles):
            raise BuildError(f"the builder holds {config.num_optimization_profiles} profiles, expected {len(self.profiles)}")
        return BuilderConfig(config, seen, pinned, keep_alive)

    def _settings(self, config, backend: Backend) -> tuple:
        """Target, memory, optimization level, timing cache and progress; returns what TensorRT holds by reference."""
        backend.configure_target(config, self.target)
        if self.workspace_mib is not None:
            config.set_memory_pool_limit(backend.module.MemoryPoolType.WORKSPACE, self.workspace_mib << 20)
        if self.opt_level is not None:
            config.builder_optimization_level = self.opt_level
        keep_alive = []
        if self.timing_cache is not None:
            cache = config.create_timing_cache(self.timing_cache)
            if not cache or not config.set_timing_cache(cache, ignore_mismatch=False):
                raise BuildError("TensorRT rejected the timing cache (made by another TensorRT version or device?)")
            keep_alive.append(cache)
        monitor = make_progress_monitor(backend) if self.progress else None
        if monitor is not None:
            config.progress_monitor = monitor
            keep_alive.append(monitor)
        return tuple(keep_alive)


class EngineBytesFromNetwork:
    """(network, config) → serialized engine bytes; a builder failure is a BuildError with TensorRT's errors.

    ``network``: a ParsedNetwork or a loader returning one; ``config``: a BuilderConfig or a
    ``ConfigFromProfiles``, called with the network.
    """

    def __init__(self, network, config):
        self.network, self.config = network, config

    def __call__(self) -> bytes:
        parsed: ParsedNetwork = _value(self.network)
        built: BuilderConfig = self.config(parsed) if callable(self.config) else self.config
        parsed.logger.errors.clear()
        serialized = parsed.builder.build_serialized_network(parsed.network, built.config)
        # An engine is only as good as a build that logged no error: TensorRT may serialize one anyway.
        if serialized is None or serialized.nbytes == 0 or parsed.logger.errors:
            errors = "\n".join(f"  {message}" for message in parsed.logger.errors) or "  (no error reported)"
            raise BuildError(f"{parsed.backend.name} could not build the engine:\n{errors}")
        return bytes(memoryview(serialized))


class SaveEngine:
    """engine bytes → ``path`` and its manifest, both atomically; ``manifest`` maps the bytes to a Manifest."""

    def __init__(self, engine, path: Path, manifest: Callable[[bytes], Manifest] | None = None):
        self.engine, self.path, self.manifest = engine, Path(path), manifest

    def __call__(self) -> Path:
        data = _value(self.engine)
        try:
            with ExitStack() as stack:
                # entered manifest first: contexts exit in reverse, so the engine is renamed into place first
                manifest_tmp = stack.enter_context(atomic_path(manifest_path(self.path))) if self.manifest else None
                engine_tmp = stack.enter_context(atomic_path(self.path))
                engine_tmp.write_bytes(data)
                if manifest_tmp is not None:
                    manifest_tmp.write_text(self.manifest(data).to_json())
        except OSError as error:
            raise UserError(f"cannot write {self.path}: {error.strerror or error}") from error
        return self.path


# ---------------------------------------------------------------------------------------------------


def remove_stale_temporaries(output: Path) -> list[Path]:
    """Remove ``.X.engine.*.tmp`` and ``.X.engine.json.*.tmp`` left by a build killed while writing."""
    removed = []
    for stale in sorted(output.parent.glob(f".{output.name}.*.tmp")):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def _fp16_gate(fp32_onnx: Path, fp16_onnx: Path, graph: GraphSignature, options: BuildOptions, timer):
    """Run the FP16 accuracy gate (a BuildError refuses the build), or warn that it was skipped."""
    if not options.gate:
        what = "keypoints and descriptors" if graph.layout is None else "matches"
        warnings.warn(f"the FP16 accuracy gate is skipped (--no-gate): the engine's {what} are unchecked", stacklevel=3)
        return None
    from trt.engine.gate import check_extractor_fp16, check_fp16

    with timer.step("fp16_gate"):
        if graph.layout is not None:
            report = check_fp16(fp32_onnx, fp16_onnx, *graph.layout)
        else:
            report = check_extractor_fp16(fp32_onnx, fp16_onnx, _network_of(graph))
    print(report, file=sys.stderr)
    return report


def _network_of(graph: GraphSignature):
    """The extractor network an extractor graph was exported from (its metadata names it)."""
    from trt.extractors import get_network

    if graph.extractor is None or "lightglue.network" not in graph.metadata:
        raise UserError("the extractor graph has no lightglue.extractor/lightglue.network metadata: export it with "
                        "export.py --extractor-path, or build it fp32")
    return get_network(graph.extractor, graph.metadata["lightglue.network"])


def _network_record(graph: GraphSignature) -> dict:
    """The manifest's ``extractor_network`` of an extractor graph, from its metadata."""
    meta = {key.removeprefix("lightglue."): value for key, value in graph.metadata.items()}

    def number(key: str, cast):
        return cast(meta[key]) if key in meta else None

    layout = graph.extractor_layout
    return {"name": meta.get("network"), "padding": meta.get("padding"), "channels": layout.channels,
            "stride": number("stride", int), "max_keypoints": layout.max_keypoints,
            "detection_threshold": number("detection_threshold", float), "nms_radius": number("nms_radius", int)}


def link_extractor_engine(graph: GraphSignature, extractor_engine: Path, output: Path) -> dict:
    """The manifest's ``extractor_engine`` entry of a matcher served with ``extractor_engine``, after checking
    that the two fit: an extractor engine with its manifest, making the features (type and D) the matcher takes."""
    extractor_engine = Path(extractor_engine)
    if graph.layout is None:
        raise UserError("--extractor-engine links an extractor engine to a matcher, but this ONNX is not a matcher")
    if not extractor_engine.is_file():
        raise UserError(f"extractor engine not found: {extractor_engine}")
    manifest = load_manifest(extractor_engine)
    if manifest is None or manifest.extractor_network is None:
        raise EngineError(f"{extractor_engine} is not an extractor engine built by build_engine.py (its manifest "
                          f"{manifest_path(extractor_engine)} is missing or describes no extractor network)")
    digest = sha256_file(extractor_engine)
    if digest != manifest.engine.get("sha256"):
        raise EngineError(f"{extractor_engine} does not match its manifest (sha256 {digest}, the manifest records "
                          f"{manifest.engine.get('sha256')}): rebuild it")
    network = manifest.extractor_network.get("name")
    descriptor_dim, feature = graph.layout[0], graph.extractor
    if manifest.descriptor_dim != descriptor_dim:
        raise ContractError(f"extractor engine {extractor_engine} ({network}) gives {manifest.descriptor_dim}-D "
                            f"descriptors, but this matcher ({feature}) takes {descriptor_dim}-D ones")
    if feature is not None and manifest.extractor != feature:
        raise ContractError(f"extractor engine {extractor_engine} ({network}) makes {manifest.extractor} features, "
                            f"but this matcher was trained for {feature} features")
    return {"file": os.path.relpath(extractor_engine.resolve(), output.resolve().parent), "sha256": digest,
            "network": network, "descriptor_dim": manifest.descriptor_dim}


def fp16_onnx_path(output: Path) -> Path:
    """Where the FP16 graph a strongly typed builder built from is kept: beside the engine."""
    return output.parent / f"{output.stem}.fp16.onnx"


def is_fp16_graph(graph: GraphSignature) -> bool:
    from trt.onnx.fp16 import PRECISION_KEY

    return graph.metadata.get(PRECISION_KEY) == "fp16"


@dataclass
class _Timer:
    timings: dict = field(default_factory=dict)

    @contextmanager
    def step(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)


def build_engine(onnx: Path, profiles: Path | None = None, output: Path | None = None,
                 precision: str = DEFAULTS.precision, builder: str = DEFAULTS.builder,
                 target_sm: str | None = DEFAULTS.target_sm, workspace_mib: int | None = DEFAULTS.workspace_mib,
                 timing_cache: Path | None = DEFAULTS.timing_cache, opt_level: int | None = DEFAULTS.opt_level,
                 progress: bool = DEFAULTS.progress, gate: bool = DEFAULTS.gate,
                 extractor_engine: Path | None = None,
                 resolved_profiles: list[KeypointProfile] | None = None) -> Path:
    """Build ``onnx`` into ``output`` (default: the ONNX path with ``.engine``) and its manifest; return the path.

    ``profiles``: a profile file; None takes the graph's static shapes, else ``profiles/<extractor>.toml``
    (``profiles/extractors/<extractor>.toml`` for an extractor graph; see ``trt.engine.profiles.load_profiles``).
    ``extractor_engine``: for a matcher, the extractor engine that serves it, checked and named in the
    manifest (``link_extractor_engine``). ``resolved_profiles``: the profiles already resolved for this graph
    (a matcher stage's, ``trt.engine.stage_engines``), in place of reading ``profiles``. Nothing is written
    unless the build succeeds.
    """
    started = time.perf_counter()
    timing_cache = check_path(timing_cache, "the timing cache path") if timing_cache is not None else None
    options = BuildOptions(precision, builder, target_sm, workspace_mib, timing_cache, opt_level, progress, gate).check()
    onnx = check_input_file(onnx, "ONNX file")
    output = check_path(output, "the engine path") if output is not None else onnx.with_suffix(".engine")
    profiles = check_path(profiles, "the profile file path") if profiles is not None else None
    backend = get_backend(options.builder)
    targets = backend.target(options.target_sm)
    if options.timing_cache is not None and not backend.supports_timing_cache():
        raise UserError(f"{backend.name} {backend.version} has no timing cache: drop --timing-cache")
    timer = _Timer()
    with timer.step("profiles"):
        graph = GraphSignature.from_onnx(onnx)
        resolved = resolved_profiles if resolved_profiles is not None else load_profiles(graph, profiles)
    linked = link_extractor_engine(graph, extractor_engine, output) if extractor_engine is not None else None
    # Matcher and extractor graphs get their mixed-precision variant, gated; other graphs build FP16 by flags
    # (full TensorRT).
    fp16_aware = graph.layout is not None or graph.is_extractor
    converts = options.precision == "fp16" and not is_fp16_graph(graph) and (fp16_aware or backend.needs_fp16_onnx)
    # after the inputs are checked, before the long build
    _check_output(output, {"the ONNX": onnx, "the profile file": profiles, "the extractor engine": extractor_engine},
                  {"the timing cache": options.timing_cache, "the FP16 ONNX": fp16_onnx_path(output) if converts else None})
    remove_stale_temporaries(output)
    cache_in = None
    if options.timing_cache is not None:  # an empty cache when the file does not exist yet
        cache_in = read_file_bytes(options.timing_cache, "timing cache") if os.path.lexists(options.timing_cache) else b""

    with ExitStack() as stack:
        source, built_graph = onnx, graph
        converted = None  # the FP16 variant made here, moved beside the engine once the build succeeds
        gate_report = None
        if converts:
            from trt.onnx.fp16 import convert_to_mixed_fp16

            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix=f".{output.name}.", suffix=".tmp",
                                                                      dir=output.parent))
            with timer.step("fp16_onnx"):
                converted = convert_to_mixed_fp16(onnx, Path(workdir) / fp16_onnx_path(output).name)
            gate_report = _fp16_gate(onnx, converted, graph, options, timer)
            if backend.needs_fp16_onnx:  # strongly typed: precision comes from the graph's types
                source, built_graph = converted, GraphSignature.from_onnx(converted)
            else:
                converted = None
        with timer.step("parse"):
            parsed = NetworkFromOnnxPath(source, backend)()
        with timer.step("configure"):
            config = ConfigFromProfiles(resolved, options.precision, targets, options.workspace_mib, options.opt_level,
                                        cache_in, options.progress, graph.fp16_scopes)(parsed)
        with timer.step("build"):
            data = EngineBytesFromNetwork(parsed, config)()
        if converted is not None:
            # The engine's source, run by ONNX Runtime in its place, is the graph it was built from.
            source = converted.replace(fp16_onnx_path(output))

    record = {
        # The path is relative to the engine's folder, so engine and ONNX can be moved together.
        "onnx": {"path": os.path.relpath(source.resolve(), output.resolve().parent), "absolute": str(source.resolve()),
                 "sha256": sha256_file(source), "metadata": dict(built_graph.metadata),
                 **({"converted_from": {"path": str(onnx.resolve()), "sha256": sha256_file(onnx)}}
                    if converted is not None else {})},
        "builder": {"name": backend.name, "version": backend.version},
        "target": {"compute_capability": targets},
        "precision": options.precision,
        "extractor": graph.extractor,
        "descriptor_dim": graph.layout[0] if graph.layout else (
            graph.extractor_layout.descriptor_dim if graph.extractor_layout else None),
        "scale_ori": graph.layout[1] if graph.layout else None,
        "profiles": [ProfileRecord(**{**p.to_record(), "shapes": seen}) for p, seen in zip(resolved, config.profiles_seen)],
        "inputs": [TensorRecord(i.name, i.dtype.name, list(i.shape)) for i in built_graph.inputs],
        "outputs": [TensorRecord(o.name, o.dtype.name, list(o.shape)) for o in built_graph.outputs],
        "build_seconds": round(time.perf_counter() - started, 3),
        "timings": dict(timer.timings),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "options": {
            "profiles_file": str(profiles) if profiles is not None else None,
            "workspace_mib": options.workspace_mib,
            "opt_level": options.opt_level,
            "timing_cache": str(options.timing_cache) if options.timing_cache else None,
            "fp16_gate": asdict(gate_report) if gate_report is not None else None,
            "num_optimization_profiles": config.config.num_optimization_profiles,
            "fp32_layers": config.pinned_fp32,
        },
        "extractor_network": _network_record(graph) if graph.extractor_layout is not None else None,
        "extractor_engine": linked,
        "weights": weights_record(graph.metadata),
    }

    def manifest(engine_bytes: bytes) -> Manifest:
        engine = {"file": output.name, "sha256": hashlib.sha256(engine_bytes).hexdigest(), "bytes": len(engine_bytes)}
        return Manifest(engine=engine, **record)

    SaveEngine(data, output, manifest)()
    if options.timing_cache is not None:
        write_bytes_atomic(options.timing_cache, bytes(memoryview(config.config.get_timing_cache().serialize())))
    return output


def _check_output(output: Path, inputs: dict, other_outputs: dict) -> None:
    """Fail before the long build when ``output`` cannot be written, or a file written would be an input."""
    if output.suffix == ".json":
        raise UserError(f"the engine path {output} ends in .json, the manifest's suffix: name it .engine")
    check_distinct_paths({"the engine": output, "its manifest": manifest_path(output), **other_outputs}, inputs)
    check_writable(output)
