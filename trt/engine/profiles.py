"""Optimization profiles: keypoint or image-size buckets read from a TOML file, validated against the ONNX inputs.

Everything here runs without TensorRT; only ``KeypointProfile.to_trt`` touches a TensorRT builder
(through the object it is given, so this module imports no TensorRT either).

A profile file (``profiles/sift.toml``)::

    [batch]                                  # pairs per request, for every bucket (a bucket may override it)
    min = 1
    opt = 1
    max = 4

    [[profile]]                              # one TensorRT optimization profile per table, smallest first
    name = "n512"                            # optional; default "n<max>"
    keypoints = { min = 1, opt = 512, max = 512 }        # N0 and N1 alike, or:
    # keypoints0 = { min = 1, opt = 512, max = 512 }     # N0 and N1 separately
    # keypoints1 = { min = 1, opt = 512, max = 512 }
    # batch = { min = 1, opt = 1, max = 8 }              # this bucket only
    # [profile.shapes.threshold]                         # explicit shapes for any input, by name
    # min = [1]; opt = [1]; max = [1]

Buckets are listed in increasing order and are contiguous in N0 and in N1 (the next ``min`` is the
previous ``max`` + 1): overlapping buckets would make the choice of profile ambiguous, and a gap would
leave sizes no profile accepts. A request runs in the first bucket whose ``max`` covers both N0 and N1
and whose batch range holds B, at its own size: the runtime pads N0 and N1 only up to the bucket's
``min`` (``trt.runtime.base.Profile.padded``; ``count0``/``count1`` say which rows are real), so a pair of
100 and 3000 keypoints runs in the 2049-4096 bucket as 2049 and 3000. ``opt``, at the top of each bucket, is
the size TensorRT tunes for, and the one shape a profile runs where a backend fixes one per profile
(TensorRT with CUDA graphs, ``Runner.request_profiles``; OpenVINO's fixed-shape models for pairs near opt).

No tensor may exceed ``MAX_TENSOR_VOLUME`` elements at a profile's maximum: every input, and for a
matcher the attention scores (``trt.contract.largest_tensor_shape``), so that a bucket of, say, 2^31
keypoints is refused with the largest size that fits rather than built into an engine TensorRT calls
"not self-consistent".

The input shapes of each bucket follow from the matcher contract (``trt.contract``): ``kpts``, ``desc``,
``scales`` and ``oris`` from B and N0/N1, ``size`` and ``count`` from B, ``threshold`` is [1].

An extractor graph (``trt.extractor_contract``: ``image`` [B, C, H, W], ``region`` [B, 4]) takes buckets
of image sizes instead (``profiles/extractors/<feature>.toml``)::

    [[profile]]
    name = "480x640"
    height = { min = 64, opt = 480, max = 480 }   # pixels, multiples of the network's stride
    width = { min = 64, opt = 640, max = 640 }

Image buckets may overlap (a landscape and a portrait bucket share small sizes): a request runs in the
smallest bucket that holds it. A graph with neither contract takes only ``shapes`` tables; a graph with
fixed input dimensions needs no file at all: its single profile is derived from it (``static_profile``).
"""

import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trt import extractor_contract
from trt.contract import (ATTENTION_HEADS, BATCH, KEYPOINTS0, KEYPOINTS1, TensorSpec, infer_layout, input_specs,
                          largest_tensor_shape)
from trt.errors import BuildError, ContractError, ProfileError, UserError
from trt.fileio import check_regular_file, read_text
from trt.precision import SCOPES_KEY

PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"
EXTRACTOR_METADATA_KEY = "lightglue.extractor"
ROLE_METADATA_KEY = "lightglue.role"  # "extractor" for an extractor graph exported by this project
STRIDE_METADATA_KEY = "lightglue.stride"
STATIC_PROFILE_NAME = "static"
# Elements of one tensor TensorRT builds for: tensorrt-rtx 1.7 logs "tensor volume exceeds 1099511627776"
# (and writes an engine unusable at the profile's maximum) beyond it.
MAX_TENSOR_VOLUME = 1 << 40

_BUCKET_KEYS = {"name", "batch", "keypoints", "keypoints0", "keypoints1", "height", "width", "shapes"}
_FILE_KEYS = {"batch", "profile"}


