"""What a newcomer reads: messages in the language of the tool typed (make variables under make, flags under
the scripts), the weights behind every result, the one-line CPU notice, names with either spelling, the
build's progress in a log, the commands make prints (trtexec, tensorrt_rtx, the demo's next step) and the
torch set-up step."""

import http.server
import io
import json
import os
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
from conftest import profile_toml
from test_engine_build import standin_matcher

from trt.cli import speak_make
from trt.engine.backends import get_backend, make_progress_monitor
from trt.engine.builder import BuildOptions, build_engine
from trt.engine.manifest import Manifest, manifest_path
from trt.errors import UserError
from trt.runtime.cpu import CpuInfo
from trt.runtime.openvino_session import (
    BF16_POLICY,
    GATE_PRESET,
    bf16_gate_path,
    check_precision,
    precision_note,
)
from trt.runtime.outputs import check_picture_path, weights_label

ROOT = Path(__file__).resolve().parent.parent
# Downloads fail at once, whatever the network: the messages of an offline machine, deterministically.
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


def make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), f"PYTHON={sys.executable}", *args],
                          capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def run_script(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "LG_VIA_MAKE"}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**environment, **(env or {})})


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    return standin_matcher(tmp_path_factory.mktemp("standin") / "standin.onnx")


# --- 2. messages in the user's tool -------------------------------------------------------------------------


@pytest.mark.parametrize("message, spoken", [
    ("pass --weights FILE, or export test weights (not trained): --nearest-neighbour-weights, --sharp-weights SEED "
     "or --random-weights SEED",
     "pass WEIGHTS=FILE, or export test weights (not trained): WEIGHTS=nn, WEIGHTS=sharp or WEIGHTS=random"),
    ("pass --extractor_weights FILE, or use --extractor-random-weights SEED",
     "pass EXTRACTOR_WEIGHTS=FILE, or use EXTRACTOR_WEIGHTS=random"),
    ("export it with --extractor-model aliked-n32", "export it with NETWORK=aliked-n32"),
    ("--precision=fp16 needs a GPU; --profiles is not a file", "PRECISION=fp16 needs a GPU; PROFILES is not a file"),
    # flags without a make variable, and longer flags sharing a prefix, stay as they are
    ("--weights-dir x and --max-num-keypoints 5000", "--weights-dir x and --max-num-keypoints 5000"),
])
def test_messages_name_make_variables_under_make(message, spoken):
    assert speak_make(message) == spoken


