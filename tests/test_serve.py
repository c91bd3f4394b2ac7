"""trt_serve.py on Ray Serve: one server on 127.0.0.1 for the whole module (two matcher replicas of the small SIFT
engine, OpenVINO on this CPU), bounded request counts, stopped by the module itself.

What is checked: /match answers the very record trt_infer.py --output writes; /match_features (JSON and npz)
gives the same matches; concurrent requests form batches (/info and the Prometheus metrics say so); every
kind of bad request is a 4xx with {"error": ...} and the server keeps serving; a short soak with a replica
killed mid-run loses no good request; SIGTERM stops the server and the Ray instance it started.
"""

import json
import os
import signal
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from test_pairs_jobs import photos  # noqa: F401 - fixture
from test_trt_infer import error_line, sift_nn_engine  # noqa: F401 - fixture

from trt.errors import UserError
from trt.serve import payloads

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")

from trt.evaluation import serve_load  # noqa: E402
from trt.serve.client import MatchClient, ServerError, features_npz  # noqa: E402
from trt.serve.server import MatchServer, ServerOptions, plan_replicas  # noqa: E402

KEYPOINTS = 256
QUIET_RAY = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_metrics_report_interval_ms": "1000"}


@pytest.fixture(scope="module")
def server(sift_nn_engine, photos):  # noqa: F811
    """The module's one server: 2 replicas x 1 thread, batches of up to 8 gathered for 200 ms (robust to a loaded machine)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in QUIET_RAY.items():
            patch.setenv(key, value)
        options = ServerOptions(
            matcher_options={"engine": sift_nn_engine, "max_keypoints": KEYPOINTS, "resize": None, "mode": "throughput"},
            port=serve_load.free_port(), replicas=2, batch_wait_ms=200, max_body_mb=2, metrics_port=serve_load.free_port(),
            ray_init={"num_cpus": 2, "object_store_memory": 80 << 20},
        )
        running = MatchServer(options).start()
        try:
            yield running
        finally:
            running.close()


@pytest.fixture(scope="module")
def client(server) -> MatchClient:
    return MatchClient(server.url)


def test_match_answers_the_record_trt_infer_writes(server, client, sift_nn_engine, photos, tmp_path, monkeypatch):  # noqa: F811
    import trt_infer

    monkeypatch.chdir(photos)  # trt_infer.py records the image paths as given: here the upload names
    trt_infer.main(["--engine", str(sift_nn_engine), "a.jpg", "b.jpg", "--max-keypoints", str(KEYPOINTS),
                    "--resize", "0", "--output", str(tmp_path / "x.json")])
    written = json.loads((tmp_path / "x.json").read_text())
    answered = client.match(photos / "a.jpg", photos / "b.jpg")
    assert sorted(answered) == sorted(written)
    assert len(written["matches"]) > 20
    for key in written:
        if key != "timings":  # seconds differ; the stages are the same
            assert answered[key] == written[key], key
    assert set(written["timings"]) <= set(answered["timings"]) | {"batch"}


def test_match_features_json_and_npz_give_the_matches_of_images(server, client, photos):  # noqa: F811
    from trt.runtime.matcher import Matcher

    with Matcher.from_engine(server.options.matcher_options["engine"], max_keypoints=KEYPOINTS, resize=None) as matcher:
        features = [serve_load.features_record(matcher.extract(photos / name)) for name in ("a.jpg", "c.jpg")]
    from_images = client.match(photos / "a.jpg", photos / "c.jpg", threshold=0.2)
    from_npz = client.match_features(*features, threshold=0.2)
    body = json.dumps({"features0": {k: np.asarray(v).tolist() for k, v in features[0].items()},
                       "features1": {k: np.asarray(v).tolist() for k, v in features[1].items()}, "threshold": 0.2})
    from_json = client.post("/match_features", body.encode(), "application/json")
    assert len(from_images["matches"]) > 10
    for answer in (from_npz, from_json):
        assert answer["matches"] == from_images["matches"]
        assert answer["keypoints0"] == from_images["keypoints0"] and answer["threshold"] == 0.2
        assert answer["image0"] == ""


def test_concurrent_requests_are_batched_and_reported(server, client, photos):  # noqa: F811
    before = client.info()["batches"]
    names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    pairs = [(photos / names[i % 4], photos / names[(i + 1) % 4]) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda pair: client.match(*pair), pairs))
    assert all(len(answer["matches"]) > 10 for answer in answers)
    info = client.info()
    after = info["batches"]
    assert after["engine"]["requests"] - before["engine"]["requests"] == 8
    # 8 requests at once on 2 replicas gathering for 200 ms: fewer engine calls than requests
    assert after["engine"]["batches"] - before["engine"]["batches"] < 8
    assert max(answer["timings"]["batch"] for answer in answers) > 1
    assert info["replicas"] == {"RUNNING": 2} and info["engine"]["backend"] == "openvino"
    assert info["max_batch_size"] == 8 and info["notice"].startswith("notice: ")


def _status(url: str, method: str = "GET", body: bytes = None, content_type: str = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_bad_requests_are_4xx_json_and_the_server_keeps_serving(server, client, photos):  # noqa: F811
    calls = serve_load.bad_calls((photos / "a.jpg").read_bytes(), 2 << 20)
    assert {call.kind for call in calls} >= {"corrupt-image", "empty-image", "missing-field", "nan-threshold",
                                             "over-pixel-limit", "body-too-large", "unknown-path"}
    for call in calls:
        status, answer = _status(server.url + call.path, "POST", call.body, call.content_type)
        assert status == call.expect, (call.kind, answer)
        assert isinstance(answer["error"], str) and "Traceback" not in answer["error"], call.kind
    status, answer = _status(server.url + "/match")  # GET where only POST is served
    assert status == 405 and "POST /match" in answer["error"]
    with pytest.raises(ServerError, match="threshold") as refused:
        client.match(photos / "a.jpg", photos / "b.jpg", threshold="nan")
    assert refused.value.status == 400
    assert client.healthy() and len(client.match(photos / "a.jpg", photos / "b.jpg")["matches"]) > 20


def test_prometheus_metrics_count_requests_batches_and_stages(server, client, photos):  # noqa: F811
    client.match(photos / "b.jpg", photos / "c.jpg")
    wanted = ("ray_lightglue_requests_total", "ray_lightglue_serve_batch_size_bucket", "ray_lightglue_engine_batch_size_bucket",
              'stage="match"', 'stage="extract"', 'stage="request"', "ray_serve_")
    deadline = time.monotonic() + 30
    while True:  # Ray's agent exports what the replicas report, once a second here
        with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
            text = response.read().decode()
        missing = [name for name in wanted if name not in text]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, missing


def test_a_short_soak_with_a_replica_killed_loses_no_good_request(server, photos):  # noqa: F811
    from trt.runtime.matcher import Matcher

    pairs = [(photos / "a.jpg", photos / "b.jpg"), (photos / "c.jpg", photos / "d.jpg")]
    with Matcher.from_engine(server.options.matcher_options["engine"], max_keypoints=KEYPOINTS, resize=None) as matcher:
        expected, features = serve_load.expected_records(matcher, pairs)
    good = serve_load.good_calls(pairs, features, {"max_keypoints": KEYPOINTS, "resize": 0})
    bad = serve_load.bad_calls((photos / "a.jpg").read_bytes(), 2 << 20)
    report = serve_load.soak(server.url, good, expected, bad, requests=40, clients=4, seconds=300, kill_at=0.3,
                             bad_every=4)
    print("\n".join(report.lines()))
    assert report.killed and report.passed, report.lines()
    assert report.requests == 40 and sum(n for key, n in report.outcomes.items() if key.startswith("good")) == 30


def test_sigterm_stops_serve_and_the_ray_instance_it_started(server):
    """Last: ``wait`` returns on SIGTERM, and ``close`` shuts Serve down and stops the Ray it started."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        server.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    owned = server._owns_ray
    server.close()
    assert not ray.is_initialized() or not owned
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url + "/healthz", timeout=5)


