"""The stages manifest: which ONNX files make up a matcher served as stages (adaptive depth and width).

``export.py --stages`` writes, beside the single-graph matcher ``X.onnx``, a folder ``X.stages/`` with one
ONNX file per stage (``trt.contract.stage_specs``: ``encode``, ``layer0`` … ``layer8`` (the last a
``final_layer``), ``assign0`` … ``assign8``) and ``stages.json``::

    {
      "format": "lightglue-trt-stages/1",
      "extractor": "aliked", "descriptor_dim": 128, "scale_ori": false,
      "weights": {"kind": "official", "description": "sha256:..."},
      "trained_confidence": true,       # the weights' confidence heads were trained (official or a file)
      "num_layers": 9,
      "confidence_thresholds": [0.9, ...],   # the reference's 0.8 + 0.1·exp(-4ℓ/9), float32 values
      "stages": [{"name": "encode", "kind": "encode", "layer": null, "file": "encode.onnx", "sha256": "..."}, ...],
      "created": "2026-12-05T10:00:00Z"
    }

The manifest is written last and atomically, so a folder without one is an unfinished export; the runtime
checks each file's sha256 before it serves it.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from trt.contract import STAGE_KINDS
from trt.errors import EngineError
from trt.fileio import sha256_file, write_text_atomic

FORMAT = "lightglue-trt-stages/1"
MANIFEST_NAME = "stages.json"
FOLDER_SUFFIX = ".stages"
# Weights whose confidence heads were not trained: they run at full depth (their heads say nothing).
UNTRAINED_KINDS = ("random", "nearest-neighbour", "sharp")


def stages_folder(onnx_path: Path) -> Path:
    """``X.onnx`` → ``X.stages``: where the stages of a single-graph matcher live."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + FOLDER_SUFFIX)


def engine_stages_folder(engine: Path) -> Path:
    """``X.engine`` → ``X.engine.stages``: where the TensorRT engines of its stages live (``build_engine.py``,
    ``trt.engine.stage_engines``), listed by a manifest of this format whose files are the engines."""
    engine = Path(engine)
    return engine.with_name(engine.name + FOLDER_SUFFIX)


def stage_name(kind: str, layer: int | None) -> str:
    return "encode" if kind == "encode" else f"{'assign' if kind == 'assign' else 'layer'}{layer}"


@dataclass(frozen=True)
class StageRecord:
    name: str
    kind: str  # one of trt.contract.STAGE_KINDS
    layer: int | None  # None for encode
    file: str  # beside the manifest
    sha256: str


@dataclass
class StagesManifest:
    extractor: str
    descriptor_dim: int
    scale_ori: bool
    weights: dict  # {"kind", "description"} as the single graph's metadata records them
    trained_confidence: bool
    num_layers: int
    confidence_thresholds: list[float]
    stages: list[StageRecord]
    created: str = ""
    format: str = FORMAT

    def stage(self, name: str) -> StageRecord:
        for record in self.stages:
            if record.name == name:
                return record
        raise EngineError(f"the stages manifest lists no stage {name!r}: it has {', '.join(r.name for r in self.stages)}")

    def write(self, folder: Path) -> Path:
        data = asdict(self)
        return write_text_atomic(Path(folder) / MANIFEST_NAME, json.dumps({"format": data.pop("format"), **data},
                                                                          indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> "StagesManifest":
        """The manifest of ``folder``, checked (format, stage names and kinds, every file present with its
        sha256); an EngineError naming what is off."""
        path = Path(folder) / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise EngineError(f"no stages manifest at {path}: export the stages with export.py --stages") from None
        except (OSError, ValueError) as error:
            raise EngineError(f"cannot read the stages manifest {path}: {error}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise EngineError(f"{path} is not a stages manifest of format {FORMAT}")
        try:
            stages = [StageRecord(**record) for record in data.pop("stages")]
            manifest = cls(stages=stages, **data)
        except (TypeError, KeyError) as error:
            raise EngineError(f"{path}: malformed stages manifest ({error})") from None
        layers = manifest.num_layers
        expected = (["encode"] + [stage_name("layer", i) for i in range(layers)]
                    + [stage_name("assign", i) for i in range(layers)])
        if sorted(r.name for r in stages) != sorted(expected) or len(manifest.confidence_thresholds) != layers:
            raise EngineError(f"{path}: expected the stages {', '.join(expected)} and {layers} confidence thresholds")
        for record in stages:
            if record.kind not in STAGE_KINDS:
                raise EngineError(f"{path}: stage {record.name} has unknown kind {record.kind!r}")
            file = Path(folder) / record.file
            if not file.is_file():
                raise EngineError(f"{path}: stage file {file} is missing")
            if sha256_file(file) != record.sha256:
                raise EngineError(f"{path}: stage file {file} was replaced after export (sha256 differs)")
        return manifest
