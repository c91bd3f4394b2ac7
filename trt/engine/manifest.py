"""The manifest: a JSON sidecar ``X.engine.json`` that says what ``X.engine`` is and how it was built.

The runtime reads it to pick a profile for each request and to check the engine before it is used;
the builder writes it, atomically, only after the engine file itself is in place. Its layout::

    {
      "format": "lightglue-trt-engine/1",
      "engine": {"file": "sift.engine", "sha256": "...", "bytes": 123},
      "onnx": {"path": "as given", "absolute": "/abs/sift.onnx", "sha256": "...", "metadata": {...}},
      "builder": {"name": "tensorrt" | "tensorrt-rtx", "version": "1.7.1.116"},
      "target": {"compute_capability": ["8.6", "8.9"]},  # every GPU family it runs on; null when unknown
      "precision": "fp32" | "fp16",
      "extractor": "sift", "descriptor_dim": 128, "scale_ori": true,   # null for a non-matcher graph
      "profiles": [                                     # in engine profile order (index = TRT index)
        {"name": "n512", "batch": [1, 1, 4], "keypoints0": [1, 512, 512], "keypoints1": [1, 512, 512],
         "shapes": {"kpts0": {"min": [1, 1, 2], "opt": [1, 512, 2], "max": [4, 512, 2]}, ...}}
      ],
      "inputs":  [{"name": "kpts0", "dtype": "float32", "shape": ["B", "N0", 2]}, ...],
      "outputs": [{"name": "matches0", "dtype": "int32", "shape": ["B", "N0"]}, ...],
      "build_seconds": 41.2, "timings": {"parse": 0.3, "build": 40.1, ...},
      "created": "2025-01-01T00:00:00Z",
      "options": {"workspace_mib": null, "opt_level": null, "timing_cache": null, ...},
      "extractor_network": null,                        # optional, extractor engines only, see below
      "extractor_engine": null,                         # optional, matcher engines linked to theirs
      "weights": {"kind": "official", "source": "sha256:..."}  # optional, see below
    }

``batch``/``keypoints0``/``keypoints1`` are null in a profile of a graph without the matcher contract
(a static graph built with a single profile); ``shapes`` is always complete.

Extractor engines (``trt/extractor_contract.py``: ``image``, ``region`` in; ``keypoints``, ``scores``,
``descriptors``, ``count`` out) have the same layout with these differences, all optional fields that
older manifests simply lack:

* ``extractor`` is the feature type the engine makes, ``descriptor_dim`` its D, ``scale_ori`` null;
* each profile has ``height`` and ``width`` ([min, opt, max] pixels) where a matcher's has keypoints
  (``keypoints0``/``keypoints1`` null), and a matcher's profiles have them null;
* ``extractor_network``: ``{"name": "aliked-n16", "channels": 3, "stride": 32, "padding":
  "centre-replicate", "max_keypoints": 2048, "detection_threshold": 0.2, "nms_radius": 2}``: what the
  front-end must do for it (``trt.features.padding``) and what it returns.

A matcher engine built with ``--extractor-engine`` names it, so serving needs only the matcher engine:
``extractor_engine``: ``{"file": "x.extractor.engine" (relative to this manifest's folder), "sha256":
"...", "network": "aliked-n16", "descriptor_dim": 128}``. Its D and feature type were checked against
the matcher's when the two were linked.

``weights``: what the model was exported with, as export.py recorded it in the ONNX metadata
(``lightglue.weights_kind``, ``lightglue.weights``): ``kind`` is "official" (the checkpoint with the official
sha256), "file" (another checkpoint), or test weights: "nearest-neighbour", "sharp", "random" (not trained);
``source`` says which ("sha256:<hex>", "random seed 0 ..."). Null for a graph that records none; a manifest
without the field (older) reads it from the metadata it carries. Results and ``trt_infer.py`` say it.

Reading checks every field against ``SCHEMA`` (one line per field; a field with a default in the
dataclass may be absent, unknown fields are ignored), then what spans fields: a matcher (``descriptor_dim``
set) has keypoint ranges in every profile, a recorded ONNX path has its sha256. A manifest that fails
is an ``EngineError`` naming the file and the field, so no engine is served on a manifest that could not
check it.
"""

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from trt.errors import EngineError
from trt.fileio import read_file_bytes, write_text_atomic
from trt.validation import (
    ANY,
    BOOLEAN,
    INTEGER,
    NAME,
    NULL,
    NUMBER,
    POSITIVE_INTEGER,
    SHA256,
    TEXT,
    AnyOf,
    ListOf,
    MapOf,
    Nullable,
    Ordered,
    Record,
    SchemaError,
    constant,
)

