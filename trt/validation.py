"""The one layer that checks what users hand the project: flags, paths, images, features, thresholds, manifests.

Every check raises the project's own exceptions (``trt.errors``) with a message that says what is wrong
and what is allowed, so that no bad value reaches OpenCV, ONNX Runtime or TensorRT, where it would end
in a traceback, an allocation of gigabytes, or matches that are silently wrong. The command-line scripts
use the ``*_arg`` functions as argparse ``type=`` validators: a bad flag is refused before any work.

Limits (the README's "Reliability" section states them too):

- images: at least ``MIN_IMAGE_SIDE`` pixels on the shorter side, also after resizing; at most
  ``max_pixels()`` pixels (``DEFAULT_MAX_PIXELS`` unless raised with ``pixel_limit`` / ``--max-pixels``,
  up to what OpenCV decodes), read from the file header before anything is decoded;
- keypoints per image (``--max-keypoints``): ``MIN_KEYPOINTS`` to ``MAX_KEYPOINTS``;
- ``--resize``: 0 (the original size) or ``MIN_RESIZE`` to ``MAX_RESIZE`` pixels on the long side;
- the match threshold: 0 <= threshold < 1 (match scores lie in (0, 1]; a pair is kept above it);
- features: finite numbers only, keypoints (N, 2) within the image grown by its own size on each side,
  as many descriptors (N, D) as keypoints with the model's D, image_size two numbers >= 1. A bad row is
  refused by number, never passed on to poison the whole pair.

A manifest is checked against a declarative schema (``Record``, ``ListOf``, ... below; the table itself
is ``trt.engine.manifest.SCHEMA``).
"""

import argparse
import contextlib
import contextvars
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from trt.errors import ContractError, ImageError, UserError
from trt.fileio import check_regular_file
from trt.features.base import Features

# -- limits ------------------------------------------------------------------------------------------

MIN_IMAGE_SIDE = 16  # pixels; SIFT needs room for its 16x16 descriptor window and a few octaves
DEFAULT_MAX_PIXELS = 100_000_000  # decoding takes about 13 bytes per pixel: 1.3 GB at the limit
# OpenCV refuses to decode more pixels than this (its CV_IO_MAX_IMAGE_PIXELS), or sides over 2^20.
OPENCV_MAX_PIXELS_VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"
OPENCV_DEFAULT_MAX_PIXELS = 1 << 30
OPENCV_MAX_SIDE = 1 << 20
MIN_KEYPOINTS = 2  # a side with fewer gives an empty result
MAX_KEYPOINTS = 1 << 20  # per image; OpenCV takes a C int, and no engine profile holds more
# SIFT costs about 270 bytes per pixel of the image it runs on (measured): 4.5 GB at 4096 x 4096.
# Below 64 pixels it finds next to nothing (3 test photos: 26-62 keypoints at 64, 0-2 at 16).
MIN_RESIZE, MAX_RESIZE = 64, 4096
THRESHOLD_RANGE = "0 <= threshold < 1"

_MAX_PIXELS = contextvars.ContextVar("max_pixels", default=DEFAULT_MAX_PIXELS)


def opencv_max_pixels() -> int:
    """The most pixels OpenCV decodes in this process (``OPENCV_IO_MAX_IMAGE_PIXELS``, default 2^30)."""
    try:
        return int(os.environ.get(OPENCV_MAX_PIXELS_VARIABLE, OPENCV_DEFAULT_MAX_PIXELS))
    except ValueError:
        return OPENCV_DEFAULT_MAX_PIXELS


def max_pixels() -> int:
    """The pixel limit images are read under here: ``DEFAULT_MAX_PIXELS`` unless ``pixel_limit`` set another."""
    return _MAX_PIXELS.get()


@contextlib.contextmanager
def pixel_limit(limit: int) -> Iterator[int]:
    """Read images under another pixel limit inside the with-block (this thread and context only).

    Work handed to other threads or processes does not see it: pass ``max_pixels`` to ``read_image`` there.
    """
    token = _MAX_PIXELS.set(check_max_pixels(limit))
    try:
        yield _MAX_PIXELS.get()
    finally:
        _MAX_PIXELS.reset(token)


# -- numbers and paths -----------------------------------------------------------------------------------


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_integer(value, what: str, minimum: int, maximum: int) -> int:
    """``value`` as an int, if it is an integer in [minimum, maximum]."""
    if not _is_integer(value) or not minimum <= value <= maximum:
        raise UserError(f"{what} must be an integer from {minimum} to {maximum}, not {value!r}")
    return int(value)


