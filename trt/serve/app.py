"""The Ray Serve application behind ``trt_serve.py``: an HTTP ingress and the matcher replicas.

Two deployments, as Ray Serve's model-composition pattern has it:

- ``Ingress`` (FastAPI, one light replica, no CPU reserved): routes, request parsing and checks
  (``trt.serve.payloads``, ``trt.validation``), error answers, request metrics and the batch counts of
  ``/info``. A request it can refuse never reaches a matcher.
- ``MatcherReplica`` (one per GPU, or a share of the CPUs each): loads the engine in ``__init__``
  (``Matcher.from_engine``: the same backend choice and notice as ``trt_infer.py``) and batches with
  ``@serve.batch``: requests that wait together are decoded and checked one by one, then matched by
  ``Matcher.match_pairs``, which groups them by the profile that holds them and pads each group into one
  engine call (the contract's counts mark the padding); a learned extractor batches images of one size.
  Each answer is the record ``trt_infer.py --output x.json`` writes (``trt.runtime.outputs.result_record``).

Errors: a request the project's checks refuse is a 4xx with ``{"error": ...}`` (413 for a body over
the limit, 404 for an unknown path); a matcher replica lost while it held a request (killed, out of
memory) is a 503 with ``Retry-After``, while Serve starts its replacement. Anything else is a bug, and
still answers JSON (500), never a traceback.
"""

import asyncio
import contextlib
import io
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve import metrics
from starlette.exceptions import HTTPException

from trt.errors import UserError
from trt.features.image import decode_image
from trt.runtime.matcher import Matcher
from trt.runtime.outputs import result_record
from trt.serve.payloads import (
    MatchRequest,
    PayloadTooLarge,
    Settings,
    check_body_size,
    features_request,
    match_request_from_form,
    parse_multipart,
)
from trt.validation import check_features, pixel_limit

APP_NAME = "lightglue"
RETRY_AFTER_S = 2  # what a 503 asks the client to wait: about what Serve takes to notice a lost replica
MAX_SETTINGS_VARIANTS = 16  # matchers kept for distinct per-request settings (they share the runners)
LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
BATCH_BOUNDARIES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64]


@dataclass
class Answer:
    """A matcher replica's answer to one request: the record, or a refusal (``status``, ``error``), and the
    batches it was part of: ``serve_batch`` requests waited together, ``engine_batch`` pairs shared its
    engine call (0: nothing to match, no call)."""

    record: Optional[dict] = None
    status: int = 200
    error: Optional[str] = None
    serve_batch: int = 0
    engine_batch: int = 0
    timings: dict = field(default_factory=dict)


def refusal(error: UserError) -> Answer:
    return Answer(status=413 if isinstance(error, PayloadTooLarge) else 400, error=str(error))


def batch_report(serve_sizes: Counter, engine_sizes: Counter) -> dict:
    """What batches formed, from the requests counted by the batch sizes they were part of: how many
    batches of each size (a batch of b counts b requests), and the batching factor (requests per batch)."""
    def batches(sizes: Counter) -> dict:
        by_size = {size: count / size for size, count in sorted(sizes.items()) if size}
        total = sum(by_size.values())
        matched = sum(count for size, count in sizes.items() if size)
        return {"batches_by_size": {str(size): round(count, 2) for size, count in by_size.items()},
                "batches": round(total, 2), "requests": matched,
                "requests_per_batch": round(matched / total, 3) if total else None}

    return {"serve": batches(serve_sizes), "engine": batches(engine_sizes)}


def deployment_states() -> dict:
    """{deployment: {"status", "replicas": {state: count}}} of this application, from Serve's controller."""
    application = serve.status().applications.get(APP_NAME)
    if application is None:
        return {}
    return {name: {"status": str(getattr(state.status, "value", state.status)),
                   "replicas": {str(getattr(k, "value", k)): v for k, v in state.replica_states.items()}}
            for name, state in application.deployments.items()}


