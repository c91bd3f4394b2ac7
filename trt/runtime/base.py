"""The runner interface every backend fills, the contracts runners serve, and the pure logic of profiles.

A runner follows Polygraphy's shape: ``activate()`` acquires what inference needs (a session, a CUDA
context, streams, buffers), ``infer(feeds)`` runs one request, and ``deactivate()`` gives everything
back; ``with runner:`` does both. Backends fill the ``*_impl`` hooks and never check requests
themselves: ``infer`` checks every request against the model's contract and picks the smallest profile
that holds it before the backend sees it.

Two contracts, one code path: a LightGlue matcher (``trt.contract``, ``MatcherContract``) and a learned
feature extractor (``trt.extractor_contract``, ``ExtractorContract``). A contract names the model's
inputs and outputs, checks a request and gives its symbolic dimensions: (B, N0, N1) for a matcher,
(B, H, W) for an extractor. A profile is a small value type with the [min, opt, max] of each of them;
the functions here choose among profiles and plan batches without any runtime installed.
"""

import math
import threading
import time
from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import numpy as np

from trt import extractor_contract
from trt.contract import (BATCH, KEYPOINTS0, KEYPOINTS1, OUTPUT_SPECS, STAGE_KINDS, TensorSpec, check_feeds,
                          infer_layout, input_specs, keypoint_dims, stage_specs)
from trt.errors import ContractError, UserError
from trt.extractor_contract import HEIGHT, IMAGE, WIDTH, ExtractorLayout
from trt.extractors import PADDINGS

# Limits of the profile a model runs under when no engine manifest gives real ones: ONNX Runtime takes
# any shape, so only the batch is bounded (the size of the chunks requests are sent in).
DYNAMIC_MAX_BATCH = 8
DYNAMIC_MAX_KEYPOINTS = 1 << 20
DYNAMIC_MAX_SIDE = 1 << 20  # pixels: OpenCV's own limit on an image side
# Which field of a profile holds the range of each symbolic dimension.
DIMENSION_FIELDS = {BATCH: "batch", KEYPOINTS0: "keypoints0", KEYPOINTS1: "keypoints1", HEIGHT: "height",
                    WIDTH: "width"}
METADATA_PREFIX = "lightglue."


@dataclass(frozen=True)
class Profile:
    """One optimization profile: [min, opt, max] of the batch B and of N0 and N1 (a matcher's keypoints)
    or H and W (an extractor's padded image height and width, in pixels)."""

    name: str
    batch: tuple[int, int, int]
    keypoints0: Optional[tuple[int, int, int]] = None
    keypoints1: Optional[tuple[int, int, int]] = None
    height: Optional[tuple[int, int, int]] = None
    width: Optional[tuple[int, int, int]] = None

    @classmethod
    def from_ranges(cls, name: str, ranges: dict[str, tuple[int, int, int]]) -> "Profile":
        """From {symbolic dimension: (min, opt, max)}."""
        return cls(name, **{DIMENSION_FIELDS[symbol]: tuple(value) for symbol, value in ranges.items()})

    @classmethod
    def from_record(cls, record) -> "Profile":
        """From a manifest ``ProfileRecord``; a ContractError for one with neither keypoint nor image-size ranges."""
        fields = {"batch": record.batch, "keypoints0": record.keypoints0, "keypoints1": record.keypoints1,
                  "height": record.height, "width": record.width}
        given = {key: tuple(value) for key, value in fields.items() if value is not None}
        if set(given) not in ({"batch", "keypoints0", "keypoints1"}, {"batch", "height", "width"}):
            raise ContractError(f"profile {record.name!r} follows neither the matcher contract (batch and keypoint "
                                "ranges) nor the extractor contract (batch and image-size ranges)")
        return cls(record.name, **given)

    @property
    def ranges(self) -> dict[str, tuple[int, int, int]]:
        """{symbolic dimension: (min, opt, max)}, B first."""
        return {symbol: getattr(self, name) for symbol, name in DIMENSION_FIELDS.items()
                if getattr(self, name) is not None}

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self.ranges)

    @property
    def min_dims(self) -> dict[str, int]:
        return {symbol: low for symbol, (low, _, _) in self.ranges.items()}

    @property
    def opt_dims(self) -> dict[str, int]:
        """The dimensions the profile is tuned for."""
        return {symbol: opt for symbol, (_, opt, _) in self.ranges.items()}

    @property
    def max_dims(self) -> dict[str, int]:
        """The dimensions at the top of the profile: what its buffers are sized for."""
        return {symbol: high for symbol, (_, _, high) in self.ranges.items()}

    def at_opt(self) -> "Profile":
        """The profile narrowed to its opt shape: what requests are padded to where each profile runs one shape."""
        return Profile.from_ranges(self.name, {symbol: (opt, opt, opt) for symbol, opt in self.opt_dims.items()})

    @property
    def size(self) -> int:
        """How big a request the profile can take; "smallest profile" means smallest ``size``."""
        return math.prod(self.max_dims.values())

    def fits(self, dims: dict[str, int]) -> bool:
        """Whether a request of exactly these dimensions lies inside the profile."""
        return all(low <= dims[symbol] <= high for symbol, (low, _, high) in self.ranges.items())

    def holds(self, dims: dict[str, int]) -> bool:
        """Whether a request fits once padded up to the profile's minimum (see ``padded``)."""
        return all(dims[symbol] <= high for symbol, (_, _, high) in self.ranges.items())

    def padded(self, dims: dict[str, int]) -> dict[str, int]:
        """The dimensions a request is padded to so that it fits: no smaller than the minimum."""
        return {symbol: max(dims[symbol], low) for symbol, (low, _, _) in self.ranges.items()}

    def describe(self) -> str:
        return f"{self.name} ({describe_dims({s: f'{lo}-{hi}' for s, (lo, _, hi) in self.ranges.items()})})"