@dataclass(frozen=True)
class Range:
    """min ≤ opt ≤ max of one dimension."""

    min: int
    opt: int
    max: int

    def __iter__(self):
        return iter((self.min, self.opt, self.max))

    def __str__(self) -> str:
        return f"{self.min}/{self.opt}/{self.max}"


@dataclass(frozen=True)
class ShapeTuple:
    """min, opt and max shapes of one input (Polygraphy's name)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __iter__(self):
        return iter((self.min, self.opt, self.max))

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class GraphInput:
    name: str
    dtype: np.dtype
    shape: tuple  # int for a fixed dimension, str (dim_param) or None for a dynamic one

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)


@dataclass(frozen=True)
class GraphSignature:
    """What profile validation and the manifest need to know of an ONNX graph: its I/O and metadata."""

    inputs: tuple[GraphInput, ...]
    outputs: tuple[GraphInput, ...] = ()
    metadata: dict = field(default_factory=dict)

    @classmethod
    def from_onnx(cls, path: Path) -> "GraphSignature":
        import onnx
        from google.protobuf.message import DecodeError

        check_regular_file(path, "ONNX file")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except FileNotFoundError:
            raise UserError(f"ONNX file not found: {path}") from None
        except (OSError, DecodeError) as error:
            raise BuildError(f"cannot read ONNX file {path}: {error}") from error
        initializers = {init.name for init in model.graph.initializer}
        return cls(
            inputs=tuple(_graph_value(v) for v in model.graph.input if v.name not in initializers),
            outputs=tuple(_graph_value(v) for v in model.graph.output),
            metadata={prop.key: prop.value for prop in model.metadata_props},
        )

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def is_static(self) -> bool:
        return all(i.is_static for i in self.inputs)

    @property
    def layout(self) -> tuple[int, bool] | None:
        """(descriptor_dim, scale_ori) for a graph with the matcher contract, else None."""
        try:
            return infer_layout(self.input_names, {i.name: i.shape for i in self.inputs})
        except ContractError:
            return None

    @property
    def extractor_layout(self) -> extractor_contract.ExtractorLayout | None:
        """(channels, max_keypoints, descriptor_dim) for a graph with the extractor contract, else None."""
        try:
            return extractor_contract.infer_layout({i.name: i.shape for i in self.inputs},
                                                   {o.name: o.shape for o in self.outputs})
        except ContractError:
            return None

    @property
    def extractor(self) -> str | None:
        """The feature type: the one the matcher was trained for, or the one the extractor makes."""
        return self.metadata.get(EXTRACTOR_METADATA_KEY)

    @property
    def is_extractor(self) -> bool:
        return self.metadata.get(ROLE_METADATA_KEY) == "extractor" or self.extractor_layout is not None

    @property
    def fp16_scopes(self) -> tuple[str, ...] | None:
        """The FP16 region an extractor graph names (``lightglue.fp16_scopes``), else None."""
        value = self.metadata.get(SCOPES_KEY)
        return tuple(json.loads(value)) if value is not None else None

    @property
    def stride(self) -> int | None:
        """An extractor network's stride (image sides are multiples of it), from the metadata."""
        value = self.metadata.get(STRIDE_METADATA_KEY)
        return int(value) if value is not None else None

    def input(self, name: str) -> GraphInput:
        for graph_input in self.inputs:
            if graph_input.name == name:
                return graph_input
        raise ProfileError(f"the ONNX has no input {name!r}; its inputs are: {', '.join(self.input_names)}")


def _graph_value(value) -> GraphInput:
    import onnx

    tensor = value.type.tensor_type
    dims = tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None) for d in tensor.shape.dim
    )
    return GraphInput(value.name, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims)


@dataclass(frozen=True)
class Bucket:
    """One ``[[profile]]`` table of a profile file, checked on its own (no graph needed)."""

    name: str
    batch: Range | None
    keypoints0: Range | None
    keypoints1: Range | None
    shapes: dict  # input name -> ShapeTuple, explicit overrides
    where: str  # "file:line" of its table, for error messages
    height: Range | None = None  # image buckets (extractor graphs)
    width: Range | None = None

    def dimensions(self) -> dict[str, Range]:
        """The contract's symbolic dimensions this bucket gives ranges for: B with N0, N1 or with H, W."""
        named = {BATCH: self.batch, KEYPOINTS0: self.keypoints0, KEYPOINTS1: self.keypoints1,
                 extractor_contract.HEIGHT: self.height, extractor_contract.WIDTH: self.width}
        return {symbol: value for symbol, value in named.items() if value is not None}


