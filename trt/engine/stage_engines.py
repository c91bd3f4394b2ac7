"""TensorRT engines of a matcher's stages (adaptive depth and width, ``trt.stages``).

``build_engine.py`` builds, after the single engine ``X.engine`` of a matcher whose stages were exported
(``X.stages/`` beside its ONNX), one engine per stage into ``X.engine.stages/``: ``encode.engine``,
``layer0.engine`` … with each its own manifest (``X.engine.json``: builder, target, profiles, source stage
ONNX), and ``stages.json``, the stages manifest of ``trt.stages`` whose files are the engines: the one
place that lists them, written last (a folder without it is an unfinished build, and the runtime checks
each engine's sha256 against it). Every stage gets the matcher's keypoint profiles, applied to its own
inputs by the contract's dimensions (``trt.contract.stage_specs``), so each stage picks its profile by the
current N as the single engine does.

Stage engines are built in FP32 only: the FP16 gate judges the single graph, not stop decisions, which
rounding moves (docs/adaptive.md); an FP16 build keeps the single engine and says so.
"""

import sys
from dataclasses import replace
from pathlib import Path

from trt.contract import BATCH, KEYPOINTS0, KEYPOINTS1, TensorSpec, stage_specs
from trt.engine.profiles import GraphSignature, KeypointProfile, ShapeTuple, load_profiles
from trt.fileio import sha256_file
from trt.stages import MANIFEST_NAME, StageRecord, StagesManifest, engine_stages_folder, stages_folder


def stage_profile(profile: KeypointProfile, inputs: list[TensorSpec]) -> KeypointProfile:
    """A matcher profile's batch and keypoint ranges applied to a stage's ``inputs``."""
    ranges = {BATCH: profile.batch, KEYPOINTS0: profile.keypoints0, KEYPOINTS1: profile.keypoints1}
    shapes = {spec.name: ShapeTuple(*(tuple(getattr(ranges[d], which) if isinstance(d, str) else d for d in spec.shape)
                                      for which in ("min", "opt", "max")))
              for spec in inputs}
    return KeypointProfile(profile.name, shapes, profile.batch, profile.keypoints0, profile.keypoints1)


def build_stage_engines(onnx: Path, profiles: Path | None, engine: Path, **options) -> Path | None:
    """Build the stages exported beside the matcher ``onnx`` into ``engine_stages_folder(engine)`` with the
    profiles of ``profiles`` (as ``build_engine`` reads them for the single graph); return the folder's
    manifest, or None when there are no stages or the build is FP16 (said on stderr). ``options``:
    ``build_engine``'s."""
    from trt.engine.builder import build_engine

    source = stages_folder(onnx)
    if not (source / MANIFEST_NAME).is_file():
        return None
    if options.get("precision", "fp32") != "fp32":
        # Stage engines of an earlier fp32 build of this output would serve beside an engine they were not built with.
        (engine_stages_folder(engine) / MANIFEST_NAME).unlink(missing_ok=True)
        print(f"notice: the stages in {source} are built in fp32 only (no gate judges the adaptive path in "
              "reduced precision): TensorRT serves this engine at full depth", file=sys.stderr)
        return None
    manifest = StagesManifest.read(source)
    matcher_profiles = load_profiles(GraphSignature.from_onnx(onnx), profiles)
    folder = engine_stages_folder(engine)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)  # until the last engine is built, the folder is unfinished
    records = []
    for record in manifest.stages:
        inputs = stage_specs(record.kind, manifest.descriptor_dim, manifest.scale_ori)[0]
        built = build_engine(source / record.file, profiles, folder / f"{record.name}.engine", **options,
                             resolved_profiles=[stage_profile(p, inputs) for p in matcher_profiles])
        records.append(StageRecord(record.name, record.kind, record.layer, built.name, sha256_file(built)))
    return replace(manifest, stages=records).write(folder)
