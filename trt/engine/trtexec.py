"""The ``trtexec`` command that builds the same engine as ``build_engine``, for users who build with it.

Several optimization profiles are passed the way trtexec parses them (NVIDIA/TensorRT,
``samples/common/sampleOptions.cpp``, ``BuildOptions::parse`` → ``getOptimizationProfiles``): each
``--profile=<index>`` is followed by that profile's ``--minShapes``, ``--optShapes`` and ``--maxShapes``,
each a comma-separated list of ``name:AxBxC``. A graph with only fixed input shapes needs none of them.

The command is for the ``trtexec`` of full TensorRT, which builds for the GPU it runs on. FP16 is
``--fp16`` with the FP32-critical layers pinned (``--precisionConstraints=obey --layerPrecisions=...``),
the same layers ``trt.engine.backends.fp32_layer`` pins in ``build_engine`` (for an extractor graph,
every layer outside its dense encoder).
"""

import shlex
from pathlib import Path

from trt.engine.backends import fp32_layer
from trt.engine.builder import DEFAULTS, BuildOptions
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


def trtexec_command(onnx: Path, profiles: Path | None = None, output: Path | None = None,
                    options: BuildOptions = DEFAULTS) -> list[str]:
    """The trtexec argument list building ``onnx`` with ``profiles`` (resolved as ``build_engine`` does)."""
    onnx = check_input_file(onnx, "ONNX file")
    output = check_path(output, "the engine path") if output is not None else onnx.with_suffix(".engine")
    check_distinct_paths({"the engine": output}, {"the ONNX": onnx, "the profile file": profiles})  # when it runs
    options.check()
    resolved = load_profiles(GraphSignature.from_onnx(onnx), Path(profiles) if profiles is not None else None)
    command = ["trtexec", f"--onnx={onnx}", f"--saveEngine={output}", "--skipInference", *profile_flags(resolved)]
    if options.precision == "fp16":
        command.append("--fp16")
        pinned = fp32_node_names(onnx)
        if pinned:
            command += ["--precisionConstraints=obey", "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in pinned)]
    if options.workspace_mib is not None:
        command.append(f"--memPoolSize=workspace:{options.workspace_mib}M")
    if options.opt_level is not None:
        command.append(f"--builderOptimizationLevel={options.opt_level}")
    if options.timing_cache is not None:
        command.append(f"--timingCacheFile={options.timing_cache}")
    return command


def format_command(command: list[str]) -> str:
    """The command as one shell line, quoted where needed."""
    return shlex.join(command)
