"""Load on the online server (``trt_serve.py``): the benchmark against an in-process ``Matcher`` and the soak.

Both drive a server on 127.0.0.1 with N concurrent HTTP clients (asyncio + aiohttp, one process: the
load generator takes as little of the machine as it can) for a bounded number of requests, and stop.

- ``bench``: throughput and p50 / p99 latency of ``POST /match`` beside an in-process ``Matcher.match``
  loop on the same pairs, in the same run (each on an otherwise idle server), and the batching factor
  the server reports (``/info``: requests per Serve batch and per engine call).
- ``soak``: good requests (images and features) with bad ones mixed in (each kind must get its 4xx),
  and one matcher replica killed mid-run with ``ray.kill``: every good request must be answered with
  the matches of a fresh in-process matcher, or with a retryable 503 (then retried); nothing else may
  be lost. Resident memory and open descriptors of the server's processes are read at start and end,
  and the server must be healthy at the end.
"""

import asyncio
import json
import os
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from trt.serve.client import encode_multipart, features_npz, match_form

RETRIES = 5  # times a client resends a request answered 503 (a lost replica) before it counts as lost


@dataclass
class Call:
    """One request to send: what, where, and what must come back."""

    kind: str  # "good-images", "good-features", or the kind of bad request ("corrupt-image", ...)
    path: str
    body: bytes
    content_type: str
    expect: int = 200  # HTTP status
    pair: Optional[int] = None  # index of the good pair, whose expected record is known


@dataclass
class Outcome:
    call: Call
    status: int
    answer: dict
    seconds: float
    retries: int = 0


async def _send(session, url: str, call: Call) -> Outcome:
    retries = 0
    start = time.perf_counter()
    while True:
        async with session.post(url + call.path, data=call.body, headers={"Content-Type": call.content_type}) as response:
            text = await response.read()
            try:
                answer = json.loads(text)
            except json.JSONDecodeError:
                answer = {"error": f"not JSON: {text[:200]!r}"}
            if response.status == 503 and call.expect != 503 and retries < RETRIES:
                retries += 1
                await asyncio.sleep(float(response.headers.get("Retry-After", 1)))
                continue
            return Outcome(call, response.status, answer, time.perf_counter() - start, retries)


async def _drive(url: str, calls: list[Call], clients: int, seconds: Optional[float],
                 on_done: Optional[Callable[[int], None]] = None) -> list[Outcome]:
    """Send ``calls`` from ``clients`` concurrent clients (each sends its next request when the last is
    answered), stopping early after ``seconds``; ``on_done(count)`` after each answer."""
    import aiohttp

    outcomes: list[Outcome] = []
    pending = iter(calls)
    deadline = None if seconds is None else time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=clients)) as session:
        async def client():
            for call in pending:
                if deadline is not None and time.monotonic() > deadline:
                    return
                outcomes.append(await _send(session, url, call))
                if on_done is not None:
                    on_done(len(outcomes))

        await asyncio.gather(*(client() for _ in range(clients)))
    return outcomes


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# -- the benchmark -------------------------------------------------------------------------------------


def bench(url: str, matcher, pairs: list[tuple[Path, Path]], requests: int, clients: int,
          settings: dict) -> dict:
    """Throughput and latency of ``POST /match`` with ``clients`` concurrent clients for ``requests``
    requests over ``pairs`` (cycled), and of ``matcher.match`` in a loop on the same pairs (a matcher with
    the server's settings, in this process). ``settings``: the form fields (max_keypoints, ...)."""
    from trt.features.image import read_image
    from trt.serve.client import MatchClient

    chosen = [pairs[i % len(pairs)] for i in range(requests)]
    images = {path: read_image(path) for pair in pairs for path in pair}
    matcher.match(*(images[p] for p in chosen[0]))  # warm-up, as the server's first requests are below
    latencies = []
    start = time.perf_counter()
    for image0, image1 in chosen:
        begin = time.perf_counter()
        matcher.match(images[image0], images[image1])
        latencies.append(time.perf_counter() - begin)
    in_process = {"seconds": time.perf_counter() - start, "latencies": latencies}

    calls = [Call("good-images", "/match", *match_form(image0, image1, **settings)) for image0, image1 in chosen]
    client = MatchClient(url)
    client.post("/match", calls[0].body, calls[0].content_type)  # warm-up
    before = client.info()["batches"]
    start = time.perf_counter()
    outcomes = asyncio.run(_drive(url, calls, clients, None))
    served_seconds = time.perf_counter() - start
    after = client.info()["batches"]
    failed = Counter(o.status for o in outcomes if o.status != 200)

    def summary(seconds: float, latencies: list[float]) -> dict:
        return {"pairs": len(latencies), "seconds": round(seconds, 3), "pairs_per_s": round(len(latencies) / seconds, 3),
                "p50_ms": round(percentile(latencies, 50) * 1e3, 1), "p99_ms": round(percentile(latencies, 99) * 1e3, 1)}

    def factor(level: str) -> Optional[float]:
        requests_done = after[level]["requests"] - before[level]["requests"]
        batches = after[level]["batches"] - before[level]["batches"]
        return round(requests_done / batches, 3) if batches else None

    served = summary(served_seconds, [o.seconds for o in outcomes if o.status == 200])
    local = summary(in_process["seconds"], in_process["latencies"])
    return {
        "in_process": local, "served": served, "clients": clients, "failed": dict(failed),
        "served_over_in_process": round(served["pairs_per_s"] / local["pairs_per_s"], 3),
        "requests_per_serve_batch": factor("serve"), "pairs_per_engine_call": factor("engine"),
    }


