"""The ``trtexec`` command that builds the same engine as ``build_engine``, for users who build with it, and the
``tensorrt_rtx`` command (TensorRT-RTX's own command-line builder, trtexec's counterpart) that builds what
``build_engine`` builds with tensorrt-rtx.

Several optimization profiles are passed the way trtexec parses them (NVIDIA/TensorRT,
``samples/common/sampleOptions.cpp``, ``BuildOptions::parse`` → ``getOptimizationProfiles``): each
``--profile=<index>`` is followed by that profile's ``--minShapes``, ``--optShapes`` and ``--maxShapes``,
each a comma-separated list of ``name:AxBxC``. A graph with only fixed input shapes needs none of them.

The command is for the ``trtexec`` of full TensorRT, which builds for the GPU it runs on. FP16 is
``--fp16`` with the FP32-critical layers pinned (``--precisionConstraints=obey --layerPrecisions=...``),
the same layers ``trt.engine.backends.fp32_layer`` pins in ``build_engine`` (for an extractor graph,
every layer outside its dense encoder).

``tensorrt_rtx`` takes the same ``--onnx``, ``--saveEngine``, ``--skipInference`` and shape flags, and
``--computeCapabilities=86,89,120`` for the targets (none: its default, every RTX GPU from Ampere on). It is
strongly typed, so FP16 is not a flag: it builds the mixed-FP16 ONNX that ``build_engine`` writes beside the
engine (``X.fp16.onnx``). It has no timing cache, as the tensorrt-rtx builder has none.

Printing a command needs only the graph's inputs and layer names, which weights do not change: for an ONNX
not exported yet (``make trtexec`` before ``make onnx``), ``stand_in_onnx`` exports the same graph with seeded
random weights into a temporary folder, so the command needs no weights, and names the real paths.
"""

import shlex
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from trt.engine.backends import fp32_layer
from trt.engine.builder import DEFAULTS, BuildOptions, fp16_onnx_path
from trt.errors import UserError
from trt.engine.profiles import GraphSignature, KeypointProfile, load_profiles
from trt.validation import check_distinct_paths, check_input_file, check_path


def shape_spec(shapes: dict[str, tuple]) -> str:
    """``{"kpts0": (1, 512, 2), ...}`` → ``kpts0:1x512x2,...`` (trtexec's shape syntax)."""
    return ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())


def profile_flags(profiles: list[KeypointProfile]) -> list[str]:
    """``--profile=i --minShapes=... --optShapes=... --maxShapes=...`` for each profile, in engine order."""
    if all(s.min == s.max for p in profiles for s in p.shapes.values()) and len(profiles) == 1:
        return []  # static shapes: trtexec takes them from the ONNX
    flags = []
    for index, profile in enumerate(profiles):
        flags.append(f"--profile={index}")
        for which in ("min", "opt", "max"):
            shapes = {name: getattr(shape, which) for name, shape in profile.shapes.items()}
            flags.append(f"--{which}Shapes={shape_spec(shapes)}")
    return flags


def fp32_node_names(onnx: Path) -> list[str]:
    """ONNX node names (TensorRT's layer names) that FP16 builds keep in FP32."""
    import onnx as onnx_lib

    scopes = GraphSignature.from_onnx(onnx).fp16_scopes
    model = onnx_lib.load(str(onnx), load_external_data=False)
    return [node.name for node in model.graph.node if node.name and fp32_layer(node.name, scopes)]


STAND_IN_ROLES = ("matcher", "extractor")


def parse_stand_in(value: str) -> tuple[str, str]:
    """``"matcher:sift"`` or ``"extractor:aliked-n16"`` -> (role, feature type or network name)."""
    role, _, name = str(value).partition(":")
    if role not in STAND_IN_ROLES or not name:
        raise UserError(f"a stand-in is matcher:<feature type> or extractor:<network>, not {value!r}")
    return role, name


