"""Pairs jobs on Ray (trt/jobs/ray_stages.py): the same matches as one process, each pair written
exactly once when a worker is killed mid-run, one clear message for an unreachable cluster.

Ray starts in seconds, not milliseconds: one local instance (2 CPUs, no dashboard, a small object
store) serves the in-process tests of this module; the command-line test starts its own, as a user's
run does.
"""

import json
import os
import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_pairs_jobs import KEYPOINTS, leftovers, match_cli, nn_engine, pairs_file, photos  # noqa: F401 - fixtures
from test_trt_infer import error_line

from trt.jobs.job import prepare_output_dir, run_pairs_job
from trt.jobs.pairs import read_pairs
from trt.jobs.writers import PairFiles

ray = pytest.importorskip("ray")

QUIET_RAY = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION": "0.01"}
EXHAUSTIVE = ["a.jpg b.jpg", "a.jpg c.jpg", "a.jpg d.jpg", "b.jpg c.jpg", "b.jpg d.jpg", "c.jpg d.jpg"]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the in-process tests, shut down after them."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in QUIET_RAY.items():
            patch.setenv(key, value)
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 << 20, log_to_driver=False)
        yield
        ray.shutdown()


def records(folder: Path) -> dict:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*__*.json"))}


def test_ray_workers_give_the_matches_of_one_process(nn_engine, photos, tmp_path, monkeypatch):  # noqa: F811
    """`--ray --workers 2` on a local instance: the same files with the same matches as the single process."""
    for key, value in QUIET_RAY.items():
        monkeypatch.setenv(key, value)
    pairs = pairs_file(tmp_path, *EXHAUSTIVE)
    single = match_cli(nn_engine, pairs, tmp_path / "single", "--image-dir", photos)
    assert single.returncode == 0, single.stderr
    on_ray = match_cli(nn_engine, pairs, tmp_path / "ray", "--image-dir", photos, "--ray", "--workers", "2")
    assert on_ray.returncode == 0, on_ray.stderr
    assert "on 2 Ray workers on 1 node(s) (openvino f32, 1 CPU each)" in on_ray.stdout  # auto: OpenVINO on a CPU
    assert "6 matched" in on_ray.stdout and "extract" in on_ray.stdout and "pairs/s" in on_ray.stdout
    expected, got = records(tmp_path / "single"), records(tmp_path / "ray")
    assert sorted(got) == sorted(expected) and len(got) == 6
    for name, record in expected.items():
        assert len(record["matches"]) > 10
        np.testing.assert_array_equal(got[name]["matches"], record["matches"])
        np.testing.assert_array_equal(got[name]["keypoints0"], record["keypoints0"])
        np.testing.assert_allclose(got[name]["scores"], record["scores"], rtol=1e-5)


def test_a_killed_worker_loses_no_pair_and_writes_none_twice(nn_engine, photos, tmp_path, local_ray):  # noqa: F811
    """SIGKILL one actor's process while it holds work: Ray restarts it and retries its calls; the job
    ends with every pair written exactly once and no partial file."""
    from trt.jobs.ray_stages import RayStages

    out = prepare_output_dir(tmp_path / "out")
    outputs = PairFiles(out, "json", threshold=0)
    writes = Counter()
    write = outputs.write
    outputs.write = lambda entry, result: writes.update([outputs.key(entry)]) or write(entry, result)
    killed = []

    def kill_a_busy_worker(report):
        if not killed:  # after the first chunk: both actors still hold queued or running calls
            killed.append(stages.worker_pids()[0])
            os.kill(killed[0], signal.SIGKILL)

    options = dict(engine=nn_engine, max_keypoints=int(KEYPOINTS), threshold=0)
    with RayStages(options, workers=2) as stages:
        report = run_pairs_job(read_pairs(pairs_file(tmp_path, *EXHAUSTIVE), photos), outputs, stages,
                                    progress=False, on_chunk=kill_a_busy_worker)
        restarted = [ray.get(actor.ready.remote())["pid"] for actor in stages.actors]
    assert killed and killed[0] not in restarted  # the actor came back as a new process
    assert (report.written, report.failed, report.images) == (6, 0, 4)
    assert sorted(writes.values()) == [1] * 6 and len(records(out)) == 6
    assert leftovers(out) == []


def test_workers_read_images_under_the_jobs_pixel_limit(nn_engine, photos, tmp_path, local_ray):  # noqa: F811
    """``pixel_limit`` (--max-pixels) reaches the actors, in other processes: a limit below the photos'
    size fails their pairs there, as in one process."""
    from trt.jobs.ray_stages import RayStages
    from trt.validation import pixel_limit

    out = prepare_output_dir(tmp_path / "out")
    options = dict(engine=nn_engine, max_keypoints=int(KEYPOINTS), threshold=0)
    with pixel_limit(100_000), RayStages(options, workers=1) as stages:  # the half-size photos: 400x320 = 128000
        report = run_pairs_job(read_pairs(pairs_file(tmp_path, "a.jpg b.jpg"), photos),
                                    PairFiles(out, "json", threshold=0), stages, progress=False)
    assert (report.written, report.failed) == (0, 1)
    assert "more than the limit of 100000 pixels" in report.failures[0][1]


def test_unreachable_ray_address_is_one_message(nn_engine, photos, tmp_path):  # noqa: F811
    pairs = pairs_file(tmp_path, "a.jpg b.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.json").write_text("{}\n")
    done = match_cli(nn_engine, pairs, out, "--image-dir", photos, "--ray", "127.0.0.1:1")
    line = error_line(done)
    assert done.returncode == 2 and line.startswith("error: cannot reach a Ray cluster at 127.0.0.1:1: "), line
    assert "ray start --head" in line
    assert sorted(p.name for p in out.iterdir()) == ["earlier.json"] and (out / "earlier.json").read_text() == "{}\n"


def test_worker_plan():
    from trt.jobs.ray_stages import plan_workers

    assert plan_workers({"CPU": 16}, [{"CPU": 8}, {"CPU": 8}], None, "auto") == (2, {"num_cpus": 8}, 8)
    assert plan_workers({"CPU": 24}, [{"CPU": 8}, {"CPU": 16}], 2, "auto") == (2, {"num_cpus": 8}, 8)
    assert plan_workers({"CPU": 2}, [{"CPU": 2}], 4, "auto") == (4, {"num_cpus": 1}, 1)
    assert plan_workers({"CPU": 32, "GPU": 4}, [{"CPU": 32, "GPU": 4}], None, "auto") == (4, {"num_gpus": 1, "num_cpus": 1}, None)
    assert plan_workers({"CPU": 32, "GPU": 4}, [{"CPU": 32, "GPU": 4}], 2, "onnxruntime")[1] == {"num_cpus": 16}
