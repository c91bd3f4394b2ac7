"""OpenCV SIFT with the conventions of cvg/LightGlue's ``lightglue/sift.py`` (backend ``opencv``).

The LightGlue SIFT weights were trained on these features, so every step follows the reference
``SIFT.extract(image, resize=1024)``:

1. grayscale in float32 on [0, 1]: 0.299 R + 0.587 G + 0.114 B (kornia's ``rgb_to_grayscale``);
2. resize so that the long side is ``resize`` pixels, up or down, as kornia's
   ``resize(img, resize, side="long", antialias=True)`` does (see ``resize_long_side``), still in
   float, then to uint8 by truncation, as the reference's ``(image * 255).astype(np.uint8)``;
3. ``cv2.SIFT_create(contrastThreshold, nfeatures, edgeThreshold, nOctaveLayers)``;
4. at most one keypoint per pixel (``filter_dog_points``), optionally a non-maximum suppression;
5. the ``max_num_keypoints`` of highest response; RootSIFT descriptors. As in the reference, OpenCV
   already keeps only that many (``nfeatures``) before the duplicates of step 4 go, so an image can
   yield fewer than ``max_num_keypoints`` even when it has more;
6. keypoints back to original-image pixels: ``(x + 0.5) / scale - 0.5`` per axis, with
   ``scale = (resized width / width, resized height / height)``.

What the matcher receives, exactly as the reference hands it to LightGlue:

- ``keypoints`` [N, 2] (x, y) in original-image pixels, the centre of the top-left pixel at (0, 0);
- ``descriptors`` [N, 128] RootSIFT, unit L2 norm;
- ``scores`` [N] the DoG response (``KeyPoint.response``);
- ``scales`` [N] ``KeyPoint.size`` in pixels of the *resized* image (the reference does not rescale it);
- ``oris`` [N] ``KeyPoint.angle`` in radians, in [0, 2 pi);
- ``image_size`` (width, height) of the original image.

OpenCV places SIFT keypoints a quarter pixel (of the image it ran on) right of and below the true
centre (its doubled first octave maps pixel ``i`` to ``i / 2`` rather than ``i / 2 - 0.25``). The
reference keeps that offset, and so do we: the matcher weights were trained with it.

Only numpy and OpenCV are used: this module runs on serving machines without torch.
"""

from pathlib import Path
from typing import Union

import cv2
import numpy as np

from trt.errors import UserError
from trt.features.base import Features
from trt.features.image import read_image, to_grayscale_float
from trt.validation import MAX_KEYPOINTS, check_image, check_integer, check_resize, check_resized_size

DESCRIPTOR_DIM = 128
# Bounds of the options that size OpenCV's work: layers per octave (OpenCV's default is 3; each adds
# pyramid images of the whole octave) and the suppression window (a (2r+1)^2 dilation per image).
MAX_OCTAVE_LAYERS = 16
MAX_NMS_RADIUS = 256


