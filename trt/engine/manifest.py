"""The manifest: a JSON sidecar ``X.engine.json`` that says what ``X.engine`` is and how it was built.

The runtime reads it to pick a profile for each request and to check the engine before it is used;
the builder writes it, atomically, only after the engine file itself is in place. Its layout::

    {
      "format": "lightglue-trt-engine/1",
      "engine": {"file": "sift.engine", "sha256": "...", "bytes": 123},
      "onnx": {"path": "as given", "absolute": "/abs/sift.onnx", "sha256": "...", "metadata": {...}},
      "builder": {"name": "tensorrt" | "tensorrt-rtx", "version": "1.7.1.116"},
      "target": {"compute_capability": "8.9"},        # null for full TensorRT: the local GPU
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
      "extractor_engine": null                          # optional, matcher engines linked to theirs
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
"""

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from trt.errors import EngineError
from trt.fileio import write_text_atomic

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
    target: dict  # {"compute_capability": "8.9" | None}
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
    format: str = FORMAT

    def to_json(self) -> str:
        data = asdict(self)
        data = {"format": data.pop("format"), **data}
        return json.dumps(data, indent=2) + "\n"

    def write(self, engine_path: Path) -> Path:
        """Write the sidecar of ``engine_path`` atomically; return its path."""
        return write_text_atomic(manifest_path(engine_path), self.to_json())

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        known = {f.name for f in fields(cls)}
        optional = ("timings", "created", "options", "extractor_network", "extractor_engine")
        missing = sorted(f.name for f in fields(cls) if f.name not in data and f.name not in optional)
        if missing:
            raise ValueError(f"missing fields: {', '.join(missing)}")
        values = {k: v for k, v in data.items() if k in known}
        values["profiles"] = [ProfileRecord(**p) for p in data["profiles"]]
        values["inputs"] = [TensorRecord(**t) for t in data["inputs"]]
        values["outputs"] = [TensorRecord(**t) for t in data["outputs"]]
        return cls(**values)


def load_manifest(engine_path: Path) -> Manifest | None:
    """The manifest beside ``engine_path``; None when there is none, EngineError when it is unreadable."""
    path = manifest_path(engine_path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise EngineError(f"cannot read engine manifest {path}: {error.strerror}") from error
    try:
        return Manifest.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError) as error:  # JSONDecodeError is a ValueError
        raise EngineError(f"corrupt engine manifest {path}: {error}") from error
