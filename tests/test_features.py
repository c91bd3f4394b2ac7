"""SIFT front-end and image reading: pure functions, conventions, parity with cvg/LightGlue's SIFT."""

import subprocess
import sys
from collections import defaultdict

import cv2
import numpy as np
import pytest

from trt.errors import ImageError, UserError
from trt.features.image import MIN_IMAGE_SIDE, read_image, to_grayscale_float
from trt.features.sift import SIFT, filter_dog_points, resize_long_side, sift_to_rootsift


def nearest(query: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query point, the distance to and index of the nearest of ``points``."""
    distances = np.linalg.norm(query[:, None, :] - points[None, :, :], axis=-1)
    index = distances.argmin(axis=1)
    return distances[np.arange(len(query)), index], index


def blob_image(centres: np.ndarray, shape=(480, 640), sigma=6.0) -> np.ndarray:
    """Gaussian blobs centred at ``centres`` (x, y), the centre of the top-left pixel being (0, 0)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    image = np.full(shape, 40.0)
    for cx, cy in centres:
        image += 180 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    return np.rint(image).astype(np.uint8)


# --- RootSIFT ---------------------------------------------------------------------------------------


def test_rootsift_is_unit_non_negative_and_matches_formula():
    rng = np.random.default_rng(0)
    sift = rng.uniform(0, 200, (50, 128)).astype(np.float32)
    sift[:, :20] = 0  # empty bins are clipped at eps, not left at zero
    root = sift_to_rootsift(sift)
    assert root.dtype == np.float32 and root.shape == sift.shape
    assert (root > 0).all()
    np.testing.assert_allclose(np.linalg.norm(root, axis=1), 1.0, atol=1e-6)
    direct = np.sqrt(np.maximum(sift / sift.sum(axis=1, keepdims=True), 1e-6))
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    np.testing.assert_allclose(root, direct, atol=1e-6)
    # Hellinger kernel: dot products of RootSIFT are those of sqrt of L1-normalised SIFT.
    l1 = sift / sift.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(root[0] @ root[1], np.sqrt(l1[0] * l1[1]).sum(), atol=1e-3)


def test_rootsift_of_zero_descriptor_is_finite():
    root = sift_to_rootsift(np.zeros((1, 128), np.float32))
    assert np.isfinite(root).all()
    np.testing.assert_allclose(np.linalg.norm(root), 1.0, atol=1e-6)


def test_rootsift_matches_reference_torch_formula():
    torch = pytest.importorskip("torch")
    sift = np.random.default_rng(1).uniform(0, 100, (10, 128)).astype(np.float32)
    x = torch.nn.functional.normalize(torch.from_numpy(sift), p=1, dim=-1, eps=1e-6)
    x = torch.nn.functional.normalize(x.clip(min=1e-6).sqrt(), p=2, dim=-1, eps=1e-6)
    np.testing.assert_allclose(sift_to_rootsift(sift), x.numpy(), atol=1e-6)


# --- duplicate filtering ----------------------------------------------------------------------------


def test_filter_keeps_best_point_per_pixel():
    points = np.array([[10.2, 5.1], [10.4, 5.3], [10.3, 5.2], [20.0, 5.0], [10.6, 5.0]], np.float32)
    scores = np.array([0.5, 0.5, 0.3, 0.1, 0.2], np.float32)
    angles = np.array([1.0, 0.2, 0.0, 3.0, 0.0], np.float32)
    # Points 0-2 share pixel (x 10, y 5): the highest score wins, the smallest angle among equal scores.
    # Point 4 at x 10.6 rounds to pixel 11, point 3 to pixel 19 (round(19.5) is 20 with half-to-even).
    keep = filter_dog_points(points, scores, angles, (32, 32), nms_radius=0)
    np.testing.assert_array_equal(keep, [1, 3, 4])
    # With a radius, point 4 (next to point 1, lower score) is suppressed; point 3 is alone.
    keep = filter_dog_points(points, scores, angles, (32, 32), nms_radius=1)
    np.testing.assert_array_equal(keep, [1, 3])


def test_filter_of_no_points_is_empty():
    empty = np.zeros(0, np.float32)
    assert filter_dog_points(np.zeros((0, 2), np.float32), empty, empty, (32, 32)).shape == (0,)


def _reference_filter(points, scores, angles, shape, nms_radius):
    """An independent oracle: group by pixel in Python, then (for r > 0) torch max-pooling, as the reference."""
    by_pixel = defaultdict(list)
    for index, (x, y) in enumerate(points):
        by_pixel[(int(np.round(y - 0.5)), int(np.round(x - 0.5)))].append(index)
    keep = []
    for members in by_pixel.values():
        best = max(scores[i] for i in members)
        tied = [i for i in members if scores[i] == best]
        smallest = min(abs(angles[i]) for i in tied)
        keep += [i for i in tied if abs(angles[i]) == smallest]
    keep = np.array(sorted(keep))
    if nms_radius > 0:
        torch = pytest.importorskip("torch")
        pixels = np.round(points[keep] - 0.5).astype(int)
        score_map = torch.zeros(shape)
        score_map[pixels[:, 1], pixels[:, 0]] = torch.from_numpy(scores[keep])
        pooled = torch.nn.functional.max_pool2d(score_map[None], 2 * nms_radius + 1, stride=1, padding=nms_radius)[0]
        keep = keep[(score_map == pooled).numpy()[pixels[:, 1], pixels[:, 0]]]
    return keep


@pytest.mark.parametrize("nms_radius", [0, 2])
def test_filter_matches_reference_on_random_points(nms_radius):
    rng = np.random.default_rng(nms_radius)
    points = rng.uniform(0.5, 39.4, (400, 2)).astype(np.float32)
    scores = rng.integers(1, 4, 400).astype(np.float32) / 4  # many ties
    angles = rng.integers(0, 3, 400).astype(np.float32)
    keep = filter_dog_points(points, scores, angles, (40, 40), nms_radius)
    np.testing.assert_array_equal(keep, _reference_filter(points, scores, angles, (40, 40), nms_radius))


# --- SIFT -------------------------------------------------------------------------------------------


def test_keypoints_map_back_to_original_pixels():
    """A known blob pattern found at three detection scales lands on the same original-image points.

    OpenCV reports SIFT keypoints a constant quarter pixel (of the image SIFT ran on) down-right of the
    blob centre; with the reference's back-mapping ``(x + 0.5) / scale - 0.5`` that offset, measured in
    detection pixels, is the same at every scale, which a wrong mapping would not give.
    """
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(8) * 80 + 40, np.arange(6) * 80 + 40), -1).reshape(-1, 2)
    centres = grid + rng.uniform(-5, 5, grid.shape)
    image = blob_image(centres)
    offsets = {}
    for resize in (320, None, 1280):  # half, same, twice the 640-pixel width
        features = SIFT(resize=resize)(image)
        distance, index = nearest(centres, features.keypoints)
        assert (distance < 1.0).all(), f"resize={resize}: blob missed by {distance.max():.2f} px"
        scale = (resize or 640) / 640
        offsets[resize] = np.median((features.keypoints[index] - centres) * scale, axis=0)
    for resize, offset in offsets.items():
        np.testing.assert_allclose(offset, offsets[None], atol=0.05, err_msg=f"resize={resize}")
    assert np.abs(offsets[None]).max() < 0.5


