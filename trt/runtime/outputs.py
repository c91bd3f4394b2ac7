"""What trt_infer.py writes: matches as JSON or npz, and a side-by-side picture of them (any image format
OpenCV writes: .png, .jpg, .webp, ...).

Every writer renders to bytes first and then writes atomically (``trt.fileio``): a failed run leaves
no file, never a partial one. The layout, for one pair (JSON keys and npz arrays alike)::

    image0, image1            paths (or "" for arrays)
    image_size0, image_size1  (width, height)
    keypoints0 [N0, 2], keypoints1 [N1, 2]   (x, y) original-image pixels, pixel centres at integers
    matches [K, 2]            (index in keypoints0, index in keypoints1)
    scores [K]                match scores
    threshold                 the score threshold used
    timings                   seconds per stage (JSON object; in npz a JSON string)
    engine                    engine summary: file, backend, builder, precision, profiles, weights (idem)
    layers                    transformer layers run (9 at full depth; fewer where adaptive depth stopped)
    pruned0, pruned1          keypoints of each image pruned by adaptive width (their matches are none)

``engine.weights`` (``{"kind", "source"}``, see ``trt.engine.manifest``) says whether the matches come from
trained weights; ``weights_label`` puts it in words for the summary line and the picture.
"""

import io
import json
import zipfile
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from trt.errors import UserError
from trt.fileio import read_file_bytes, write_bytes_atomic
from trt.runtime.matcher import MatchResult

FORMATS = {".json": "json", ".npz": "npz"}
WEIGHTS_LABELS = {
    "official": "official weights",
    "file": "weights from a checkpoint file ({source}), not the official one",
    "nearest-neighbour": "nearest-neighbour test weights, not trained",
    "sharp": "sharp test weights, not trained",
    "random": "random test weights, not trained",
}


def weights_label(summary: dict) -> str:
    """"official weights", "nearest-neighbour test weights, not trained", ...: the weights behind a result
    (``summary``: its ``engine``), and its learned extractor's when those differ in kind."""

    def label(weights: Optional[dict]) -> str:
        if not weights:
            return "weights not recorded (an engine without its manifest, or an ONNX not exported by export.py)"
        template = WEIGHTS_LABELS.get(weights.get("kind"), "{kind} weights")
        source = weights.get("source") or "no hash recorded"
        if source.startswith("sha256:") and len(source) > 19:
            source = source[:19] + "…"  # enough to tell files apart on one line; the JSON has all of it
        return template.format(kind=weights.get("kind"), source=source)

    matcher = summary.get("weights")
    extractor = (summary.get("extractor_engine") or {}).get("weights")
    if extractor is None or (matcher or {}).get("kind") == extractor.get("kind"):
        return label(matcher)
    return f"matcher: {label(matcher)}; extractor: {label(extractor)}"


