"""Issue 20, class 1: anything that is not a regular file where a file is read gets one clear error.

Every reader of a user-given file (images, engines, manifests, ONNX, profile files, pairs files, weights,
the timing cache, a job's earlier outputs) goes through ``trt.fileio.check_regular_file`` or
``read_file_bytes``: a named pipe, a socket, a character device, a folder, a dangling or looping link is
refused by name before anything is opened that could block. A named pipe with no writer is the case that
hung ``trt_infer.py``; every call here runs under a time limit so that a regression fails instead of hanging.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from test_runtime import make_standin_onnx

from bad_inputs import cli, script, texture, write_png
from trt.engine.manifest import load_manifest
from trt.engine.profiles import GraphSignature, read_profile_file
from trt.errors import EngineError, ImageError, ProfileError, UserError, WeightsError
from trt.features.image import read_image
from trt.fileio import read_file_bytes, read_text, sha256_file
from trt.jobs.job import check_job_settings
from trt.jobs.pairs import read_pairs
from trt.runtime.onnxruntime_session import OnnxRuntimeSession
from trt.runtime.openvino_session import OpenVINOSession
from trt.runtime.outputs import read_matches
from trt.runtime.tensorrt_engine import check_source_onnx, read_engine
from trt.validation import check_input_file

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 30  # far above any refusal (milliseconds); a reader that blocks on a pipe never returns


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))  # the file stays after the socket is closed
    server.close()


def make_char_device(path: Path) -> None:
    path.symlink_to("/dev/null")  # the link is followed: what is read is the device


def make_folder(path: Path) -> None:
    path.mkdir()


def make_dangling_link(path: Path) -> None:
    path.symlink_to(path.with_name("nowhere"))


def make_looping_link(path: Path) -> None:
    path.symlink_to(path.name)


KINDS = {  # kind -> (how to make it at a path, what the message says it is)
    "fifo": (make_fifo, r"is a named pipe \(FIFO\), not a regular file"),
    "socket": (make_socket, "is a socket, not a regular file"),
    "char-device": (make_char_device, "is a character device, not a regular file"),
    "folder": (make_folder, "is a folder, not a file"),
    "dangling-link": (make_dangling_link, "is a dangling symbolic link: its target .*nowhere does not exist"),
    "looping-link": (make_looping_link, "is a symbolic link that loops back on itself"),
}


def read_checkpoint(path):
    from trt.models.weights import read_checkpoint

    return read_checkpoint(path)


def resolve_weights(path):
    from trt.extractors import get_extractor
    from trt.models.weights import resolve_weights

    return resolve_weights(get_extractor("sift"), path)


READERS = {  # reader -> (file name, call with the path, exception, what the message calls the file)
    "image": ("image.png", read_image, ImageError, "image"),
    "engine": ("m.engine", lambda p: read_engine(p, None), EngineError, "engine"),
    "manifest": ("m.engine.json", lambda p: load_manifest(p.with_suffix("")), EngineError, "engine manifest"),
    "onnx-graph": ("m.onnx", GraphSignature.from_onnx, UserError, "ONNX file"),
    "onnx-build-input": ("m.onnx", lambda p: check_input_file(p, "ONNX file"), UserError, "ONNX file"),
    "onnx-runtime": ("m.onnx", lambda p: OnnxRuntimeSession(p).activate(), EngineError, "ONNX model"),
    "onnx-openvino": ("m.onnx", OpenVINOSession, EngineError, "ONNX model"),
    "onnx-source": ("m.onnx", lambda p: check_source_onnx(p, None, required=True), EngineError,
                    "the engine's source ONNX"),
    "profile-file": ("p.toml", read_profile_file, ProfileError, "profile file"),
    "pairs-file": ("pairs.txt", read_pairs, UserError, "pairs file"),
    "weights-load": ("w.pth", read_checkpoint, WeightsError, "weights file"),
    "weights-given": ("w.pth", resolve_weights, WeightsError, "weights file"),
    "bytes": ("any", read_file_bytes, UserError, "file"),
    "text": ("any.txt", read_text, UserError, "text file"),
    "sha256": ("any", sha256_file, UserError, "file"),
    "matches-file": ("a__b.json", read_matches, ValueError, "matches file"),
}


@pytest.fixture
def short_dir():
    """A folder with a short path: a socket's path may not exceed 107 bytes, pytest's tmp_path can."""
    folder = Path(tempfile.mkdtemp(prefix="kinds-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder)


def bounded(call, limit_s: float = LIMIT_S):
    """``call()``'s exception (or None), failing the test if it has not returned within ``limit_s``.

    The call runs on a daemon thread: one blocked on a pipe cannot keep the test run from ending.
    """
    outcome = {}

    def target():
        try:
            call()
        except BaseException as error:  # noqa: BLE001 (handed to the test, which checks its type)
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit_s)
    if thread.is_alive():
        pytest.fail(f"still reading after {limit_s} s: it blocked")
    return outcome.get("error")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reader", READERS)
def test_every_reader_refuses_what_is_not_a_regular_file(reader, kind, short_dir):
    name, read, error_class, what = READERS[reader]
    make, says = KINDS[kind]
    path = short_dir / name
    make(path)
    error = bounded(lambda: read(path))
    assert isinstance(error, error_class), repr(error)
    message = str(error)
    assert message.startswith(f"{what} {path} "), message  # the file, by the name the reader knows it by
    assert re.search(says, message), message
    assert "\n" not in message


def test_a_job_record_that_is_a_pipe_counts_as_unreadable(short_dir):
    """The job folder's record of earlier settings (read on every rerun) is refused, not read."""
    make_fifo(short_dir / ".job.json")
    error = bounded(lambda: check_job_settings(short_dir, {"threshold": 0.1}))
    assert isinstance(error, UserError) and "holds the outputs of a job with other settings" in str(error)


