"""Accuracy of matches against known geometry: small pure functions on numpy arrays.

Points are (x, y) pixels of the original images, the centre of the top-left pixel at (0, 0) (the
matcher's convention). A ground-truth transform is a 3×3 matrix mapping image-0 pixels to image-1
pixels: a homography (HPatches) or a similarity written as one (rotated/scaled Sacre-Coeur).

Conventions for degenerate cases, chosen so that a failed pair counts as a failure, never as
missing data:

* ``match_precision`` of an empty match set is 0 (as in SuperGlue's evaluation), not NaN;
* an estimate that cannot be made (fewer than 4 matches for a homography, 2 for a similarity, or
  RANSAC finds none) has error ``inf``;
* ``cumulative_auc`` counts ``inf`` errors as never below the threshold, and is 0 for no pairs.
"""

import math
from typing import Optional, Sequence

import cv2
import numpy as np

PRECISION_THRESHOLD_PX = 3.0
AUC_THRESHOLDS_PX = (1.0, 3.0, 5.0)
RANSAC_THRESHOLD_PX = 3.0
MIN_SIMILARITY_MATCHES = 2

__all__ = [
    "corner_error", "transfer_errors", "match_precision", "cumulative_auc", "similarity_matrix",
    "estimate_similarity", "similarity_errors",
]


def corner_error(points0: np.ndarray, points1: np.ndarray, homography: np.ndarray, size: tuple[int, int]) -> float:
    """Mean distance of the image corners mapped by the estimated and the true homography (pixels).

    The homography is OpenCV's LO-RANSAC (``USAC_ACCURATE``, inlier threshold 3 px, fixed seed): plain
    RANSAC's estimate moves by up to a pixel on an easy pair (v_graffiti 1→2) and by several on harder
    ones when 2 % of the matches change, which would swamp the differences between matchers (or
    precisions) that the AUC is meant to show; the local optimisation keeps it within ~0.1 px there.
    """
    if len(points0) < 4:
        return float("inf")
    estimate, _ = cv2.findHomography(points0, points1, cv2.USAC_ACCURATE, RANSAC_THRESHOLD_PX)
    if estimate is None:
        return float("inf")
    width, height = size
    corners = np.array([[[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]], np.float64)
    truth = cv2.perspectiveTransform(corners, homography)[0]
    estimated = cv2.perspectiveTransform(corners, estimate)[0]
    return float(np.mean(np.linalg.norm(truth - estimated, axis=1)))


def transfer_errors(points0: np.ndarray, points1: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """[K] distance (pixels) between ``transform`` applied to points0 [K, 2] and points1 [K, 2]."""
    points0 = np.asarray(points0, np.float64).reshape(-1, 2)
    points1 = np.asarray(points1, np.float64).reshape(-1, 2)
    if len(points0) == 0:
        return np.zeros(0)
    projected = np.concatenate([points0, np.ones((len(points0), 1))], axis=1) @ np.asarray(transform, np.float64).T
    projected = projected[:, :2] / projected[:, 2:]
    return np.linalg.norm(projected - points1, axis=1)


def match_precision(errors: np.ndarray, threshold: float = PRECISION_THRESHOLD_PX) -> float:
    """Share of matches whose transfer error is below ``threshold`` pixels; 0 for no matches."""
    errors = np.asarray(errors, np.float64)
    return float(np.mean(errors < threshold)) if errors.size else 0.0


def cumulative_auc(errors: Sequence[float], thresholds: Sequence[float] = AUC_THRESHOLDS_PX) -> list[float]:
    """Area under the cumulative error curve up to each threshold, normalised to [0, 1].

    The curve of SuperGlue's ``pose_auc`` and LightGlue's HPatches evaluation: recall (share of pairs
    with error ≤ e) against e, from (0, 0) through each sorted error, integrated with the trapezoid
    rule up to the threshold. So errors [1, 2] at threshold 2 give ((0 + ½)/2 · 1 + (½ + ½)/2 · 1) / 2
    = 0.375, and all-zero errors give 1. ``inf`` (a failed pair) never counts as recalled.
    """
    errors = np.sort(np.asarray(errors, np.float64).reshape(-1))
    if errors.size == 0:
        return [0.0 for _ in thresholds]
    recall = np.arange(1, errors.size + 1) / errors.size
    errors = np.concatenate([[0.0], errors])
    recall = np.concatenate([[0.0], recall])
    aucs = []
    for threshold in thresholds:
        last = int(np.searchsorted(errors, threshold))
        x = np.concatenate([errors[:last], [threshold]])
        y = np.concatenate([recall[:last], [recall[last - 1]]])
        aucs.append(float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / threshold))
    return aucs


def similarity_matrix(angle_deg: float, scale: float, size: tuple[float, float]) -> np.ndarray:
    """3×3 matrix of x' = s R(D) (x − c) + c about the image centre, D positive in image coordinates.

    With y pointing down, a positive D turns the x-axis towards the y-axis (clockwise on screen):
    R(D) = [[cos D, −sin D], [sin D, cos D]]. ``size`` is (width, height); the centre is
    c = ((W − 1)/2, (H − 1)/2) in pixel-centre coordinates, which is (W/2, H/2) in the pixel-corner
    coordinates the data's README uses (see ``trt.evaluation.datasets`` for how this was checked).
    """
    theta = math.radians(angle_deg)
    rotation = scale * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    centre = (np.asarray(size, np.float64) - 1) / 2
    matrix = np.eye(3)
    matrix[:2, :2] = rotation
    matrix[:2, 2] = centre - rotation @ centre
    return matrix


def estimate_similarity(points0: np.ndarray, points1: np.ndarray) -> Optional[np.ndarray]:
    """2×3 similarity fitted to the matches with RANSAC (``cv2.estimateAffinePartial2D``), or None."""
    points0 = np.asarray(points0, np.float64).reshape(-1, 2)
    points1 = np.asarray(points1, np.float64).reshape(-1, 2)
    if len(points0) < MIN_SIMILARITY_MATCHES:
        return None
    estimate, _ = cv2.estimateAffinePartial2D(points0, points1, method=cv2.RANSAC,
                                              ransacReprojThreshold=RANSAC_THRESHOLD_PX)
    return estimate


def similarity_errors(estimate: Optional[np.ndarray], angle_deg: float, scale: float) -> tuple[float, float]:
    """(rotation error in degrees, in [0, 180]; relative scale error |ŝ/s − 1|) of a 2×3 estimate.

    Both are ``inf`` when there is no estimate.
    """
    if estimate is None:
        return math.inf, math.inf
    a, b = float(estimate[0, 0]), float(estimate[1, 0])
    angle = math.degrees(math.atan2(b, a))
    rotation_error = abs((angle - angle_deg + 180.0) % 360.0 - 180.0)
    return rotation_error, abs(math.hypot(a, b) / scale - 1.0)
