"""Helpers for the bad-input tests (test_validation.py, test_properties.py): a tiny real engine, images,
command-line runs in this process, and a record of which files a run changed.

The engine is real: the stand-in matcher of test_runtime.py (mutual nearest neighbours of the
descriptors, the full contract) built by tensorrt-rtx with a small profile, with the manifest
build_engine writes, served through the ONNX Runtime fallback as trt_infer.py serves any engine here.
"""

import contextlib
import hashlib
import importlib.util
import io
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from test_runtime import make_standin_onnx
from trt.cli import run

ROOT = Path(__file__).resolve().parents[1]
TINY_PROFILES = '[batch]\nmin = 1\nopt = 1\nmax = 2\n\n[[profile]]\nname = "n256"\nkeypoints = { min = 1, opt = 256, max = 256 }\n'


def tiny_engine(folder: Path) -> Path:
    """``folder/tiny.engine`` with its manifest, built from the stand-in matcher ``folder/tiny.onnx``."""
    from trt.engine.builder import build_engine

    folder.mkdir(parents=True, exist_ok=True)
    onnx = make_standin_onnx(folder / "tiny.onnx")
    (folder / "tiny.toml").write_text(TINY_PROFILES)
    return build_engine(onnx, folder / "tiny.toml", folder / "tiny.engine", builder="tensorrt-rtx", progress=False)


def texture(seed: int, shape=(96, 128)) -> np.ndarray:
    """A uint8 grayscale texture (blurred noise): SIFT finds a few dozen keypoints in it, quickly."""
    noise = np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2.0) * 3 - 255, 0, 255).astype(np.uint8)


def write_png(path: Path, image: np.ndarray) -> Path:
    ok, data = cv2.imencode(".png", image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def blank_png(width: int, height: int) -> bytes:
    """A valid PNG of width x height black pixels, 1 bit deep: small on disk however many pixels it has."""
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte, then the packed row
    compressor = zlib.compressobj(1)
    rows_per_chunk = max(1, (1 << 22) // len(row))
    chunks = [compressor.compress(row * min(rows_per_chunk, height - start)) for start in range(0, height, rows_per_chunk)]
    data = b"".join(chunks) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def script(name: str):
    """A top-level script (``trt_infer``, ``build_engine``) as a module, to call its ``main`` in this process."""
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class CliRun:
    code: int  # exit status: 0, 2 for a user error (argparse's too)
    stdout: str
    stderr: str
    value: object = None  # what main returned
    prog: str = ""  # the script's name, as argparse starts its errors with it

    @property
    def error(self) -> str:
        """The one message a failed run ends with ("error: ...", possibly over several lines: a file name
        may hold a line break), checked to be the only one."""
        assert self.code == 2, (self.code, self.stderr)
        starts = [i for i, line in enumerate(self.stderr.split("\n")) if line.startswith(("error: ", f"{self.prog}: error: "))]
        assert len(starts) == 1 and "Traceback" not in self.stderr, self.stderr
        return "\n".join(self.stderr.split("\n")[starts[0]:]).strip()


def cli(main: Callable, argv: list, cwd: Optional[Path] = None) -> CliRun:
    """Run a script's ``main(argv)`` in this process as its ``__main__`` does (``trt.cli.run``).

    A UserError ends in exit status 2 and one message, argparse's refusals likewise; any other exception
    propagates, as it would end the real script in a traceback.
    """
    out, err, value = io.StringIO(), io.StringIO(), []
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(cwd or Path.cwd()):
        try:
            run(lambda: value.append(main([str(a) for a in argv])))
            code = 0
        except SystemExit as exit:
            code = exit.code
    prog = Path(sys.argv[0]).name  # argparse's default prog
    return CliRun(code, out.getvalue(), err.getvalue(), value[0] if value else None, prog)


# The caches serving keeps beside an engine on purpose: OpenVINO's compiled models, tensorrt-rtx's kernels.
SERVING_CACHES = (".openvino-cache", ".rtxcache")


def snapshot(folder: Path, skip_caches: bool = False) -> dict[str, str]:
    """Every file below ``folder`` (relative path -> sha256): what a run may not change unasked; with
    ``skip_caches``, but for the serving caches."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        for path in sorted(folder.rglob("*"))
        if not (skip_caches and path.relative_to(folder).parts[0].endswith(SERVING_CACHES))
    }
