"""trt_infer.py end to end on this CPU machine: engines built with tensorrt-rtx from the real exported
matcher, served on the CPU backends (OpenVINO, which --backend auto picks without a GPU, and ONNX Runtime);
every user error ends in one message and no file.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from trt.runtime.cpu import cpu_info

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "trt_infer.py"
GRAFFITI = "images/hpatches/v_graffiti"

# One profile is enough for the CLI: keypoints 1-1024, batch 1-4.
PROFILE_TOML = """
[[profile]]
name = "n1024"
keypoints = { min = 1, opt = 1024, max = 1024 }
batch = { min = 1, opt = 1, max = 4 }
"""


def build(onnx: Path, cache: Path) -> Path:
    """An engine of ``onnx`` with the one-profile file above, built once per session with tensorrt-rtx."""
    pytest.importorskip("tensorrt_rtx")
    from trt.engine.builder import build_engine

    engine = cache / f"{onnx.stem}.n1024.engine"
    if not engine.exists():
        profiles = cache / "n1024.toml"
        profiles.write_text(PROFILE_TOML)
        build_engine(onnx, profiles=profiles, output=engine, builder="tensorrt-rtx", progress=False)
    return engine


@pytest.fixture(scope="session")
def sift_engine(sift_onnx, model_cache) -> Path:
    return build(sift_onnx, model_cache)


@pytest.fixture(scope="session")
def sift_nn_engine(sift_nn_onnx, model_cache) -> Path:
    return build(sift_nn_onnx, model_cache)


@pytest.fixture(scope="session")
def sift_sharp_engine(sift_sharp_onnx, model_cache) -> Path:
    return build(sift_sharp_onnx, model_cache)


@pytest.fixture(scope="session")
def images(data_dir) -> tuple[Path, Path]:
    return data_dir / GRAFFITI / "1.jpg", data_dir / GRAFFITI / "2.jpg"


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300,
    )


def error_line(process: subprocess.CompletedProcess) -> str:
    """The one "error: ..." line a failed run must end with."""
    assert process.returncode not in (0, 1), process.stderr  # 1 would be an uncaught exception
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert "Traceback" not in process.stderr, process.stderr
    assert lines and lines[-1].startswith("error: "), process.stderr
    assert sum(line.startswith("error: ") for line in lines) == 1
    return lines[-1]


def engine_copy(engine: Path, folder: Path, link: bool = True, **manifest_changes) -> Path:
    """The engine in ``folder`` (a symlink, or a copy to modify) with its manifest, edited as asked."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / engine.name
    if link:
        target.symlink_to(engine)
    else:
        shutil.copyfile(engine, target)
    manifest = json.loads(Path(f"{engine}.json").read_text())
    for key, value in manifest_changes.items():
        manifest[key] = {**manifest[key], **value} if isinstance(value, dict) else value
    Path(f"{target}.json").write_text(json.dumps(manifest))
    return target


# --- the happy paths ----------------------------------------------------------------------------------


