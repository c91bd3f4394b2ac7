"""The learned extractors' tensor contract, defined once (the matcher's is in ``trt/contract.py``).

Export names its graph inputs and outputs from here, profile validation resolves image-size profiles
with it, and runners check requests with it. SuperPoint, DISK and ALIKED graphs all follow it.

Inputs, for B images padded to one H × W (multiples of the network's stride):

=========  =======  ==============  ====================================================================
name       dtype    shape           meaning
=========  =======  ==============  ====================================================================
image      float32  [B, C, H, W]    C = 1 (SuperPoint, grayscale) or 3 (ALIKED, DISK, RGB), in [0, 1]
region     int32    [B, 4]          (x, y, width, height) of the real image inside the padded one
=========  =======  ==============  ====================================================================

Outputs, for K = the keypoint budget fixed at export (at most ``MAX_KEYPOINTS``):

===========  =======  ===========  =====================================================================
name         dtype    shape        meaning
===========  =======  ===========  =====================================================================
keypoints    float32  [B, K, 2]    (x, y) in pixels of the real image (the region), the centre of its
                                   top-left pixel at (0, 0)
scores       float32  [B, K]       detection score (ALIKED: read at the refined position); rows are in
                                   decreasing order of the score that selected them
descriptors  float32  [B, K, D]    unit L2 norm
count        int32    [B]          how many leading rows are keypoints; the rest are zeros (padding)
===========  =======  ===========  =====================================================================

The front-end (``trt.features.padding``) pads each image to the stride the way the reference does
(``ExtractorNetwork.padding``) and records where the image lies: that is ``region``. Detection happens
inside the graph with fixed shapes (score map, non-maximum suppression, border and threshold, top-K,
sub-pixel refinement where the reference has it; no NonZero), only inside each image's region, so
images of different sizes share a batch.
"""

from dataclasses import dataclass

import numpy as np

from trt.contract import BATCH, TensorSpec, check_input_names, concrete_shape
from trt.errors import ContractError

HEIGHT, WIDTH = "H", "W"
IMAGE, REGION = "image", "region"
OUTPUT_NAMES = ["keypoints", "scores", "descriptors", "count"]
MAX_KEYPOINTS = 3840  # TensorRT's TopK limit on K
DEFAULT_MAX_KEYPOINTS = 2048


def input_specs(channels: int) -> list[TensorSpec]:
    """The extractor's inputs, in graph order."""
    return [
        TensorSpec(IMAGE, np.dtype(np.float32), (BATCH, channels, HEIGHT, WIDTH)),
        TensorSpec(REGION, np.dtype(np.int32), (BATCH, 4)),
    ]


def output_specs(max_keypoints: int, descriptor_dim: int) -> list[TensorSpec]:
    """The extractor's outputs, in graph order."""
    return [
        TensorSpec("keypoints", np.dtype(np.float32), (BATCH, max_keypoints, 2)),
        TensorSpec("scores", np.dtype(np.float32), (BATCH, max_keypoints)),
        TensorSpec("descriptors", np.dtype(np.float32), (BATCH, max_keypoints, descriptor_dim)),
        TensorSpec("count", np.dtype(np.int32), (BATCH,)),
    ]


@dataclass(frozen=True)
class ExtractorLayout:
    """What a graph or engine of this contract fixes: channels in, keypoint budget and descriptor size out."""

    channels: int
    max_keypoints: int
    descriptor_dim: int

    @property
    def inputs(self) -> list[TensorSpec]:
        return input_specs(self.channels)

    @property
    def outputs(self) -> list[TensorSpec]:
        return output_specs(self.max_keypoints, self.descriptor_dim)


def _fixed(shape, axis: int) -> int | None:
    value = shape[axis] if shape is not None and len(shape) > axis else None
    return value if isinstance(value, int) and value > 0 else None


def infer_layout(inputs: dict[str, tuple], outputs: dict[str, tuple]) -> ExtractorLayout:
    """The layout of a graph or engine from its I/O names and shapes, or a ContractError naming what is off."""
    expected_inputs, expected_outputs = {IMAGE, REGION}, set(OUTPUT_NAMES)
    if set(inputs) != expected_inputs or set(outputs) != expected_outputs:
        raise ContractError(f"inputs {sorted(inputs)} and outputs {sorted(outputs)} do not follow the extractor "
                            f"contract: expected inputs {sorted(expected_inputs)}, outputs {OUTPUT_NAMES}")
    channels = _fixed(inputs[IMAGE], 1)
    max_keypoints = _fixed(outputs["keypoints"], 1)
    descriptor_dim = _fixed(outputs["descriptors"], 2)
    if channels not in (1, 3) or max_keypoints is None or descriptor_dim is None:
        raise ContractError("the extractor contract needs image [B, 1 or 3, H, W], keypoints [B, K, 2] and "
                            "descriptors [B, K, D] with fixed C, K and D")
    return ExtractorLayout(channels, max_keypoints, descriptor_dim)


def check_feeds(feeds: dict[str, np.ndarray], layout: ExtractorLayout, stride: int) -> tuple[int, int, int]:
    """Check a request against the contract (names, dtypes, shapes, stride, regions); return (B, H, W)."""
    specs = layout.inputs
    check_input_names(feeds, specs)
    image = feeds[IMAGE]
    if image.ndim != 4:
        raise ContractError(f"input image has shape {tuple(image.shape)}, expected [B, C, H, W]")
    batch, _, height, width = image.shape
    dims = {BATCH: batch, HEIGHT: height, WIDTH: width}
    for spec in specs:
        array = feeds[spec.name]
        if array.dtype != spec.dtype:
            raise ContractError(f"input {spec.name} has dtype {array.dtype}, expected {spec.dtype}")
        if tuple(array.shape) != concrete_shape(spec, dims):
            raise ContractError(f"input {spec.name} has shape {tuple(array.shape)}, expected {concrete_shape(spec, dims)}")
    if height % stride or width % stride:
        raise ContractError(f"image is {width}x{height}: width and height must be multiples of the network's "
                            f"stride {stride} (pad with trt.features.padding)")
    x, y, w, h = (feeds[REGION][:, i].astype(np.int64) for i in range(4))
    bad = (x < 0) | (y < 0) | (w < stride) | (h < stride) | (x + w > width) | (y + h > height)
    if bad.any():
        index = int(np.argmax(bad))
        raise ContractError(f"region {feeds[REGION][index].tolist()} of image {index} is not a rectangle of at least "
                            f"{stride}x{stride} pixels inside the {width}x{height} input")
    return batch, height, width
