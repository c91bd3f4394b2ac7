"""The learned extractors' front-end rule: images to the network's channels, padded to its stride.

numpy only (the serving side). An extractor graph takes images whose height and width are multiples
of the network's stride (``trt.extractors.ExtractorNetwork.stride``) and, for each, the ``region`` the
real image occupies (``trt/extractor_contract.py``). ``pad_to_stride`` pads one image the way the
network's reference does (``ExtractorNetwork.padding``) and records the padding; ``batch_images``
then pads every image of a batch at the bottom and right to one common size and gives the regions.

Keypoints come back from the graph in pixels of the region, so the padding needs no undoing.
"""

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from trt.errors import ImageError
from trt.extractors import PADDINGS

# Grayscale from RGB as SuperPoint's reference does it (cvg/LightGlue lightglue/superpoint.py).
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class Padding:
    """Pixels added on each side of an image."""

    left: int = 0
    top: int = 0
    right: int = 0
    bottom: int = 0

    def region(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of an image of ``height`` × ``width`` once padded by this."""
        return self.left, self.top, width, height


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A uint8 (H, W) or (H, W, 3) image as float32 (H, W, ``channels``) in [0, 1].

    A grayscale image for a colour network is repeated to three channels (as the references'
    ``grayscale_to_rgb``); a colour image for a grayscale network is converted with ``GRAY_WEIGHTS``.
    """
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ImageError(f"expected a uint8 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}")
    x = image.astype(np.float32) / np.float32(255)
    if channels == 3:
        return np.repeat(x[..., None], 3, axis=2) if x.ndim == 2 else x
    if channels == 1:
        return (x if x.ndim == 2 else x @ GRAY_WEIGHTS)[..., None]
    raise ValueError(f"channels must be 1 or 3, not {channels}")


def stride_padding(height: int, width: int, stride: int, padding: str) -> Padding:
    """How much ``padding`` (one of ``PADDINGS``) adds to an image to reach multiples of ``stride``.

    An image smaller than the stride on either side is an ImageError: the network's deepest feature
    map would have no pixel of it.
    """
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}: choose one of {', '.join(PADDINGS)}")
    if min(height, width) < stride:
        raise ImageError(f"image is {width}x{height} pixels: the network needs at least its stride, "
                         f"{stride} pixels, on each side")
    extra_h, extra_w = -height % stride, -width % stride
    if padding.startswith("centre"):
        # The reference's split (ALIKED's InputPadder): the smaller half before, the larger after.
        return Padding(extra_w // 2, extra_h // 2, extra_w - extra_w // 2, extra_h - extra_h // 2)
    return Padding(0, 0, extra_w, extra_h)


def _pad(image: np.ndarray, padding: Padding, fill: str) -> np.ndarray:
    widths = ((padding.top, padding.bottom), (padding.left, padding.right), (0, 0))
    return np.pad(image, widths, mode="edge" if fill == "replicate" else "constant")


def pad_to_stride(image: np.ndarray, stride: int, padding: str) -> tuple[np.ndarray, Padding]:
    """A float (H, W, C) image padded to multiples of ``stride`` as ``padding`` says, and the padding."""
    height, width = image.shape[:2]
    pads = stride_padding(height, width, stride, padding)
    return _pad(image, pads, padding.rsplit("-", 1)[1]), pads


def batch_images(images: Sequence[np.ndarray], stride: int, padding: str,
                 min_size: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Float (H, W, C) images as one extractor request: ``image`` [B, C, H, W] and ``region`` [B, 4] int32.

    Each image is padded to the stride (``pad_to_stride``), then at the bottom and right to the
    largest height and width of the batch and at least ``min_size`` (height, width), the smallest an
    engine profile takes; ``min_size`` must itself be a multiple of the stride.
    """
    if not images:
        raise ValueError("no images to batch")
    if min_size[0] % stride or min_size[1] % stride:
        raise ValueError(f"min_size {min_size} is not a multiple of the stride {stride}")
    channels = {image.shape[2] for image in images}
    if len(channels) != 1:
        raise ValueError(f"images of a batch need the same channels, got {sorted(channels)}")
    padded, regions = [], []
    for image in images:
        height, width = image.shape[:2]
        result, pads = pad_to_stride(image, stride, padding)
        padded.append(result)
        regions.append(pads.region(height, width))
    height = max(min_size[0], *(p.shape[0] for p in padded))
    width = max(min_size[1], *(p.shape[1] for p in padded))
    fill = padding.rsplit("-", 1)[1]
    batch = np.stack([_pad(p, Padding(0, 0, width - p.shape[1], height - p.shape[0]), fill) for p in padded])
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), np.float32), np.array(regions, np.int32)