# -- the soak ------------------------------------------------------------------------------------------


def oversized_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` pixels: refused from its header, never decoded."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def bad_calls(image: bytes, max_body_bytes: int) -> list[Call]:
    """One request of each kind the server must refuse, with the status it must answer."""
    good = {"image0": ("a.jpg", image), "image1": ("b.jpg", image)}

    def form(files: dict, fields: Optional[dict] = None):
        return encode_multipart(files, fields or {})

    return [
        Call("corrupt-image", "/match", *form({**good, "image0": ("bad.jpg", b"not an image at all")}), expect=400),
        Call("empty-image", "/match", *form({**good, "image1": ("empty.jpg", b"")}), expect=400),
        Call("missing-field", "/match", *form({"image0": good["image0"]}), expect=400),
        Call("nan-threshold", "/match", *form(good, {"threshold": "nan"}), expect=400),
        Call("over-pixel-limit", "/match", *form({**good, "image1": ("huge.png", oversized_png(60000, 60000))}),
             expect=400),
        Call("body-too-large", "/match", *form({**good, "image1": ("big.jpg", b"\0" * (max_body_bytes + 1))}),
             expect=413),
        Call("unknown-path", "/nowhere", b"{}", "application/json", expect=404),
        Call("bad-features", "/match_features", json.dumps({"features0": {"keypoints": [[0, 0]]}}).encode(),
             "application/json", expect=400),
    ]


def good_calls(pairs: list[tuple[Path, Path]], features: list[tuple[dict, dict]], settings: dict) -> list[Call]:
    """A request per good pair: its images (``/match``) and its features (``/match_features``, npz)."""
    calls = [Call("good-images", "/match", *match_form(a, b, **settings), pair=i) for i, (a, b) in enumerate(pairs)]
    calls += [Call("good-features", "/match_features", features_npz(f0, f1), "application/octet-stream", pair=i)
              for i, (f0, f1) in enumerate(features)]
    return calls


def same_matches(answer: dict, expected: dict) -> bool:
    return (answer.get("matches") == expected["matches"] and answer.get("keypoints0") == expected["keypoints0"]
            and answer.get("keypoints1") == expected["keypoints1"])


def serve_processes() -> dict[int, str]:
    """{pid: role} of this machine's Serve processes (Ray titles them ``ray::ServeReplica:app:Deployment``)."""
    import psutil

    found = {}
    for process in psutil.process_iter(["pid", "cmdline"]):
        title = " ".join(process.info.get("cmdline") or [])
        if title.startswith("ray::ServeReplica") or title.startswith("ray::ProxyActor") or title.startswith("ray::ServeController"):
            found[process.info["pid"]] = title.split()[0].removeprefix("ray::").split(".")[0]  # the title names the method running
    return found


def process_usage(pids: dict[int, str]) -> dict[str, dict]:
    """{"role (pid)": {"rss_mb", "fds"}} of processes still alive."""
    import psutil

    usage = {}
    for pid, role in pids.items():
        try:
            process = psutil.Process(pid)
            usage[f"{role} ({pid})"] = {"rss_mb": round(process.memory_info().rss / 2**20, 1), "fds": process.num_fds()}
        except psutil.NoSuchProcess:
            continue
    return usage


def kill_a_matcher_replica() -> str:
    """``ray.kill`` one matcher replica actor (Serve starts a replacement); its actor name."""
    import ray

    names = sorted(actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
                   if "MatcherReplica" in actor["name"] and actor["namespace"] == "serve")
    if not names:
        raise RuntimeError("no matcher replica to kill")
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    return names[0]


@dataclass
class SoakReport:
    requests: int = 0
    outcomes: Counter = field(default_factory=Counter)  # "kind: status" -> count
    wrong: list = field(default_factory=list)  # what went wrong, one line each
    retried: int = 0  # good requests answered 503 at least once, then retried
    killed: Optional[str] = None
    usage_start: dict = field(default_factory=dict)
    usage_end: dict = field(default_factory=dict)
    healthy_at_end: bool = False
    seconds: float = 0.0

    def lines(self) -> list[str]:
        lines = [f"requests: {self.requests} in {self.seconds:.1f} s; killed replica: {self.killed or 'none'}; "
                 f"good requests retried after a 503: {self.retried}"]
        lines += [f"  {key}: {count}" for key, count in sorted(self.outcomes.items())]
        for label, usage in (("start", self.usage_start), ("end", self.usage_end)):
            lines.append(f"{label}: " + "; ".join(f"{name} RSS {u['rss_mb']} MB, {u['fds']} fds" for name, u in usage.items()))
        lines.append(f"healthy at the end: {self.healthy_at_end}")
        lines += [f"WRONG: {line}" for line in self.wrong[:20]]
        return lines

    @property
    def passed(self) -> bool:
        return not self.wrong and self.healthy_at_end


def soak(url: str, good: list[Call], expected: list[dict], bad: list[Call], requests: int, clients: int,
         seconds: Optional[float], kill_at: Optional[float] = 0.3, bad_every: int = 5,
         rss_growth_mb: float = 64.0, warm_up_passes: int = 3) -> SoakReport:
    """Send ``requests`` calls (good ones cycled, a bad one every ``bad_every``-th) from ``clients``
    clients, for at most ``seconds``; kill a matcher replica once ``kill_at`` of them are answered
    (None: never). Memory is read after ``warm_up_passes`` passes over the good calls (every replica has
    then seen every shape: OpenVINO's per-shape state is warm-up, not growth). ``expected``: the record of each good pair (from a fresh in-process matcher). Checks
    every answer, the server's processes' memory and descriptors (a survivor growing by more than
    ``rss_growth_mb`` is reported), and its health at the end."""
    from trt.serve.client import MatchClient
    from trt.serve.server import wait_healthy

    calls, g, b = [], 0, 0
    for index in range(requests):
        if bad and index % bad_every == bad_every - 1:
            calls.append(bad[b % len(bad)])
            b += 1
        else:
            calls.append(good[g % len(good)])
            g += 1
    report = SoakReport()
    asyncio.run(_drive(url, good * warm_up_passes, clients, None))
    processes = serve_processes()
    report.usage_start = process_usage(processes)
    kill_after = None if kill_at is None else max(1, int(kill_at * len(calls)))

    def on_done(count: int) -> None:
        if kill_after is not None and report.killed is None and count >= kill_after:
            report.killed = kill_a_matcher_replica()

    start = time.perf_counter()
    outcomes = asyncio.run(_drive(url, calls, clients, seconds, on_done))
    report.seconds = time.perf_counter() - start
    report.requests = len(outcomes)
    for outcome in outcomes:
        call = outcome.call
        report.outcomes[f"{call.kind}: {outcome.status}"] += 1
        report.retried += outcome.retries > 0
        if outcome.status != call.expect:
            report.wrong.append(f"{call.kind} answered {outcome.status} (expected {call.expect}): {outcome.answer.get('error')}")
        elif call.expect != 200 and not isinstance(outcome.answer.get("error"), str):
            report.wrong.append(f"{call.kind} answered {outcome.status} without an error message: {outcome.answer}")
        elif call.pair is not None and not same_matches(outcome.answer, expected[call.pair]):
            report.wrong.append(f"{call.kind} of pair {call.pair}: matches differ from the in-process matcher's")
    try:
        wait_healthy(url, timeout_s=120)
        report.healthy_at_end = MatchClient(url).healthy()
    except TimeoutError:
        report.healthy_at_end = False
    report.usage_end = process_usage({**processes, **serve_processes()})
    for name, usage in report.usage_end.items():
        if name in report.usage_start and usage["rss_mb"] - report.usage_start[name]["rss_mb"] > rss_growth_mb:
            report.wrong.append(f"{name} grew from {report.usage_start[name]['rss_mb']} to {usage['rss_mb']} MB RSS")
    return report


def features_record(features) -> dict:
    """A Features as the dict ``features_npz`` sends."""
    return {"keypoints": features.keypoints, "descriptors": features.descriptors,
            "image_size": np.asarray(features.image_size, np.float32), "scales": features.scales, "oris": features.oris}


def describe_machine() -> str:
    from trt.runtime.cpu import cpu_info

    return f"{cpu_info().model}, {os.cpu_count()} logical CPUs"



# -- set-up shared by the scripts and tests --------------------------------------------------------------

PAIRS = (("images/hpatches/v_graffiti/1.jpg", "images/hpatches/v_graffiti/2.jpg"),
         ("images/hpatches/v_graffiti/1.jpg", "images/hpatches/v_graffiti/3.jpg"),
         ("images/lightglue_assets/sacre_coeur1.jpg", "images/lightglue_assets/sacre_coeur2.jpg"),
         ("images/lightglue_assets/DSC_0410.JPG", "images/lightglue_assets/DSC_0411.JPG"))


def default_pairs(data_dir: Path) -> list[tuple[Path, Path]]:
    """Photo pairs of the shared data folder (``trt.datasets.shared_data_dir``)."""
    return [(data_dir / a, data_dir / b) for a, b in PAIRS]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def expected_records(matcher, pairs: list[tuple[Path, Path]]) -> tuple[list[dict], list[tuple[dict, dict]]]:
    """What the server must answer for each pair (records of ``matcher``, a fresh in-process one) and each
    pair's features (for ``/match_features``, whose answer must be the same matches)."""
    from trt.runtime.outputs import result_record

    records, features = [], []
    for image0, image1 in pairs:
        result = matcher.match(image0, image1)
        records.append(result_record(result, image0.name, image1.name, threshold=matcher.threshold))
        features.append(tuple(features_record(matcher.extract(path)) for path in (image0, image1)))
    return records, features