def test_cli_writes_json_npz_and_png(sift_engine, images, tmp_path):
    out_json, out_png, out_npz = tmp_path / "m.json", tmp_path / "m.png", tmp_path / "m.npz"
    done = run_cli("--engine", sift_engine, *images, "--max-keypoints", "512", "--threshold", "0",
                   "--output", out_json, "--viz", out_png)
    assert done.returncode == 0, done.stderr
    notices = [line for line in done.stderr.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "on OpenVINO in f32" in notices[0] and "no CUDA GPU" in notices[0], notices
    # one short line with the next step: the gate where the CPU has bf16, else why not
    assert ("make bf16-gate ONNX=" in notices[0] and "enables bf16" in notices[0]) \
        or "in f32 (no bf16 on this CPU)" in notices[0]
    assert len(notices[0]) < 220, notices[0]
    assert "image0" in done.stdout and "keypoints" in done.stdout
    assert "(threshold 0, openvino f32, random test weights, not trained)" in done.stdout
    assert "extract" in done.stdout and "match" in done.stdout

    record = json.loads(out_json.read_text())
    k0, k1, matches = np.array(record["keypoints0"]), np.array(record["keypoints1"]), np.array(record["matches"])
    assert 0 < len(k0) <= 512 and 0 < len(k1) <= 512 and k0.shape[1] == 2
    assert len(matches) == len(record["scores"]) > 0  # threshold 0: every mutual match is kept
    assert matches[:, 0].max() < len(k0) and matches[:, 1].max() < len(k1)
    assert record["image_size0"] == [800.0, 640.0]
    assert record["engine"]["backend"] == "openvino" and record["engine"]["builder"]["name"] == "tensorrt-rtx"
    assert record["engine"]["runtime_precision"] == "f32" and record["engine"]["runtime_precision_reason"]
    assert record["engine"]["profiles"][0]["keypoints0"] == [1, 1024, 1024]
    assert record["engine"]["weights"] == {"kind": "random", "source": "random seed 0 (for tests, not trained)"}
    assert {"extract", "match", "compute"} <= set(record["timings"])

    picture = cv2.imread(str(out_png))
    assert picture.shape == (640, 800 + 10 + 800, 3)

    done = run_cli("--engine", sift_engine, *images, "--max-keypoints", "512", "--threshold", "0", "--output", out_npz,
                   "--backend", "openvino", "--precision", "f32")
    assert done.returncode == 0, done.stderr
    with np.load(out_npz) as npz:
        assert npz["keypoints0"].dtype == np.float32 and npz["matches"].dtype == np.int64
        np.testing.assert_array_equal(npz["matches"], matches)
        np.testing.assert_allclose(npz["scores"], record["scores"], rtol=1e-6)
        assert json.loads(str(npz["engine"]))["precision"] == "fp32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.npz", "m.png"]  # no temporary left


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_cli_pairs_file(sift_engine, data_dir, tmp_path, backend):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in (1, 2, 3):
        shutil.copy(data_dir / GRAFFITI / f"{i}.jpg", folder / f"{i}.jpg")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# graffiti\nimages/1.jpg images/2.jpg\n\nimages/1.jpg images/3.jpg\nimages/2.jpg images/3.jpg\n")
    out = tmp_path / "out"
    done = run_cli("--engine", sift_engine, "--pairs", pairs, "--output-dir", out, "--format", "npz",
                   "--max-keypoints", "256", "--threshold", "0", "--backend", backend, cwd=tmp_path.parent)
    assert done.returncode == 0, done.stderr
    assert f"({backend}" in done.stdout
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))  # .job.json: the job's settings
    assert names == ["images-1.jpg__images-2.jpg.npz", "images-1.jpg__images-3.jpg.npz", "images-2.jpg__images-3.jpg.npz"]
    assert "3 pairs" in done.stdout and "3/3" in done.stderr  # summary, and tqdm's bar
    with np.load(out / names[0]) as npz:
        assert len(npz["matches"]) > 0 and str(npz["image1"]).endswith("2.jpg")


