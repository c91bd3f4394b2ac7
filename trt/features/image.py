"""Reading images for the feature front-end: numpy and OpenCV only (no torch on the serving side).

Images are uint8 arrays, (H, W) grayscale or (H, W, 3) RGB. Every failure a user can cause (a missing
file, a folder, a file that is not an image, an image too small to hold features or bigger than the
pixel limit) is an ``ImageError`` that names the file. The size of PNG, JPEG, TIFF, WebP, GIF, BMP and
PNM/PAM/PFM files is read from their header, so an image over the pixel limit is refused before it is
decoded (a 400 KB PNG can hold 20000 x 20000 pixels, 5 GB once decoded); other formats are checked once
decoded (OpenCV itself refuses more than 2^30 pixels).
"""

import re
import struct
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from trt.errors import ImageError
from trt.fileio import read_file_bytes
from trt.validation import MIN_IMAGE_SIDE, check_channels, check_image, check_image_size  # noqa: F401 (re-exported)

# ANYDEPTH keeps 16-bit data (scaled to 8 bits below, not truncated); ANYCOLOR keeps grayscale files
# single-channel and turns colour-with-alpha into plain colour (the alpha channel is dropped). Unlike
# IMREAD_UNCHANGED, these flags honour the EXIF orientation tag, as the reference's IMREAD_COLOR does,
# so a rotated phone photo comes out the way viewers (and cvg/LightGlue's read_image) show it.
_DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


def read_image(path: Union[str, Path], max_pixels: Optional[int] = None) -> np.ndarray:
    """The image at ``path`` as uint8: (H, W) for grayscale files, (H, W, 3) RGB for colour ones.

    16-bit images are scaled to 8 bits (value / 257, rounded); an alpha channel is dropped; the EXIF
    orientation is applied. Raises ``ImageError`` when the file is missing, a folder, not a decodable
    image, of an unsupported sample type, smaller than 16 pixels on its shorter side, or larger than
    ``max_pixels`` (default: ``trt.validation.max_pixels()``), the last two read from the header first.
    """
    path = Path(path)
    return decode_image(read_file_bytes(path, "image", ImageError), f"image {path}", max_pixels)


def decode_image(data: bytes, name: str = "the image", max_pixels: Optional[int] = None) -> np.ndarray:
    """An encoded image (a file's bytes, an upload) as ``read_image`` returns it, with the same checks;
    ``name`` says which image an error is about ("image a.jpg", "image0")."""
    if not data:
        raise ImageError(f"cannot read {name}: the file is empty")
    size = header_size(data)
    if size is not None:
        check_image_size(*size, name, max_pixels)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS)
    except cv2.error as error:
        if "CV_IO_MAX_IMAGE" in str(error):
            raise ImageError(f"cannot read {name}: it has more pixels than OpenCV decodes") from None
        image = None
    if image is None:
        raise ImageError(f"cannot read {name}: not an image OpenCV can decode, or the file is corrupt")
    image = _to_uint8(image, name)
    if image.ndim == 3:
        image = np.ascontiguousarray(image[..., ::-1])  # OpenCV's BGR to RGB
    check_image(image, name, max_pixels)
    return image


def header_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height) from the header of a PNG, JPEG, TIFF, WebP, GIF, BMP or PNM/PAM/PFM file; None for
    other formats and for a header too damaged to read (OpenCV then has the last word)."""
    readers = (
        (b"\x89PNG\r\n\x1a\n", _png_size), (b"\xff\xd8", _jpeg_size), (b"II*\0", _tiff_size), (b"MM\0*", _tiff_size),
        (b"RIFF", _webp_size), (b"GIF8", _gif_size), (b"BM", _bmp_size), (b"P", _pnm_size),
    )
    for magic, reader in readers:
        if data.startswith(magic):
            try:
                return reader(data)
            except (struct.error, IndexError, ValueError):
                return None
    return None


def _png_size(data: bytes) -> Optional[tuple[int, int]]:
    if data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    """The frame header (SOFn) of a JPEG: the first segment that gives the size, after EXIF and tables."""
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            offset += 2
        elif marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before them
            return None
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0-15 (not DHT, JPG, DAC)
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return width, height
        else:
            offset += 2 + struct.unpack(">H", data[offset + 2 : offset + 4])[0]
    return None


def _tiff_size(data: bytes) -> Optional[tuple[int, int]]:
    """ImageWidth (256) and ImageLength (257) of the first image file directory (the page OpenCV reads)."""
    order = "<" if data[:2] == b"II" else ">"
    (directory,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[directory : directory + 2])
    size = {}
    for index in range(count):
        entry = data[directory + 2 + 12 * index : directory + 14 + 12 * index]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            size[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8 : 10 if kind == 3 else 12])[0]
    return (size[256], size[257]) if len(size) == 2 else None


def _webp_size(data: bytes) -> Optional[tuple[int, int]]:
    if data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the frame start code
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14 bits each, minus one
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: the canvas, 24 bits each, minus one
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _gif_size(data: bytes) -> Optional[tuple[int, int]]:
    return struct.unpack("<HH", data[6:10]) if data[:6] in (b"GIF87a", b"GIF89a") else None


def _bmp_size(data: bytes) -> Optional[tuple[int, int]]:
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # a negative height means rows stored top-down


def _pnm_size(data: bytes) -> Optional[tuple[int, int]]:
    kind = data[1:2]
    header = data[:4096]
    if kind == b"7":  # PAM: WIDTH and HEIGHT lines before ENDHDR
        width, height = (re.search(rb"\n%s\s+(\d+)" % key, header) for key in (b"WIDTH", b"HEIGHT"))
        return (int(width.group(1)), int(height.group(1))) if width and height else None
    if kind not in (b"1", b"2", b"3", b"4", b"5", b"6", b"F", b"f"):
        return None
    tokens = re.sub(rb"#[^\n]*", b" ", header[2:]).split()  # width and height come first, then the raster
    return int(tokens[0]), int(tokens[1])


def _to_uint8(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        # 65535 / 257 == 255 exactly: the full 16-bit range maps onto the full 8-bit range.
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise ImageError(
        f"cannot use {name}: its samples are {image.dtype}; only 8-bit and 16-bit images are supported"
    )


GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # R, G, B: those of kornia.color.rgb_to_grayscale and cv2.COLOR_RGB2GRAY


def to_grayscale_float(image: np.ndarray) -> np.ndarray:
    """A float32 (H, W) image in [0, 1], computed as the reference SIFT does, without rounding.

    The reference reads every file as RGB, divides by 255 in float32 and applies kornia's
    ``rgb_to_grayscale`` (``r * 0.299 + g * 0.587 + b * 0.114``, in that order); a grayscale input is
    treated as three equal channels, so its float values are exactly the reference's.
    """
    check_channels(image)
    x = image.astype(np.float32) / np.float32(255)
    r, g, b = (x, x, x) if x.ndim == 2 else (x[..., 0], x[..., 1], x[..., 2])
    w_r, w_g, w_b = (np.float32(w) for w in GRAY_WEIGHTS)
    return w_r * r + w_g * g + w_b * b
