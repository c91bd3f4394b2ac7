"""Seeded synthetic inputs for checks that need no files: features of a matching pair, and scenes with
corners, edges and blobs at many scales.

The FP16 gates (``trt.engine.gate``), the export checks (``trt.onnx``), the extractor benchmark and
the tests all draw from here, so that each gives the same figures every run. numpy (and OpenCV for
the scenes) only.
"""

import numpy as np

from trt.features.base import Features


def synthetic_features(descriptor_dim: int, scale_ori: bool, n: int, size: tuple[float, float],
                       rng: np.random.Generator, like: Features | None = None) -> Features:
    """Random-but-valid features; with ``like``, a jittered copy of a subset of it, so the pair matches."""
    if like is None:
        keypoints = rng.random((n, 2)) * (np.array(size) - 1)
        descriptors = rng.random((n, descriptor_dim))
        scales = rng.random(n) * 10 + 1
        oris = (rng.random(n) * 2 - 1) * np.pi
    else:
        pick = rng.permutation(len(like))[:n]
        keypoints = np.clip(like.keypoints[pick] + rng.normal(0, 0.2, (n, 2)), 0, np.array(size) - 1)
        descriptors = like.descriptors[pick] + rng.normal(0, 0.01, (n, descriptor_dim))
        scales = like.scales[pick] if like.scales is not None else rng.random(n) * 10 + 1
        oris = like.oris[pick] if like.oris is not None else rng.random(n)
    descriptors = descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)
    return Features(
        keypoints.astype(np.float32), descriptors.astype(np.float32), (float(size[0]), float(size[1])),
        scores=rng.random(n).astype(np.float32),
        scales=scales.astype(np.float32) if scale_ori else None,
        oris=oris.astype(np.float32) if scale_ori else None,
    )


def synthetic_image(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded uint8 RGB (H, W, 3) scene of overlapping polygons and ellipses on a shaded background,
    lightly blurred, with fine noise: corners, edges and blobs at many scales, for extractor checks that
    need no image files."""
    import cv2

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    background = 60 + 80 * (x / width) + 40 * np.sin(y / max(height, 1) * 3 * np.pi)
    image = np.repeat(background[..., None], 3, axis=2).astype(np.uint8)
    scale = min(height, width)
    for _ in range(160):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            centre = rng.random(2) * (width, height)
            points = centre + (rng.random((int(rng.integers(3, 7)), 2)) - 0.5) * scale * rng.uniform(0.05, 0.3)
            cv2.fillPoly(image, [points.astype(np.int32)], color)
        else:
            centre = tuple(int(v) for v in rng.random(2) * (width, height))
            axes = tuple(int(v) for v in rng.uniform(0.01, 0.08, 2) * scale)
            cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
    image = cv2.GaussianBlur(image, (3, 3), 0.8)
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