@dataclass(frozen=True)
class ProfileFile:
    path: Path
    buckets: tuple[Bucket, ...]


@dataclass(frozen=True)
class KeypointProfile:
    """One optimization profile, resolved for a graph: min/opt/max shapes of every input, in graph order."""

    name: str
    shapes: dict  # input name -> ShapeTuple
    batch: Range | None = None  # None for a graph without the matcher or extractor contract
    keypoints0: Range | None = None  # matcher graphs
    keypoints1: Range | None = None
    height: Range | None = None  # extractor graphs: image height and width in pixels
    width: Range | None = None

    def to_trt(self, builder, input_names=None):
        """A TensorRT ``IOptimizationProfile`` made with ``builder``; ``input_names`` limits it to the
        inputs the parsed network kept (the parser drops inputs nothing reads)."""
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in self.shapes.items():
            if input_names is None or name in input_names:
                profile.set_shape(name, lo, opt, hi)
        if not profile:
            raise BuildError(f"TensorRT rejected optimization profile {self.name!r}: {self.describe()}")
        return profile

    def to_record(self) -> dict:
        """The manifest's view of this profile (see ``trt.engine.manifest``)."""
        ranges = {k: (list(v) if v is not None else None) for k, v in self.ranges().items()}
        return {"name": self.name, **ranges, "shapes": {k: v.to_dict() for k, v in self.shapes.items()}}

    def ranges(self) -> dict:
        return {"batch": self.batch, "keypoints0": self.keypoints0, "keypoints1": self.keypoints1,
                "height": self.height, "width": self.width}

    def describe(self) -> str:
        return ", ".join(f"{n}: {'x'.join(map(str, s.min))}..{'x'.join(map(str, s.max))}" for n, s in self.shapes.items())


# ---------------------------------------------------------------------------------------------------
# Reading a profile file (no graph needed)


def read_profile_file(path: Path) -> ProfileFile:
    """Parse and check a profile file on its own: types, min ≤ opt ≤ max, order, overlaps and gaps."""
    path = Path(path)
    text = read_text(path, "profile file", ProfileError)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ProfileError(f"{path}: malformed TOML: {error}") from None
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise ProfileError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(_FILE_KEYS))}")
    lines = _table_lines(text)
    default_batch = _range(data["batch"], f"{path}:{lines.get('batch', 1)}: [batch]") if "batch" in data else None
    tables = data.get("profile")
    if not isinstance(tables, list) or not tables:
        raise ProfileError(f"{path}: no [[profile]] tables: give at least one bucket")
    profile_lines = lines.get("profile", [])
    buckets = []
    for index, table in enumerate(tables):
        line = profile_lines[index] if index < len(profile_lines) else "?"
        buckets.append(_bucket(table, index, f"{path}:{line}", default_batch))
    _check_names(buckets)
    _check_contiguous(buckets, "keypoints0", "N0")
    _check_contiguous(buckets, "keypoints1", "N1")
    return ProfileFile(path, tuple(buckets))


def _table_lines(text: str) -> dict:
    """1-based line numbers of the ``[batch]`` table and of each ``[[profile]]`` table."""
    lines: dict = {"profile": []}
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(r"\s*\[\[\s*profile\s*\]\]", line):
            lines["profile"].append(number)
        elif re.match(r"\s*\[\s*batch\s*\]", line):
            lines["batch"] = number
    return lines


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"{what} must be an integer, not {value!r}")
    if value <= 0:
        raise ProfileError(f"{what} must be positive, not {value}")
    return value


def _range(table, what: str) -> Range:
    if not isinstance(table, dict) or set(table) != {"min", "opt", "max"}:
        raise ProfileError(f"{what} must be a table with exactly min, opt and max, not {table!r}")
    lo, opt, hi = (_positive_int(table[k], f"{what} {k}") for k in ("min", "opt", "max"))
    if not lo <= opt <= hi:
        raise ProfileError(f"{what}: need min <= opt <= max, got min={lo} opt={opt} max={hi}")
    return Range(lo, opt, hi)


