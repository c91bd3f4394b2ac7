"""The learned extractors' front-end (ALIKED, SuperPoint, DISK): images in, Features out, through an
extractor runner on any backend (TensorRT engine, or its source ONNX on ONNX Runtime).

Every step follows cvg/LightGlue's ``Extractor.extract``, which the matcher weights were trained with:

1. the image as float32 in [0, 1] with the network's channels (``to_channels``): a grayscale image
   for a colour network is repeated to three channels (the references' ``grayscale_to_rgb``), a colour
   image for SuperPoint is converted to grayscale with the reference's weights;
2. resized so that its long side is ``resize`` pixels (1024, the references' ``preprocess_conf``), up or
   down, as kornia's ``resize(side="long", antialias=True)`` does (``resize_long_side``, shared with the
   SIFT front-end); ``resize=None`` keeps the original size;
3. padded to the network's stride the way the reference pads (``trt.features.padding``), batched with
   images of the same padded size only (an extractor's features depend on the padding around an
   image), and padded up to the smallest size and batch the chosen engine profile takes. On a CPU
   runner each call takes one image: a batch is no faster there (the cores are busy with one image;
   measured, ALIKED on two 480x640 images: 1.32 s one by one, 1.49 s as a batch of two, on 2 cores),
   while memory grows with it (ALIKED's full-resolution feature maps: 3 GB at two such images);
4. the network, with detection in the graph; rows beyond ``count`` are dropped, and at most
   ``max_num_keypoints`` rows are kept: the first ones, which are the strongest detections;
5. keypoints back to original-image pixels, ``(x + 0.5) / scale - 0.5`` per axis, the reference's
   formula, with the centre of the top-left pixel at (0, 0).

numpy and OpenCV only (the serving side).
"""

import dataclasses
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from trt.contract import BATCH
from trt.errors import ContractError, ImageError
from trt.extractor_contract import HEIGHT, IMAGE, REGION, WIDTH
from trt.features.base import Features
from trt.features.padding import batch_images, stride_padding, to_channels
from trt.features.sift import resize_long_side
from trt.runtime.base import Runner, plan_batches
from trt.validation import check_image, check_max_keypoints, check_resize

DEFAULT_RESIZE = 1024  # the long side cvg/LightGlue resizes to for ALIKED, SuperPoint and DISK


@dataclass
class PreparedImage:
    """An image ready for batching: float32 (h, w, C) after resizing, and how to map keypoints back."""

    pixels: np.ndarray
    scale: tuple[float, float]  # (resized width / width, resized height / height)
    image_size: tuple[float, float]  # original (width, height)
    padded: dict[str, int]  # {H, W} once padded to the network's stride
    seconds: float  # time spent preparing it