@serve.deployment(health_check_period_s=5, health_check_timeout_s=60, graceful_shutdown_timeout_s=5)
class MatcherReplica:
    """One ``Matcher`` serving the engine; see the module docstring.

    ``matcher_options``: the arguments of ``Matcher.from_engine`` (the server's flags); ``threads``: the
    CPU threads of this replica (None on a GPU); ``max_pixels``: the image pixel limit; ``max_batch_size``
    and ``batch_wait_s``: how many requests one Serve batch takes, and how long the first waits for more.
    """

    def __init__(self, matcher_options: dict, threads: Optional[int], max_pixels: int, max_batch_size: int,
                 batch_wait_s: float):
        notice = io.StringIO()
        with contextlib.redirect_stderr(notice):  # the backend notice, for the driver to print once
            self.matcher = Matcher.from_engine(**matcher_options, threads=threads)
        self.notice = notice.getvalue().strip()
        self.threads = threads
        self.max_pixels = max_pixels
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_s
        self.variants: dict[tuple, Matcher] = {}
        self.match_batch.set_max_batch_size(max_batch_size)
        self.match_batch.set_batch_wait_timeout_s(batch_wait_s)
        self.serve_batches = metrics.Histogram(
            "lightglue_serve_batch_size", "Requests matched together in one Serve batch", BATCH_BOUNDARIES)
        self.engine_batches = metrics.Histogram(
            "lightglue_engine_batch_size", "Pairs in one engine call (one profile, padded)", BATCH_BOUNDARIES)

    def info(self) -> dict:
        matcher = self.matcher
        return {"engine": matcher.summary, "extractor": matcher.extractor_name, "threshold": matcher.threshold,
                "max_keypoints": matcher.max_keypoints, "resize": matcher.resize, "threads": self.threads,
                "notice": self.notice, "max_batch_size": self.max_batch_size, "batch_wait_s": self.batch_wait_s,
                "pid": os.getpid()}

    def check_health(self) -> None:
        """Serve's periodic health check: a replica whose runner was closed cannot serve."""
        if not self.matcher.runner.is_active:
            raise RuntimeError("the matcher's runner is not active")

    async def match(self, request: MatchRequest) -> Answer:
        return await self.match_batch(request)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def match_batch(self, requests: list[MatchRequest]) -> list[Answer]:
        # the engine runs in a thread, so that the next batch gathers while this one computes
        return await asyncio.to_thread(self.answer, requests)

    def answer(self, requests: list[MatchRequest]) -> list[Answer]:
        """Answers to requests that waited together: each checked alone, then matched in groups of one setting."""
        self.serve_batches.observe(len(requests))
        answers: list[Optional[Answer]] = [None] * len(requests)
        groups: dict[int, tuple[Matcher, list[int], list[tuple]]] = {}
        with pixel_limit(self.max_pixels):
            for index, request in enumerate(requests):
                try:
                    matcher = self.matcher_for(request.settings)
                    pair = self.prepare(matcher, request)
                except UserError as error:
                    answers[index] = refusal(error)
                    continue
                _, members, pairs = groups.setdefault(id(matcher), (matcher, [], []))
                members.append(index)
                pairs.append(pair)
            for matcher, members, pairs in groups.values():
                for index, answer in zip(members, self.match_group(matcher, [requests[i] for i in members], pairs)):
                    answers[index] = answer
        for answer in answers:
            answer.serve_batch = len(requests)
        return answers

    def prepare(self, matcher: Matcher, request: MatchRequest) -> tuple:
        """The pair as ``match_pairs`` takes it: images decoded, features checked (a UserError for a bad one)."""
        if request.is_images:
            return tuple(decode_image(data, f"image{side}" + (f" ({name})" if name else ""), self.max_pixels)
                         for side, (data, name) in enumerate(zip(request.items, request.names)))
        return tuple(check_features(features, f"features{side}", *matcher.layout)
                     for side, features in enumerate(request.items))

    def match_group(self, matcher: Matcher, requests: list[MatchRequest], pairs: list[tuple]) -> list[Answer]:
        """Answers to requests of one setting, matched together; if that is refused, one by one, so that
        only the request at fault gets the error."""
        try:
            results = matcher.match_pairs(pairs)
        except UserError as error:
            if len(pairs) == 1:
                return [refusal(error)]
            return [self.match_group(matcher, [request], [pair])[0] for request, pair in zip(requests, pairs)]
        self.observe_engine_batches(results)
        return [Answer(record=result_record(result, *request.names, threshold=matcher.threshold),
                       engine_batch=int(result.timings.get("batch", 0)), timings=dict(result.timings))
                for request, result in zip(requests, results)]

    def observe_engine_batches(self, results) -> None:
        """One observation per engine call: results of one call share their timings dict's values."""
        seen = set()
        for result in results:
            size = int(result.timings.get("batch", 0))
            call = (size, result.timings.get("match"))
            if size and call not in seen:
                seen.add(call)
                self.engine_batches.observe(size)

    def matcher_for(self, settings: Settings) -> Matcher:
        """The matcher of a request's settings: the server's own, or a variant sharing its runners."""
        base = self.matcher
        key = (base.threshold if settings.threshold is None else settings.threshold,
               base.max_keypoints if settings.max_keypoints is None else settings.max_keypoints,
               base.resize if settings.resize is None else (settings.resize or None))
        if key == (base.threshold, base.max_keypoints, base.resize):
            return base
        if key not in self.variants:
            if len(self.variants) >= MAX_SETTINGS_VARIANTS:
                self.variants.pop(next(iter(self.variants)))
            # never closed: the runners belong to the base matcher
            self.variants[key] = Matcher(base.runner, key[0], key[1], base.on_overflow, summary=base.summary,
                                         extractor_name=base.extractor_name, resize=key[2],
                                         extractor_runner=base.extractor_runner)
        return self.variants[key]


