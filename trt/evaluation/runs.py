"""What the benchmark (``trt.evaluation.bench``) and the evaluation (``trt.evaluation.eval``) share.

Both steps are hloc-style: ``main(conf, inputs, output) -> Path``, with thin scripts in ``bench/``. Shared: which weights a
run uses (``MatcherWeights``, ``ExtractorWeights``), exports cached under a models folder and reused when present
(``cached_onnx``, ``cached_extractor_onnx``, ``cached_engine``), and a description of the machine for the JSON records.

This package is on the export side: it imports torch (lazily), the exporter and the engine builder.
"""

import importlib.metadata
import importlib.util
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from trt.errors import UserError
from trt.extractors import Extractor, ExtractorNetwork
from trt.fileio import write_text_atomic
from trt.official_weights import cached_sha256, find_official

DEFAULT_WEIGHTS_DIR = Path("weights")
PACKAGES = ("torch", "onnxruntime", "openvino", "onnx", "kornia", "opencv-python-headless", "numpy", "tensorrt",
            "tensorrt-rtx")


@dataclass(frozen=True)
class MatcherWeights:
    """The weights a run uses: ``kind`` "official" (a file with the official sha256), "random" (seeded,
    official layout), "nearest-neighbour" (hand-set, not trained) or "sharp" (those plus seeded residual
    updates, ``trt.models.sharp``); ``tag`` names the cached files."""

    kind: str
    tag: str
    path: Optional[Path] = None
    seed: Optional[int] = None

    @classmethod
    def random(cls, seed: int = 0) -> "MatcherWeights":
        return cls("random", f"random{seed}", seed=seed)

    @classmethod
    def nearest_neighbour(cls) -> "MatcherWeights":
        return cls("nearest-neighbour", "nn")

    @classmethod
    def sharp(cls, seed: int = 0) -> "MatcherWeights":
        return cls("sharp", f"sharp{seed}", seed=seed)

    @classmethod
    def official(cls, path: Path) -> "MatcherWeights":
        return cls("official", "official", path=Path(path))

    def export_kwargs(self) -> dict:
        """Arguments of ``trt.onnx.export.export_matcher`` that select these weights."""
        if self.kind == "official":
            return {"weights": self.path}
        if self.kind == "random":
            return {"random_seed": self.seed}
        if self.kind == "sharp":
            return {"sharp_seed": self.seed}
        return {"nearest_neighbour": True}

    def state_dict(self, model) -> dict:
        """The state dict (official key layout) for the torch ``model`` of the right extractor."""
        from trt.models.weights import random_state_dict, read_checkpoint

        if self.kind == "official":
            return read_checkpoint(self.path)
        if self.kind == "random":
            return random_state_dict(model, self.seed)
        if self.kind == "sharp":
            from trt.models.sharp import sharp_state_dict

            return sharp_state_dict(model, self.seed)
        from trt.models.nearest_neighbour import nearest_neighbour_state_dict

        return nearest_neighbour_state_dict(model)


def named_preset(presets: dict, name: str, what: str) -> dict:
    """A copy of ``presets[name]`` with its ``name``; an unknown name is a UserError listing the valid ones."""
    try:
        return {"name": name, **presets[name]}
    except KeyError:
        raise UserError(f"unknown {what} preset {name!r}: choose one of {', '.join(presets)}") from None


def add_run_arguments(parser, output_dir: Path) -> None:
    """The flags ``bench/matcher_bench.py`` and ``bench/eval.py`` share (defaults as in their ``main``)."""
    parser.add_argument("--output-dir", type=Path, default=output_dir,
                        help=f"where the JSON and PNGs go (default {output_dir})")
    parser.add_argument("--models-dir", type=Path, default=None, help="export cache (default: OUTPUT_DIR/models)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="shared data (default: $LG_DATA_DIR or ../shared/data)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="trained sift_lightglue.pth, must be the official file (default: "
                             "weights/sift_lightglue.pth when it is)")
    parser.add_argument("--overwrite", action="store_true", help="export (and build engines) again even if cached")


