"""Pairs jobs on Ray: the two stages of a pairs job (``trt.jobs.stages``) on actors that each hold one ``Matcher``.

    trt_infer.py --engine E --pairs pairs.txt --output-dir out/ --ray                 # a local Ray instance
    trt_infer.py --engine E --pairs pairs.txt --output-dir out/ --ray HEAD_IP:6379    # an existing cluster

Ray's own primitives, nothing home-made underneath: a pool of actors (``MatcherActor``) fed from a
task queue with ``ray.wait``, Ray's object store for the features, Ray's actor restarts and task
retries for lost workers.

- **Actors.** Each builds its own ``Matcher`` from the engine path (engines and sessions cannot be
  pickled). On a cluster with GPUs: one actor per GPU (``num_gpus=1``), unless ``workers`` says
  otherwise. Without GPUs: ``workers`` actors (default: one per node), each reserving an equal share of
  a node's CPUs and running ONNX Runtime with that many threads.
- **Extract once.** One actor call per image; its features stay in the object store (Ray spills them
  to disk when it fills), referenced by the driver until the image's last pair is matched. Matching
  calls take the references as arguments, so each node fetches an image's features instead of
  extracting them again.
- **Worker loss.** A killed actor is restarted (``max_restarts``) and its calls in flight are retried
  (``max_task_retries``); an actor lost for good leaves the pool and its work goes to the others. The
  driver alone writes outputs, as results arrive, so every pair is written exactly once.
- **Cluster set-up.** Every node needs this project installed (``pip install 'lightglue-trt[ray]'``)
  and the engine, its source ONNX and the images at the same paths (a shared filesystem); the outputs
  are written on the driver's machine.
"""

import logging
import math
import os
import socket
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from trt.errors import UserError
from trt.jobs.pairs import PairEntry
from trt.jobs.stages import Extracted, ImageTask, Outcome, extract_image, failure_reason, match_features
from trt.runtime.outputs import backend_label, format_device_memory
from trt.validation import max_pixels, pixel_limit

MAX_RESTARTS = 3  # times Ray restarts a dead actor (and retries its calls in flight)
MAX_ATTEMPTS = 3  # actors a piece of work may be lost on (each for good) before it fails
IN_FLIGHT = 2  # calls queued per actor, so that it never waits for the driver between two
CONNECT_TIMEOUT = 5.0  # seconds to reach a cluster address before calling it unreachable
READY_TIMEOUT = 300.0  # seconds for the actors to be placed and to load the engine
CHUNK = 16  # most pairs per actor call (a Ray call costs more than a local one); the matcher batches within it
CHUNKS_PER_WORKER = 4  # a job is cut into at least this many matching calls per actor (load balance)


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError("Ray jobs need Ray: pip install 'lightglue-trt[ray]'") from None
    return ray


def check_reachable(address: str) -> None:
    """One clear error, instead of Ray's endless reconnecting, when nothing answers at ``address``."""
    if address in ("local", "auto"):
        return
    target = address.split("://", 1)[-1]
    host, colon, port = target.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise UserError(f"Ray address {address!r} is not HOST:PORT (or 'local' for a local instance, 'auto' for a running one)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise UserError(
            f"cannot reach a Ray cluster at {address}: {reason} (start one with `ray start --head`, "
            "or give --ray without an address for a local instance)"
        ) from None