def _shape(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ProfileError(f"{what} must be a list of dimensions, not {value!r}")
    return tuple(_positive_int(d, f"{what}[{i}]") for i, d in enumerate(value))


def _shape_tuple(table, what: str) -> ShapeTuple:
    if not isinstance(table, dict) or set(table) != {"min", "opt", "max"}:
        raise ProfileError(f"{what} must be a table with exactly min, opt and max, not {table!r}")
    shapes = ShapeTuple(*(_shape(table[k], f"{what} {k}") for k in ("min", "opt", "max")))
    if not len(shapes.min) == len(shapes.opt) == len(shapes.max):
        raise ProfileError(f"{what}: min, opt and max have different ranks: {shapes.min}, {shapes.opt}, {shapes.max}")
    for axis, (lo, opt, hi) in enumerate(zip(*shapes)):
        if not lo <= opt <= hi:
            raise ProfileError(f"{what}: dimension {axis} needs min <= opt <= max, got {lo}, {opt}, {hi}")
    return shapes


def _bucket(table, index: int, where: str, default_batch: Range | None) -> Bucket:
    if not isinstance(table, dict):
        raise ProfileError(f"{where}: [[profile]] #{index} is not a table")
    unknown = sorted(set(table) - _BUCKET_KEYS)
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(_BUCKET_KEYS))}")
    label = f"{where}: profile {table.get('name', '#' + str(index))!r}"
    if "keypoints" in table and ({"keypoints0", "keypoints1"} & set(table)):
        raise ProfileError(f"{label}: give either keypoints or keypoints0 and keypoints1, not both")
    both = _range(table["keypoints"], f"{label} keypoints") if "keypoints" in table else None
    k0 = both or (_range(table["keypoints0"], f"{label} keypoints0") if "keypoints0" in table else None)
    k1 = both or (_range(table["keypoints1"], f"{label} keypoints1") if "keypoints1" in table else None)
    if (k0 is None) != (k1 is None):
        raise ProfileError(f"{label}: give keypoints0 and keypoints1 together")
    height = _range(table["height"], f"{label} height") if "height" in table else None
    width = _range(table["width"], f"{label} width") if "width" in table else None
    if (height is None) != (width is None):
        raise ProfileError(f"{label}: give height and width together")
    if height is not None and k0 is not None:
        raise ProfileError(f"{label}: a profile is for a matcher (keypoints) or an extractor (height and width), not both")
    batch = _range(table["batch"], f"{label} batch") if "batch" in table else default_batch
    shapes_table = table.get("shapes", {})
    if not isinstance(shapes_table, dict):
        raise ProfileError(f"{label}: shapes must be a table of input name -> {{min, opt, max}}")
    shapes = {name: _shape_tuple(value, f"{label} shapes.{name}") for name, value in shapes_table.items()}
    if k0 is None and height is None and not shapes:
        raise ProfileError(f"{label}: give keypoints (or keypoints0 and keypoints1), height and width, or shapes")
    if (k0 is not None or height is not None) and batch is None:
        raise ProfileError(f"{label}: no batch range: add a [batch] table or a batch key")
    name = table.get("name", _default_name(k0, k1, height, width, index))
    if not isinstance(name, str) or not name:
        raise ProfileError(f"{label}: name must be a non-empty string")
    return Bucket(name, batch, k0, k1, shapes, where, height, width)


def _default_name(k0: Range | None, k1: Range | None, height: Range | None, width: Range | None, index: int) -> str:
    if height is not None and width is not None:
        return f"{height.max}x{width.max}"
    if k0 is None or k1 is None:
        return f"profile{index}"
    return f"n{k0.max}" if k0 == k1 else f"n{k0.max}x{k1.max}"


def _check_names(buckets: list[Bucket]) -> None:
    seen: dict[str, Bucket] = {}
    for bucket in buckets:
        if bucket.name in seen:
            raise ProfileError(f"{bucket.where}: profile name {bucket.name!r} is used twice (first at {seen[bucket.name].where})")
        seen[bucket.name] = bucket