def test_upscaled_detection_agrees_in_original_coordinates():
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (120, 160)).astype(np.float32), (0, 0), 2)
    texture = cv2.resize(texture, (320, 240), interpolation=cv2.INTER_CUBIC)
    image = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    native = SIFT(resize=None)(image)
    upscaled = SIFT(resize=640)(image)
    assert len(native) > 100 and len(upscaled) > 100
    distance, _ = nearest(native.keypoints, upscaled.keypoints)
    assert (distance < 1.0).mean() > 0.8


def test_sift_output_types_and_conventions():
    image = blob_image(np.array([[100.0, 100.0], [300.0, 200.0]]), shape=(300, 400))
    features = SIFT(resize=800)(np.dstack([image] * 3))  # RGB input of equal channels
    n = len(features)
    assert n > 0
    assert features.keypoints.shape == (n, 2) and features.keypoints.dtype == np.float32
    assert features.descriptors.shape == (n, 128) and features.descriptors.dtype == np.float32
    for values in (features.scores, features.scales, features.oris):
        assert values.shape == (n,) and values.dtype == np.float32
    assert features.image_size == (400.0, 300.0)
    assert ((features.oris >= 0) & (features.oris < 2 * np.pi)).all()
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-5)
    gray = SIFT(resize=800)(image)
    np.testing.assert_array_equal(gray.keypoints, features.keypoints)