def test_offline_make_engine_names_make_variables_and_the_script_names_flags(tmp_path):
    """The issue's case: official weights offline. Under make the way out is WEIGHTS=..., run directly --weights."""
    weights_dir = tmp_path / "empty"
    (tmp_path / "m.onnx").write_bytes(b"")  # newer than the sources: make keeps it and goes on to the extractor
    # SuperPoint's network is not shipped by any package (ALIKED's and DISK's are found offline)
    under_make = make("onnx", "EXTRACTOR=superpoint", f"ONNX={tmp_path}/m.onnx",
                      f"EXTRACTOR_ONNX={tmp_path}/e.onnx", env=OFFLINE)
    assert under_make.returncode != 0
    error = [line for line in under_make.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "EXTRACTOR_WEIGHTS=FILE" in error[0] and "EXTRACTOR_WEIGHTS=random" in error[0], error
    assert "--extractor" not in error[0]
    direct = run_script("export.py", "--extractor-type", "sift", "--lightglue-path", tmp_path / "s.onnx",
                        "--weights-dir", weights_dir, env=OFFLINE)
    assert direct.returncode == 2 and "pass --weights FILE" in direct.stderr
    assert "--nearest-neighbour-weights" in direct.stderr and "WEIGHTS=" not in direct.stderr
    assert not (tmp_path / "e.onnx").exists() and not (tmp_path / "s.onnx").exists()


def test_a_bad_make_variable_is_named_as_typed(standin, tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(standin.read_bytes())  # newer than the sources: make goes straight to the build
    (tmp_path / "p.toml").write_text(profile_toml(("n64", 1, 32, 64)))
    done = make("engine", f"ONNX={onnx}", f"OUT={tmp_path}/m.engine", f"PROFILES={tmp_path}/p.toml", "PRECISION=fp64")
    assert done.returncode != 0
    assert done.stderr.startswith("error: argument PRECISION: invalid choice: 'fp64' (choose from "), done.stderr
    assert "usage:" not in done.stderr and not (tmp_path / "m.engine").exists()


def test_make_trtexec_needs_no_weights_and_prints_both_builders(tmp_path):
    """No ONNX and no weights: the commands are read from a stand-in export, with the paths make would use."""
    (tmp_path / "p.toml").write_text(profile_toml(("n256", 1, 256, 256)))
    onnx, engine = tmp_path / "absent.onnx", tmp_path / "m.engine"
    done = make("trtexec", "EXTRACTOR=sift", f"ONNX={onnx}", f"OUT={engine}", f"PROFILES={tmp_path}/p.toml",
                "PRECISION=fp16", "TARGET_SM=8.6,8.9", env=OFFLINE)
    assert done.returncode == 0, done.stderr
    commands = [line for line in done.stdout.splitlines() if not line.startswith("#")]
    full, rtx = commands
    assert full.startswith(f"trtexec --onnx={onnx} --saveEngine={engine} --skipInference") and "--fp16" in full
    assert "kpts0:1x256x2" in full and "--layerPrecisions=" in full
    # tensorrt-rtx is strongly typed: it builds the mixed-FP16 ONNX make engine writes beside the engine
    assert rtx.startswith(f"tensorrt_rtx --onnx={tmp_path}/m.fp16.onnx --saveEngine={engine} --skipInference")
    assert "--computeCapabilities=86,89" in rtx and "--fp16" not in rtx and "kpts0:1x256x2" in rtx
    assert not onnx.exists() and not engine.exists()


def test_print_trtexec_reads_an_existing_onnx_and_refuses_a_stray_stand_in(standin, tmp_path):
    (tmp_path / "p.toml").write_text(profile_toml(("n64", 1, 32, 64)))
    done = run_script("build_engine.py", "--onnx", standin, "--profiles", tmp_path / "p.toml", "--print-trtexec",
                      "--stand-in", "matcher:sift", "--output", tmp_path / "x.engine")
    assert done.returncode == 0 and f"tensorrt_rtx --onnx={standin} " in done.stdout, done.stderr
    stray = run_script("build_engine.py", "--onnx", standin, "--stand-in", "matcher:sift")
    assert stray.returncode == 2 and "error: --stand-in goes with --print-trtexec" in stray.stderr


def test_make_demo_ends_with_the_next_step():
    dry = make("-n", "demo")
    assert dry.returncode == 0
    assert "next: match your own photos:" in dry.stdout and "trt_infer.py --engine" in dry.stdout


# --- 3. the weights behind a result -------------------------------------------------------------------------


def test_the_manifest_records_the_weights_and_older_manifests_read_them_from_the_metadata(standin, tmp_path):
    import onnx

    model = onnx.load(str(standin))
    for key, value in (("lightglue.weights_kind", "sharp"), ("lightglue.weights", "sharp test weights seed 0")):
        model.metadata_props.add(key=key, value=value)  # what export.py records
    onnx.save(model, str(tmp_path / "m.onnx"))
    profiles = tmp_path / "p.toml"
    profiles.write_text(profile_toml(("n64", 1, 32, 64)))
    engine = build_engine(tmp_path / "m.onnx", profiles, tmp_path / "s.engine", builder="tensorrt-rtx", progress=False)
    record = json.loads(manifest_path(engine).read_text())
    expected = {"kind": "sharp", "source": "sharp test weights seed 0"}
    assert record["weights"] == expected
    del record["weights"]  # as a manifest written before the field
    assert Manifest.from_dict(record).weights == expected


@pytest.mark.parametrize("summary, label", [
    ({"weights": {"kind": "official", "source": "sha256:ab"}}, "official weights"),
    ({"weights": {"kind": "nearest-neighbour", "source": "x"}}, "nearest-neighbour test weights, not trained"),
    ({"weights": {"kind": "file", "source": "sha256:" + "12ab" * 16}},
     "weights from a checkpoint file (sha256:12ab12ab12ab…), not the official one"),
    ({"weights": None}, "weights not recorded (an engine without its manifest, or an ONNX not exported by export.py)"),
    ({"weights": {"kind": "official", "source": "a"}, "extractor_engine": {"weights": {"kind": "random", "source": "b"}}},
     "matcher: official weights; extractor: random test weights, not trained"),
])
def test_weights_label(summary, label):
    assert weights_label(summary) == label


def test_the_picture_takes_any_format_opencv_writes(tmp_path):
    for name in ("m.png", "m.jpg", "m.JPEG", "m.webp", "m.tif"):
        assert check_picture_path(tmp_path / name) == tmp_path / name
    for name in ("m.json", "m", "m.xyz"):
        with pytest.raises(UserError, match="name it with an image suffix OpenCV writes"):
            check_picture_path(tmp_path / name)


# --- 4. the CPU notice ----------------------------------------------------------------------------------------

WITH_BF16 = CpuInfo("a CPU with bf16", frozenset({"avx512_bf16"}))
WITHOUT_BF16 = CpuInfo("a CPU without bf16", frozenset({"avx2"}))


def write_gate_record(onnx: Path, passed: bool) -> Path:
    from trt.fileio import sha256_file

    record = {"onnx_sha256": sha256_file(onnx), "preset": GATE_PRESET, "policy": BF16_POLICY, "passed": passed,
              "summary": "figures"}
    path = bf16_gate_path(onnx)
    path.write_text(json.dumps(record))
    return path


def test_the_notice_gives_the_gate_as_next_step_then_says_it_passed(standin, tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(standin.read_bytes())
    before = precision_note("auto", "f32", onnx, WITH_BF16)
    assert before == f"in f32; make bf16-gate ONNX={onnx} enables bf16, about 1.6x faster on this CPU"
    assert precision_note("auto", "f32", onnx, WITHOUT_BF16) == "in f32 (no bf16 on this CPU)"
    write_gate_record(onnx, passed=False)
    assert precision_note("auto", "f32", onnx, WITH_BF16) == "in f32 (the bf16 accuracy gate failed: m.bf16-gate.json)"
    write_gate_record(onnx, passed=True)
    assert precision_note("auto", "bf16", onnx, WITH_BF16) == "in bf16 (m.bf16-gate.json passed)"
    assert precision_note("fp32", "f32", onnx, WITH_BF16) == "in f32 (asked for)"


# --- 5. build progress without a terminal --------------------------------------------------------------------


def test_a_build_logs_one_line_per_phase_without_a_terminal(standin, tmp_path):
    """Driven by tensorrt-rtx's own progress monitor, in a real build (a pipe, as in CI logs or `| tee`)."""
    profiles = tmp_path / "p.toml"
    profiles.write_text(profile_toml(("n64", 1, 32, 64)))
    log = io.StringIO()  # not a terminal
    monitor = make_progress_monitor(get_backend("tensorrt-rtx"), stream=log)
    monitor.phase_start("Building engine", None, 2)
    monitor.step_complete("Building engine", 0)
    monitor.phase_start("Preparing graph", "Building engine", 1)
    monitor.phase_start("Too deep to log", "Preparing graph", 1)
    monitor.phase_finish("Too deep to log")
    monitor.phase_finish("Preparing graph")
    monitor.phase_finish("Building engine")
    lines = log.getvalue().splitlines()
    assert [line.split(" done in ")[0] for line in lines] == ["build:   Preparing graph", "build: Building engine"]
    assert all(line.endswith(" s") for line in lines)
    done = run_script("build_engine.py", "--onnx", standin, "--profiles", profiles, "--output", tmp_path / "s.engine",
                      "--builder", "tensorrt-rtx")
    assert done.returncode == 0, done.stderr
    assert "build: Building engine done in " in done.stderr


# --- 7. names -------------------------------------------------------------------------------------------------


def test_export_takes_both_spellings_and_documents_the_hyphenated_one():
    import export

    hyphens = export.parse_args(["--extractor-type", "aliked", "--lightglue-path", "m.onnx", "--extractor-path",
                                 "e.onnx", "--max-keypoints", "512", "--extractor-weights", "x.pth"])
    underscores = export.parse_args(["--extractor_type", "aliked", "--lightglue_path", "m.onnx", "--extractor_path",
                                     "e.onnx", "--max_num_keypoints", "512", "--extractor_weights", "x.pth"])
    assert vars(hyphens) == vars(underscores)
    assert hyphens.max_num_keypoints == 512 and hyphens.extractor_weights == Path("x.pth")
    shown = run_script("export.py", "--help")
    options = shown.stdout.split("options:")[1]
    assert "--max-keypoints K" in options and "-h, --help" in options
    assert not re.search(r"--\w+_", options)  # one spelling documented: the hyphenated one


def test_precision_is_taken_in_both_spellings_on_both_sides():
    import build_engine
    import trt_infer

    assert BuildOptions(precision="f16").check().precision == "fp16"
    assert build_engine.parse_args(["--onnx", "m.onnx", "--precision", "f32"]).precision == "fp32"
    assert check_precision("fp32") == "f32"
    assert trt_infer.parse_args(["--engine", "e", "a.jpg", "b.jpg", "--precision", "fp32"]).precision == "f32"
    with pytest.raises(UserError, match="unknown precision 'fp64'"):
        check_precision("fp64")


def test_matcher_takes_max_keypoints_and_its_former_name_with_a_warning(standin):
    from trt.runtime.matcher import Matcher
    from trt.runtime.onnxruntime_session import OnnxRuntimeSession

    with Matcher(OnnxRuntimeSession(standin), max_keypoints=20) as matcher:
        assert matcher.max_keypoints == 20
    with pytest.warns(DeprecationWarning, match="max_num_keypoints is now max_keypoints"):
        with Matcher(OnnxRuntimeSession(standin), max_num_keypoints=30) as matcher:
            assert matcher.max_keypoints == 30
    with warnings.catch_warnings(), pytest.raises(UserError, match="give max_keypoints only"):
        warnings.simplefilter("ignore")
        Matcher(OnnxRuntimeSession(standin), max_keypoints=20, max_num_keypoints=30)


# --- 1. torch's CPU build -------------------------------------------------------------------------------------


class _Index(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path.rstrip("/").endswith("/torch") else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_torch_comes_from_the_cpu_index_where_reachable_else_from_the_registry():
    script, pip = ROOT / "scripts" / "install_torch.sh", str(Path(sys.executable).with_name("pip"))
    server = http.server.HTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        index = f"http://127.0.0.1:{server.server_port}/whl/cpu"
        reachable = subprocess.run([script, "--print", pip, "2.13.0"], capture_output=True, text=True, timeout=60,
                                   env={**os.environ, "TORCH_CPU_INDEX": index})
    finally:
        server.shutdown()
    assert reachable.stdout.strip() == f"{pip} install --timeout 30 --index-url {index} torch==2.13.0"
    unreachable = subprocess.run([script, "--print", pip, "2.13.0"], capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "TORCH_CPU_INDEX": f"http://127.0.0.1:{server.server_port}/gone"})
    assert unreachable.stdout.strip() == f"{pip} install torch==2.13.0"
    assert make("-n", "setup").stdout.count("scripts/install_torch.sh .venv/bin/pip 2.13.0") == 1


# --- 8. padding: one truth -------------------------------------------------------------------------------------


def test_a_request_is_padded_to_its_profiles_min_and_to_opt_only_at_a_fixed_shape():
    from trt.contract import BATCH, KEYPOINTS0, KEYPOINTS1
    from trt.runtime.base import Profile

    bucket = Profile.from_ranges("n4096", {BATCH: (1, 1, 4), KEYPOINTS0: (2049, 4096, 4096),
                                           KEYPOINTS1: (2049, 4096, 4096)})
    request = {BATCH: 1, KEYPOINTS0: 100, KEYPOINTS1: 3000}
    assert bucket.holds(request) and bucket.padded(request) == {BATCH: 1, KEYPOINTS0: 2049, KEYPOINTS1: 3000}
    assert bucket.at_opt().padded(request) == {BATCH: 1, KEYPOINTS0: 4096, KEYPOINTS1: 4096}  # CUDA graphs
    for path in sorted((ROOT / "profiles").glob("*.toml")):  # every profile file says so
        assert "padded up to the min, no further" in " ".join(path.read_text().replace("# ", "").split()), path