def test_cli_recovers_the_graffiti_homography(sift_nn_engine, data_dir, tmp_path):
    """Nearest-neighbour weights: the matches of v_graffiti 1 -> 2 give its homography within 3 px."""
    image0, image1 = data_dir / GRAFFITI / "1.ppm", data_dir / GRAFFITI / "2.ppm"
    out = tmp_path / "m.json"
    # run the CLI in a fresh interpreter, then check that serving imported no torch/export/TensorRT code
    driver = (
        "import runpy, sys\n"
        f"sys.argv = ['trt_infer.py', '--engine', {str(sift_nn_engine)!r}, {str(image0)!r}, {str(image1)!r}, "
        f"'--output', {str(out)!r}]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'tensorrt', 'tensorrt_rtx', 'pycuda')"
        " or m.startswith(('trt.onnx', 'trt.models'))]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    from trt.demo import check_matches  # the corner error the demo reports, read from our JSON

    assert len(json.loads(out.read_text())["matches"]) > 50
    error = check_matches(out, data_dir / GRAFFITI / "H_1_2")
    assert error < 3.0, f"mean corner error {error:.2f} px"


@pytest.mark.skipif(bool(cpu_info().bf16_unsupported()), reason=f"no native bf16: {cpu_info().bf16_unsupported()}")
def test_cli_openvino_bf16_is_printed_and_recorded(sift_sharp_engine, images, tmp_path):
    """bf16 asked for, on a model whose gate has not run: it runs, and says both (stdout, notice, JSON)."""
    out = tmp_path / "m.json"
    done = run_cli("--engine", sift_sharp_engine, *images, "--max-keypoints", "512", "--output", out,
                   "--backend", "openvino", "--precision", "bf16")
    assert done.returncode == 0, done.stderr
    assert "openvino bf16, sharp test weights, not trained)" in done.stdout
    notices = [line for line in done.stderr.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "in bf16 (asked for; its bf16 accuracy gate has not passed)" in notices[0]
    record = json.loads(out.read_text())
    assert record["engine"]["runtime_precision"] == "bf16" and len(record["matches"]) > 50


def test_16_bit_and_rgba_images_are_served(sift_engine, data_dir, tmp_path):
    image = cv2.imread(str(data_dir / GRAFFITI / "1.jpg"))[::2, ::2]
    deep, rgba = tmp_path / "deep.png", tmp_path / "rgba.png"
    cv2.imwrite(str(deep), image.astype(np.uint16) * 257)
    cv2.imwrite(str(rgba), cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))
    out = tmp_path / "m.json"
    done = run_cli("--engine", sift_engine, deep, rgba, "--max-keypoints", "128", "--threshold", "0", "--output", out)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["image_size0"] == record["image_size1"] == [400.0, 320.0]
    assert len(record["matches"]) > 0


# --- every user error: one message, exit status 2, no output ------------------------------------------


def bad_image(tmp_path: Path, kind: str, data_dir: Path) -> Path:
    path = tmp_path / "bad.jpg"
    if kind == "missing":
        return tmp_path / "absent.jpg"
    if kind == "corrupt":
        path.write_bytes((data_dir / GRAFFITI / "1.jpg").read_bytes()[:600])
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "tiny":
        path = tmp_path / "tiny.png"
        cv2.imwrite(str(path), np.zeros((1, 1), np.uint8))
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "absent\\.jpg.*(not exist|no such)"),
        ("corrupt", "image .*bad\\.jpg"),
        ("text", "image .*bad\\.jpg"),
        ("tiny", "tiny\\.png.*too small"),
    ],
)
@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_bad_images_fail_cleanly(sift_engine, images, data_dir, tmp_path, kind, message, backend):
    image = bad_image(tmp_path, kind, data_dir)
    out, viz = tmp_path / "out" / "m.json", tmp_path / "out" / "m.png"
    done = run_cli("--engine", sift_engine, images[0], image, "--output", out, "--viz", viz, "--backend", backend)
    assert_matches(error_line(done), message)
    assert not (tmp_path / "out").exists()  # nor the folder made for them (a failed run leaves nothing)


def assert_matches(line: str, pattern: str) -> None:
    import re

    assert re.search(pattern, line), line


def test_missing_engine(images, tmp_path):
    out = tmp_path / "m.json"
    done = run_cli("--engine", tmp_path / "absent.engine", *images, "--output", out)
    assert_matches(error_line(done), "engine .*absent.engine does not exist")
    assert not out.exists()


