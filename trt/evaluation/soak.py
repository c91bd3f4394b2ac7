"""In-process soak of ``Matcher.match_features``: thousands of calls whose keypoint counts wander across
every profile of an engine, on each backend, from worker threads, with bad requests mixed in.

What a soak shows (``soak_backend``), per backend:

- requests, and their outcomes by kind: good requests answered, bad ones refused (by the bad kind and the
  exception), anything else a failure (a good request that raised, a bad one that was not refused);
- resident memory (RSS) and open file descriptors at the start, after warm-up, at the end (and the RSS peak
  after warm-up), after the matcher is closed: memory and descriptors must be flat after warm-up;
- that a sample of the results equals a fresh matcher's on the same requests (after thousands of calls the
  buffers, caches and compiled shapes of a long-lived matcher must not have drifted).

Requests are a pure function of their index (seeded), so any thread may make any one and a fresh matcher
gets the same. The serving side only: no torch, no exporter (``bench/soak.py`` prepares the models in
child processes, so that their memory is not in these figures).
"""

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np

from trt.errors import ContractError
from trt.features.base import Features
from trt.runtime.matcher import Matcher, MatchResult

# Matcher.from_engine settings of each soaked backend.
BACKENDS = {
    "openvino-dynamic": dict(backend="openvino", precision="f32", mode="throughput"),
    "openvino-fixed": dict(backend="openvino", precision="f32", mode="latency"),
    "onnxruntime": dict(backend="onnxruntime"),
    "tensorrt": dict(backend="tensorrt"),
}
IMAGE_SIZE = (640.0, 480.0)
# Flat: what the RSS may grow by after warm-up (allocator noise: arenas, thread caches); descriptors may not grow.
RSS_SLACK_MIB = 16.0
RSS_SLACK_FRACTION = 0.02
SCORE_TOLERANCE = 1e-4  # a fresh matcher may run a shape on another kernel (OpenVINO: fixed- or dynamic-shape)


def resources() -> dict:
    """This process's resident memory (MiB) and open file descriptors, from /proc."""
    with open("/proc/self/statm") as file:
        resident_pages = int(file.read().split()[1])
    return {"rss_mib": resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20, "fds": len(os.listdir("/proc/self/fd"))}


