"""The Python API: images (or features) in, matches out, on the best backend that can run here.

    with Matcher.from_engine("sift.engine") as matcher:
        result = matcher.match("a.jpg", "b.jpg")
        result.matches  # [K, 2] indices into result.keypoints0 / result.keypoints1

Conventions: keypoints are (x, y) in pixels of the original images, the centre of the top-left pixel at
(0, 0); ``matches0[i]`` is the index of keypoint i's match in image 1, -1 for none.

``Matcher`` depends only on the runner interface (``trt.runtime.base.Runner``): TensorRT on a GPU,
OpenVINO on the CPU (f32 or mixed bf16), ONNX Runtime anywhere (``choose_backend``). It keeps every request
inside the engine's profiles: pairs are padded up to the chosen profile's minimum, batched no larger
than a profile takes, and an image with more keypoints than the largest profile holds keeps its
strongest (with a warning, or a ContractError when ``on_overflow="error"``).
"""

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from trt.contract import DEFAULT_THRESHOLD, NO_MATCH, infer_layout
from trt.engine.manifest import load_manifest
from trt.errors import ContractError, ImageError, UserError
from trt.extractors import get_extractor
from trt.features.base import Features, pack_pairs
from trt.runtime.base import Profile, Runner, capacity, plan_batches
from trt.runtime.onnxruntime_session import OnnxRuntimeSession
from trt.runtime.openvino_session import MODES, PRECISIONS, OpenVINOSession, openvino_unavailable
from trt.runtime.tensorrt_session import (
    TensorRTSession,
    check_source_onnx,
    profiles_from_manifest,
    read_engine,
    source_onnx_path,
    tensorrt_unavailable,
)
from trt.validation import (
    check_features,
    check_matcher_manifest,
    check_max_keypoints,
    check_pairs,
    check_path,
    check_resize,
    check_threshold,
)

BACKENDS = ("auto", "tensorrt", "openvino", "onnxruntime")
BACKEND_NAMES = {"tensorrt": "TensorRT", "openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}
ON_OVERFLOW = ("truncate", "error")
METADATA_EXTRACTOR = "lightglue.extractor"
DEFAULT_SIFT_KEYPOINTS = 4096  # the SIFT front-end's default, lowered to what the engine's profiles hold
DEFAULT_RESIZE = 1024  # long side of the image SIFT runs on (the reference's default); None: original size

Image = Union[str, Path, np.ndarray]


@dataclass
class MatchResult:
    """Matches of one image pair.

    keypoints0 [N0, 2], keypoints1 [N1, 2] float32: the keypoints that were matched (after any top-K),
    in original-image pixels; matches [K, 2] int64: (index in keypoints0, index in keypoints1);
    scores [K] float32; matches0 [N0] / matches1 [N1] int64: match index per keypoint, -1 for none;
    timings: seconds per stage (``extract``, ``match``, and the backend's ``h2d``/``compute``/``d2h``;
    ``batch`` is the number of pairs the engine call was shared by); engine: the engine summary.
    """

    keypoints0: np.ndarray
    keypoints1: np.ndarray
    matches: np.ndarray
    scores: np.ndarray
    matches0: np.ndarray
    matches1: np.ndarray
    image_size0: tuple[float, float]
    image_size1: tuple[float, float]
    timings: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.matches)


def result_from_outputs(
    f0: Features, f1: Features, matches0: np.ndarray, mscores0: np.ndarray, matches1: np.ndarray
) -> MatchResult:
    """A MatchResult from one pair's rows of the matcher outputs (padding rows already cut off)."""
    matches0 = matches0.astype(np.int64)
    matches1 = matches1.astype(np.int64)
    valid = (matches0 > NO_MATCH) & (matches0 < len(f1))
    matches0 = np.where(valid, matches0, NO_MATCH)
    index0 = np.flatnonzero(valid)
    matches = np.stack([index0, matches0[index0]], axis=1).reshape(-1, 2)
    scores = mscores0[index0].astype(np.float32)
    matches1 = np.where((matches1 > NO_MATCH) & (matches1 < len(f0)), matches1, NO_MATCH)
    return MatchResult(f0.keypoints, f1.keypoints, matches, scores, matches0, matches1, f0.image_size, f1.image_size)


def empty_result(f0: Features, f1: Features) -> MatchResult:
    return result_from_outputs(
        f0, f1, np.full(len(f0), NO_MATCH), np.zeros(len(f0), np.float32), np.full(len(f1), NO_MATCH)
    )