def check_threshold(value) -> float:
    """The match score threshold as a float: a finite number with 0 <= threshold < 1.

    Scores lie in (0, 1] and a match is kept above the threshold: 0 keeps every mutual match, and 1 or
    more would keep none; the upper bound holds for the float32 the engine receives too.
    """
    if not _is_real(value) or not (0 <= value and _as_float32(value) < 1):
        raise UserError(
            f"the threshold must be a number with {THRESHOLD_RANGE} (match scores lie in (0, 1]), not {value!r}"
        )
    return float(value)


def _as_float32(value) -> np.float32:
    with np.errstate(over="ignore"):
        try:
            return np.float32(value)
        except OverflowError:  # an int beyond any float
            return np.float32(np.inf)


def check_max_keypoints(value: Optional[int], what: str = "max_keypoints") -> Optional[int]:
    """Keypoints kept per image: None (what the engine holds) or ``MIN_KEYPOINTS``..``MAX_KEYPOINTS``."""
    return None if value is None else check_integer(value, what, MIN_KEYPOINTS, MAX_KEYPOINTS)


def check_resize(value: Optional[int], what: str = "resize") -> Optional[int]:
    """Long side of the image SIFT runs on: None (the original size) or ``MIN_RESIZE``..``MAX_RESIZE``."""
    if value is None:
        return None
    if not _is_integer(value) or not MIN_RESIZE <= value <= MAX_RESIZE:
        raise UserError(
            f"{what} must be None (the original size) or a long side of {MIN_RESIZE} to {MAX_RESIZE} pixels, "
            f"not {value!r}"
        )
    return int(value)


def check_max_pixels(value: int, what: str = "the pixel limit") -> int:
    """A pixel limit: at least one image of the minimum size, at most what OpenCV decodes."""
    ceiling = opencv_max_pixels()
    if _is_integer(value) and value > ceiling:
        raise UserError(
            f"{what} {value} is above the {ceiling} pixels OpenCV decodes "
            f"(set {OPENCV_MAX_PIXELS_VARIABLE} before starting Python to raise that)"
        )
    return check_integer(value, what, MIN_IMAGE_SIDE**2, ceiling)


def check_path(value, what: str = "the path") -> Path:
    """A path given as text: not empty (``Path("")`` would silently mean the current folder), no NUL."""
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if not isinstance(value, (str, os.PathLike)):
        raise UserError(f"{what} must be a path, not {value!r}")
    text = os.fspath(value)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text:
        raise UserError(f"{what} is empty: give a file path")
    if "\0" in text:
        raise UserError(f"{what} {text!r} contains a NUL character")
    return Path(text)


def check_input_file(value, what: str) -> Path:
    """A path that must name an existing regular file (``trt.fileio.check_regular_file``)."""
    return check_regular_file(check_path(value, what), what)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a symlink loop, a path too long, ...
        return a.absolute() == b.absolute()


def check_distinct_paths(outputs: dict, inputs: dict) -> None:
    """Refuse an output that is an input or another output (data loss); None entries are skipped.

    ``outputs`` and ``inputs``: what each path is (for the message) -> path.
    """
    seen = [(what, Path(path)) for what, path in inputs.items() if path is not None]
    for what, path in outputs.items():
        if path is None:
            continue
        path = Path(path)
        for other_what, other in seen:
            if _same_file(path, other):
                raise UserError(f"{what} {path} is the same file as {other_what} {other}: it would be overwritten; "
                                "choose another path")
        seen.append((what, path))


# -- argparse adapters: the CLIs' type= validators ----------------------------------------------------


def _argument(parse: Callable[[str], object], name: str) -> Callable[[str], object]:
    """An argparse ``type=``: a refusal becomes argparse's own error (usage line, exit status 2)."""

    def convert(text: str):
        try:
            return parse(text)
        except UserError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = name
    return convert


# Values given as text (flags, HTTP form fields): a bad one is a UserError.


def parse_int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise UserError(f"expected an integer, not {text!r}") from None


def parse_threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"the threshold must be a number with {THRESHOLD_RANGE}, not {text!r}") from None
    return check_threshold(value)


def check_confidence(value: float, name: str) -> float:
    """A depth or width confidence of adaptive LightGlue: a share in (0, 1], or -1 to disable it."""
    if value != -1 and not (isinstance(value, (int, float)) and 0 < value <= 1):
        raise UserError(f"{name} {value} is outside (0, 1]: give a share in (0, 1], or -1 to disable")
    return float(value)