# -- without a server ---------------------------------------------------------------------------------------


def test_trt_serve_refuses_a_missing_engine_in_one_line(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    process = subprocess.run([sys.executable, str(root / "trt_serve.py"), "--engine", str(tmp_path / "none.engine")],
                             capture_output=True, text=True, timeout=120, cwd=root)
    assert "none.engine" in error_line(process)


def test_replicas_are_one_per_gpu_else_a_share_of_the_cores():
    assert plan_replicas({"GPU": 2, "CPU": 16}, [16], None, "auto").actor_options == {"num_gpus": 1, "num_cpus": 1}
    assert plan_replicas({"GPU": 2, "CPU": 16}, [16], None, "auto").count == 2
    cpu = plan_replicas({"CPU": 16}, [16], 4, "auto")
    assert (cpu.count, cpu.threads, cpu.actor_options) == (4, 4, {"num_cpus": 4})
    assert plan_replicas({"CPU": 16}, [8, 8], 4, "openvino").threads == 4  # 2 per node of 8 cores
    assert plan_replicas({"GPU": 1, "CPU": 2}, [2], None, "onnxruntime").threads == 2
    with pytest.raises(UserError):
        plan_replicas({"CPU": 2}, [2], 0, "auto")


@pytest.mark.parametrize("body, content_type, message", [
    (b"x", "text/plain", "multipart/form-data"),
    (b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b", "no name"),
])
def test_unreadable_forms_are_user_errors(body, content_type, message):
    with pytest.raises(UserError, match=message):
        payloads.match_request_from_form(payloads.parse_multipart(body, content_type))


def test_form_fields_are_checked_as_trt_infer_checks_its_flags():
    image = ("a.jpg", b"...")
    fields = {"image0": image, "image1": image}
    assert payloads.match_request_from_form({**fields, "resize": (None, b"0")}).settings.resize == 0
    for name, value, message in (("threshold", b"inf", "threshold"), ("max_keypoints", b"1", "max_keypoints"),
                                 ("resize", b"8", "long side"), ("colour", b"red", "unknown field")):
        with pytest.raises(UserError, match=message):
            payloads.match_request_from_form({**fields, name: (None, value)})


def test_features_bodies_refuse_what_is_not_features():
    npz = features_npz({"keypoints": np.zeros((3, 2)), "descriptors": np.zeros((3, 4)), "image_size": [8, 8]},
                       {"keypoints": np.zeros((3, 2)), "descriptors": np.zeros((3, 4)), "image_size": [8, 8]})
    assert len(payloads.features_request(npz, "application/octet-stream").items[1]) == 3
    for body, content_type, message in ((b"[1]", "application/json", "JSON object"),
                                        (b"{", "application/json", "not JSON"),
                                        (b"PK\x03\x04junk", None, "npz"),
                                        (json.dumps({"features0": {}, "features1": {}}).encode(), "application/json",
                                         "missing field"),
                                        (b"hello", "text/plain", "application/json")):
        with pytest.raises(UserError, match=message):
            payloads.features_request(body, content_type)
    with pytest.raises(payloads.PayloadTooLarge):
        payloads.check_body_size("2000", 1000)
