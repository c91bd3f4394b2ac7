"""Starting and stopping the Serve application: Ray (a local instance or a cluster), replicas, HTTP.

    with MatchServer(ServerOptions(matcher_options={"engine": "sift.engine"}, port=8000)) as server:
        print(server.url)   # http://127.0.0.1:8000
        server.wait()       # until SIGTERM or SIGINT

Replicas: one per GPU where the cluster has GPUs and the backend may be TensorRT (each reserves one GPU);
on CPUs ``replicas`` replicas (default 1) that share each node's cores: ``threads`` = cores // replicas
each, reserved as Ray CPUs, so replicas × threads stays within the cores. ``close()`` shuts Serve down and
stops the Ray instance it started (never a cluster it joined).
"""

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from trt.engine.manifest import load_manifest
from trt.errors import UserError
from trt.validation import DEFAULT_MAX_PIXELS, check_input_file, check_matcher_manifest

DEFAULT_PORT = 8000
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_BATCH_WAIT_MS = 5.0
DEFAULT_MAX_BODY_MB = 32
READY_TIMEOUT_S = 300.0  # engine load on every replica
QUIET_RAY = {"RAY_USAGE_STATS_ENABLED": "0"}


@dataclass(frozen=True)
class ReplicaPlan:
    count: int
    actor_options: dict  # Ray resources each replica reserves
    threads: Optional[int]  # CPU threads per replica; None on a GPU

    def describe(self) -> str:
        if "num_gpus" in self.actor_options:
            return f"{self.count} replica(s), one GPU each"
        return f"{self.count} replica(s) of {self.threads} CPU thread(s) each"


def plan_replicas(cluster: dict, node_cpus: list[int], requested: Optional[int], backend: str) -> ReplicaPlan:
    """How many matcher replicas, what each reserves, and its threads. ``cluster``:
    ``ray.cluster_resources()``; ``node_cpus``: the CPUs of each alive node; ``requested``: --replicas."""
    if requested is not None and requested < 1:
        raise UserError(f"--replicas must be at least 1, not {requested}")
    gpus = int(cluster.get("GPU", 0))
    if gpus and backend in ("auto", "tensorrt"):
        return ReplicaPlan(requested or gpus, {"num_gpus": 1, "num_cpus": 1}, None)
    count = requested or 1
    cores = min(node_cpus) if count > 1 else max(node_cpus, default=1)
    per_node = max(1, -(-count // max(1, len(node_cpus))))  # replicas each node takes, the cluster spread evenly
    threads = max(1, cores // per_node)
    return ReplicaPlan(count, {"num_cpus": threads}, threads)


@dataclass
class ServerOptions:
    """What ``trt_serve.py`` takes; ``matcher_options``: the arguments of ``Matcher.from_engine``."""

    matcher_options: dict
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    replicas: Optional[int] = None
    ray_address: Optional[str] = None  # None: a local Ray instance; else a cluster's HOST:PORT, or "auto"
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS
    max_body_mb: float = DEFAULT_MAX_BODY_MB
    max_pixels: int = DEFAULT_MAX_PIXELS
    metrics_port: Optional[int] = None  # where Ray exports Prometheus metrics (a local instance only)
    ray_init: dict = field(default_factory=dict)  # more ray.init arguments for a local instance (tests)


def check_engine(matcher_options: dict) -> None:
    """The checks that need no runtime, before Ray starts: the engine exists and is a matcher."""
    engine = check_input_file(matcher_options.get("engine"), "the engine")
    check_matcher_manifest(engine, load_manifest(engine))


def _first_error_line(error: BaseException) -> str:
    """The most telling line of a Serve deployment failure (a replica's traceback): its last
    ``...Error: message`` line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = [line for line in lines if "Error: " in line]
    return (telling or lines or [type(error).__name__])[-1][:500]


class MatchServer:
    """The running application (``start``/``close``, or a with-block); see the module docstring."""

    def __init__(self, options: ServerOptions):
        self.options = options
        self.plan: Optional[ReplicaPlan] = None
        self.info: dict = {}
        self._owns_ray = False
        self._serve_started = False
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        host = self.options.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.options.port}"

    @property
    def metrics_url(self) -> Optional[str]:
        port = self.options.metrics_port
        return f"http://127.0.0.1:{port}/metrics" if port else None

    def __enter__(self) -> "MatchServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> "MatchServer":
        import ray
        from ray import serve

        from trt.serve.app import APP_NAME, Ingress, MatcherReplica

        options = self.options
        check_engine(options.matcher_options)
        matcher_options = {key: str(Path(value).absolute()) if key in ("engine", "onnx", "extractor_engine",
                                                                       "extractor_onnx") and value else value
                           for key, value in options.matcher_options.items()}
        if not ray.is_initialized():
            for key, value in QUIET_RAY.items():
                os.environ.setdefault(key, value)
            kwargs = {"log_to_driver": False, "logging_level": logging.WARNING}
            if options.ray_address:
                kwargs["address"] = options.ray_address
            else:
                kwargs.update(include_dashboard=False, **options.ray_init)
                if options.metrics_port:
                    kwargs["_metrics_export_port"] = options.metrics_port
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise UserError(f"cannot start or join Ray ({options.ray_address or 'local'}): {_first_error_line(error)}") from None
            self._owns_ray = True
        try:
            nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
            self.plan = plan_replicas(ray.cluster_resources(), [int(n.get("CPU", 0)) for n in nodes], options.replicas,
                                      matcher_options.get("backend", "auto"))
            matcher = MatcherReplica.options(
                num_replicas=self.plan.count, ray_actor_options=self.plan.actor_options,
                # room for a batch being matched and the next one gathering
                max_ongoing_requests=max(16, 4 * options.max_batch_size),
            ).bind(matcher_options, self.plan.threads, options.max_pixels, options.max_batch_size,
                   options.batch_wait_ms / 1000)
            app = Ingress.bind(matcher, int(options.max_body_mb * (1 << 20)), self.metrics_url)
            serve.start(http_options={"host": options.host, "port": options.port}, logging_config={"enable_access_log": False})
            self._serve_started = True
            try:
                handle = serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
            except RuntimeError as error:
                raise UserError(f"the matcher replicas could not start: {_first_error_line(error)}") from None
            self.info = handle.info.remote().result(timeout_s=READY_TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        return self

    def wait(self) -> None:
        """Serve until SIGTERM or SIGINT (main thread), or ``stop()``."""
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self._stop.set())
        while not self._stop.wait(0.5):
            pass

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        import ray
        from ray import serve

        if self._serve_started:
            try:
                serve.shutdown()
            finally:
                self._serve_started = False
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def describe(self) -> list[str]:
        """Lines for the console once it serves."""
        engine = self.info.get("engine", {})
        lines = [self.info["notice"]] if self.info.get("notice") else []
        lines.append(f"serving {engine.get('engine')} ({self.info.get('extractor')}, {engine.get('backend')}"
                     f"{', ' + engine['precision'] if engine.get('precision') else ''}) with {self.plan.describe()}, "
                     f"batches of up to {self.options.max_batch_size} within {self.options.batch_wait_ms:g} ms")
        lines.append(f"listening on {self.url}: POST /match, POST /match_features, GET /healthz, GET /info")
        if self.metrics_url:
            lines.append(f"Prometheus metrics: {self.metrics_url}")
        return lines


def wait_healthy(url: str, timeout_s: float = 60.0) -> None:
    """Wait until ``url``/healthz answers 200 (a client's view of readiness)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not become healthy within {timeout_s:.0f} s")
        time.sleep(0.2)