@pytest.mark.parametrize(
    "case, backend, message",
    [
        ("truncated", "auto", "truncated .*rebuild"),
        ("truncated", "openvino", "truncated .*rebuild"),
        ("replaced", "openvino", "does not match its manifest .*\\(sha256 differs\\).*rebuild"),
        ("other-version", "tensorrt", "built with tensorrt-rtx 1.0.0.1 but this machine runs tensorrt-rtx .*rebuild"),
        ("other-gpu", "tensorrt", "GPU"),
        ("no-gpu", "tensorrt", "no CUDA GPU was found.*--backend onnxruntime"),
        ("onnx-missing", "openvino", "source ONNX at .*gone.onnx is missing.*--onnx"),
        ("onnx-changed", "onnxruntime", "not the ONNX the engine was built from"),
        ("onnx-changed", "openvino", "not the ONNX the engine was built from"),
        ("manifest-corrupt", "auto", "corrupt engine manifest"),
    ],
)
def test_engine_problems_fail_cleanly(sift_nn_engine, images, tmp_path, case, backend, message):
    if case in ("other-gpu", "no-gpu"):
        from trt.gpu import cuda_devices

        if cuda_devices():
            pytest.skip("this machine has a GPU")
    folder = tmp_path / "engine"
    extra = []
    if case == "truncated":
        engine = engine_copy(sift_nn_engine, folder, link=False)
        engine.write_bytes(engine.read_bytes()[: 1 << 20])
    elif case == "replaced":
        engine = engine_copy(sift_nn_engine, folder, link=False)
        data = bytearray(engine.read_bytes())
        data[len(data) // 2] ^= 0xFF
        engine.write_bytes(bytes(data))
    elif case == "other-version":
        engine = engine_copy(sift_nn_engine, folder, builder={"version": "1.0.0.1"})
    elif case == "other-gpu":
        engine = engine_copy(sift_nn_engine, folder, target={"compute_capability": "5.0"})
    elif case == "no-gpu":
        engine = sift_nn_engine
    elif case == "onnx-missing":
        engine = engine_copy(sift_nn_engine, folder, onnx={"path": "gone.onnx", "absolute": None})
    elif case == "onnx-changed":
        engine = sift_nn_engine
        changed = tmp_path / "changed.onnx"
        changed.write_bytes(Path(json.loads(Path(f"{engine}.json").read_text())["onnx"]["absolute"]).read_bytes() + b"\0")
        extra = ["--onnx", changed]
    elif case == "manifest-corrupt":
        engine = engine_copy(sift_nn_engine, folder)
        Path(f"{engine}.json").write_text("{ not json")
    out = tmp_path / "out.json"
    done = run_cli("--engine", engine, *images, "--backend", backend, "--output", out, *extra)
    assert_matches(error_line(done), message)
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--output", "m.txt"], "name it .json or .npz"),
        (["--viz", "m.txt"], "name it with an image suffix OpenCV writes"),
        (["--backend", "cuda"], "invalid choice"),
        (["--precision", "fp16"], "invalid choice"),
        (["--backend", "onnxruntime", "--precision", "bf16"], "precision bf16 is an OpenVINO setting"),
        (["--max-keypoints", "1"], "from 2 to 1048576"),
    ],
)
def test_bad_flags_fail_before_any_work(sift_nn_engine, images, tmp_path, args, message):
    done = run_cli("--engine", sift_nn_engine, *images, *args, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_pairs_file(sift_nn_engine, tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a.jpg b.jpg c.jpg\n")
    out = tmp_path / "out"
    assert_matches(error_line(run_cli("--engine", sift_nn_engine, "--pairs", pairs, "--output-dir", out)),
                   "pairs.txt:1: expected two image paths")
    pairs.write_text("a.jpg b.jpg\n")
    assert_matches(error_line(run_cli("--engine", sift_nn_engine, "--pairs", pairs, "--output-dir", out)),
                   "pairs.txt:1: no image at .*a.jpg")
    assert not out.exists() or not any(out.iterdir())