def test_empty_image_gives_empty_features():
    features = SIFT()(np.zeros((64, 80), np.uint8))
    assert len(features) == 0
    assert features.keypoints.shape == (0, 2) and features.keypoints.dtype == np.float32
    assert features.descriptors.shape == (0, 128) and features.descriptors.dtype == np.float32
    for values in (features.scores, features.scales, features.oris):
        assert values.shape == (0,) and values.dtype == np.float32
    assert features.image_size == (80.0, 64.0)


def test_max_num_keypoints_keeps_the_strongest():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (256, 256)), (0, 0), 1.5).astype(np.uint8)
    everything = SIFT(max_num_keypoints=None, resize=None)(image)
    top = SIFT(max_num_keypoints=50, resize=None)(image)
    # As in the reference, OpenCV keeps the 50 strongest before duplicates (one point, several
    # orientations) are dropped, so there may be fewer than 50, all among the strongest.
    assert len(everything) > 50 and 0 < len(top) <= 50
    assert top.scores.min() >= np.sort(everything.scores)[-50] - 1e-6


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="unknown SIFT option.*max_num_keypoints"):
        SIFT(max_keypoints=10)
    with pytest.raises(UserError, match="resize"):
        SIFT(resize=0)
    with pytest.raises(UserError, match="detection_threshold"):
        SIFT(detection_threshold=-1)
    with pytest.raises(ImageError, match="uint8"):
        SIFT()(np.zeros((64, 64), np.float32))
    with pytest.raises(ImageError, match="too small"):
        SIFT()(np.zeros((8, 64), np.uint8))


def test_resize_long_side_sizes_and_scale():
    image = np.zeros((640, 800), np.float32)
    resized, scale = resize_long_side(image, 1024)
    assert resized.shape == (819, 1024) and scale == (1024 / 800, 819 / 640)
    resized, scale = resize_long_side(np.zeros((1000, 300), np.float32), 512)
    assert resized.shape == (512, 153) and scale == (153 / 300, 512 / 1000)


def test_serving_side_does_not_import_torch():
    code = "import sys, trt.features.sift; sys.exit('torch' in sys.modules or 'kornia' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- parity with cvg/LightGlue's SIFT (backend opencv) ----------------------------------------------


def reference_sift(path, max_num_keypoints=4096, resize=1024):
    """cvg/LightGlue ``SIFT().extract(load_image(path), resize=1024)``, step by step (torch + kornia)."""
    torch = pytest.importorskip("torch")
    kornia = pytest.importorskip("kornia")
    rgb = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]  # utils.read_image
    image = torch.tensor(rgb.transpose(2, 0, 1) / 255.0, dtype=torch.float)[None]  # numpy_image_to_torch
    height, width = image.shape[-2:]
    image = kornia.geometry.transform.resize(image, resize, side="long", antialias=True)  # ImagePreprocessor
    scale = np.array([image.shape[-1] / width, image.shape[-2] / height])
    gray = kornia.color.rgb_to_grayscale(image)[0, 0].numpy()
    sift = cv2.SIFT_create(
        contrastThreshold=0.0066667, nfeatures=max_num_keypoints, edgeThreshold=10, nOctaveLayers=4
    )
    detections, descriptors = sift.detectAndCompute((gray * 255.0).astype(np.uint8), None)
    points = np.array([k.pt for k in detections], np.float32)
    scores = np.array([k.response for k in detections], np.float32)
    scales = np.array([k.size for k in detections], np.float32)
    oris = np.deg2rad(np.array([k.angle for k in detections], np.float32))
    keep = _reference_filter(points, scores, oris, gray.shape, 0)
    keep = keep[np.argsort(-scores[keep])[:max_num_keypoints]]
    descriptors = torch.from_numpy(descriptors[keep])
    descriptors = torch.nn.functional.normalize(descriptors, p=1, dim=-1, eps=1e-6)
    descriptors = torch.nn.functional.normalize(descriptors.clip(min=1e-6).sqrt(), p=2, dim=-1, eps=1e-6)
    return {
        "keypoints": (points[keep] + 0.5) / scale - 0.5,
        "descriptors": descriptors.numpy(),
        "scales": scales[keep],
        "oris": oris[keep],
    }