def output_format(path: Path) -> str:
    """``json`` or ``npz`` from the file's suffix; a UserError for any other."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UserError(f"cannot tell the format of {path}: name it .json or .npz")
    return fmt


def result_record(result: MatchResult, image0: str = "", image1: str = "", threshold: Optional[float] = None) -> dict:
    """The result as plain Python values (lists, floats), ready for JSON."""
    return {
        "image0": str(image0),
        "image1": str(image1),
        "image_size0": [float(v) for v in result.image_size0],
        "image_size1": [float(v) for v in result.image_size1],
        "keypoints0": result.keypoints0.tolist(),
        "keypoints1": result.keypoints1.tolist(),
        "matches": result.matches.tolist(),
        "scores": result.scores.tolist(),
        "threshold": threshold,
        "timings": {k: float(v) for k, v in result.timings.items()},
        "engine": result.engine,
        "layers": int(result.layers),
        "pruned0": int(result.pruned0),
        "pruned1": int(result.pruned1),
    }


def encode_json(record: dict) -> bytes:
    # NaN and Infinity are not JSON: inputs are checked so that none can reach a result (trt.validation)
    return (json.dumps(record, indent=1, allow_nan=False) + "\n").encode()


def encode_npz(record: dict) -> bytes:
    """npz without pickled objects: arrays as arrays, the rest as JSON strings or plain numbers."""
    arrays = {
        "image0": np.str_(record["image0"]),
        "image1": np.str_(record["image1"]),
        "image_size0": np.asarray(record["image_size0"], np.float32),
        "image_size1": np.asarray(record["image_size1"], np.float32),
        "keypoints0": np.asarray(record["keypoints0"], np.float32).reshape(-1, 2),
        "keypoints1": np.asarray(record["keypoints1"], np.float32).reshape(-1, 2),
        "matches": np.asarray(record["matches"], np.int64).reshape(-1, 2),
        "scores": np.asarray(record["scores"], np.float32),
        "threshold": np.float32(np.nan if record["threshold"] is None else record["threshold"]),
        "timings": np.str_(json.dumps(record["timings"])),
        "engine": np.str_(json.dumps(record["engine"])),
        "layers": np.int32(record["layers"]),
        "pruned0": np.int32(record["pruned0"]),
        "pruned1": np.int32(record["pruned1"]),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def encode_matches(record: dict, fmt: str) -> bytes:
    return encode_json(record) if fmt == "json" else encode_npz(record)


def write_matches(path: Path, result: MatchResult, image0: str = "", image1: str = "", threshold: Optional[float] = None) -> Path:
    """Write one pair's matches to ``path`` (.json or .npz), atomically; return the path."""
    fmt = output_format(path)
    return write_bytes_atomic(Path(path), encode_matches(result_record(result, image0, image1, threshold), fmt))