def test_a_regular_file_behind_a_link_is_read(short_dir):
    (short_dir / "real.txt").write_text("a b\n")
    (short_dir / "link.txt").symlink_to("real.txt")
    assert read_text(short_dir / "link.txt") == "a b\n"


# -- the command lines: one message, exit status 2, no traceback, no wait ------------------------------


def test_trt_infer_refuses_each_kind_of_image_and_pairs_file(short_dir):
    trt_infer = script("trt_infer")
    for kind, (make, says) in KINDS.items():
        image, pairs = short_dir / f"{kind}.png", short_dir / f"{kind}.txt"
        make(image)
        make(pairs)
        for argv, what, path in (
            (["--engine", short_dir / "absent.engine", image, short_dir / "other.png"], "image", image),
            (["--engine", short_dir / "absent.engine", "--pairs", pairs, "--output-dir", short_dir / "out"],
             "pairs file", pairs),
        ):
            done = bounded_cli(trt_infer.main, argv)
            if kind == "folder" and what == "image":  # a folder of images: the pairs options are the next step
                assert re.fullmatch(f".*error: {path} is a folder: to match its images, give --pairs .*", done.error)
                continue
            assert re.fullmatch(f"error: {what} {path} {says}.*", done.error), done.error
        assert not (short_dir / "out").exists()


def test_build_engine_refuses_each_kind_of_onnx_and_profile_file(short_dir):
    build_engine = script("build_engine")
    onnx = make_standin_onnx(short_dir / "standin.onnx")
    for kind, (make, says) in KINDS.items():
        paths = {flag: short_dir / f"{kind}{suffix}" for flag, suffix in
                 (("--onnx", ".onnx"), ("--profiles", ".toml"))}
        for path in paths.values():
            make(path)
        (short_dir / "ok.toml").write_text('[[profile]]\nkeypoints = { min = 1, opt = 64, max = 64 }\n')
        for flag, what in (("--onnx", "ONNX file"), ("--profiles", "profile file")):
            argv = ["--onnx", onnx, "--profiles", short_dir / "ok.toml", "--output", short_dir / "out.engine",
                    "--builder", "tensorrt-rtx", "--no-progress", flag, paths[flag]]
            done = bounded_cli(build_engine.main, argv)
            assert re.fullmatch(f"error: {what} {paths[flag]} {says}.*", done.error), done.error
        assert not (short_dir / "out.engine").exists()


def bounded_cli(main, argv):
    runs = []
    error = bounded(lambda: runs.append(cli(main, argv)))
    assert error is None, repr(error)
    return runs[0]


@pytest.mark.parametrize("argv, message", [
    (["trt_infer.py", "--engine", "{dir}/absent.engine", "{dir}/pipe", "{dir}/other.png"],
     "error: image {dir}/pipe is a named pipe"),
    (["trt_infer.py", "--engine", "{dir}/pipe", "{dir}/a.png", "{dir}/b.png"], "error: engine {dir}/pipe is a named pipe"),
    (["build_engine.py", "--onnx", "{dir}/pipe"], "error: ONNX file {dir}/pipe is a named pipe"),
    (["export.py", "--weights", "{dir}/pipe", "--lightglue_path", "{dir}/out.onnx"],
     "error: weights file {dir}/pipe is a named pipe"),
], ids=["trt_infer-image", "trt_infer-engine", "build_engine-onnx", "export-weights"])
def test_the_scripts_end_on_a_named_pipe_with_one_message(argv, message, short_dir):
    """The real processes, under a timeout: a pipe with no writer is never opened."""
    make_fifo(short_dir / "pipe")
    for name, seed in (("a.png", 0), ("b.png", 1)):
        write_png(short_dir / name, texture(seed))
    argv = [a.format(dir=short_dir) for a in argv]
    done = subprocess.run([sys.executable, ROOT / argv[0], *argv[1:]], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(message.format(dir=short_dir)), done.stderr
    assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr
    assert not (short_dir / "out.onnx").exists()