def test_parity_with_reference_sift(data_dir):
    path = data_dir / "images/hpatches/v_graffiti/1.ppm"
    ours = SIFT().extract_path(path)
    reference = reference_sift(path)
    assert ours.image_size == (800.0, 640.0)
    assert abs(len(ours) - len(reference["keypoints"])) <= 0.02 * len(ours)
    distance, index = nearest(ours.keypoints, reference["keypoints"])
    coincide = distance < 1.5
    # Same float grayscale, same resize and the same truncation to uint8 as the reference: nearly every
    # keypoint is the reference's own (measured: 100 % within 1.5 px, 99.9 % within 0.01 px).
    assert coincide.mean() >= 0.97, f"only {coincide.mean():.1%} of keypoints coincide"
    assert (distance < 0.01).mean() >= 0.95
    same = index[coincide]
    descriptor_gap = np.linalg.norm(ours.descriptors[coincide] - reference["descriptors"][same], axis=1)
    assert np.median(descriptor_gap) < 0.01 and np.quantile(descriptor_gap, 0.95) < 0.05
    # scales are OpenCV's KeyPoint.size in resized-image pixels, oris radians: exactly as the reference.
    # (A one-level grey difference moves a few of them by a fraction of a percent.)
    exact = distance < 0.01
    scale_ratio = ours.scales[exact] / reference["scales"][index[exact]]
    assert np.median(np.abs(scale_ratio - 1)) < 1e-6 and np.abs(scale_ratio - 1).max() < 0.02
    angle_gap = np.angle(np.exp(1j * (ours.oris[exact] - reference["oris"][index[exact]])))
    assert np.median(np.abs(angle_gap)) < 1e-6 and np.abs(angle_gap).max() < 0.1


# --- image reading ----------------------------------------------------------------------------------


def test_read_color_and_gray(tmp_path):
    bgr = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "color.png"), bgr)
    np.testing.assert_array_equal(read_image(tmp_path / "color.png"), bgr[..., ::-1])
    cv2.imwrite(str(tmp_path / "gray.png"), bgr[..., 0])
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), bgr[..., 0])


def test_read_16_bit_scales_to_8_bit(tmp_path):
    values = np.array([0, 257, 128 * 257, 300, 65535, 65535 - 128], np.uint16)
    image = np.tile(values, (16, 3))
    cv2.imwrite(str(tmp_path / "deep.png"), image)
    read = read_image(tmp_path / "deep.png")
    assert read.dtype == np.uint8 and read.shape == image.shape
    np.testing.assert_array_equal(read[0, :6], [0, 1, 128, 1, 255, 255])


def test_read_rgba_drops_alpha(tmp_path):
    bgra = np.random.default_rng(0).integers(0, 256, (20, 30, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    np.testing.assert_array_equal(read_image(tmp_path / "alpha.png"), bgra[..., 2::-1])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.jpg", "does not exist"),
        (lambda p: p, "is a folder"),
        (lambda p: (p / "text.jpg", (p / "text.jpg").write_text("not an image"))[0], "cannot read image"),
        (lambda p: (p / "empty.png", (p / "empty.png").write_bytes(b""))[0], "empty"),
        (lambda p: (p / "tiny.png", cv2.imwrite(str(p / "tiny.png"), np.zeros((1, 1), np.uint8)))[0], "too small"),
        (lambda p: (p / "f.tiff", cv2.imwrite(str(p / "f.tiff"), np.zeros((32, 32), np.float32)))[0], "float32"),
    ],
    ids=["missing", "folder", "text-as-jpg", "empty", "1x1", "float"],
)
def test_read_errors_name_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ImageError, match=message) as error:
        read_image(path)
    assert str(path) in str(error.value)


def test_minimum_size_is_accepted(tmp_path):
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((MIN_IMAGE_SIDE, 200), np.uint8))
    assert read_image(tmp_path / "small.png").shape == (MIN_IMAGE_SIDE, 200)


def test_grayscale_weights_are_kornias():
    torch = pytest.importorskip("torch")
    kornia = pytest.importorskip("kornia")
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    expected = kornia.color.rgb_to_grayscale(torch.from_numpy(rgb.transpose(2, 0, 1) / 255.0).float())[0].numpy()
    np.testing.assert_allclose(to_grayscale_float(rgb), expected, atol=1e-6)