def describe_dims(dims: dict) -> str:
    """"B 2, N0 10, N1 40": symbolic dimensions and their values (or ranges)."""
    return ", ".join(f"{symbol} {value}" for symbol, value in dims.items())


def describe_profiles(profiles: Sequence[Profile]) -> str:
    return "; ".join(p.describe() for p in profiles)


def select_profile(profiles: Sequence[Profile], dims: dict[str, int], padding: bool = False) -> int:
    """Index of the smallest profile that takes a request of ``dims``, or a ContractError listing them.

    With ``padding`` a request below a profile's minimum counts as fitting (the caller pads it up).
    """
    accepts = Profile.holds if padding else Profile.fits
    candidates = [i for i, profile in enumerate(profiles) if accepts(profile, dims)]
    if not candidates:
        raise ContractError(f"a request of {describe_dims(dims)} fits none of the engine's profiles: "
                            f"{describe_profiles(profiles)}")
    return min(candidates, key=lambda i: (profiles[i].size, i))


def capacity(profiles: Sequence[Profile]) -> tuple[int, int]:
    """The most keypoints any matcher profile takes in image 0 and in image 1."""
    return max(p.keypoints0[2] for p in profiles), max(p.keypoints1[2] for p in profiles)


def plan_batches(sizes: Sequence[dict[str, int]], profiles: Sequence[Profile],
                 same_size: bool = False) -> list[tuple[list[int], int]]:
    """Group requests of one item each (their dimensions but B: {N0, N1} of a pair, {H, W} of an image)
    into batches that one profile each can take.

    Items are taken in order of size, so that items of similar size share a batch (less padding), and a
    batch grows while some profile holds it, padded to its largest item; with ``same_size`` only items of
    equal dimensions share a batch (an extractor's results depend on the padding around an image).
    Returns (item indices, profile index) per batch. Each item alone must fit some profile (the caller
    makes sure of that first).
    """
    order = sorted(range(len(sizes)), key=lambda i: (max(sizes[i].values()), tuple(sizes[i].values()), i))
    batches: list[tuple[list[int], int]] = []
    members: list[int] = []
    chosen = None

    def batch_of(items: list[int]) -> dict[str, int]:
        return {BATCH: len(items), **{key: max(sizes[j][key] for j in items) for key in sizes[items[0]]}}

    for i in order:
        grown = members + [i]
        index = None
        if not (same_size and members and sizes[i] != sizes[members[0]]):
            try:
                index = select_profile(profiles, batch_of(grown), padding=True)
            except ContractError:
                if not members:
                    raise
        if index is None:
            batches.append((members, chosen))
            members, chosen = [i], select_profile(profiles, batch_of([i]), padding=True)
            continue
        members, chosen = grown, index
    if members:
        batches.append((members, chosen))
    return batches