api = FastAPI(title="LightGlue matcher", description="LightGlue matching on TensorRT, OpenVINO or ONNX Runtime")
ROUTES = "POST /match, POST /match_features, GET /healthz, GET /info"
NOT_FOUND = "Not Found"


@api.exception_handler(HTTPException)
async def http_error(request: Request, error: HTTPException) -> JSONResponse:
    message = error.detail
    if error.status_code == 404 and message == NOT_FOUND:
        message = f"no such path {request.url.path}: the server answers {ROUTES}"
    elif error.status_code == 405:
        message = f"{request.method} {request.url.path} is not served: the server answers {ROUTES}"
    return JSONResponse({"error": message}, status_code=error.status_code, headers=getattr(error, "headers", None))


@api.exception_handler(RequestValidationError)
async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse({"error": f"malformed request: {error.errors()}"}, status_code=422)


@api.exception_handler(Exception)
async def server_error(request: Request, error: Exception) -> JSONResponse:
    # a bug, not the client's fault: still one JSON line, never a traceback in the body
    return JSONResponse({"error": f"internal error ({type(error).__name__}): {error}"}, status_code=500)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=4096, graceful_shutdown_timeout_s=5)
@serve.ingress(api)
class Ingress:
    """The HTTP front of the matcher replicas (``matcher``: their deployment handle); see the module
    docstring. ``max_body_bytes``: the request body limit (413 above it); ``metrics_url``: where Ray
    exports the Prometheus metrics, for ``/info``."""

    def __init__(self, matcher, max_body_bytes: int, metrics_url: Optional[str] = None):
        self.matcher = matcher
        self.max_body_bytes = max_body_bytes
        self.metrics_url = metrics_url
        self.requests = metrics.Counter("lightglue_requests", "HTTP requests by route and status",
                                        tag_keys=("route", "status"))
        self.latency = metrics.Histogram("lightglue_stage_seconds", "Seconds per stage of a request (request: the whole "
                                         "of it at the ingress; extract and match: in the replica)",
                                         LATENCY_BOUNDARIES_S, tag_keys=("route", "stage"))
        self.serve_batch_sizes: Counter = Counter()  # requests by the size of the Serve batch they were in
        self.engine_batch_sizes: Counter = Counter()  # requests by the pairs their engine call held

    async def read_body(self, request: Request) -> bytes:
        check_body_size(request.headers.get("content-length"), self.max_body_bytes)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"the request body is over the server's limit of {self.max_body_bytes} bytes "
                                      "(trt_serve.py --max-body-mb)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def respond(self, route: str, request: Request, parse) -> JSONResponse:
        """Parse the body with ``parse(body, content type)``, have a replica match it, answer its record."""
        start = time.perf_counter()
        status = 500
        try:
            try:
                match_request = parse(await self.read_body(request), request.headers.get("content-type"))
                answer: Answer = await self.matcher.match.remote(match_request)
            except UserError as error:
                answer = refusal(error)
            except RayActorError:
                status = 503
                raise HTTPException(503, "the matcher replica holding this request was lost and is being replaced: "
                                         "retry the request", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
            status = answer.status
            if answer.error is not None:
                raise HTTPException(answer.status, answer.error)
            self.serve_batch_sizes[answer.serve_batch] += 1
            self.engine_batch_sizes[answer.engine_batch] += 1
            for stage in ("extract", "match"):
                if stage in answer.timings:
                    self.latency.observe(answer.timings[stage], tags={"route": route, "stage": stage})
            return JSONResponse(answer.record)
        finally:
            self.requests.inc(tags={"route": route, "status": str(status)})
            self.latency.observe(time.perf_counter() - start, tags={"route": route, "stage": "request"})

    @api.post("/match")
    async def match(self, request: Request) -> JSONResponse:
        return await self.respond("/match", request,
                                  lambda body, kind: match_request_from_form(parse_multipart(body, kind)))

    @api.post("/match_features")
    async def match_features(self, request: Request) -> JSONResponse:
        return await self.respond("/match_features", request, features_request)

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        deployments = await asyncio.to_thread(deployment_states)
        healthy = bool(deployments) and all(state["status"] == "HEALTHY" for state in deployments.values())
        return JSONResponse({"healthy": healthy, "deployments": deployments}, status_code=200 if healthy else 503)

    @api.get("/info")
    async def info(self) -> dict:
        replica = await self.matcher.info.remote()
        deployments = await asyncio.to_thread(deployment_states)
        return {
            **replica, "replicas": deployments.get(MatcherReplica.name, {}).get("replicas", {}),
            "max_body_bytes": self.max_body_bytes, "metrics": self.metrics_url,
            "batches": batch_report(self.serve_batch_sizes, self.engine_batch_sizes),
        }