class Matcher:
    """LightGlue matching on a runner (TensorRT, OpenVINO or ONNX Runtime session); see the module docstring.

    ``threshold``: match score threshold. ``max_num_keypoints``: keep at most this many (strongest)
    keypoints per image; None keeps what the profiles hold. ``on_overflow``: "truncate" (keep the
    strongest, with a warning) or "error" when an image has more keypoints than any profile holds.
    ``extractor``: the feature type's name when the model does not record it, or a callable front-end
    (image -> Features) to use instead of the default; images are supported for "sift" only.
    ``resize``: long side of the image the default SIFT front-end runs on (None: the original size);
    that front-end keeps ``max_num_keypoints`` keypoints, by default 4096 or what the profiles hold if less.
    ``summary``: the engine summary carried by every result; ``extractor_name``: the feature type
    recorded with the engine (its manifest), when the runner's model metadata does not say.
    Settings, pairs and features are checked by ``trt.validation`` (``layout``: the model's descriptor
    size and whether it reads scales and orientations): a bad one is a UserError naming it.
    """

    def __init__(
        self,
        runner: Runner,
        threshold: float = DEFAULT_THRESHOLD,
        max_num_keypoints: Optional[int] = None,
        on_overflow: str = "truncate",
        extractor: Union[str, Callable[[np.ndarray], Features], None] = None,
        summary: Optional[dict] = None,
        extractor_name: Optional[str] = None,
        resize: Optional[int] = DEFAULT_RESIZE,
    ):
        if on_overflow not in ON_OVERFLOW:
            raise UserError(f"on_overflow must be one of {', '.join(ON_OVERFLOW)}, got {on_overflow!r}")
        if extractor is not None and not (isinstance(extractor, str) or callable(extractor)):
            raise UserError(f"extractor must be a feature type's name or a callable front-end, not {extractor!r}")
        self.threshold = check_threshold(threshold)
        self.max_num_keypoints = check_max_keypoints(max_num_keypoints)
        self.on_overflow = on_overflow
        self.resize = check_resize(resize)
        self.runner = runner.activate()
        try:
            recorded = self.runner.metadata.get(METADATA_EXTRACTOR) or extractor_name
            self.extractor_name = self._resolve_extractor(extractor if isinstance(extractor, str) else None, recorded)
            specs = self.runner.input_specs
            self.layout = infer_layout([s.name for s in specs], {s.name: s.shape for s in specs})  # (D, scale_ori)
            self.capacity = capacity(self.runner.request_profiles)
            self._front_end = extractor if callable(extractor) else None
            self.summary = {**(summary or {}), **self.runner.summary(), "backend": runner.backend,
                            "extractor": self.extractor_name}
        except BaseException:
            self.runner.deactivate()
            raise

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_engine(
        cls,
        engine: Union[str, Path],
        backend: str = "auto",
        onnx: Union[str, Path, None] = None,
        threshold: float = DEFAULT_THRESHOLD,
        max_num_keypoints: Optional[int] = None,
        on_overflow: str = "truncate",
        extractor: Union[str, Callable[[np.ndarray], Features], None] = None,
        resize: Optional[int] = DEFAULT_RESIZE,
        cuda_graphs: bool = False,
        threads: Optional[int] = None,
        precision: str = "auto",
        mode: str = "latency",
    ) -> "Matcher":
        """A matcher serving ``engine`` on the backend ``choose_backend`` picks (or the one asked for),
        saying in one line on stderr which it chose and why (and, on OpenVINO, in which precision).

        TensorRT runs the engine; OpenVINO and ONNX Runtime run its source ONNX, within the engine's
        profiles. ``onnx``: the engine's source ONNX when the manifest's path does not lead to it (or there
        is no manifest); ``cuda_graphs``: TensorRT only, see ``TensorRTSession``; ``threads``: OpenVINO and
        ONNX Runtime, threads per inference (default: the physical cores; workers sharing a machine take a
        share each); ``precision`` ("auto", "f32", "bf16") and ``mode`` ("latency", "throughput"): OpenVINO
        only, see ``OpenVINOSession``, whose model cache is kept beside the engine (``openvino_cache_dir``).
        Other arguments: ``Matcher``.
        """
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        if mode not in MODES:
            raise UserError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
        engine = check_path(engine, "the engine path")
        onnx = check_path(onnx, "the ONNX path") if onnx is not None else None
        manifest = load_manifest(engine)
        check_matcher_manifest(engine, manifest)
        requested = backend
        backend, reason = choose_backend(backend, manifest)
        if precision != "auto" and backend != "openvino":
            raise UserError(f"precision {precision} is an OpenVINO setting, but the backend is {BACKEND_NAMES[backend]}: "
                            "use --backend openvino, or precision auto")
        if backend == "tensorrt":
            runner = TensorRTSession(engine, onnx=onnx, cuda_graphs=cuda_graphs)
            onnx_path = runner.onnx_path
            serving = "the engine on TensorRT"
        else:
            read_engine(engine, manifest)  # a missing, truncated or replaced engine is an error here too
            onnx_path = source_onnx_path(engine, manifest, onnx)
            if onnx_path is None:
                raise UserError(
                    f"engine {engine} has no manifest naming its source ONNX: pass the matcher ONNX with --onnx"
                )
            check_source_onnx(onnx_path, manifest, required=True)
            profiles = profiles_from_manifest(manifest) if manifest is not None else None
            if backend == "openvino":
                runner = OpenVINOSession(onnx_path, profiles=profiles, precision=precision,
                                         cache_dir=openvino_cache_dir(engine), mode=mode, threads=threads)
                serving = (f"the engine's source ONNX {onnx_path} on OpenVINO in {runner.precision} "
                           f"({runner.precision_reason})")
            else:
                runner = OnnxRuntimeSession(onnx_path, profiles=profiles, threads=threads)
                serving = f"the engine's source ONNX {onnx_path} on ONNX Runtime"
        if requested == "auto" or backend == "openvino":
            print(f"notice: {reason + '; ' if reason else ''}serving {serving}", file=sys.stderr)
        summary = engine_summary(engine, manifest, onnx_path)
        return cls(
            runner, threshold, max_num_keypoints, on_overflow, extractor, summary,
            extractor_name=manifest.extractor if manifest is not None else None, resize=resize,
        )

    def _resolve_extractor(self, name: Optional[str], recorded: Optional[str]) -> Optional[str]:
        """The feature type: given, else recorded with the model; checked against the model's inputs."""
        if name is not None and recorded is not None and name != recorded:
            raise UserError(f"the model was exported for {recorded!r} features, not {name!r}")
        name = name or recorded
        if name is None:
            return None
        extractor = get_extractor(name)
        desc = next(spec for spec in self.runner.input_specs if spec.name == "desc0")
        scale_ori = any(spec.name == "scales0" for spec in self.runner.input_specs)
        if (extractor.descriptor_dim, extractor.scale_ori) != (desc.shape[2], scale_ori):
            raise ContractError(
                f"{name} features ({extractor.descriptor_dim}-D{', scales and orientations' if extractor.scale_ori else ''}) "
                f"do not fit the model's inputs ({desc.shape[2]}-D{', scales and orientations' if scale_ori else ''})"
            )
        return name

    @property
    def front_end(self) -> Callable[[np.ndarray], Features]:
        """The feature extractor images go through (SIFT, made on first use)."""
        if self._front_end is None:
            if self.extractor_name != "sift":
                what = repr(self.extractor_name) if self.extractor_name else "unknown (pass extractor='sift' if it is SIFT)"
                raise UserError(
                    f"images can be matched with SIFT engines only; this engine's extractor is {what}: "
                    "extract features yourself and call match_features"
                )
            from trt.features.sift import SIFT

            # an explicit max_num_keypoints is taken as asked (beyond the profiles, on_overflow decides)
            limit = self.max_num_keypoints or min(DEFAULT_SIFT_KEYPOINTS, *self.capacity)
            self._front_end = SIFT(max_num_keypoints=limit, resize=self.resize)
        return self._front_end

    # -- matching --------------------------------------------------------------------------------------
    def extract(self, image: Image) -> Features:
        from trt.features.image import read_image

        return self.front_end(read_image(image) if isinstance(image, (str, Path)) else image)

    def match(self, image0: Image, image1: Image) -> MatchResult:
        """Match two images (paths or uint8 arrays) through the feature front-end."""
        return self.match_pairs([(image0, image1)])[0]

    def match_features(self, features0: Features, features1: Features) -> MatchResult:
        return self.match_pairs([(features0, features1)])[0]

    def match_pairs(self, pairs: Sequence[tuple[Union[Image, Features], Union[Image, Features]]]) -> list[MatchResult]:
        """Match many pairs (of images or of Features), batched as the engine's profiles allow.

        Results are in the order of ``pairs`` and equal those of one ``match``/``match_features`` each.
        """
        pairs = check_pairs(pairs)
        features, extract_times = [], []
        for index, pair in enumerate(pairs):
            start = time.perf_counter()
            where = "" if len(pairs) == 1 else f"pair {index}, "
            features.append(tuple(self._limit(self._features(x, f"{where}image {side}"), side) for side, x in enumerate(pair)))
            extract_times.append(time.perf_counter() - start)
        results: list[Optional[MatchResult]] = [None] * len(features)
        busy = []
        for i, (f0, f1) in enumerate(features):
            if len(f0) < 2 or len(f1) < 2:  # nothing to match: no engine call
                results[i] = empty_result(f0, f1)
                results[i].timings = {"match": 0.0, "batch": 0}
            else:
                busy.append(i)
        sizes = [(len(features[i][0]), len(features[i][1])) for i in busy]
        profiles = self.runner.request_profiles
        for members, profile_index in plan_batches(sizes, profiles):
            indices = [busy[m] for m in members]
            batch = self._run_batch([features[i] for i in indices], profiles[profile_index])
            for i, result in zip(indices, batch):
                results[i] = result
        for pair, result, extract in zip(pairs, results, extract_times):
            result.engine = self.summary
            if not all(isinstance(x, Features) for x in pair):
                result.timings = {"extract": extract, **result.timings}
        return results

    def _features(self, item: Union[Image, Features], name: str) -> Features:
        """Features given, or extracted from an image; checked against the model either way."""
        if not isinstance(item, Features):
            try:
                item = self.extract(item)
            except ImageError as error:
                raise ImageError(f"{name}: {error}") from None
        return check_features(item, name, *self.layout)

    def _limit(self, features: Features, side: int) -> Features:
        """Keep the strongest keypoints: at most ``max_num_keypoints``, and no more than a profile holds."""
        if self.max_num_keypoints is not None:
            features = features.top_k(self.max_num_keypoints)
        limit = self.capacity[side]
        if len(features) > limit:
            message = (
                f"image {side} has {len(features)} keypoints, more than the largest profile holds ({limit})"
            )
            if self.on_overflow == "error":
                raise ContractError(f"{message}; extract fewer or build an engine with a larger profile")
            warnings.warn(f"{message}: keeping the {limit} strongest", stacklevel=4)
            features = features.top_k(limit)
        return features

    def _run_batch(self, pairs: list[tuple[Features, Features]], profile: Profile) -> list[MatchResult]:
        """One engine call for pairs that ``profile`` holds; padding pairs repeat the last one."""
        n0 = max(len(f0) for f0, _ in pairs)
        n1 = max(len(f1) for _, f1 in pairs)
        batch, n0, n1 = profile.padded(len(pairs), n0, n1)
        padded = list(pairs) + [pairs[-1]] * (batch - len(pairs))
        start = time.perf_counter()
        outputs = self.runner.infer(pack_pairs(padded, n0, n1, self.threshold))
        timings = {**self.runner.last_timings, "match": time.perf_counter() - start, "batch": len(pairs)}
        results = []
        for b, (f0, f1) in enumerate(pairs):
            result = result_from_outputs(
                f0, f1, outputs["matches0"][b, : len(f0)], outputs["mscores0"][b, : len(f0)], outputs["matches1"][b, : len(f1)]
            )
            result.timings = dict(timings)
            results.append(result)
        return results

    # -- lifetime ----------------------------------------------------------------------------------------
    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> "Matcher":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def choose_backend(requested: str, manifest) -> tuple[str, Optional[str]]:
    """(backend, why) for a requested backend: "auto" takes TensorRT (a GPU the engine targets, with its
    runtime and pycuda), else OpenVINO (on the CPU), else ONNX Runtime; why is None when not "auto"."""
    if requested not in BACKENDS:
        raise UserError(f"unknown backend {requested!r}: choose one of {', '.join(BACKENDS)}")
    if requested != "auto":
        return requested, None
    tensorrt_reason = tensorrt_unavailable(manifest)
    if tensorrt_reason is None:
        return "tensorrt", "TensorRT can run the engine here"
    openvino_reason = openvino_unavailable()
    if openvino_reason is None:
        return "openvino", f"TensorRT cannot run here ({tensorrt_reason})"
    return "onnxruntime", f"TensorRT cannot run here ({tensorrt_reason}) and {openvino_reason}"


def openvino_cache_dir(engine: Path) -> Path:
    """OpenVINO's model cache for an engine: ``X.openvino-cache/`` beside ``X.engine``."""
    return engine.with_name(f"{engine.stem}.openvino-cache")


def engine_summary(engine: Path, manifest, onnx_path: Optional[Path]) -> dict:
    """What a result says of the engine it came from (JSON-ready)."""
    summary = {"engine": str(engine), "onnx": str(onnx_path) if onnx_path else None, "manifest": manifest is not None}
    if manifest is not None:
        summary.update(
            builder=manifest.builder,
            target=manifest.target,
            precision=manifest.precision,
            engine_sha256=manifest.engine.get("sha256"),
            profiles=[
                {"name": p.name, "batch": p.batch, "keypoints0": p.keypoints0, "keypoints1": p.keypoints1}
                for p in manifest.profiles
            ],
            created=manifest.created,
        )
    return summary