FORMAT = "lightglue-trt-engine/1"
SUFFIX = ".json"


def manifest_path(engine_path: Path) -> Path:
    """``X.engine`` → ``X.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + SUFFIX)


@dataclass(frozen=True)
class TensorRecord:
    name: str
    dtype: str  # numpy spelling: "float32", "int32", "float16", ...
    shape: list  # ints, or symbolic names ("B", "N0") / -1 for dynamic dimensions


@dataclass(frozen=True)
class ProfileRecord:
    name: str
    batch: list | None  # [min, opt, max]; None for a non-matcher graph
    keypoints0: list | None
    keypoints1: list | None
    shapes: dict  # input name -> {"min": [...], "opt": [...], "max": [...]}
    height: list | None = None  # extractor engines: image height and width [min, opt, max]
    width: list | None = None


@dataclass
class Manifest:
    engine: dict  # {"file": name beside the manifest, "sha256", "bytes"}
    onnx: dict  # {"path", "absolute", "sha256", "metadata"}
    builder: dict  # {"name": "tensorrt" | "tensorrt-rtx", "version"}
    target: dict  # {"compute_capability": ["8.6", "8.9"] | None}
    precision: str  # "fp32" | "fp16"
    extractor: str | None
    descriptor_dim: int | None
    scale_ori: bool | None
    profiles: list[ProfileRecord]
    inputs: list[TensorRecord]
    outputs: list[TensorRecord]
    build_seconds: float
    timings: dict = field(default_factory=dict)  # step name -> seconds
    created: str = ""  # ISO 8601, UTC
    options: dict = field(default_factory=dict)  # workspace_mib, opt_level, timing_cache, builder flags
    extractor_network: dict | None = None  # extractor engines: network, channels, stride, padding, K, ...
    extractor_engine: dict | None = None  # matcher engines: the linked extractor engine (file, sha256, ...)
    weights: dict | None = None  # {"kind": "official" | "file" | "nearest-neighbour" | "sharp" | "random", "source"}
    format: str = FORMAT

    def __post_init__(self):
        if self.weights is None:  # manifests written before the field: the ONNX metadata says the same
            self.weights = weights_record(self.onnx.get("metadata") or {})

    def to_json(self) -> str:
        data = asdict(self)
        data = {"format": data.pop("format"), **data}
        return json.dumps(data, indent=2) + "\n"

    def write(self, engine_path: Path) -> Path:
        """Write the sidecar of ``engine_path`` atomically; return its path."""
        return write_text_atomic(manifest_path(engine_path), self.to_json())

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        """The manifest in ``data`` (parsed JSON), checked against ``SCHEMA``; a SchemaError (ValueError) if not."""
        if not isinstance(data, dict):
            raise SchemaError("not a JSON object")
        if data.get("format") != FORMAT:
            raise SchemaError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        SCHEMA.check(data, "")
        _check_consistency(data)
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["profiles"] = [_record(ProfileRecord, p) for p in data["profiles"]]
        values["inputs"] = [_record(TensorRecord, t) for t in data["inputs"]]
        values["outputs"] = [_record(TensorRecord, t) for t in data["outputs"]]
        return cls(**values)


# What export.py records of the weights in the ONNX metadata (trt/onnx/export.py, export_extractor.py).
WEIGHTS_KIND_KEY, WEIGHTS_SOURCE_KEY = "lightglue.weights_kind", "lightglue.weights"


def weights_record(metadata: dict) -> dict | None:
    """``{"kind", "source"}`` of the weights a model carries, from its ONNX metadata; None when it records none
    (a graph not exported by this project)."""
    if WEIGHTS_KIND_KEY not in metadata:
        return None
    return {"kind": metadata[WEIGHTS_KIND_KEY], "source": metadata.get(WEIGHTS_SOURCE_KEY)}


def _record(kind, data: dict):
    """A record dataclass from its checked JSON object (fields it does not know are ignored)."""
    return kind(**{f.name: data[f.name] for f in fields(kind) if f.name in data})


def _optional(kind) -> set[str]:
    """Fields of a dataclass that have a default: they may be absent from the JSON."""
    return {f.name for f in fields(kind) if f.default is not MISSING or f.default_factory is not MISSING}


# The schema: one line per field. Add a field here and to the dataclass (with a default, so that older
# manifests still load) together; tests/test_validation.py checks that the two agree.
RANGE = Ordered(POSITIVE_INTEGER, 3)  # [min, opt, max]
SHAPE = ListOf(POSITIVE_INTEGER)
TENSOR_SCHEMA = Record({
    "name": NAME,
    "dtype": NAME,
    "shape": ListOf(AnyOf(INTEGER, NAME, NULL)),  # fixed sizes, symbolic names, null for unnamed dynamic sizes
}, optional=_optional(TensorRecord))
PROFILE_SCHEMA = Record({
    "name": NAME,
    "batch": Nullable(RANGE),
    "keypoints0": Nullable(RANGE),
    "keypoints1": Nullable(RANGE),
    "shapes": MapOf(Record({"min": SHAPE, "opt": SHAPE, "max": SHAPE})),
    "height": Nullable(RANGE),
    "width": Nullable(RANGE),
}, optional=_optional(ProfileRecord))
SCHEMA = Record({
    "format": constant(FORMAT),
    "engine": Record({"file": NAME, "sha256": SHA256, "bytes": POSITIVE_INTEGER}),
    "onnx": Record({
        "path": Nullable(NAME),
        "absolute": Nullable(NAME),
        "sha256": Nullable(SHA256),
        "metadata": MapOf(TEXT),
        "converted_from": Record({"path": NAME, "sha256": SHA256}),
    }, optional={"absolute", "metadata", "converted_from"}),
    "builder": Record({"name": NAME, "version": NAME}),
    "target": Record({"compute_capability": AnyOf(NULL, NAME, ListOf(NAME, min_length=1))}),
    "precision": NAME,
    "extractor": Nullable(NAME),
    "descriptor_dim": Nullable(POSITIVE_INTEGER),
    "scale_ori": Nullable(BOOLEAN),
    "profiles": ListOf(PROFILE_SCHEMA, min_length=1),
    "inputs": ListOf(TENSOR_SCHEMA),
    "outputs": ListOf(TENSOR_SCHEMA),
    "build_seconds": NUMBER,
    "timings": MapOf(NUMBER),
    "created": TEXT,
    "options": MapOf(ANY),
    "extractor_network": Nullable(Record({
        "name": NAME,
        "padding": NAME,
        "channels": POSITIVE_INTEGER,
        "stride": Nullable(POSITIVE_INTEGER),
        "max_keypoints": POSITIVE_INTEGER,
        "detection_threshold": Nullable(NUMBER),
        "nms_radius": Nullable(INTEGER),
    })),
    "extractor_engine": Nullable(Record({
        "file": NAME,
        "sha256": SHA256,
        "network": NAME,
        "descriptor_dim": POSITIVE_INTEGER,
    })),
    "weights": Nullable(Record({"kind": NAME, "source": Nullable(TEXT)})),
}, optional=_optional(Manifest))


def _check_consistency(data: dict) -> None:
    """What one field's schema cannot say: how fields agree with each other."""
    # A matcher's profiles range over keypoints, an extractor's over image sizes, other graphs' over neither.
    extractor = data.get("extractor_network") is not None
    sized = ("batch", "height", "width") if extractor else ("batch", "keypoints0", "keypoints1")
    for index, profile in enumerate(data["profiles"]):
        ranges = [profile.get(key) for key in sized]
        if any(r is None for r in ranges) and any(r is not None for r in ranges):
            raise SchemaError(f"profiles[{index}]: {sized[0]}, {sized[1]} and {sized[2]} must be all given or all null")
        if data["descriptor_dim"] is not None and ranges[0] is None:
            kind = "an extractor engine's profile needs batch and image-size" if extractor else (
                "a matcher engine's profile needs batch and keypoint")
            raise SchemaError(f"profiles[{index}]: {kind} ranges")
    if data["onnx"]["path"] is not None and data["onnx"]["sha256"] is None:
        raise SchemaError("onnx.sha256: a recorded source ONNX needs its sha256, to check that it is the one")


def load_manifest(engine_path: Path) -> Manifest | None:
    """The manifest beside ``engine_path``; None when there is none, EngineError when it is unreadable."""
    path = manifest_path(engine_path)
    if not os.path.lexists(path):
        return None
    try:
        text = read_file_bytes(path, "engine manifest", EngineError).decode()
    except UnicodeDecodeError:
        raise EngineError(f"corrupt engine manifest {path}: not UTF-8 text") from None
    try:
        return Manifest.from_dict(json.loads(text))
    except (ValueError, RecursionError) as error:  # JSONDecodeError and SchemaError are ValueErrors
        raise EngineError(f"corrupt engine manifest {path}: {error}") from error