def random_features(rng: np.random.Generator, count: int, descriptor_dim: int, scale_ori: bool) -> Features:
    width, height = IMAGE_SIZE
    descriptors = rng.standard_normal((count, descriptor_dim)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    return Features(
        keypoints=(rng.uniform(0, 1, (count, 2)) * (width - 1, height - 1)).astype(np.float32),
        descriptors=descriptors, image_size=IMAGE_SIZE,
        scores=rng.uniform(0, 1, count).astype(np.float32),
        scales=rng.uniform(1, 8, count).astype(np.float32) if scale_ori else None,
        oris=rng.uniform(-np.pi, np.pi, count).astype(np.float32) if scale_ori else None,
    )


def _seen_again(rng: np.random.Generator, features: Features, count: int, scale_ori: bool) -> Features:
    """Features of a second view: the first ``count // 2`` points of ``features`` moved a little, then new ones,
    so that a pair has true matches."""
    shared = min(len(features), count // 2)
    fresh = random_features(rng, count - shared, features.descriptors.shape[1], scale_ori)
    moved = features.subset(np.arange(shared))
    descriptors = moved.descriptors + 0.05 * rng.standard_normal(moved.descriptors.shape).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    keypoints = np.clip(moved.keypoints + rng.normal(0, 1, moved.keypoints.shape), 0, np.subtract(IMAGE_SIZE, 1))
    join = lambda a, b: None if a is None else np.concatenate([a, b]).astype(np.float32)  # noqa: E731
    return Features(join(keypoints, fresh.keypoints), join(descriptors, fresh.descriptors), IMAGE_SIZE,
                    join(moved.scores, fresh.scores), join(moved.scales, fresh.scales), join(moved.oris, fresh.oris))


def _nan_descriptor(features: Features) -> Features:
    descriptors = features.descriptors.copy()
    descriptors[-1, 0] = np.nan
    return replace(features, descriptors=descriptors)


def _short_descriptors(features: Features) -> Features:
    return replace(features, descriptors=features.descriptors[:, :-1])


def _keypoint_far_outside(features: Features) -> Features:
    keypoints = features.keypoints.copy()
    keypoints[0] = (-10 * IMAGE_SIZE[0], 0)
    return replace(features, keypoints=keypoints)


# A bad request of each kind must be refused with a ContractError, and leave the matcher serving.
BAD_REQUESTS = {
    "non-finite descriptor": _nan_descriptor,
    "descriptor size": _short_descriptors,
    "keypoint outside the image": _keypoint_far_outside,
}


@dataclass(frozen=True)
class Request:
    index: int
    features0: Features
    features1: Features
    bad: Optional[str]  # the BAD_REQUESTS kind, None for a good request
    profile: str  # the profile its keypoint counts fall in


def make_request(index: int, buckets: list[tuple[str, int, int]], layout: tuple[int, bool], bad_every: int) -> Request:
    """Request ``index``: keypoint counts in bucket ``index % len(buckets)`` (name, min, max), half of them in
    its top tenth (where OpenVINO's fixed-shape models serve); every ``bad_every``-th one is bad."""
    rng = np.random.default_rng(index)
    name, low, high = buckets[index % len(buckets)]
    top = max(low, int(0.9 * high))
    counts = [int(rng.integers(top, high + 1) if rng.uniform() < 0.5 else rng.integers(low, high + 1)) for _ in range(2)]
    descriptor_dim, scale_ori = layout
    features0 = random_features(rng, counts[0], descriptor_dim, scale_ori)
    features1 = _seen_again(rng, features0, counts[1], scale_ori)
    bad = None
    if bad_every and index % bad_every == bad_every - 1:
        bad = list(BAD_REQUESTS)[(index // bad_every) % len(BAD_REQUESTS)]
        features1 = BAD_REQUESTS[bad](features1)
    return Request(index, features0, features1, bad, name)


def profile_buckets(matcher: Matcher) -> list[tuple[str, int, int]]:
    """(name, min, max) keypoints of each profile the matcher plans requests with."""
    return [(profile.name, profile.keypoints0[0], profile.keypoints0[2]) for profile in matcher.runner.request_profiles]


def same_result(a: MatchResult, b: MatchResult) -> bool:
    return (np.array_equal(a.matches0, b.matches0) and np.array_equal(a.matches1, b.matches1)
            and np.allclose(a.scores, b.scores, rtol=0, atol=SCORE_TOLERANCE))


class _Tally:
    """Outcomes of the calls, counted from every worker thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.outcomes: Counter = Counter()
        self.profiles: Counter = Counter()
        self.failures: dict[str, str] = {}  # kind -> the first message
        self.results: dict[int, MatchResult] = {}
        self.peak_rss_mib = 0.0

    def record(self, request: Request, result: Optional[MatchResult], error: Optional[BaseException], keep: bool):
        if request.bad is None and error is None:
            outcome = "answered"
        elif request.bad is not None and isinstance(error, ContractError):
            outcome = f"refused: {request.bad} ({type(error).__name__})"
        else:
            outcome = f"FAILED: {request.bad or 'good request'}: {type(error).__name__ if error else 'not refused'}"
        with self.lock:
            self.outcomes[outcome] += 1
            self.profiles[request.profile] += 1
            if outcome.startswith("FAILED"):
                self.failures.setdefault(outcome, str(error))
            if keep and result is not None:
                self.results[request.index] = result


def _run(matcher: Matcher, indices: range, make: Callable[[int], Request], tally: _Tally, threads: int,
         deadline: float, keep_every: int) -> int:
    """Call ``match_features`` on the requests of ``indices`` from ``threads`` workers until done or ``deadline``;
    return how many were made."""
    pending, lock, made = iter(indices), threading.Lock(), [0]

    def work():
        while True:
            with lock:
                index = next(pending, None) if time.monotonic() < deadline else None
                if index is None:
                    return
                made[0] += 1
            request = make(index)
            result = error = None
            try:
                result = matcher.match_features(request.features0, request.features1)
            except Exception as caught:  # noqa: BLE001 (every outcome is counted by kind; none may vanish)
                error = caught
            tally.record(request, result, error, keep=keep_every > 0 and index % keep_every == 0)
            if index % 50 == 0:
                rss = resources()["rss_mib"]
                with tally.lock:
                    tally.peak_rss_mib = max(tally.peak_rss_mib, rss)

    workers = [threading.Thread(target=work, name=f"soak-{i}") for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return made[0]


def soak_backend(open_matcher: Callable[[], Matcher], calls: int, seconds: float, threads: int = 1,
                 warmup: Optional[int] = None, bad_every: int = 25, compare: int = 40) -> dict:
    """Soak one backend: ``calls`` requests at most, ``seconds`` at most after warm-up, from ``threads`` threads.

    ``open_matcher``: a new matcher each call (the soaked one, then a fresh one for the comparison);
    ``warmup``: the first requests, after which memory and descriptors are taken as the baseline (default:
    ten per profile, or a tenth of ``calls`` if more); ``bad_every``: every n-th request is bad (0: none);
    ``compare``: about this many good results are compared with a fresh matcher's.
    """
    started = time.monotonic()
    start = resources()
    matcher = open_matcher()
    tally = _Tally()
    try:
        buckets, layout = profile_buckets(matcher), matcher.layout
        make = lambda index: make_request(index, buckets, layout, bad_every)  # noqa: E731
        warmup = min(calls, warmup if warmup is not None else max(10 * len(buckets), calls // 10))
        keep_every = max(1, calls // compare) if compare else 0
        made = _run(matcher, range(warmup), make, tally, threads, float("inf"), keep_every)
        warm = resources()
        tally.peak_rss_mib = warm["rss_mib"]
        soak_started = time.monotonic()
        made += _run(matcher, range(warmup, calls), make, tally, threads, soak_started + seconds, keep_every)
        soak_seconds = time.monotonic() - soak_started
        end = resources()
    finally:
        matcher.close()
    closed = resources()
    equal, compared = 0, sorted(index for index in tally.results if make(index).bad is None)
    with open_matcher() as fresh:
        for index in compared:
            request = make(index)
            equal += same_result(tally.results[index], fresh.match_features(request.features0, request.features1))
    growth = end["rss_mib"] - warm["rss_mib"]
    allowed = max(RSS_SLACK_MIB, RSS_SLACK_FRACTION * warm["rss_mib"])
    failures = sum(count for outcome, count in tally.outcomes.items() if outcome.startswith("FAILED"))
    return {
        "requests": made, "threads": threads, "warmup_requests": warmup,
        "seconds": round(time.monotonic() - started, 1), "soak_seconds": round(soak_seconds, 1),
        "requests_per_second": round((made - warmup) / soak_seconds, 1) if soak_seconds > 0 else None,
        "outcomes": dict(sorted(tally.outcomes.items())), "first_failures": tally.failures,
        "profiles": {name: tally.profiles[name] for name, _, _ in buckets},
        "resources": {"start": start, "after_warmup": warm, "end": end, "after_close": closed,
                      "peak_rss_mib_after_warmup": tally.peak_rss_mib},
        "rss_growth_after_warmup_mib": round(growth, 1), "rss_growth_allowed_mib": round(allowed, 1),
        "fds_growth_after_warmup": end["fds"] - warm["fds"],
        "equal_to_fresh": f"{equal}/{len(compared)}",
        "passed": (failures == 0 and equal == len(compared) and growth <= allowed and end["fds"] <= warm["fds"]
                   and all(tally.profiles[name] for name, _, _ in buckets)),
    }


def format_report(name: str, record: dict) -> list[str]:
    """The lines a user reads of one backend's soak."""
    res = record["resources"]
    mib = lambda key: f"{res[key]['rss_mib']:.0f}"  # noqa: E731
    lines = [
        f"{name}: {record['requests']} requests in {record['seconds']} s ({record['threads']} thread(s); "
        f"{record['requests_per_second']} requests/s after warm-up); {'PASSED' if record['passed'] else 'FAILED'}",
        "  profiles: " + ", ".join(f"{profile} {count}" for profile, count in record["profiles"].items()),
        *(f"  {outcome}: {count}" for outcome, count in record["outcomes"].items()),
        *(f"  first {outcome}: {message}" for outcome, message in record["first_failures"].items()),
        f"  RSS MiB: start {mib('start')}, after warm-up {mib('after_warmup')}, end {mib('end')} "
        f"(growth {record['rss_growth_after_warmup_mib']}, allowed {record['rss_growth_allowed_mib']}; "
        f"peak {res['peak_rss_mib_after_warmup']:.0f}), after close {mib('after_close')}",
        f"  open fds: start {res['start']['fds']}, after warm-up {res['after_warmup']['fds']}, end {res['end']['fds']}, "
        f"after close {res['after_close']['fds']}",
        f"  results equal to a fresh matcher's: {record['equal_to_fresh']}",
    ]
    return lines