class LearnedExtractor:
    """``LearnedExtractor(runner)(image) -> Features``; ``extract_batch`` extracts many images, batched.

    ``runner``: an extractor runner (its contract an ``ExtractorContract``), activated here; the caller
    deactivates it. ``resize``: long side of the image the network runs on (None: the original size).
    ``max_num_keypoints``: keep at most this many keypoints per image (None: all the network gives, its K).
    """

    def __init__(self, runner: Runner, resize: Optional[int] = DEFAULT_RESIZE, max_num_keypoints: Optional[int] = None):
        self.runner = runner.activate()
        self.contract = runner.contract
        if self.contract.kind != "extractor":
            raise ContractError(f"{runner.name} is {self.contract.describe()}, not a feature extractor")
        self.resize = check_resize(resize)
        self.max_num_keypoints = check_max_keypoints(max_num_keypoints, "max_num_keypoints")

    def __call__(self, image: np.ndarray) -> Features:
        """Features of a uint8 (H, W) grayscale or (H, W, 3) RGB image, in its own pixels."""
        return self.extract_batch([image])[0][0]

    def extract_batch(self, images: Sequence[np.ndarray],
                      names: Optional[Sequence[str]] = None) -> list[tuple[Features, dict[str, float]]]:
        """(Features, timings) of each image, in order; images of one padded size share engine calls.

        Timings are seconds: ``extract`` (preparing the image, and its share of the engine call it was
        in) and the runner's stages as ``extract_<stage>`` (``extract_compute``, and ``extract_h2d`` /
        ``extract_d2h`` on TensorRT), shares too. ``names`` label the images in error messages. Every
        image is checked before any is run: a bad one is an ImageError naming it.
        """
        names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
        prepared = [self._prepare(image, name) for image, name in zip(images, names)]
        profiles = self.runner.request_profiles
        if self.runner.device == "cpu":  # one image per call (module docstring), or the least a profile takes
            profiles = [dataclasses.replace(p, batch=(p.batch[0],) * 3) for p in profiles]
        results: list = [None] * len(prepared)
        for members, index in plan_batches([p.padded for p in prepared], profiles, same_size=True):
            batch = [prepared[i] for i in members]
            for i, result in zip(members, self._run(batch, profiles[index])):
                results[i] = result
        return results

    # -- steps -------------------------------------------------------------------------------------------
    def _prepare(self, image: np.ndarray, name: str) -> PreparedImage:
        start = time.perf_counter()
        check_image(image, name)
        height, width = image.shape[:2]
        pixels = to_channels(image, self.contract.layout.channels)
        scale = (1.0, 1.0)
        if self.resize is not None:
            pixels, scale = resize_long_side(pixels, self.resize)
        resized_height, resized_width = pixels.shape[:2]
        stride = self.contract.stride
        if min(resized_height, resized_width) < stride:
            size = f"{width}x{height} pixels" + (
                f", {resized_width}x{resized_height} with its long side resized to {self.resize}" if scale != (1.0, 1.0) else "")
            raise ImageError(f"{name} is {size}: the {self.contract.network} network needs at least its stride, "
                             f"{stride} pixels, on each side")
        pads = stride_padding(resized_height, resized_width, stride, self.contract.padding)
        padded = {HEIGHT: resized_height + pads.top + pads.bottom, WIDTH: resized_width + pads.left + pads.right}
        profiles = self.runner.request_profiles
        if not any(profile.holds({BATCH: 1, **padded}) for profile in profiles):
            largest = max(profiles, key=lambda p: p.size)
            raise ImageError(
                f"{name} is {resized_width}x{resized_height} pixels as the network sees it ({padded[WIDTH]}x{padded[HEIGHT]} "
                f"once padded to its stride): larger than every image profile of the extractor (the largest, "
                f"{largest.name}, takes up to {largest.width[2]} pixels wide and {largest.height[2]} high); resize it "
                "(--resize) or build the extractor engine with a larger profile")
        return PreparedImage(pixels, scale, (float(width), float(height)), padded, time.perf_counter() - start)

    def _run(self, batch: list[PreparedImage], profile) -> list[tuple[Features, dict[str, float]]]:
        """One engine call for images of one padded size; padding images repeat the last one."""
        start = time.perf_counter()
        dims = profile.padded({BATCH: len(batch), **batch[0].padded})
        image, region = batch_images([p.pixels for p in batch], self.contract.stride, self.contract.padding,
                                     min_size=(dims[HEIGHT], dims[WIDTH]))
        extra = dims[BATCH] - len(batch)
        feeds = {IMAGE: np.concatenate([image, np.repeat(image[-1:], extra, axis=0)]) if extra else image,
                 REGION: np.concatenate([region, np.repeat(region[-1:], extra, axis=0)]) if extra else region}
        outputs = self.runner.infer(feeds)
        stages = {f"extract_{stage}": seconds for stage, seconds in self.runner.last_timings.items() if stage != "total"}
        share = (time.perf_counter() - start) / len(batch)
        results = []
        for b, prepared in enumerate(batch):
            count = int(outputs["count"][b])
            if self.max_num_keypoints is not None:
                count = min(count, self.max_num_keypoints)
            scale = np.array(prepared.scale, np.float32)
            keypoints = ((outputs["keypoints"][b, :count] + 0.5) / scale - 0.5).astype(np.float32)
            features = Features(keypoints, np.ascontiguousarray(outputs["descriptors"][b, :count]), prepared.image_size,
                                np.ascontiguousarray(outputs["scores"][b, :count]))
            timings = {"extract": prepared.seconds + share, **{k: v / len(batch) for k, v in stages.items()}}
            results.append((features, timings))
        return results
