"""The runner interface every backend fills, and the pure logic of optimization profiles.

A runner follows Polygraphy's shape: ``activate()`` acquires what inference needs (a session, a CUDA
context, streams, buffers), ``infer(feeds)`` runs one request of the matcher contract, and
``deactivate()`` gives everything back; ``with runner:`` does both. Backends fill the ``*_impl``
hooks and never check requests themselves: ``infer`` checks every request against the contract
(``trt.contract.check_feeds``) and picks the smallest profile that holds it before the backend sees it.

A profile is a small value type with the [min, opt, max] of the batch and of each image's keypoints;
the functions here choose among profiles and plan batches without any runtime installed.
"""

import threading
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from trt.contract import TensorSpec, check_feeds
from trt.errors import ContractError, UserError

# Limits of the profile an ONNX model runs under when no engine manifest gives real ones: ONNX
# Runtime takes any shape, so only the batch is bounded (the size of the chunks pairs are sent in).
DYNAMIC_MAX_BATCH = 8
DYNAMIC_MAX_KEYPOINTS = 1 << 20


@dataclass(frozen=True)
class Profile:
    """One optimization profile: [min, opt, max] of the batch B and of the keypoints N0 and N1."""

    name: str
    batch: tuple[int, int, int]
    keypoints0: tuple[int, int, int]
    keypoints1: tuple[int, int, int]

    @classmethod
    def from_record(cls, record) -> "Profile":
        """From a manifest ``ProfileRecord``; a ContractError for one without the matcher's dimensions."""
        if record.batch is None or record.keypoints0 is None or record.keypoints1 is None:
            raise ContractError(f"profile {record.name!r} does not follow the matcher contract (no batch/keypoint ranges)")
        return cls(record.name, tuple(record.batch), tuple(record.keypoints0), tuple(record.keypoints1))

    @classmethod
    def dynamic(cls) -> "Profile":
        return cls("dynamic", (1, 1, DYNAMIC_MAX_BATCH), (1, 1, DYNAMIC_MAX_KEYPOINTS), (1, 1, DYNAMIC_MAX_KEYPOINTS))

    @property
    def ranges(self) -> tuple[tuple[int, int, int], ...]:
        return self.batch, self.keypoints0, self.keypoints1

    @property
    def max_shape(self) -> tuple[int, int, int]:
        """(B, N0, N1) at the top of the profile: what its buffers are sized for."""
        return self.batch[2], self.keypoints0[2], self.keypoints1[2]

    @property
    def opt_shape(self) -> tuple[int, int, int]:
        """(B, N0, N1) the profile is tuned for."""
        return self.batch[1], self.keypoints0[1], self.keypoints1[1]

    def at_opt(self) -> "Profile":
        """The profile narrowed to its opt shape: what requests are padded to where each profile runs one shape."""
        return Profile(self.name, *((opt, opt, opt) for _, opt, _ in self.ranges))

    @property
    def size(self) -> int:
        """How big a request the profile can take; "smallest profile" means smallest ``size``."""
        batch, n0, n1 = self.max_shape
        return batch * n0 * n1

    def fits(self, batch: int, n0: int, n1: int) -> bool:
        """Whether a request of exactly (B, N0, N1) lies inside the profile."""
        return all(lo <= v <= hi for v, (lo, _, hi) in zip((batch, n0, n1), self.ranges))

    def holds(self, batch: int, n0: int, n1: int) -> bool:
        """Whether a request fits once padded up to the profile's minimum (see ``padded``)."""
        return all(v <= hi for v, (_, _, hi) in zip((batch, n0, n1), self.ranges))

    def padded(self, batch: int, n0: int, n1: int) -> tuple[int, int, int]:
        """The (B, N0, N1) a request is padded to so that it fits: no smaller than the minimum."""
        return tuple(max(v, lo) for v, (lo, _, _) in zip((batch, n0, n1), self.ranges))

    def describe(self) -> str:
        b, k0, k1 = (f"{lo}-{hi}" for lo, _, hi in self.ranges)
        return f"{self.name} (B {b}, N0 {k0}, N1 {k1})"