# -- the contracts a runner serves ----------------------------------------------------------------------


@dataclass(frozen=True)
class MatcherContract:
    """A LightGlue matcher (``trt.contract``) of descriptor size D, with or without scales and orientations."""

    descriptor_dim: int
    scale_ori: bool
    kind: ClassVar[str] = "matcher"
    dimensions: ClassVar[tuple[str, ...]] = (BATCH, KEYPOINTS0, KEYPOINTS1)
    # The input axis that carries each dimension: how an engine's profiles are read back from it.
    axes: ClassVar[dict[str, tuple[str, int]]] = {BATCH: ("kpts0", 0), KEYPOINTS0: ("kpts0", 1),
                                                  KEYPOINTS1: ("kpts1", 1)}

    @property
    def inputs(self) -> list[TensorSpec]:
        return input_specs(self.descriptor_dim, self.scale_ori)

    @property
    def outputs(self) -> list[TensorSpec]:
        return OUTPUT_SPECS

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, int]:
        return keypoint_dims(*check_feeds(feeds, self.inputs))

    def dynamic_profile(self) -> Profile:
        return Profile("dynamic", (1, 1, DYNAMIC_MAX_BATCH), (1, 1, DYNAMIC_MAX_KEYPOINTS), (1, 1, DYNAMIC_MAX_KEYPOINTS))

    def describe(self) -> str:
        """"a LightGlue matcher (...)": the phrase with its article, for messages."""
        return f"a LightGlue matcher ({self.descriptor_dim}-D descriptors{', scales and orientations' * self.scale_ori})"


@dataclass(frozen=True)
class StageContract:
    """One stage of a matcher served as stages (``trt.contract.stage_specs``; ``trt.runtime.adaptive``)."""

    stage: str  # one of trt.contract.STAGE_KINDS
    descriptor_dim: int
    scale_ori: bool
    kind: ClassVar[str] = "stage"
    dimensions: ClassVar[tuple[str, ...]] = (BATCH, KEYPOINTS0, KEYPOINTS1)

    @property
    def axes(self) -> dict[str, tuple[str, int]]:
        first0, first1 = self.inputs[0].name, next(s.name for s in self.inputs if s.shape[1:2] == (KEYPOINTS1,))
        return {BATCH: (first0, 0), KEYPOINTS0: (first0, 1), KEYPOINTS1: (first1, 1)}

    @property
    def inputs(self) -> list[TensorSpec]:
        return stage_specs(self.stage, self.descriptor_dim, self.scale_ori)[0]

    @property
    def outputs(self) -> list[TensorSpec]:
        return stage_specs(self.stage, self.descriptor_dim, self.scale_ori)[1]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, int]:
        return keypoint_dims(*check_feeds(feeds, self.inputs))

    def dynamic_profile(self) -> Profile:
        return MatcherContract.dynamic_profile(self)

    def describe(self) -> str:
        return f"LightGlue {self.stage.replace('_', ' ')} stage ({self.descriptor_dim}-D descriptors)"

    @classmethod
    def from_io(cls, inputs: dict, outputs: dict, settings: dict, where: str) -> "StageContract":
        """From a stage graph's I/O names and its ``lightglue.*`` metadata (``stage``, ``descriptor_dim``,
        ``scale_ori``); a ContractError when they disagree."""
        try:
            contract = cls(settings["stage"], int(settings["descriptor_dim"]), settings["scale_ori"] == "true")
        except (KeyError, ValueError):
            raise ContractError(f"{where} is a matcher stage without its layout in the metadata") from None
        if contract.stage not in STAGE_KINDS:
            raise ContractError(f"{where}: unknown matcher stage {contract.stage!r}")
        expected_in = {spec.name for spec in contract.inputs}
        expected_out = {spec.name for spec in contract.outputs}
        if set(inputs) != expected_in or not expected_out <= set(outputs):
            raise ContractError(f"{where} does not follow the {contract.stage} stage contract: inputs "
                                f"{sorted(inputs)}, expected {sorted(expected_in)}; outputs must include {sorted(expected_out)}")
        return contract