def parse_confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"expected a share in (0, 1] or -1, not {text!r}") from None
    return check_confidence(value, "the confidence")


def parse_resize(text: str) -> int:
    value = parse_int(text)
    if value != 0 and not MIN_RESIZE <= value <= MAX_RESIZE:
        raise UserError(f"the long side must be 0 (the original size) or {MIN_RESIZE} to {MAX_RESIZE} pixels, "
                        f"not {value}")
    return value


# argparse prefixes their messages with "argument --flag: ".
path_arg = _argument(check_path, "path")
threshold_arg = _argument(parse_threshold, "threshold")
max_keypoints_arg = _argument(lambda text: check_max_keypoints(parse_int(text), "the keypoint count"), "max_keypoints")
resize_arg = _argument(parse_resize, "resize")
confidence_arg = _argument(parse_confidence, "confidence")
max_pixels_arg = _argument(lambda text: check_max_pixels(parse_int(text)), "max_pixels")


def positive_int_arg(maximum: int) -> Callable[[str], int]:
    """An argparse ``type=`` for an integer from 1 to ``maximum``."""
    return _argument(lambda text: check_integer(parse_int(text), "the value", 1, maximum), "integer")


# -- images --------------------------------------------------------------------------------------------


def check_image_size(width: int, height: int, name: str, limit: Optional[int] = None) -> None:
    """An image of width x height (from its header, or decoded) must be usable: not too small, not too big."""
    limit = max_pixels() if limit is None else check_max_pixels(limit)
    if width * height > limit:
        raise ImageError(
            f"{name} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), more than the limit of "
            f"{limit} pixels: raise it with --max-pixels (Python: trt.validation.pixel_limit)"
        )
    if max(width, height) > OPENCV_MAX_SIDE:
        raise ImageError(f"{name} is {width}x{height} pixels: OpenCV decodes no side longer than {OPENCV_MAX_SIDE}")
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageError(
            f"{name} is {width}x{height} pixels: too small for features, "
            f"the shorter side must be at least {MIN_IMAGE_SIDE} pixels"
        )