def trained_weights(extractor: Extractor, path: Optional[Path] = None,
                    weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> tuple[Optional[MatcherWeights], str]:
    """The official trained weights, if they are here: ``path``, else the official file found offline
    (``trt.official_weights``: ``weights_dir``, the torch hub cache, a package shipping it).

    Returns (weights or None, a note saying what was found and where). A ``path`` given explicitly that is
    missing or not the official file is a UserError; the default places are only looked in.
    """
    if path is None:
        try:
            found = find_official(extractor, weights_dir)
        except UserError as error:  # a foreign file under the official name in weights_dir
            return None, f"{error}: not used"
        if found is None:
            return None, (f"no trained {extractor.weights_filename} in {weights_dir}, the torch hub cache or an "
                          "installed package: runs with the test weights only (not trained)")
        return MatcherWeights.official(found.path), f"trained weights {found.describe()}"
    candidate = Path(path)
    if not candidate.is_file():
        raise UserError(f"weights file {candidate} does not exist")
    digest = cached_sha256(candidate)
    if digest != extractor.weights_sha256:
        raise UserError(f"{candidate} has sha256 {digest}, not the official {extractor.weights_sha256}")
    return MatcherWeights.official(candidate), f"trained weights {candidate} (official sha256)"


def cached_onnx(models_dir: Path, extractor: str, weights: MatcherWeights, precision: str = "fp32",
                overwrite: bool = False, stages: bool = False) -> Path:
    """The dynamic-shape matcher ONNX for ``weights`` (and its mixed-FP16 variant for ``precision="fp16"``),
    exported into ``models_dir`` unless a file of the same weights is already there; ``stages``: with its
    stages beside it (``X.stages/``, adaptive depth and width).

    A cached file is reused only when its metadata records the same extractor and weights (the sha256
    for a checkpoint file); anything else is exported again, and engines built from it are dropped.
    """
    import shutil

    from trt.onnx.export import export_matcher
    from trt.onnx.export_stages import export_matcher_and_stages
    from trt.stages import MANIFEST_NAME, stages_folder

    models_dir = Path(models_dir)
    fp32 = models_dir / f"{extractor}_lightglue-{weights.tag}.onnx"
    folder = stages_folder(fp32)
    if overwrite or not _matches_weights(fp32, extractor, weights) or (stages and not (folder / MANIFEST_NAME).is_file()):
        for stale in models_dir.glob(f"{fp32.stem}*"):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale != fp32:
                stale.unlink()
        if stages:
            export_matcher_and_stages(extractor, fp32, folder, dynamic=True, **weights.export_kwargs())
        else:
            export_matcher(extractor, fp32, dynamic=True, **weights.export_kwargs())
    if precision == "fp32":
        return fp32
    if precision != "fp16":
        raise UserError(f"unknown precision {precision!r}: choose fp32 or fp16")
    from trt.onnx.fp16 import convert_to_mixed_fp16

    fp16 = models_dir / f"{fp32.stem}-fp16.onnx"
    if overwrite or not fp16.is_file() or fp16.stat().st_mtime < fp32.stat().st_mtime:
        convert_to_mixed_fp16(fp32, fp16)
    return fp16


def _export_metadata(onnx_path: Path) -> Optional[dict]:
    """The metadata an export of this project records; None for a missing or unreadable file (export again)."""
    if not onnx_path.is_file():
        return None
    import onnx

    from trt.onnx.export import read_metadata

    try:
        return read_metadata(onnx.load(str(onnx_path), load_external_data=False))
    except Exception:  # a truncated or foreign file
        return None


def _matches_weights(onnx_path: Path, extractor: str, weights: MatcherWeights) -> bool:
    metadata = _export_metadata(onnx_path)
    if metadata is None:
        return False
    if metadata.get("extractor") != extractor or metadata.get("weights_kind") != weights.kind:
        return False
    return weights.path is None or metadata.get("weights") == f"sha256:{cached_sha256(weights.path)}"


@dataclass(frozen=True)
class ExtractorWeights:
    """The weights of a learned extractor network: its official checkpoint (``path``) or seeded random ones."""

    network: ExtractorNetwork
    path: Optional[Path] = None
    seed: Optional[int] = None

    @property
    def tag(self) -> str:
        return "official" if self.path is not None else f"random{self.seed}"

    def export_kwargs(self) -> dict:
        """Arguments of ``trt.onnx.export_extractor.export_extractor`` that select these weights."""
        return {"weights": self.path} if self.path is not None else {"random_seed": self.seed}

    def description(self) -> str:
        """What the export records as ``lightglue.weights`` for them."""
        return f"sha256:{cached_sha256(self.path)}" if self.path is not None else f"random seed {self.seed} (for tests, not trained)"


def official_extractor_weights(network: ExtractorNetwork, data_dir: Optional[Path] = None,
                               weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> Optional[ExtractorWeights]:
    """The network's official checkpoint, if it is here: found offline (``trt.official_weights``), else in the
    shared data's ``aliked/`` folder (the ALIKED files); None when no file has the official sha256."""
    try:
        found = find_official(network, weights_dir)
    except UserError:  # a foreign file under the official name: look elsewhere
        found = None
    if found is not None:
        return ExtractorWeights(network, path=found.path)
    if data_dir is not None:
        candidate = Path(data_dir) / "aliked" / network.weights_filename
        if candidate.is_file() and cached_sha256(candidate) == network.weights_sha256:
            return ExtractorWeights(network, path=candidate)
    return None


def cached_extractor_onnx(models_dir: Path, weights: ExtractorWeights, overwrite: bool = False) -> Path:
    """The dynamic-shape extractor ONNX of ``weights`` (the default K and detection settings), exported into
    ``models_dir`` unless a file of the same network and weights is already there."""
    from trt.onnx.export_extractor import export_extractor

    path = Path(models_dir) / f"{weights.network.name}-{weights.tag}.onnx"
    if overwrite or _extractor_metadata(path) != (weights.network.name, weights.description()):
        export_extractor(weights.network.feature, path, network=weights.network.name, **weights.export_kwargs())
    return path


def _extractor_metadata(onnx_path: Path) -> Optional[tuple[str, str]]:
    """(network, weights) an exported extractor records; None for a missing or unreadable file."""
    metadata = _export_metadata(onnx_path)
    return None if metadata is None else (metadata.get("network"), metadata.get("weights"))


def cached_engine(onnx_path: Path, precision: str, overwrite: bool = False) -> Path:
    """A TensorRT engine for this machine's GPU built from ``onnx_path`` (all the profiles of
    ``profiles/<extractor>.toml``), beside it, reused when present and newer than the ONNX."""
    from trt.engine.builder import build_engine
    from trt.gpu import cuda_devices

    engine = onnx_path.with_name(f"{onnx_path.stem}-{precision}.engine")
    if not overwrite and engine.is_file() and engine.stat().st_mtime >= onnx_path.stat().st_mtime:
        return engine
    # Full TensorRT builds for the local GPU; tensorrt-rtx needs to be told its compute capability.
    full = importlib.util.find_spec("tensorrt") is not None
    return build_engine(onnx_path, output=engine, precision=precision, builder="auto",
                        target_sm=None if full else cuda_devices()[0], progress=False)


def machine_info(threads: int) -> dict:
    """CPU, core counts, GPUs and package versions, for the JSON records."""
    from trt.gpu import cuda_devices
    from trt.runtime.cpu import cpu_info
    from trt.runtime.openvino_session import openvino_unavailable
    from trt.runtime.tensorrt_engine import tensorrt_unavailable

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu_info().model,
        "isa_features": cpu_info().features,
        "bf16": cpu_info().bf16_unit() or cpu_info().bf16_unsupported(),
        "cores": threads,
        "logical_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpus": cuda_devices(),
        "tensorrt": tensorrt_unavailable(None) or "available",
        "openvino": openvino_unavailable() or "available",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def write_json(path: Path, record: dict) -> Path:
    return write_text_atomic(Path(path), json.dumps(record, indent=1, default=_jsonable) + "\n")


def _jsonable(value):
    """numpy scalars and arrays, and paths; inf (a failed estimate) is written as Infinity, as Python's json does."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