def score_colors(scores: np.ndarray) -> np.ndarray:
    """BGR colour per score in [0, 1]: red (low) through yellow to green (high)."""
    s = np.clip(np.asarray(scores, np.float32), 0, 1)
    red = np.where(s < 0.5, 255, 255 * (1 - s) * 2)
    green = np.where(s < 0.5, 255 * s * 2, 255)
    return np.stack([np.zeros_like(s), green, red], axis=1).astype(np.uint8)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W) grayscale or (H, W, 3) RGB (read_image's layouts) as BGR for OpenCV."""
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


def draw_matches(image0: np.ndarray, image1: np.ndarray, result: MatchResult, gap: int = 10,
                 max_lines: int = 150) -> np.ndarray:
    """Both images side by side (BGR), keypoints as dots, matches as lines coloured by score.

    At most ``max_lines`` matches are drawn (an even sample), so the picture stays readable; the caption
    gives the full count.
    """
    left, right = _as_bgr(image0), _as_bgr(image1)
    height = max(left.shape[0], right.shape[0])
    canvas = np.full((height, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    offset = left.shape[1] + gap
    canvas[: right.shape[0], offset:] = right
    shift = 4  # sub-pixel drawing: coordinates in 1/16 pixel

    def point(xy, dx=0.0):
        return (int(round((xy[0] + dx) * (1 << shift))), int(round(xy[1] * (1 << shift))))

    for xy in result.keypoints0:
        cv2.circle(canvas, point(xy), 1 << shift, (255, 160, 0), -1, cv2.LINE_AA, shift)
    for xy in result.keypoints1:
        cv2.circle(canvas, point(xy, offset), 1 << shift, (255, 160, 0), -1, cv2.LINE_AA, shift)
    shown = np.unique(np.linspace(0, len(result.matches) - 1, min(max_lines, len(result.matches))).astype(int))
    for (i, j), color in zip(result.matches[shown], score_colors(result.scores[shown])):
        color = tuple(int(c) for c in color)
        a, b = point(result.keypoints0[i]), point(result.keypoints1[j], offset)
        cv2.line(canvas, a, b, color, 1, cv2.LINE_AA, shift)
        cv2.circle(canvas, a, 3 << shift, color, 1, cv2.LINE_AA, shift)
        cv2.circle(canvas, b, 3 << shift, color, 1, cv2.LINE_AA, shift)
    caption = f"{len(result.keypoints0)} / {len(result.keypoints1)} keypoints, {len(result.matches)} matches"
    if len(shown) < len(result.matches):
        caption += f" ({len(shown)} drawn)"
    top = 0
    for line in (caption, weights_label(result.engine or {})):  # the weights: test weights must not pass for trained
        (width, height), baseline = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)
        cv2.rectangle(canvas, (0, top), (width + 16, top + height + baseline + 12), (0, 0, 0), -1)
        cv2.putText(canvas, line, (8, top + height + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        top += height + baseline + 12
    return canvas


def encode_picture(image_bgr: np.ndarray, path: Path) -> bytes:
    """The picture in the format ``path``'s suffix names (``check_picture_path``)."""
    suffix = Path(path).suffix.lower()
    ok, data = cv2.imencode(suffix, image_bgr)
    if not ok:
        raise UserError(f"OpenCV could not encode the visualisation as {suffix}")
    return data.tobytes()


def check_picture_path(path: Path) -> Path:
    """A visualisation path whose suffix names a format OpenCV writes (.png, .jpg, .webp, .tif, ...)."""
    suffix = Path(path).suffix.lower()
    try:
        writable = bool(suffix) and cv2.haveImageWriter(f"x{suffix}")
    except cv2.error:
        writable = False
    if not writable:
        raise UserError(f"cannot write the visualisation {path}: name it with an image suffix OpenCV writes "
                        "(.png, .jpg, .webp, .tif, .bmp)")
    return Path(path)


def read_matches(path: Path) -> dict:
    """A matches file (.json or .npz) written by ``encode_matches``, with its arrays as numpy arrays.

    Raises ValueError when it cannot be read (a pipe, a folder, ... included) or is not a complete,
    consistent matches file (a KeyError for a missing entry), so a caller can tell a usable file from
    anything else.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path} is not a .json or .npz matches file")
    data = read_file_bytes(path, "matches file", ValueError)  # a pipe or a device put in its place: never read
    if fmt == "json":
        record = json.loads(data)
    else:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                record = {key: npz[key] for key in npz.files}
        except (zipfile.BadZipFile, EOFError) as error:
            raise ValueError(f"{path} is not a complete npz file: {error}") from error
    keypoints0 = np.asarray(record["keypoints0"], np.float32).reshape(-1, 2)
    keypoints1 = np.asarray(record["keypoints1"], np.float32).reshape(-1, 2)
    matches = np.asarray(record["matches"], np.int64).reshape(-1, 2)
    scores = np.asarray(record["scores"], np.float32).reshape(-1)
    if len(scores) != len(matches) or (
        len(matches) and (matches.min() < 0 or matches[:, 0].max() >= len(keypoints0) or matches[:, 1].max() >= len(keypoints1))
    ):
        raise ValueError(f"{path} holds matches that do not fit its keypoints")
    return {
        "image0": str(record["image0"]),
        "image1": str(record["image1"]),
        "image_size0": tuple(float(v) for v in np.asarray(record["image_size0"]).reshape(2)),
        "image_size1": tuple(float(v) for v in np.asarray(record["image_size1"]).reshape(2)),
        "keypoints0": keypoints0,
        "keypoints1": keypoints1,
        "matches": matches,
        "scores": scores,
    }


# -- the engine summary, as command lines print it ----------------------------------------------------------


def backend_label(summary: dict) -> str:
    """"openvino bf16", "onnxruntime", ...: the backend, and the precision where the backend chose one."""
    return " ".join(filter(None, (summary["backend"], summary.get("runtime_precision"))))


def format_device_memory(summary: dict) -> Optional[str]:
    """Device memory each profile holds (TensorRT): activations and I/O buffers, the extractor engine's too;
    None for other backends."""
    mib = lambda n: f"{n / 2**20:.1f}"  # noqa: E731
    lines = []
    for label, memory in (("", summary.get("device_memory")),
                          ("extractor ", (summary.get("extractor_engine") or {}).get("device_memory"))):
        if memory:
            lines.append(f"{label}device memory: " + ", ".join(
                f"{name} {mib(m['activation'] + m['io'])} MiB ({mib(m['activation'])} activations + {mib(m['io'])} "
                "buffers)" for name, m in memory.items()))
    return "\n".join(lines) or None