def _check_contiguous(buckets: list[Bucket], attribute: str, label: str) -> None:
    ranged = [b for b in buckets if getattr(b, attribute) is not None]
    for previous, current in zip(ranged, ranged[1:]):
        before, now = getattr(previous, attribute), getattr(current, attribute)
        where = f"{current.where}: profile {current.name!r}"
        if now.min < before.min:
            raise ProfileError(f"{where}: buckets must be listed in increasing order of {label}: {label} {now} comes after {before}")
        if now.min <= before.max:
            raise ProfileError(
                f"{where}: {label} range {now.min}-{now.max} overlaps profile {previous.name!r} ({before.min}-{before.max}); "
                f"start it at {before.max + 1}"
            )
        if now.min > before.max + 1:
            raise ProfileError(
                f"{where}: gap in {label}: profile {previous.name!r} ends at {before.max} but this one starts at {now.min}; "
                f"start it at {before.max + 1}"
            )


# ---------------------------------------------------------------------------------------------------
# Resolving buckets for a graph


def resolve(bucket: Bucket, graph: GraphSignature) -> KeypointProfile:
    """The shapes of every graph input for one bucket, checked against the graph."""
    label = f"{bucket.where}: profile {bucket.name!r}"
    for name in bucket.shapes:
        if name not in graph.input_names:
            raise ProfileError(f"{label}: the ONNX has no input {name!r}; its inputs are: {', '.join(graph.input_names)}")
    shapes: dict[str, ShapeTuple] = {}
    dimensions = bucket.dimensions()
    if bucket.keypoints0 is not None or bucket.height is not None:
        for spec in _contract_inputs(bucket, graph, label):
            shapes[spec.name] = ShapeTuple(*(
                tuple(getattr(dimensions[d], which) if isinstance(d, str) else d for d in spec.shape)
                for which in ("min", "opt", "max")))
    shapes.update(bucket.shapes)
    for graph_input in graph.inputs:
        if graph_input.name not in shapes:
            if not graph_input.is_static:
                raise ProfileError(
                    f"{label}: input {graph_input.name!r} has dynamic shape {_show(graph_input.shape)}: give shapes.{graph_input.name}"
                )
            shapes[graph_input.name] = ShapeTuple(*(graph_input.shape,) * 3)
        _check_against_graph(graph_input, shapes[graph_input.name], label)
    ordered = {i.name: shapes[i.name] for i in graph.inputs}
    profile = KeypointProfile(bucket.name, ordered, bucket.batch, bucket.keypoints0, bucket.keypoints1, bucket.height,
                              bucket.width)
    return _check_volumes(profile, label)