def check_image(image, name: str = "the image", limit: Optional[int] = None) -> None:
    """Raise ``ImageError`` unless ``image`` is a uint8 (H, W) or (H, W, 3) array of usable size."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"{name}: expected uint8 samples, got {image.dtype} (use read_image to load files)")
    check_channels(image, name)
    check_image_size(image.shape[1], image.shape[0], name, limit)


def check_channels(image: np.ndarray, name: str = "the image") -> None:
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ImageError(f"{name}: expected shape (H, W) grayscale or (H, W, 3) RGB, got {image.shape}")


def check_resized_size(size: tuple[int, int], resized: tuple[int, int], resize: int, name: str = "the image") -> None:
    """Resizing the long side to ``resize`` must leave the shorter side usable (a very thin image would not)."""
    if min(resized) < MIN_IMAGE_SIDE:
        raise ImageError(
            f"{name} is {size[0]}x{size[1]} pixels: with its long side resized to {resize} it would be "
            f"{resized[0]}x{resized[1]}, too thin for features (the shorter side must be at least {MIN_IMAGE_SIDE} "
            "pixels); match it at its original size (--resize 0, resize=None) or a larger resize"
        )


# -- features ------------------------------------------------------------------------------------------


def _numeric_array(value, what: str, ndim: int) -> np.ndarray:
    """``value`` as a float32 array of ``ndim`` dimensions; integers are taken, anything else refused."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged nested lists, objects numpy cannot hold
        raise ContractError(f"{what}: not an array of numbers ({error})") from None
    if array.dtype.kind not in "iuf":
        raise ContractError(f"{what}: expected numbers, got an array of {array.dtype}")
    if array.ndim != ndim:
        raise ContractError(f"{what}: expected {ndim} dimensions, got shape {array.shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow becomes inf, refused below by row
        return np.ascontiguousarray(array, dtype=np.float32)


def _refuse_non_finite(array: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"{array[first]} in column {first[1]}" if array.ndim > 1 else f"{array[first]}"
        rows = int(bad.reshape(len(array), -1).any(axis=1).sum())
        raise ContractError(
            f"{what} row {first[0]} is not finite ({where})" + (f", and {rows - 1} more row(s)" if rows > 1 else "")
            + ": remove those features, or fix the extractor"
        )


def _image_size(value, name: str) -> tuple[float, float]:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        array = np.asarray(None)
    if array.dtype.kind not in "iuf" or array.shape != (2,):
        raise ContractError(f"{name}: image_size must be (width, height), two numbers, not {value!r}")
    width, height = (float(v) for v in array)
    if not (math.isfinite(width) and math.isfinite(height) and width >= 1 and height >= 1):
        raise ContractError(f"{name}: image_size must be two finite numbers of at least 1 pixel, not {value!r}")
    return width, height


def check_features(
    features, name: str = "features", descriptor_dim: Optional[int] = None, scale_ori: Optional[bool] = None
) -> Features:
    """A checked copy of ``features`` in float32, or a ContractError naming the field and the first bad row.

    ``descriptor_dim`` and ``scale_ori``: what the model takes. Scales and orientations a model does not
    read are dropped; a model that reads them refuses features without them.
    """
    if not isinstance(features, Features):
        raise ContractError(f"{name}: expected trt.features.base.Features or an image, got {type(features).__name__}")
    keypoints = _numeric_array(features.keypoints, f"{name}: keypoints", 2)
    count = len(keypoints)
    if keypoints.shape[1] != 2:
        raise ContractError(f"{name}: keypoints must have shape (N, 2), (x, y) per row, not {keypoints.shape}")
    descriptors = _numeric_array(features.descriptors, f"{name}: descriptors", 2)
    if len(descriptors) != count:
        raise ContractError(f"{name}: {count} keypoints but {len(descriptors)} descriptors; they must pair up row by row")
    if descriptor_dim is not None and descriptors.shape[1] != descriptor_dim:
        raise ContractError(f"{name}: {descriptors.shape[1]}-D descriptors, but the model takes {descriptor_dim}-D")
    width, height = _image_size(features.image_size, name)

    def vector(field: str) -> Optional[np.ndarray]:
        value = getattr(features, field)
        if value is None:
            return None
        array = _numeric_array(value, f"{name}: {field}", 1)
        if len(array) != count:
            raise ContractError(f"{name}: {len(array)} {field} for {count} keypoints; give one per keypoint")
        _refuse_non_finite(array, f"{name}: {field}")
        return array

    scores = vector("scores")
    scales, oris = (vector("scales"), vector("oris")) if scale_ori is not False else (None, None)
    if (scales is None) != (oris is None):
        raise ContractError(f"{name}: give scales and orientations together, or neither")
    if scale_ori and scales is None:
        raise ContractError(f"{name}: the model reads scales and orientations (a DoG detector's), these features have none")
    _refuse_non_finite(keypoints, f"{name}: keypoints")
    _refuse_non_finite(descriptors, f"{name}: descriptors")
    outside = ((keypoints < -np.array([width, height])) | (keypoints > 2 * np.array([width, height]))).any(axis=1)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise ContractError(
            f"{name}: keypoint row {row} {tuple(keypoints[row].tolist())} lies outside the {width:g}x{height:g} image "
            "by more than the image's size: keypoints are (x, y) pixels of the original image, and image_size "
            "its (width, height)"
        )
    return Features(keypoints, descriptors, (width, height), scores, scales, oris, dict(features.extra))


def check_pairs(pairs) -> list[tuple]:
    """``pairs`` as a list of 2-tuples (of images or Features), or a UserError naming the bad one."""
    if isinstance(pairs, (str, bytes, os.PathLike, np.ndarray, Features)) or not isinstance(pairs, Iterable):
        raise UserError(f"pairs must be a list of (image0, image1) pairs, not {type(pairs).__name__}")
    checked = []
    for index, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes, np.ndarray, Features)) or not isinstance(pair, Sequence):
            raise UserError(f"pair {index} must be a pair (image0, image1), not {type(pair).__name__}")
        if len(pair) != 2:
            raise UserError(f"pair {index} has {len(pair)} member(s): a pair is (image0, image1)")
        checked.append(tuple(pair))
    return checked


# -- engines -------------------------------------------------------------------------------------------


def check_matcher_manifest(engine: Path, manifest) -> None:
    """An engine to be served as a matcher must be one: a manifest without the matcher layout is refused."""
    if manifest is None or (manifest.descriptor_dim is not None and manifest.extractor_network is None):
        return
    if manifest.extractor_network is not None:
        raise ContractError(
            f"engine {engine} is a feature extractor ({manifest.extractor_network.get('name')}), not a LightGlue "
            "matcher: give the matcher engine (build_engine.py --extractor-engine links this one to it)"
        )
    inputs = ", ".join(f"{t.name} {list(t.shape)}" for t in manifest.inputs) or "unknown"
    raise ContractError(
        f"engine {engine} is not a LightGlue matcher: its manifest records the inputs {inputs} "
        "(a feature extractor?); give the engine built from the matcher ONNX (export.py)"
    )