def _short(error: BaseException) -> str:
    """The first line of a Ray error, which otherwise carries a whole remote traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


def _describe_resources(resources: dict) -> str:
    """{"num_gpus": 1, "num_cpus": 1} -> "1 GPU, 1 CPU"."""
    return ", ".join(f"{value} {key.removeprefix('num_').upper().rstrip('S')}" for key, value in sorted(resources.items(), reverse=True))


class MatcherActor:
    """A Ray actor holding one Matcher (``ray.remote`` is applied at job start, so Ray stays optional)."""

    def __init__(self, matcher_options: dict, threads: Optional[int], max_pixels: int):
        from trt.runtime.matcher import Matcher

        self.max_pixels = max_pixels  # the job's --max-pixels: a context variable does not cross processes
        self.error = None
        self.matcher = None
        try:
            self.matcher = Matcher.from_engine(**matcher_options, threads=threads)
        except UserError as error:  # reported by ready(): Ray would bury it in an actor-death traceback
            self.error = str(error)

    def ready(self) -> dict:
        return {
            "pid": os.getpid(),
            "node": socket.gethostname(),
            "backend": backend_label(self.matcher.summary) if self.matcher else None,
            "device_memory": format_device_memory(self.matcher.summary) if self.matcher else None,
            "error": self.error,
        }

    def extract(self, path: str):
        """(keypoint count, features), or (why not, None)."""
        try:
            with pixel_limit(self.max_pixels):
                features = extract_image(self.matcher, Path(path))
        except Exception as error:  # noqa: BLE001 - the image's pairs fail with this reason
            return failure_reason(error), None
        return len(features), features

    def match(self, index_pairs: list, *features) -> list[Outcome]:
        return match_features(self.matcher, [(features[i], features[j]) for i, j in index_pairs])


@dataclass
class Lost:
    """Work that no actor could finish."""

    reason: str


def plan_workers(cluster: dict, nodes: Sequence[dict], workers: Optional[int], backend: str) -> tuple[int, dict, Optional[int]]:
    """How many actors, the resources each reserves, and their ONNX Runtime threads (None: default).

    ``cluster``: ``ray.cluster_resources()``; ``nodes``: the alive nodes' resource dicts.
    """
    if workers is not None and workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    gpus = int(cluster.get("GPU", 0))
    if gpus and backend != "onnxruntime":
        return workers or gpus, {"num_gpus": 1, "num_cpus": 1}, None
    node_cpus = [int(node.get("CPU", 0)) for node in nodes] or [1]
    count = workers or len(node_cpus)
    per_worker = max(1, min(min(node_cpus), sum(node_cpus) // count))
    return count, {"num_cpus": per_worker}, per_worker


class RayStages:
    """The stages of a pairs job (``trt.jobs.stages.Stages``) on Ray actors; a context manager.

    ``matcher_options``: the arguments of ``Matcher.from_engine``; ``address``: "local" starts a local
    Ray instance, "auto" joins the one running here, else HOST:PORT of a cluster's head. When Ray is
    already initialised in this process, its instance is used and left running.
    """

    def __init__(self, matcher_options: dict, address: str = "local", workers: Optional[int] = None):
        self.options = {
            key: str(Path(value).absolute()) if key in ("engine", "onnx") and value is not None else value
            for key, value in matcher_options.items()
        }
        self.address, self.requested = address or "local", workers
        self.actors: list = []
        self.resources: dict = {}
        self.info: list[dict] = []
        self.refs: dict = {}
        self.lost: list[str] = []
        self._owns_ray = False

    # -- lifetime ----------------------------------------------------------------------------------------
    def __enter__(self) -> "RayStages":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        ray = _ray()
        if not ray.is_initialized():
            check_reachable(self.address)
            kwargs = {"address": self.address, "log_to_driver": False, "logging_level": logging.WARNING}
            if self.address == "local":
                kwargs["include_dashboard"] = False
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise UserError(f"cannot connect to Ray at {self.address}: {_short(error)}") from None
            self._owns_ray = True
        try:
            self._start_actors(ray)
        except BaseException:
            self.close()
            raise

    def _start_actors(self, ray) -> None:
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        count, resources, threads = plan_workers(ray.cluster_resources(), nodes, self.requested, self.options.get("backend", "auto"))
        actor_class = ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS, **resources)(MatcherActor)
        self.actors = [actor_class.remote(self.options, threads, max_pixels()) for _ in range(count)]
        self.resources = resources
        try:
            self.info = ray.get([actor.ready.remote() for actor in self.actors], timeout=READY_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            wants = _describe_resources(resources)
            raise UserError(
                f"the Ray cluster could not start {count} workers of {wants} each within {READY_TIMEOUT:.0f} s "
                f"(it has {ray.cluster_resources()}): ask for fewer --workers"
            ) from None
        except ray.exceptions.RayError as error:
            raise UserError(f"a Ray worker failed to start: {_short(error)}") from None
        errors = {info["error"] for info in self.info if info["error"]}
        if errors:
            raise UserError(f"a Ray worker could not load the matcher: {sorted(errors)[0]}")

    def close(self) -> None:
        ray = _ray()
        self.refs.clear()
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone with its node or the cluster
                pass
        self.actors = []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def describe(self) -> str:
        backends = sorted({info["backend"] for info in self.info})
        nodes = len({info["node"] for info in self.info})
        return f"{len(self.actors)} Ray workers on {nodes} node(s) ({'/'.join(backends)}, {_describe_resources(self.resources)} each)"

    def device_memory(self) -> Optional[str]:
        memory = next((info["device_memory"] for info in self.info if info["device_memory"]), None)
        return memory and f"{memory} per worker"

    def worker_pids(self) -> list[int]:
        """Process ids of the actors as they started (an actor restarted after a loss has a new one)."""
        return [info["pid"] for info in self.info]

    # -- the stages --------------------------------------------------------------------------------------
    def chunk_size(self, pairs: int) -> int:
        return max(1, min(CHUNK, math.ceil(pairs / (CHUNKS_PER_WORKER * max(1, len(self.actors))))))

    def extract(self, tasks: Sequence[ImageTask]) -> Iterator[Extracted]:
        def call(actor, task: ImageTask):
            count, features = actor.extract.options(num_returns=2).remote(str(Path(task.path).absolute()))
            return count, features

        for task, value, features in self._dispatch(tasks, call):
            if isinstance(value, Lost):
                yield Extracted(task, error=value.reason)
            elif isinstance(value, str):
                yield Extracted(task, error=value)
            else:
                self.refs[task.name] = features
                yield Extracted(task, keypoints=value)

    def features(self, name: str):
        return _ray().get(self.refs[name])

    def match(self, chunks: Sequence[list[PairEntry]]) -> Iterator[tuple[list[PairEntry], list[Outcome]]]:
        def call(actor, chunk: list[PairEntry]):
            names = list(dict.fromkeys(name for entry in chunk for name in entry.names))
            index = {name: i for i, name in enumerate(names)}
            pairs = [(index[entry.name0], index[entry.name1]) for entry in chunk]
            return actor.match.remote(pairs, *(self.refs[name] for name in names)), None

        for chunk, value, _ in self._dispatch(chunks, call):
            yield chunk, [value.reason] * len(chunk) if isinstance(value, Lost) else value

    def release(self, name: str) -> None:
        self.refs.pop(name, None)  # the last reference gone, Ray frees the object

    def _dispatch(self, items: Iterable, call: Callable) -> Iterator[tuple]:
        """Run ``call(actor, item) -> (reference, extra)`` for every item on the actors, at most
        IN_FLIGHT per actor; yield (item, ray.get(reference) or Lost, extra) as the calls finish."""
        ray = _ray()
        queue = deque((item, 0) for item in items)
        free = [actor for actor in self.actors for _ in range(IN_FLIGHT)]
        running: dict = {}
        while queue or running:
            while free and queue:
                actor = free.pop(0)
                item, attempts = queue.popleft()
                reference, extra = call(actor, item)
                running[reference] = (actor, item, attempts, extra)
            if not running:
                reason = f"no Ray worker left (the last was lost: {self.lost[-1] if self.lost else 'unknown'})"
                while queue:
                    yield queue.popleft()[0], Lost(reason), None
                return
            [reference], _ = ray.wait(list(running), num_returns=1)
            actor, item, attempts, extra = running.pop(reference)
            try:
                value = ray.get(reference)
            except ray.exceptions.RayActorError as error:  # dead for good: its restarts are spent
                self._lose(actor, error)
                free = [a for a in free if a is not actor]
                if attempts + 1 < MAX_ATTEMPTS:
                    queue.append((item, attempts + 1))
                else:
                    yield item, Lost(f"lost with {attempts + 1} Ray workers: {_short(error)}"), extra
                continue
            except ray.exceptions.RayError as error:  # an object lost with its node, or a bug in the actor
                free.append(actor)
                yield item, Lost(_short(error)), extra
                continue
            free.append(actor)
            yield item, value, extra

    def _lose(self, actor, error: BaseException) -> None:
        if actor in self.actors:
            self.actors.remove(actor)
            self.lost.append(_short(error))