def sift_to_rootsift(descriptors: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """RootSIFT of [..., D] SIFT descriptors: L1-normalise, clip below at ``eps``, square root, L2-normalise.

    Each norm is taken as at least ``eps``, as ``torch.nn.functional.normalize`` does in the reference.
    """
    x = np.asarray(descriptors, dtype=np.float32)
    x = x / np.maximum(np.abs(x).sum(axis=-1, keepdims=True), eps)
    x = np.sqrt(np.maximum(x, eps))
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def filter_dog_points(
    points: np.ndarray,
    scores: np.ndarray,
    angles: np.ndarray,
    image_shape: tuple[int, int],
    nms_radius: int = 0,
) -> np.ndarray:
    """Indices of the DoG keypoints to keep: one per pixel, then optionally a non-maximum suppression.

    ``points`` [N, 2] (x, y) fall in pixel ``round(point - 0.5)`` of an image of ``image_shape`` (H, W).
    In each pixel the highest ``score`` wins; among equal scores (OpenCV repeats a keypoint for each
    dominant orientation) the smallest ``|angle|``. With ``nms_radius > 0`` a survivor is also dropped
    unless its score is the maximum of the (2r+1) x (2r+1) window around its pixel. Returned indices
    are increasing.
    """
    height, width = image_shape
    if len(points) == 0:
        return np.zeros(0, np.int64)
    cols, rows = np.round(np.asarray(points) - 0.5).astype(np.int64).T
    cols = np.clip(cols, 0, width - 1)  # OpenCV keeps keypoints inside the image; guard the indexing anyway
    rows = np.clip(rows, 0, height - 1)

    best = np.zeros((height, width), np.float32)
    np.maximum.at(best, (rows, cols), scores)
    keep = np.flatnonzero(best[rows, cols] == scores)

    abs_angles = np.abs(angles[keep])
    smallest = np.full((height, width), np.inf, np.float32)
    np.minimum.at(smallest, (rows[keep], cols[keep]), abs_angles)
    keep = keep[smallest[rows[keep], cols[keep]] == abs_angles]

    if nms_radius > 0:
        score_map = np.zeros((height, width), np.float32)
        score_map[rows[keep], cols[keep]] = scores[keep]
        window = np.ones((2 * nms_radius + 1, 2 * nms_radius + 1), np.uint8)
        local_max = cv2.dilate(score_map, window, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        keep = keep[score_map[rows[keep], cols[keep]] == local_max[rows[keep], cols[keep]]]
    return keep


def resize_long_side(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """A float32 (H, W) or (H, W, C) ``image`` resized so that its long side is ``size``, and the scale
    (new width / width, new height / height).

    Matches kornia's ``resize(img, size, side="long", antialias=True)``, which the reference uses: the
    other side is ``int(size * short / long)`` (truncated, at least 1); when shrinking, a Gaussian of
    sigma ``(factor - 1) / 2`` per axis (kernel ``max(4 sigma, 3)`` made odd, reflected borders)
    removes aliasing; then bilinear sampling at pixel centres (``cv2.INTER_LINEAR``), up or down.
    """
    height, width = image.shape[:2]
    channels = image.shape[2:]
    new_width, new_height = resized_size(width, height, size)
    scale = (new_width / width, new_height / height)
    if (new_width, new_height) == (width, height):
        return image, scale
    factors = (height / new_height, width / new_width)
    if max(factors) > 1:
        sigma_y, sigma_x = (max((f - 1.0) / 2.0, 0.001) for f in factors)
        kernel = tuple(_odd(int(max(4.0 * s, 3))) if n > 1 else 1 for s, n in ((sigma_x, width), (sigma_y, height)))
        image = cv2.GaussianBlur(image, kernel, sigmaX=sigma_x, sigmaY=sigma_y, borderType=cv2.BORDER_REFLECT_101)
    resized = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    return resized.reshape(new_height, new_width, *channels), scale  # OpenCV drops a single channel axis


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) once the long side is ``size``: the short side scaled and truncated, at least 1."""
    if width >= height:
        return size, max(1, int(size / (width / height)))
    return max(1, int(size * (width / height))), size


def _odd(n: int) -> int:
    return n if n % 2 else n + 1


class SIFT:
    """OpenCV SIFT front-end for the LightGlue SIFT matcher; ``SIFT(**overrides)(image) -> Features``."""

    default_conf = {
        "max_num_keypoints": 4096,  # keep the strongest K by response; None keeps all
        "resize": 1024,  # long side of the image SIFT runs on, up or down; None runs on the original
        "detection_threshold": 0.0066667,  # OpenCV contrastThreshold (COLMAP's peak threshold)
        "edge_threshold": 10,  # OpenCV edgeThreshold
        "num_octaves": 4,  # OpenCV nOctaveLayers (the reference's name for it)
        "nms_radius": 0,  # 0: one keypoint per pixel; r > 0: also suppress non-maxima in (2r+1)^2; None: no filter
        "rootsift": True,  # RootSIFT descriptors (what LightGlue was trained on), else OpenCV's SIFT
    }

    def __init__(self, **conf):
        unknown = sorted(set(conf) - set(self.default_conf))
        if unknown:
            raise UserError(f"unknown SIFT option(s) {', '.join(unknown)}: choose from {', '.join(self.default_conf)}")
        self.conf = {**self.default_conf, **conf}
        self.conf["resize"] = check_resize(self.conf["resize"], "SIFT option resize")
        if self.conf["max_num_keypoints"] is not None:  # one keypoint is a valid request of the front-end alone
            self.conf["max_num_keypoints"] = check_integer(
                self.conf["max_num_keypoints"], "SIFT option max_num_keypoints", 1, MAX_KEYPOINTS
            )
        if self.conf["nms_radius"] is not None:
            check_integer(self.conf["nms_radius"], "SIFT option nms_radius", 0, MAX_NMS_RADIUS)
        check_integer(self.conf["num_octaves"], "SIFT option num_octaves", 1, MAX_OCTAVE_LAYERS)
        for key in ("detection_threshold", "edge_threshold"):
            value = self.conf[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise UserError(f"SIFT option {key} must be a positive number, got {value!r}")
        self._sift = cv2.SIFT_create(
            nfeatures=self.conf["max_num_keypoints"] or 0,
            nOctaveLayers=self.conf["num_octaves"],
            contrastThreshold=self.conf["detection_threshold"],
            edgeThreshold=self.conf["edge_threshold"],
        )

    def __call__(self, image: np.ndarray) -> Features:
        """Features of a uint8 (H, W) grayscale or (H, W, 3) RGB image, in its own pixels."""
        check_image(image)
        height, width = image.shape[:2]
        gray = to_grayscale_float(image)
        scale = (1.0, 1.0)
        if self.conf["resize"] is not None:
            check_resized_size((width, height), resized_size(width, height, self.conf["resize"]), self.conf["resize"])
            gray, scale = resize_long_side(gray, self.conf["resize"])
        # Back to 8 bits by truncation, as the reference's ``(image * 255).astype(np.uint8)``. Measured on
        # three test images: this reproduces 99.9 % of the reference's keypoints to 0.01 px; rounding
        # instead moves about one in ten by more than 1.5 px.
        gray = (gray * np.float32(255)).astype(np.uint8)

        detections, descriptors = self._sift.detectAndCompute(gray, None)
        points = np.array([k.pt for k in detections], np.float32).reshape(-1, 2)
        scores = np.array([k.response for k in detections], np.float32)
        scales = np.array([k.size for k in detections], np.float32)
        oris = np.deg2rad(np.array([k.angle for k in detections], np.float32))
        if descriptors is None:
            descriptors = np.zeros((0, DESCRIPTOR_DIM), np.float32)

        features = Features(points, descriptors.astype(np.float32), (float(width), float(height)), scores, scales, oris)
        if self.conf["nms_radius"] is not None:
            features = features.subset(filter_dog_points(points, scores, oris, gray.shape, self.conf["nms_radius"]))
        if self.conf["max_num_keypoints"] is not None:
            features = features.top_k(self.conf["max_num_keypoints"])
        if self.conf["rootsift"]:
            features.descriptors = sift_to_rootsift(features.descriptors)
        features.keypoints = ((features.keypoints + 0.5) / np.array(scale, np.float32) - 0.5).astype(np.float32)
        return features

    def extract_path(self, path: Union[str, Path]) -> Features:
        """Features of the image file at ``path`` (see ``read_image`` for what is accepted)."""
        return self(read_image(path))