def describe_profiles(profiles: Sequence[Profile]) -> str:
    return "; ".join(p.describe() for p in profiles)


def select_profile(profiles: Sequence[Profile], batch: int, n0: int, n1: int, padding: bool = False) -> int:
    """Index of the smallest profile that takes a (B, N0, N1) request, or a ContractError listing them.

    With ``padding`` a request below a profile's minimum counts as fitting (the caller pads it up).
    """
    accepts = Profile.holds if padding else Profile.fits
    candidates = [i for i, profile in enumerate(profiles) if accepts(profile, batch, n0, n1)]
    if not candidates:
        raise ContractError(
            f"a request of {batch} pair(s) with {n0} and {n1} keypoints fits none of the engine's profiles: "
            f"{describe_profiles(profiles)}"
        )
    return min(candidates, key=lambda i: (profiles[i].size, i))


def capacity(profiles: Sequence[Profile]) -> tuple[int, int]:
    """The most keypoints any profile takes in image 0 and in image 1."""
    return max(p.keypoints0[2] for p in profiles), max(p.keypoints1[2] for p in profiles)


def plan_batches(sizes: Sequence[tuple[int, int]], profiles: Sequence[Profile]) -> list[tuple[list[int], int]]:
    """Group pairs of (N0, N1) keypoints into batches that one profile each can take.

    Pairs are taken in order of size, so that pairs of similar size share a batch (less padding), and
    a batch grows while some profile holds it. Returns (pair indices, profile index) per batch. Each
    pair alone must fit some profile (the caller truncates larger ones first).
    """
    order = sorted(range(len(sizes)), key=lambda i: (max(sizes[i]), sizes[i], i))
    batches: list[tuple[list[int], int]] = []
    members: list[int] = []
    chosen = None
    for i in order:
        grown = members + [i]
        n0 = max(sizes[j][0] for j in grown)
        n1 = max(sizes[j][1] for j in grown)
        try:
            index = select_profile(profiles, len(grown), n0, n1, padding=True)
        except ContractError:
            if not members:
                raise
            batches.append((members, chosen))
            members, chosen = [i], select_profile(profiles, 1, *sizes[i], padding=True)
            continue
        members, chosen = grown, index
    if members:
        batches.append((members, chosen))
    return batches


class Runner:
    """Base of the backends: activation, checks and timings here, the work in the ``*_impl`` hooks.

    ``input_specs`` (the contract's inputs for this model's layout) and ``profiles`` may be known only
    once the model is loaded: ``activate_impl`` sets them then. ``last_timings`` holds the seconds of
    the calling thread's last ``infer``: ``total`` always, ``h2d`` / ``compute`` / ``d2h`` where the
    backend measures them (per thread, so that worker threads sharing a runner each see their own).
    """

    backend = "base"

    def __init__(self, name: str, input_specs: Optional[list[TensorSpec]] = None, profiles: Optional[list[Profile]] = None):
        self.name = name
        self.input_specs = input_specs
        self.profiles = profiles
        self.metadata: dict[str, str] = {}  # model metadata (ONNX metadata_props), where the backend has it
        self.is_active = False
        self._local = threading.local()

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
        if self.input_specs is None or not self.profiles:
            self.deactivate_impl()
            raise ContractError(f"{self.name}: the backend did not report its inputs and profiles")
        self.is_active = True
        return self

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of the matcher for one request (a dict of the contract's inputs)."""
        if not self.is_active:
            raise UserError(f"{self.name} is not active: call activate() or use it in a with-block")
        batch, n0, n1 = check_feeds(feeds, self.input_specs)
        index = select_profile(self.profiles, batch, n0, n1)
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