def _check_volumes(profile: KeypointProfile, label: str) -> KeypointProfile:
    """No tensor of the profile, at its maximum, may be larger than TensorRT builds for."""
    for name, shape in profile.shapes.items():
        volume = math.prod(shape.max)
        if volume > MAX_TENSOR_VOLUME:
            raise ProfileError(
                f"{label}: input {name!r} at its max shape {list(shape.max)} has {volume} elements, more than the "
                f"{MAX_TENSOR_VOLUME} (2^40) TensorRT builds for"
            )
    if profile.keypoints0 is None:
        return profile
    batch = profile.batch.max
    largest = largest_tensor_shape(batch, profile.keypoints0.max, profile.keypoints1.max)
    if math.prod(largest) > MAX_TENSOR_VOLUME:
        fits = math.isqrt(MAX_TENSOR_VOLUME // (batch * ATTENTION_HEADS))
        fits -= math.prod(largest_tensor_shape(batch, fits, fits)) > MAX_TENSOR_VOLUME
        raise ProfileError(
            f"{label}: at batch {batch} and {largest[2]} keypoints, LightGlue's attention scores are a "
            f"{list(largest)} tensor of {math.prod(largest):.3g} elements, more than the {MAX_TENSOR_VOLUME} (2^40) "
            f"TensorRT builds for: at batch {batch}, a profile holds at most {fits} keypoints"
        )
    return profile


def _contract_inputs(bucket: Bucket, graph: GraphSignature, label: str) -> list[TensorSpec]:
    """The contract inputs a keypoint or image bucket resolves into, checked against the graph."""
    if bucket.keypoints0 is not None:
        layout = graph.layout
        if layout is None:
            raise ProfileError(
                f"{label}: keypoint ranges need the LightGlue matcher contract, but the ONNX inputs are "
                f"{', '.join(graph.input_names)}; give "
                + ("height and width (an extractor's image sizes)" if graph.is_extractor else "shapes tables")
                + " instead"
            )
        return input_specs(*layout)
    layout = graph.extractor_layout
    if layout is None:
        raise ProfileError(
            f"{label}: height and width need the extractor contract (inputs image, region), but the ONNX inputs are "
            f"{', '.join(graph.input_names)}; give "
            + ("keypoint ranges (a matcher's)" if graph.layout is not None else "shapes tables") + " instead"
        )
    stride = graph.stride
    if stride is not None:
        for what, sides in (("height", bucket.height), ("width", bucket.width)):
            for which, value in zip(("min", "opt", "max"), sides):
                if value % stride:
                    raise ProfileError(
                        f"{label}: {what} {which} {value} is not a multiple of the network's stride {stride}: the "
                        f"front-end pads images to multiples of {stride} (use {value + -value % stride})"
                    )
    return extractor_contract.input_specs(layout.channels)


def _check_against_graph(graph_input: GraphInput, shapes: ShapeTuple, label: str) -> None:
    if len(shapes.min) != len(graph_input.shape):
        raise ProfileError(
            f"{label}: input {graph_input.name!r} has rank {len(graph_input.shape)} {_show(graph_input.shape)}, "
            f"but the profile gives {list(shapes.min)}"
        )
    for axis, dim in enumerate(graph_input.shape):
        if isinstance(dim, int) and any(s[axis] != dim for s in shapes):
            given = "/".join(str(s[axis]) for s in shapes)
            raise ProfileError(
                f"{label}: input {graph_input.name!r} dimension {axis} is fixed to {dim} in the ONNX "
                f"{_show(graph_input.shape)}, but the profile gives {given}"
            )


def _show(shape: tuple) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def static_profile(graph: GraphSignature) -> KeypointProfile:
    """The single profile of a graph whose inputs all have fixed shapes."""
    dynamic = [i for i in graph.inputs if not i.is_static]
    if dynamic:
        listed = ", ".join(f"{i.name} {_show(i.shape)}" for i in dynamic)
        raise ProfileError(f"the ONNX has dynamic inputs ({listed}): give a profile file (--profiles)")
    shapes = {i.name: ShapeTuple(i.shape, i.shape, i.shape) for i in graph.inputs}
    ranges = {}
    if graph.layout is not None:
        batch, n0, n1 = shapes["kpts0"].min[0], shapes["kpts0"].min[1], shapes["kpts1"].min[1]
        ranges = {"batch": Range(batch, batch, batch), "keypoints0": Range(n0, n0, n0), "keypoints1": Range(n1, n1, n1)}
    elif graph.extractor_layout is not None:
        batch, _, height, width = shapes[extractor_contract.IMAGE].min
        ranges = {"batch": Range(batch, batch, batch), "height": Range(height, height, height),
                  "width": Range(width, width, width)}
    return _check_volumes(KeypointProfile(STATIC_PROFILE_NAME, shapes, **ranges), "the ONNX's fixed input shapes")


def default_profile_path(graph: GraphSignature) -> Path | None:
    """``profiles/<extractor>.toml`` for a matcher whose metadata names its extractor, and
    ``profiles/extractors/<extractor>.toml`` for an extractor graph; else None."""
    if graph.extractor is None:
        return None
    from trt.extractors import get_extractor

    name = get_extractor(graph.extractor).name
    return PROFILES_DIR / "extractors" / f"{name}.toml" if graph.is_extractor else PROFILES_DIR / f"{name}.toml"


def load_profiles(graph: GraphSignature, path: Path | None = None) -> list[KeypointProfile]:
    """The profiles to build ``graph`` with.

    ``path`` given: its buckets, each checked against the graph. No ``path``: the graph's single static
    profile if its inputs are all fixed, else ``profiles/<extractor>.toml`` from the ONNX metadata
    (``lightglue.extractor``), else a ProfileError asking for a file.
    """
    if path is None:
        if graph.is_static:
            return [static_profile(graph)]
        path = default_profile_path(graph)
        if path is None:
            static_profile(graph)  # raises, naming the dynamic inputs
    return [resolve(bucket, graph) for bucket in read_profile_file(path).buckets]