@dataclass(frozen=True)
class ExtractorContract:
    """A learned feature extractor (``trt.extractor_contract``) and what its front-end must do for it:
    ``stride`` and ``padding`` (``trt.features.padding``); ``network`` ("aliked-n16") and ``feature``
    (the feature type it makes, "aliked") name it."""

    layout: ExtractorLayout
    stride: int
    padding: str
    network: str
    feature: str
    kind: ClassVar[str] = "extractor"
    dimensions: ClassVar[tuple[str, ...]] = (BATCH, HEIGHT, WIDTH)
    axes: ClassVar[dict[str, tuple[str, int]]] = {BATCH: (IMAGE, 0), HEIGHT: (IMAGE, 2), WIDTH: (IMAGE, 3)}

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.layout.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.layout.outputs

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, int]:
        return dict(zip(self.dimensions, extractor_contract.check_feeds(feeds, self.layout, self.stride)))

    def dynamic_profile(self) -> Profile:
        side = (self.stride, self.stride, DYNAMIC_MAX_SIDE)
        return Profile("dynamic", (1, 1, DYNAMIC_MAX_BATCH), height=side, width=side)

    def describe(self) -> str:
        """"a feature extractor, aliked-n16 (...)": the phrase with its article, for messages."""
        return (f"a feature extractor, {self.network} ({self.feature} features, {self.layout.descriptor_dim}-D, "
                f"at most {self.layout.max_keypoints} keypoints)")

    @classmethod
    def from_settings(cls, layout: ExtractorLayout, settings: dict, where: str) -> "ExtractorContract":
        """From the network settings an export records (``lightglue.*`` ONNX metadata, or a manifest's
        ``extractor_network`` with ``extractor``): ``network``, ``extractor``, ``stride`` and ``padding``."""
        stride, padding = settings.get("stride"), settings.get("padding")
        try:
            stride = int(stride)
        except (TypeError, ValueError):
            stride = None
        if stride is None or stride < 1 or padding not in PADDINGS or not settings.get("network") \
                or not settings.get("extractor"):
            raise ContractError(f"{where} does not record its network's stride, padding and name (an extractor "
                                "exported by export.py --extractor-path does): the front-end cannot prepare images for it")
        return cls(layout, stride, padding, settings["network"], settings["extractor"])


def network_settings(metadata: dict) -> dict:
    """An extractor's network settings (``network``, ``extractor``, ``stride``, ``padding``, ...) from the
    ``lightglue.*`` metadata its export writes."""
    return {key.removeprefix(METADATA_PREFIX): value for key, value in metadata.items() if key.startswith(METADATA_PREFIX)}


def manifest_network_settings(manifest) -> dict:
    """The same settings from an extractor engine's manifest (``extractor_network`` and ``extractor``); a
    matcher stage's engine (``trt.engine.stage_engines``): its source ONNX's, which name the stage and layout."""
    recorded = network_settings((manifest.onnx or {}).get("metadata") or {})
    if recorded.get("stage"):
        return recorded
    network = manifest.extractor_network or {}
    return {**network, "network": network.get("name"), "extractor": manifest.extractor}


def contract_from_io(inputs: dict[str, tuple], outputs: dict[str, tuple], settings: dict, where: str):
    """The contract of a model or engine from its I/O names and shapes (fixed sizes as ints) and, for an
    extractor, its network ``settings`` (``network_settings``); a ContractError naming what is off."""
    if settings.get("stage"):
        return StageContract.from_io(inputs, outputs, settings, where)
    if IMAGE in inputs:
        return ExtractorContract.from_settings(extractor_contract.infer_layout(inputs, outputs), settings, where)
    try:
        descriptor_dim, scale_ori = infer_layout(list(inputs), inputs)
    except ContractError as error:
        raise ContractError(f"{where} cannot be served as a LightGlue matcher or feature extractor: {error}") from None
    missing = [spec.name for spec in OUTPUT_SPECS if spec.name not in outputs]
    if missing:
        raise ContractError(f"{where} cannot be served as a LightGlue matcher: it lacks the outputs {', '.join(missing)}")
    return MatcherContract(descriptor_dim, scale_ori)


