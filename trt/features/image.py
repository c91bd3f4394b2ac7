"""Reading images for the feature front-end: numpy and OpenCV only (no torch on the serving side).

Images are uint8 arrays, (H, W) grayscale or (H, W, 3) RGB. Every failure a user can cause (a missing
file, a folder, a file that is not an image, an image too small to hold features) is an ``ImageError``
that names the file.
"""

from pathlib import Path
from typing import Union

import cv2
import numpy as np

from trt.errors import ImageError

MIN_IMAGE_SIDE = 16  # pixels; SIFT needs room for its 16x16 descriptor window and a few octaves

# ANYDEPTH keeps 16-bit data (scaled to 8 bits below, not truncated); ANYCOLOR keeps grayscale files
# single-channel and turns colour-with-alpha into plain colour (the alpha channel is dropped). Unlike
# IMREAD_UNCHANGED, these flags honour the EXIF orientation tag, as the reference's IMREAD_COLOR does,
# so a rotated phone photo comes out the way viewers (and cvg/LightGlue's read_image) show it.
_DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


def read_image(path: Union[str, Path]) -> np.ndarray:
    """The image at ``path`` as uint8: (H, W) for grayscale files, (H, W, 3) RGB for colour ones.

    16-bit images are scaled to 8 bits (value / 257, rounded); an alpha channel is dropped; the EXIF
    orientation is applied. Raises ``ImageError`` when the file is missing, a folder, not a decodable
    image, of an unsupported sample type, or smaller than 16 pixels on its shorter side.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        if path.is_dir():  # IsADirectoryError on POSIX, PermissionError on Windows
            reason = "it is a folder, not an image file"
        elif not path.exists():
            reason = "the file does not exist"
        else:
            reason = error.strerror or str(error)
        raise ImageError(f"cannot read image {path}: {reason}") from None
    if not data:
        raise ImageError(f"cannot read image {path}: the file is empty")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS)
    except cv2.error:
        image = None
    if image is None:
        raise ImageError(f"cannot read image {path}: not an image OpenCV can decode, or the file is corrupt")
    image = _to_uint8(image, path)
    if image.ndim == 3:
        image = np.ascontiguousarray(image[..., ::-1])  # OpenCV's BGR to RGB
    check_image(image, str(path))
    return image


def _to_uint8(image: np.ndarray, path: Path) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        # 65535 / 257 == 255 exactly: the full 16-bit range maps onto the full 8-bit range.
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise ImageError(
        f"cannot use image {path}: its samples are {image.dtype}; only 8-bit and 16-bit images are supported"
    )


def check_image(image: np.ndarray, name: str = "image") -> None:
    """Raise ``ImageError`` unless ``image`` is a uint8 (H, W) or (H, W, 3) array of usable size."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"{name}: expected uint8 samples, got {image.dtype} (use read_image to load files)")
    _check_channels(image, name)
    height, width = image.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise ImageError(
            f"{name} is {width}x{height} pixels: too small for features, "
            f"the shorter side must be at least {MIN_IMAGE_SIDE} pixels"
        )


GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # R, G, B: those of kornia.color.rgb_to_grayscale and cv2.COLOR_RGB2GRAY


def to_grayscale_float(image: np.ndarray) -> np.ndarray:
    """A float32 (H, W) image in [0, 1], computed as the reference SIFT does, without rounding.

    The reference reads every file as RGB, divides by 255 in float32 and applies kornia's
    ``rgb_to_grayscale`` (``r * 0.299 + g * 0.587 + b * 0.114``, in that order); a grayscale input is
    treated as three equal channels, so its float values are exactly the reference's.
    """
    _check_channels(image)
    x = image.astype(np.float32) / np.float32(255)
    r, g, b = (x, x, x) if x.ndim == 2 else (x[..., 0], x[..., 1], x[..., 2])
    w_r, w_g, w_b = (np.float32(w) for w in GRAY_WEIGHTS)
    return w_r * r + w_g * g + w_b * b


def _check_channels(image: np.ndarray, name: str = "image") -> None:
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ImageError(f"{name}: expected shape (H, W) grayscale or (H, W, 3) RGB, got {image.shape}")