# -- JSON schemas (the manifest's table is trt.engine.manifest.SCHEMA) ---------------------------------


class SchemaError(ValueError):
    """A JSON document that does not follow its schema; the message names the path of the bad value."""

    def __init__(self, message: str, where: str = ""):
        super().__init__(message)
        self.where = where


def _show(value) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


class Schema:
    """What one JSON value must be; ``check(value, where)`` raises SchemaError naming ``where``."""

    description = "a value"

    def check(self, value, where: str) -> None:
        raise NotImplementedError

    def fail(self, value, where: str):
        raise SchemaError(f"{where}: expected {self.description}, got {_show(value)}", where)


class Kind(Schema):
    """A scalar that passes ``test``."""

    def __init__(self, description: str, test: Callable[[object], bool]):
        self.description, self.test = description, test

    def check(self, value, where):
        if not self.test(value):
            self.fail(value, where)


class AnyOf(Schema):
    def __init__(self, *options: Schema):
        self.options = options
        self.description = " or ".join(option.description for option in options)

    def check(self, value, where):
        errors = []
        for option in self.options:
            try:
                option.check(value, where)
                return
            except SchemaError as error:
                errors.append(error)
        deepest = max(errors, key=lambda error: len(error.where))
        if len(deepest.where) > len(where):  # the value has an option's form but is wrong inside: say where
            raise deepest
        self.fail(value, where)


class ListOf(Schema):
    def __init__(self, item: Schema, min_length: int = 0, length: Optional[int] = None):
        self.item, self.min_length, self.length = item, min_length, length
        if length is not None:
            self.description = f"a list of {length} items, each {item.description}"
        else:
            self.description = f"a {'non-empty ' if min_length else ''}list, each item {item.description}"

    def check(self, value, where):
        if not isinstance(value, list) or len(value) < self.min_length or (
            self.length is not None and len(value) != self.length
        ):
            self.fail(value, where)
        for index, item in enumerate(value):
            self.item.check(item, f"{where}[{index}]")


class MapOf(Schema):
    """An object whose keys are any strings and whose values all follow ``value``."""

    def __init__(self, value: Schema):
        self.value = value
        self.description = f"an object of {value.description}"

    def check(self, value, where):
        if not isinstance(value, dict):
            self.fail(value, where)
        for key, item in value.items():
            self.value.check(item, f"{where}.{key}")


class Record(Schema):
    """An object with named fields; ``optional`` ones may be absent, unknown ones are ignored (newer writers)."""

    description = "an object"

    def __init__(self, fields: dict, optional: Iterable[str] = ()):
        self.fields, self.optional = dict(fields), frozenset(optional)

    def check(self, value, where):
        if not isinstance(value, dict):
            self.fail(value, where)
        missing = [name for name in self.fields if name not in value and name not in self.optional]
        if missing:
            raise SchemaError(f"{where + ': ' if where else ''}missing field(s) {', '.join(missing)}", where)
        for name, schema in self.fields.items():
            if name in value:
                schema.check(value[name], f"{where}.{name}" if where else name)


class Ordered(Schema):
    """A list of ``length`` values following ``item``, in non-decreasing order (min <= opt <= max)."""

    def __init__(self, item: Schema, length: int):
        self.inner = ListOf(item, length=length)
        self.description = f"{self.inner.description} in non-decreasing order"

    def check(self, value, where):
        self.inner.check(value, where)
        if any(a > b for a, b in zip(value, value[1:])):
            self.fail(value, where)


def Nullable(schema: Schema) -> Schema:  # noqa: N802 (reads as a type, like the classes above)
    return AnyOf(NULL, schema)


NULL = Kind("null", lambda v: v is None)
TEXT = Kind("a string", lambda v: isinstance(v, str))
NAME = Kind("a non-empty string", lambda v: isinstance(v, str) and v != "")
BOOLEAN = Kind("true or false", lambda v: isinstance(v, bool))
INTEGER = Kind("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
POSITIVE_INTEGER = Kind("a positive integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0)
NUMBER = Kind("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
SHA256 = Kind("a sha256 (64 hex digits)", lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None)
ANY = Kind("any value", lambda v: True)


def constant(expected) -> Schema:
    return Kind(json.dumps(expected), lambda v: v == expected)