@contextmanager
def stand_in_onnx(onnx: Path, stand_in: str | None) -> Iterator[Path]:
    """The graph to read ``onnx``'s command from: ``onnx`` where it exists, else (given ``stand_in``, see
    ``parse_stand_in``) the same graph exported with seeded random weights into a temporary folder."""
    if stand_in is None or Path(onnx).is_file():
        yield onnx
        return
    from trt.extractors import NETWORKS

    role, name = parse_stand_in(stand_in)
    with tempfile.TemporaryDirectory(prefix="lightglue-stand-in-") as folder:
        path = Path(folder) / "stand-in.onnx"
        if role == "matcher":
            from trt.onnx.export import export_matcher

            export_matcher(name, path, random_seed=0, verify=False)
        else:
            from trt.onnx.export_extractor import export_extractor

            if name not in NETWORKS:
                raise UserError(f"unknown extractor network {name!r}: choose one of {', '.join(NETWORKS)}")
            export_extractor(NETWORKS[name].feature, path, network=name, random_seed=0, verify=False)
        yield path


def trtexec_command(onnx: Path, profiles: Path | None = None, output: Path | None = None,
                    options: BuildOptions = DEFAULTS, graph: Path | None = None) -> list[str]:
    """The trtexec argument list building ``onnx`` with ``profiles`` (resolved as ``build_engine`` does);
    ``graph``: the ONNX the shapes and layer names are read from, when ``onnx`` is not there yet."""
    onnx, output, resolved = _resolve(onnx, profiles, output, graph)
    command = ["trtexec", f"--onnx={onnx}", f"--saveEngine={output}", "--skipInference", *profile_flags(resolved)]
    if options.precision == "fp16":
        command.append("--fp16")
        pinned = fp32_node_names(graph or onnx)
        if pinned:
            command += ["--precisionConstraints=obey", "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in pinned)]
    command += _shared_flags(options)
    if options.timing_cache is not None:
        command.append(f"--timingCacheFile={options.timing_cache}")
    return command


def tensorrt_rtx_command(onnx: Path, profiles: Path | None = None, output: Path | None = None,
                         options: BuildOptions = DEFAULTS, graph: Path | None = None) -> list[str]:
    """The ``tensorrt_rtx`` argument list building what ``build_engine`` builds with tensorrt-rtx (module
    docstring); arguments as ``trtexec_command``."""
    options = options.check()
    onnx, output, resolved = _resolve(onnx, profiles, output, graph)
    source = fp16_onnx_path(output) if options.precision == "fp16" else onnx
    command = ["tensorrt_rtx", f"--onnx={source}", f"--saveEngine={output}", "--skipInference", *profile_flags(resolved)]
    if options.target_sm is not None:
        targets = [part.strip().replace(".", "") for part in str(options.target_sm).split(",") if part.strip()]
        command.append(f"--computeCapabilities={','.join(targets)}")
    return command + _shared_flags(options)


def _resolve(onnx, profiles, output, graph) -> tuple[Path, Path, list[KeypointProfile]]:
    onnx = check_path(onnx, "the ONNX path") if graph is not None else check_input_file(onnx, "ONNX file")
    output = check_path(output, "the engine path") if output is not None else onnx.with_suffix(".engine")
    check_distinct_paths({"the engine": output}, {"the ONNX": onnx, "the profile file": profiles})  # when it runs
    resolved = load_profiles(GraphSignature.from_onnx(graph or onnx), Path(profiles) if profiles is not None else None)
    return onnx, output, resolved


def _shared_flags(options: BuildOptions) -> list[str]:
    """The build settings both tools spell alike."""
    flags = []
    if options.workspace_mib is not None:
        flags.append(f"--memPoolSize=workspace:{options.workspace_mib}M")
    if options.opt_level is not None:
        flags.append(f"--builderOptimizationLevel={options.opt_level}")
    return flags


def format_command(command: list[str]) -> str:
    """The command as one shell line, quoted where needed."""
    return shlex.join(command)