def contract_from_manifest(manifest, where: str):
    """The contract an engine's manifest records; a ContractError for a graph of neither contract."""
    settings = manifest_network_settings(manifest)
    if settings.get("stage"):
        return StageContract.from_io({t.name: tuple(t.shape) for t in manifest.inputs},
                                     {t.name: tuple(t.shape) for t in manifest.outputs}, settings, where)
    network = manifest.extractor_network
    if network is not None:
        if manifest.descriptor_dim is None:
            raise ContractError(f"{where}: its manifest records an extractor network but no descriptor size")
        layout = ExtractorLayout(network["channels"], network["max_keypoints"], manifest.descriptor_dim)
        return ExtractorContract.from_settings(layout, manifest_network_settings(manifest), where)
    if manifest.descriptor_dim is None:
        raise ContractError(f"{where} is neither a LightGlue matcher nor a feature extractor (its manifest records "
                            "neither layout)")
    return MatcherContract(manifest.descriptor_dim, bool(manifest.scale_ori))


class Runner:
    """Base of the backends: activation, checks and timings here, the work in the ``*_impl`` hooks.

    ``contract`` (``MatcherContract`` or ``ExtractorContract``) may be known only once the model is
    loaded: ``activate_impl`` sets it then. ``profiles``: the engine's, or None for any shape (the
    contract's ``dynamic_profile``). ``last_timings`` holds the seconds of the calling thread's last
    ``infer``: ``total`` always, ``h2d`` / ``compute`` / ``d2h`` where the backend measures them (per
    thread, so that worker threads sharing a runner each see their own).
    """

    backend = "base"
    device = "cpu"  # where the model runs: "cpu" or "cuda" (a GPU)

    def __init__(self, name: str, contract=None, profiles: Optional[list[Profile]] = None):
        self.name = name
        self.contract = contract
        self.profiles = list(profiles) if profiles else None
        self.metadata: dict[str, str] = {}  # model metadata (ONNX metadata_props), where the backend has it
        self.is_active = False
        self._local = threading.local()

    @property
    def input_specs(self) -> Optional[list[TensorSpec]]:
        """The contract's inputs for this model's layout (None before a backend that reads them is active)."""
        return self.contract.inputs if self.contract is not None else None

    @property
    def last_timings(self) -> dict[str, float]:
        return getattr(self._local, "timings", {})

    @property
    def request_profiles(self) -> Optional[list[Profile]]:
        """The profiles callers plan and pad requests with: ``profiles``, or narrower ones where a backend
        runs each profile at one shape only (TensorRT with CUDA graphs: every profile at its opt)."""
        return self.profiles

    def summary(self) -> dict:
        """What the backend reports of itself (JSON-ready), for results and command-line summaries."""
        return {}

    # -- hooks for the backends ------------------------------------------------------------------------
    def activate_impl(self) -> None:
        raise NotImplementedError

    def infer_impl(self, feeds: dict[str, np.ndarray], profile_index: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Run a checked request under profile ``profile_index``; return (outputs, stage timings)."""
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        raise NotImplementedError

    # -- the interface -----------------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if self.is_active:
            return self
        self.activate_impl()
        try:
            if self.contract is None:
                raise ContractError(f"{self.name}: the backend did not report the model's contract")
            self.profiles = self.profiles or [self.contract.dynamic_profile()]
            for profile in self.profiles:
                if profile.dimensions != self.contract.dimensions:
                    raise ContractError(f"{self.name}: profile {profile.describe()} does not fit the model, "
                                        f"{self.contract.describe()}")
        except BaseException:
            self.deactivate_impl()
            raise
        self.is_active = True
        return self

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of the model for one request (a dict of the contract's inputs)."""
        if not self.is_active:
            raise UserError(f"{self.name} is not active: call activate() or use it in a with-block")
        # The profiles callers pad to: with CUDA graphs a request padded to one profile's opt must run on that
        # profile's slot, not on a smaller full profile that also holds its shape (overlapping buckets).
        index = select_profile(self.request_profiles, self.contract.check_feeds(feeds))
        start = time.perf_counter()
        outputs, timings = self.infer_impl(feeds, index)
        self._local.timings = {**timings, "total": time.perf_counter() - start}
        return outputs

    def deactivate(self) -> None:
        if self.is_active:
            self.is_active = False
            self.deactivate_impl()

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc_info) -> None:
        self.deactivate()
