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

Images go through SIFT on the host (SIFT engines), or through a learned extractor (ALIKED, SuperPoint,
DISK) on a second runner of the same backend: the extractor engine the matcher's manifest names
(``build_engine.py --extractor-engine``), or its source ONNX (``trt.runtime.learned_extractor``).

Adaptive depth and width (``trt.runtime.adaptive``): where the matcher's stages were exported beside its
source ONNX (``export.py --stages``) and the weights' confidence heads are trained, OpenVINO and ONNX
Runtime serve the stages with the reference's early stopping and pruning (``depth_confidence`` 0.95,
``width_confidence`` 0.99 unless given; -1 disables either); full depth is the single graph, which is
faster there than the same loop over the stages (docs/adaptive.md). Each result says how many layers
ran (``layers``) and how many points of each image were pruned.
"""

import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from trt.contract import BATCH, DEFAULT_THRESHOLD, KEYPOINTS0, KEYPOINTS1, MATCHER_LAYERS, NO_MATCH, keypoint_dims
from trt.engine.manifest import Manifest, load_manifest, weights_record
from trt.errors import ContractError, EngineError, ImageError, UserError
from trt.extractors import DEFAULT_NETWORKS, get_extractor
from trt.features.base import Features, pack_pairs
from trt.fileio import sha256_file
from trt.runtime.adaptive import DISABLED, StagedMatcherSession, resolve_settings
from trt.runtime.base import Profile, Runner, capacity, plan_batches
from trt.runtime.onnxruntime_session import OnnxRuntimeSession
from trt.runtime.openvino_session import (MODES, OpenVINOSession, bf16_gate_verdict, check_precision,
                                         openvino_unavailable)
from trt.runtime.tensorrt_engine import (
    check_source_onnx,
    profiles_from_manifest,
    read_engine,
    source_onnx_path,
    tensorrt_unavailable,
)
from trt.runtime.tensorrt_session import TensorRTSession
from trt.stages import MANIFEST_NAME as STAGES_MANIFEST
from trt.stages import StagesManifest, engine_stages_folder, stages_folder
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
    ``batch`` is the number of pairs the engine call was shared by; a learned extractor's stages are
    ``extract_compute`` and so on: shares of the calls its images were batched in); engine: the engine summary;
    layers: how many transformer layers ran (fewer than 9 where adaptive depth stopped early); pruned0 /
    pruned1: how many keypoints of each image adaptive width pruned (their matches are -1).
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
    layers: int = MATCHER_LAYERS
    pruned0: int = 0
    pruned1: int = 0

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


def _renamed_max_keypoints(max_keypoints: Optional[int], max_num_keypoints: Optional[int]) -> Optional[int]:
    """``max_keypoints``, or the value given under its former name ``max_num_keypoints`` (with a warning)."""
    if max_num_keypoints is None:
        return max_keypoints
    if max_keypoints is not None:
        raise UserError("give max_keypoints only (max_num_keypoints is its former name)")
    warnings.warn("max_num_keypoints is now max_keypoints (the name of --max-keypoints)", DeprecationWarning,
                  stacklevel=3)
    return max_num_keypoints


def empty_result(f0: Features, f1: Features) -> MatchResult:
    return result_from_outputs(
        f0, f1, np.full(len(f0), NO_MATCH), np.zeros(len(f0), np.float32), np.full(len(f1), NO_MATCH)
    )


class Matcher:
    """LightGlue matching on a runner (TensorRT, OpenVINO or ONNX Runtime session); see the module docstring.

    ``threshold``: match score threshold. ``max_keypoints``: keep at most this many (strongest)
    keypoints per image; None keeps what the profiles hold (the name of trt_infer.py's ``--max-keypoints``;
    ``max_num_keypoints``, its former name, still works and warns). ``on_overflow``: "truncate" (keep the
    strongest, with a warning) or "error" when an image has more keypoints than any profile holds.
    ``extractor``: the feature type's name when the model does not record it, or a callable front-end
    (image -> Features) to use instead of the default. ``extractor_runner``: a learned extractor's runner
    (its engine or ONNX, ``trt.runtime.learned_extractor``), which must make the features the matcher takes;
    without one, images are supported for "sift" only. ``resize``: long side of the image the front-end
    runs on (None: the original size); it keeps ``max_keypoints`` keypoints, by default what the
    profiles hold, and no more than 4096 (SIFT) or the extractor's K.
    ``summary``: the engine summary carried by every result; ``extractor_name``: the feature type
    recorded with the engine (its manifest), when the runner's model metadata does not say.
    Settings, pairs and features are checked by ``trt.validation`` (``layout``: the model's descriptor
    size and whether it reads scales and orientations): a bad one is a UserError naming it.
    """

    def __init__(
        self,
        runner: Runner,
        threshold: float = DEFAULT_THRESHOLD,
        max_keypoints: Optional[int] = None,
        on_overflow: str = "truncate",
        extractor: Union[str, Callable[[np.ndarray], Features], None] = None,
        summary: Optional[dict] = None,
        extractor_name: Optional[str] = None,
        resize: Optional[int] = DEFAULT_RESIZE,
        extractor_runner: Optional[Runner] = None,
        max_num_keypoints: Optional[int] = None,
    ):
        max_keypoints = _renamed_max_keypoints(max_keypoints, max_num_keypoints)
        if on_overflow not in ON_OVERFLOW:
            raise UserError(f"on_overflow must be one of {', '.join(ON_OVERFLOW)}, got {on_overflow!r}")
        if extractor is not None and not (isinstance(extractor, str) or callable(extractor)):
            raise UserError(f"extractor must be a feature type's name or a callable front-end, not {extractor!r}")
        if callable(extractor) and extractor_runner is not None:
            raise UserError("give a callable front-end or an extractor runner, not both")
        self.threshold = check_threshold(threshold)
        self.max_keypoints = check_max_keypoints(max_keypoints)
        self.on_overflow = on_overflow
        self.resize = check_resize(resize)
        self.runner = runner
        self.extractor_runner = extractor_runner
        try:
            contract = self.runner.activate().contract
            if contract.kind != "matcher":
                raise ContractError(f"{runner.name} serves {contract.describe()}, not a LightGlue matcher")
            self.layout = (contract.descriptor_dim, contract.scale_ori)
            self.capacity = capacity(self.runner.request_profiles)
            recorded = self.runner.metadata.get(METADATA_EXTRACTOR) or extractor_name
            self._front_end = extractor if callable(extractor) else None
            self.summary = {**(summary or {}), **self.runner.summary(), "backend": runner.backend}
            self.summary["weights"] = self.summary.get("weights") or weights_record(self.runner.metadata)
            if extractor_runner is not None:
                self._front_end = self._learned_front_end(extractor_runner, recorded)
                recorded = recorded or self._front_end.contract.feature
                linked = self.summary.get("extractor_engine", {})
                self.summary["extractor_engine"] = {
                    **linked, **extractor_runner.summary(), "backend": extractor_runner.backend,
                    "weights": linked.get("weights") or weights_record(extractor_runner.metadata)}
            self.extractor_name = self._resolve_extractor(extractor if isinstance(extractor, str) else None, recorded)
            self.summary["extractor"] = self.extractor_name
        except BaseException:
            self.close()
            raise

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_engine(
        cls,
        engine: Union[str, Path],
        backend: str = "auto",
        onnx: Union[str, Path, None] = None,
        threshold: float = DEFAULT_THRESHOLD,
        max_keypoints: Optional[int] = None,
        on_overflow: str = "truncate",
        extractor: Union[str, Callable[[np.ndarray], Features], None] = None,
        resize: Optional[int] = DEFAULT_RESIZE,
        cuda_graphs: bool = False,
        extractor_engine: Union[str, Path, None] = None,
        extractor_onnx: Union[str, Path, None] = None,
        threads: Optional[int] = None,
        precision: str = "auto",
        mode: str = "latency",
        max_num_keypoints: Optional[int] = None,
        depth_confidence: Optional[float] = None,
        width_confidence: Optional[float] = None,
        prune_above: Optional[int] = None,
    ) -> "Matcher":
        """A matcher serving ``engine``, and the extractor engine its manifest names, on the backend
        ``choose_backend`` picks (or the one asked for), saying in one line on stderr which it chose and
        why (and, on OpenVINO, in which precision).

        TensorRT runs the engines; OpenVINO and ONNX Runtime run their source ONNX, within the engines'
        profiles. ``onnx``: the engine's source ONNX when the manifest's path does not lead to it (or there
        is no manifest); ``extractor_engine``: the extractor engine, when the manifest names none (an engine
        built by trtexec) or to use another; ``extractor_onnx``: its source ONNX, when not where its
        manifest says (or, without an extractor engine, the extractor to run on the CPU);
        ``cuda_graphs``: TensorRT only, see ``TensorRTSession``; ``threads``: OpenVINO and ONNX Runtime,
        threads per inference (default: the physical cores; workers sharing a machine take a share each);
        ``precision`` ("auto", "f32", "bf16") and ``mode`` ("latency", "throughput"): OpenVINO only, see
        ``OpenVINOSession``, whose model cache is kept beside the engine (``openvino_cache_dir``);
        ``depth_confidence``, ``width_confidence`` (-1 disables either; None: the reference's 0.95 / 0.99
        where the stages are exported and their confidence heads trained, else full depth) and
        ``prune_above`` (None: the backend's default): adaptive depth and width, ``adaptive_runner``. Other
        arguments: ``Matcher``.
        """
        max_keypoints = _renamed_max_keypoints(max_keypoints, max_num_keypoints)
        precision = check_precision(precision)
        if mode not in MODES:
            raise UserError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
        engine = check_path(engine, "the engine path")
        onnx = check_path(onnx, "the ONNX path") if onnx is not None else None
        if extractor_engine is not None:
            extractor_engine = check_path(extractor_engine, "the extractor engine path")
        if extractor_onnx is not None:
            extractor_onnx = check_path(extractor_onnx, "the extractor ONNX path")
        manifest = load_manifest(engine)
        check_matcher_manifest(engine, manifest)
        extractor_engine, extractor_manifest = linked_extractor_engine(engine, manifest, extractor_engine)
        requested = backend
        backend, reason = choose_backend(backend, manifest, *([extractor_manifest] if extractor_engine else []))
        if precision != "auto" and backend != "openvino":
            raise UserError(f"precision {precision} is an OpenVINO setting, but the backend is {BACKEND_NAMES[backend]}: "
                            "use --backend openvino, or precision auto")
        settings = dict(cuda_graphs=cuda_graphs, threads=threads, precision=precision, mode=mode)
        runner, onnx_path = open_runner(engine, manifest, backend, onnx, "--onnx", **settings)
        runner, adaptive = adaptive_runner(runner, engine, manifest, onnx_path, backend, depth_confidence,
                                           width_confidence, prune_above, **settings)
        summary = engine_summary(engine, manifest, onnx_path)
        extractor_runner, served = None, [(runner, onnx_path)]
        if extractor_engine is not None or extractor_onnx is not None:
            extractor_runner, extractor_onnx_path = open_runner(
                extractor_engine, extractor_manifest, extractor_backend(backend, requested, extractor_engine is not None),
                extractor_onnx, "--extractor-onnx", **settings)
            summary["extractor_engine"] = engine_summary(extractor_engine, extractor_manifest, extractor_onnx_path)
            served.append((extractor_runner, extractor_onnx_path))
        if requested == "auto" or backend == "openvino" or adaptive:
            print(serving_notice(reason, served) + (f"; {adaptive}" if adaptive else ""), file=sys.stderr)
        return cls(
            runner, threshold, max_keypoints, on_overflow, extractor, summary,
            extractor_name=manifest.extractor if manifest is not None else None, resize=resize,
            extractor_runner=extractor_runner,
        )

    def _learned_front_end(self, extractor_runner: Runner, recorded: Optional[str]):
        """The learned extractor images go through, checked against the matcher: its features and D."""
        from trt.runtime.learned_extractor import LearnedExtractor

        front_end = LearnedExtractor(extractor_runner, self.resize)
        made = front_end.contract
        descriptor_dim, scale_ori = self.layout
        if made.layout.descriptor_dim != descriptor_dim:
            raise ContractError(f"the extractor ({made.network}) gives {made.layout.descriptor_dim}-D descriptors, but "
                                f"the matcher takes {descriptor_dim}-D ones: give the extractor engine built for it")
        if scale_ori:
            raise ContractError(f"the matcher reads scales and orientations (SIFT or DoGHardNet features), which the "
                                f"{made.network} extractor does not give")
        if recorded is not None and made.feature != recorded:
            raise ContractError(f"the extractor ({made.network}) makes {made.feature} features, but the matcher was "
                                f"trained for {recorded} features")
        # an explicit max_keypoints is taken as asked, up to K (beyond the profiles, on_overflow decides)
        front_end.max_num_keypoints = self.max_keypoints or min(made.layout.max_keypoints, *self.capacity)
        return front_end

    def _resolve_extractor(self, name: Optional[str], recorded: Optional[str]) -> Optional[str]:
        """The feature type: given, else recorded with the model; checked against the model's inputs."""
        if name is not None and recorded is not None and name != recorded:
            raise UserError(f"the model was exported for {recorded!r} features, not {name!r}")
        name = name or recorded
        if name is None:
            return None
        extractor = get_extractor(name)
        descriptor_dim, scale_ori = self.layout
        if (extractor.descriptor_dim, extractor.scale_ori) != (descriptor_dim, scale_ori):
            raise ContractError(
                f"{name} features ({extractor.descriptor_dim}-D{', scales and orientations' if extractor.scale_ori else ''}) "
                f"do not fit the model's inputs ({descriptor_dim}-D{', scales and orientations' if scale_ori else ''})"
            )
        return name

    @property
    def front_end(self) -> Callable[[np.ndarray], Features]:
        """The feature extractor images go through (the learned extractor, or SIFT made on first use)."""
        if self._front_end is None:
            if self.extractor_name in DEFAULT_NETWORKS:
                raise UserError(
                    f"this engine matches {self.extractor_name} features, but no {self.extractor_name} extractor was "
                    "given: build the matcher engine with build_engine.py --extractor-engine (make engine "
                    f"EXTRACTOR={self.extractor_name} does), pass --extractor-engine or --extractor-onnx, or extract "
                    "features yourself and call match_features"
                )
            if self.extractor_name != "sift":
                what = repr(self.extractor_name) if self.extractor_name else "unknown (pass extractor='sift' if it is SIFT)"
                raise UserError(
                    f"images can be matched with SIFT engines and learned extractors only; this engine's extractor is "
                    f"{what}: extract features yourself and call match_features"
                )
            from trt.features.sift import SIFT

            # an explicit max_keypoints is taken as asked (beyond the profiles, on_overflow decides)
            limit = self.max_keypoints or min(DEFAULT_SIFT_KEYPOINTS, *self.capacity)
            self._front_end = SIFT(max_num_keypoints=limit, resize=self.resize)
        return self._front_end

    # -- matching --------------------------------------------------------------------------------------
    def extract(self, image: Image) -> Features:
        """Features of one image (a path or a uint8 array) through the front-end."""
        (features, _), = self._extract_images([image], ["the image"], label_errors=False)
        return features

    def extract_many(self, images: Sequence[Image]) -> list[Features]:
        """Features of many images, in order; a learned extractor batches images of one padded size."""
        return [features for features, _ in self._extract_images(list(images), [f"image {i}" for i in range(len(images))])]

    def match(self, image0: Image, image1: Image) -> MatchResult:
        """Match two images (paths or uint8 arrays) through the feature front-end."""
        return self.match_pairs([(image0, image1)])[0]

    def match_features(self, features0: Features, features1: Features) -> MatchResult:
        return self.match_pairs([(features0, features1)])[0]

    def match_pairs(self, pairs: Sequence[tuple[Union[Image, Features], Union[Image, Features]]]) -> list[MatchResult]:
        """Match many pairs (of images or of Features), batched as the engines' profiles allow.

        Images are extracted once each (a path or array in several pairs too) and batched for a learned
        extractor. Results are in the order of ``pairs`` and equal those of one ``match``/``match_features``
        each.
        """
        pairs = check_pairs(pairs)
        where = lambda index: "" if len(pairs) == 1 else f"pair {index}, "  # noqa: E731
        images: dict = {}  # one key per distinct image: (its index in order, the image, its name)
        for index, pair in enumerate(pairs):
            for side, item in enumerate(pair):
                if not isinstance(item, Features):
                    key = ("path", str(item)) if isinstance(item, (str, Path)) else ("array", id(item))
                    images.setdefault(key, (len(images), item, f"{where(index)}image {side}"))
        extracted = self._extract_images([item for _, item, _ in images.values()], [name for _, _, name in images.values()])
        features, extract_times = [], []
        for index, pair in enumerate(pairs):
            sides, timings = [], {}
            for side, item in enumerate(pair):
                if isinstance(item, Features):
                    sides.append(item)
                    continue
                key = ("path", str(item)) if isinstance(item, (str, Path)) else ("array", id(item))
                found, image_timings = extracted[images[key][0]]
                sides.append(found)
                if key not in timings:  # an image in both sides of a pair was extracted once
                    timings[key] = image_timings
            name = f"{where(index)}image "
            features.append(tuple(self._limit(check_features(f, f"{name}{side}", *self.layout), side)
                                  for side, f in enumerate(sides)))
            extract_times.append(_sum_timings(timings.values()) if timings else None)
        results: list[Optional[MatchResult]] = [None] * len(features)
        busy = []
        for i, (f0, f1) in enumerate(features):
            if len(f0) < 2 or len(f1) < 2:  # nothing to match: no engine call
                results[i] = empty_result(f0, f1)
                results[i].timings = {"match": 0.0, "batch": 0}
            else:
                busy.append(i)
        sizes = [{KEYPOINTS0: len(features[i][0]), KEYPOINTS1: len(features[i][1])} for i in busy]
        profiles = self.runner.request_profiles
        for members, profile_index in plan_batches(sizes, profiles):
            indices = [busy[m] for m in members]
            batch = self._run_batch([features[i] for i in indices], profiles[profile_index])
            for i, result in zip(indices, batch):
                results[i] = result
        for result, extract in zip(results, extract_times):
            result.engine = self.summary
            if extract is not None:
                result.timings = {**extract, **result.timings}
        return results

    def _extract_images(self, images: list, names: list[str],
                        label_errors: bool = True) -> list[tuple[Features, dict[str, float]]]:
        """(Features, timings) of each image (a path or an array), in order: read, then through the front-end.
        ``names`` say which image an error is about ("pair 2, image 0"); ``label_errors`` False for one image,
        whose errors need no label (a path's name the file already)."""
        from trt.features.image import read_image

        if not images:
            return []
        front_end = self.front_end
        arrays, read_times = [], []
        for image, name in zip(images, names):
            start = time.perf_counter()
            try:
                arrays.append(read_image(image) if isinstance(image, (str, Path)) else image)
            except ImageError as error:
                raise ImageError(f"{name}: {error}" if label_errors else str(error)) from None
            read_times.append(time.perf_counter() - start)
        extract_batch = getattr(front_end, "extract_batch", None)
        if extract_batch is not None:
            extracted = extract_batch(arrays, names)
        else:
            extracted = []
            for array, name in zip(arrays, names):
                start = time.perf_counter()
                try:
                    found = front_end(array)
                except ImageError as error:
                    raise ImageError(f"{name}: {error}" if label_errors else str(error)) from None
                extracted.append((found, {"extract": time.perf_counter() - start}))
        return [(found, {**timings, "extract": timings["extract"] + read})
                for (found, timings), read in zip(extracted, read_times)]

    def _limit(self, features: Features, side: int) -> Features:
        """Keep the strongest keypoints: at most ``max_keypoints``, and no more than a profile holds."""
        if self.max_keypoints is not None:
            features = features.top_k(self.max_keypoints)
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
        dims = profile.padded(keypoint_dims(len(pairs), max(len(f0) for f0, _ in pairs), max(len(f1) for _, f1 in pairs)))
        batch, n0, n1 = dims[BATCH], dims[KEYPOINTS0], dims[KEYPOINTS1]
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
            if "layers" in outputs:  # the adaptive stages say how deep each pair went; the single graph runs all
                result.layers = int(outputs["layers"][b])
                result.pruned0, result.pruned1 = int(outputs["pruned0"][b]), int(outputs["pruned1"][b])
            results.append(result)
        return results

    # -- lifetime ----------------------------------------------------------------------------------------
    def close(self) -> None:
        try:
            self.runner.deactivate()
        finally:
            if self.extractor_runner is not None:
                self.extractor_runner.deactivate()

    def __enter__(self) -> "Matcher":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def choose_backend(requested: str, *manifests: Optional[Manifest]) -> tuple[str, Optional[str]]:
    """(backend, why) for a requested backend and the manifests of the engines to serve together (a matcher
    and its extractor run on one backend): "auto" takes TensorRT where it can run every one of them (a GPU
    the engines target, with its runtime and pycuda), else OpenVINO (on the CPU), else ONNX Runtime; why is
    None when not "auto"."""
    if requested not in BACKENDS:
        raise UserError(f"unknown backend {requested!r}: choose one of {', '.join(BACKENDS)}")
    if requested != "auto":
        return requested, None
    for manifest in manifests:
        tensorrt_reason = tensorrt_unavailable(manifest)
        if tensorrt_reason is not None:
            break
    else:
        return "tensorrt", "TensorRT can run the engine here"
    openvino_reason = openvino_unavailable()
    if openvino_reason is None:
        return "openvino", f"TensorRT cannot run here ({tensorrt_reason})"
    return "onnxruntime", f"TensorRT cannot run here ({tensorrt_reason}) and {openvino_reason}"


def openvino_cache_dir(engine: Path) -> Path:
    """OpenVINO's model cache for an engine: ``X.openvino-cache/`` beside ``X.engine``."""
    return engine.with_name(f"{engine.stem}.openvino-cache")


def open_runner(engine: Optional[Path], manifest: Optional[Manifest], backend: str, onnx: Optional[Path], flag: str,
                cuda_graphs: bool = False, threads: Optional[int] = None, precision: str = "auto",
                mode: str = "latency") -> tuple[Runner, Optional[Path]]:
    """(runner, source ONNX) serving ``engine`` on ``backend``: the engine on TensorRT, else its source ONNX
    (``onnx`` if given, else the manifest's), checked against the engine, within its profiles. Without an
    engine, ``onnx`` alone on OpenVINO or ONNX Runtime. ``flag``: the command-line flag that names the ONNX.
    Other arguments: ``Matcher.from_engine``."""
    if backend == "tensorrt":
        if engine is None:
            raise UserError(f"TensorRT runs engines, and only an ONNX was given ({onnx}): build its engine with "
                            "build_engine.py and pass it, or use --backend openvino or onnxruntime")
        runner = TensorRTSession(engine, onnx=onnx, cuda_graphs=cuda_graphs)
        return runner, runner.onnx_path
    profiles = None
    if engine is not None:
        read_engine(engine, manifest)  # a missing, truncated or replaced engine is an error here too
        onnx = source_onnx_path(engine, manifest, onnx)
        if onnx is None:
            raise UserError(f"engine {engine} has no manifest naming its source ONNX: pass it with {flag}")
        check_source_onnx(onnx, manifest, required=True, flag=flag)
        profiles = profiles_from_manifest(manifest) if manifest is not None else None
    return cpu_session(backend, onnx, profiles, openvino_cache_dir(engine or onnx), threads, precision, mode), onnx


def cpu_session(backend: str, onnx: Path, profiles: Optional[list[Profile]], cache_dir: Path, threads: Optional[int],
                precision: str, mode: str, stage: bool = False) -> Runner:
    """An OpenVINO or ONNX Runtime session of ``onnx`` within ``profiles`` (settings: ``Matcher.from_engine``);
    ``stage``: one of the adaptive stages (ONNX Runtime without its memory arena)."""
    if backend == "openvino":
        return OpenVINOSession(onnx, profiles=profiles, precision=precision, cache_dir=cache_dir, mode=mode, threads=threads)
    return OnnxRuntimeSession(onnx, profiles=profiles, threads=threads, memory_arena=not stage)


def adaptive_runner(runner: Runner, engine: Optional[Path], manifest: Optional[Manifest], onnx_path: Optional[Path],
                    backend: str, depth_confidence: Optional[float], width_confidence: Optional[float],
                    prune_above: Optional[int], cuda_graphs: bool = False, threads: Optional[int] = None,
                    precision: str = "auto", mode: str = "latency") -> tuple[Runner, str]:
    """(the matcher runner to serve, a phrase for the notice, "" when there is nothing to say).

    The stages beside the source ONNX (``X.stages/``) with adaptive depth and width where they exist, the
    backend runs them and the settings (``trt.runtime.adaptive.resolve_settings``) are not full depth;
    else ``runner``, the single graph. Asking for adaptive depth or width where it cannot run is a UserError.
    """
    asked = any(value is not None and value != DISABLED for value in (depth_confidence, width_confidence))
    onnx_stages = stages_folder(onnx_path) if onnx_path is not None else None
    if backend == "tensorrt":
        # The stage engines build_engine.py made beside the engine, from the stages beside its source ONNX.
        folder = engine_stages_folder(engine)
        if not (folder / STAGES_MANIFEST).is_file():
            if asked:
                raise UserError(f"adaptive depth and width on TensorRT need the engines of the matcher's stages in "
                                f"{folder}: export the stages (export.py --stages) and build the engine again in fp32 "
                                "(build_engine.py builds them), or pass --depth-confidence -1 --width-confidence -1")
            if onnx_stages is not None and (onnx_stages / STAGES_MANIFEST).is_file():
                return runner, f"full depth (no stage engines in {folder.name}: build the engine again in fp32)"
            return runner, ""
    else:
        folder = onnx_stages
        if folder is None or not (folder / STAGES_MANIFEST).is_file():
            if asked:
                raise UserError(f"adaptive depth and width need the matcher's stages in {folder or 'X.stages/ beside its ONNX'}: "
                                "export them with export.py --stages (or pass --depth-confidence -1 --width-confidence -1)")
            return runner, ""
    stages_manifest = StagesManifest.read(folder)
    settings, reason = resolve_settings(stages_manifest, backend, depth_confidence, width_confidence, prune_above)
    if settings.full_depth:
        return runner, reason or "full depth (the single graph)"
    if backend == "openvino" and precision == "bf16":
        # Rounding moves stop and pruning decisions: bf16 serves the stages only where their own gate passed
        # (make eval writes X.stages/stages.bf16-gate.json, docs/adaptive.md); "auto" serves them in f32.
        passed, verdict = bf16_gate_verdict(folder / STAGES_MANIFEST)
        if not passed:
            raise UserError(f"bf16 is refused for the adaptive stages: {verdict}; run make eval (its bf16 gate of the "
                            "stages), or use precision f32 or auto (the stages in f32), or --depth-confidence -1 "
                            "--width-confidence -1 for the single graph in bf16")
    profiles = profiles_from_manifest(manifest) if manifest is not None else None
    cache_dir = openvino_cache_dir(engine or onnx_path)

    def open_stage(path: Path, stage_profiles: Optional[list[Profile]]) -> Runner:
        if backend == "tensorrt":  # each stage engine has its own manifest, with the matcher's profiles
            return TensorRTSession(path, cuda_graphs=cuda_graphs)
        return cpu_session(backend, path, stage_profiles, cache_dir, threads, precision, mode, stage=True)

    staged = StagedMatcherSession(folder, open_stage, settings, profiles, stages_manifest)
    return staged, f"adaptive depth and width from {folder.name} ({settings.describe()})"


def extractor_backend(backend: str, requested: str, has_engine: bool) -> str:
    """The backend a learned extractor runs on beside a matcher on ``backend`` (``requested``: what was
    asked): the matcher's, except that a bare extractor ONNX (no engine) beside TensorRT, and any extractor
    where "auto" chose OpenVINO, run on ONNX Runtime: it ran ALIKED, DISK and SuperPoint in 0.73, 0.74 and
    0.80 of OpenVINO f32's time (make bench, 480x640, 2-core AMD EPYC), unlike the matcher."""
    if backend == "tensorrt":
        return "tensorrt" if has_engine else "onnxruntime"
    return "onnxruntime" if backend == "openvino" and requested == "auto" else backend


def serving_notice(reason: Optional[str], served: Sequence[tuple[Runner, Optional[Path]]]) -> str:
    """The one notice line: why this backend (``reason``: ``choose_backend``'s, None when asked for), where the
    matcher (and its extractor) run, and on OpenVINO the precision with the next step that makes it faster
    (``precision_note``); ``served``: (runner, source ONNX) of the matcher, then of its extractor if any."""

    def where(runner: Runner) -> str:
        return BACKEND_NAMES[runner.backend] + (f" {runner.precision_note}" if runner.backend == "openvino" else "")

    (matcher, _), *extractor = served
    text = f"matching on {where(matcher)}"
    if extractor:
        text += f"; the extractor on {where(extractor[0][0])}"
    return f"notice: {reason + ': ' if reason else ''}{text}"


def linked_extractor_engine(engine: Path, manifest: Optional[Manifest],
                            given: Optional[Path]) -> tuple[Optional[Path], Optional[Manifest]]:
    """(extractor engine, its manifest) to serve with the matcher ``engine``: ``given``, else the one the
    matcher's manifest names (relative to it), which must be the very file it was linked to; (None, None)
    when there is none. An engine whose manifest describes no extractor is refused."""
    if given is None:
        record = manifest.extractor_engine if manifest is not None else None
        if record is None:
            return None, None
        given = Path(engine).parent / record["file"]
        if not os.path.lexists(given):
            raise EngineError(f"engine {engine} is linked to the extractor engine {given}, which is missing: put it "
                              "back (make engine builds it beside the matcher engine) or pass --extractor-engine")
        if sha256_file(given, what="extractor engine", error=EngineError) != record["sha256"]:
            raise EngineError(f"the extractor engine {given} is not the one engine {engine} was linked to (sha256 "
                              f"differs): rebuild the matcher engine with --extractor-engine {given}, or pass "
                              "--extractor-engine to serve it anyway")
    extractor_manifest = load_manifest(given)
    if extractor_manifest is not None and extractor_manifest.extractor_network is None:
        raise ContractError(f"{given} is not a feature extractor engine (its manifest records no extractor network): "
                            "give the extractor engine build_engine.py made from export.py --extractor-path")
    return given, extractor_manifest


def _sum_timings(timings) -> dict[str, float]:
    """Stage-wise sums of timing dicts."""
    total: dict[str, float] = {}
    for timing in timings:
        for stage, seconds in timing.items():
            total[stage] = total.get(stage, 0.0) + seconds
    return total


def engine_summary(engine: Optional[Path], manifest, onnx_path: Optional[Path]) -> dict:
    """What a result says of the engine it came from (JSON-ready); ``engine`` None for a bare ONNX."""
    summary = {"engine": str(engine) if engine else None, "onnx": str(onnx_path) if onnx_path else None,
               "manifest": manifest is not None}
    if manifest is not None:
        ranges = ("batch", "keypoints0", "keypoints1") if manifest.extractor_network is None else ("batch", "height", "width")
        summary.update(
            builder=manifest.builder,
            target=manifest.target,
            precision=manifest.precision,
            engine_sha256=manifest.engine.get("sha256"),
            profiles=[{"name": p.name, **{key: getattr(p, key) for key in ranges}} for p in manifest.profiles],
            created=manifest.created,
            weights=manifest.weights,
        )
        if manifest.extractor_network is not None:
            summary["network"] = manifest.extractor_network
    return summary
