"""Evaluation metrics on synthetic cases with known answers, and the ground-truth conventions of the data."""

import math

import cv2
import numpy as np
import pytest

from trt.errors import UserError
from trt.evaluation.datasets import get_preset, load_datasets, parse_similarity_name
from trt.evaluation.eval import dataset_summary
from trt.evaluation.metrics import (
    corner_error,
    cumulative_auc,
    estimate_similarity,
    match_precision,
    similarity_errors,
    similarity_matrix,
    transfer_errors,
)

SIZE = (640, 480)
HOMOGRAPHY = np.array([[0.9, 0.05, 20.0], [-0.04, 1.1, -10.0], [1e-5, 2e-5, 1.0]])


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return cv2.perspectiveTransform(points[None].astype(np.float64), transform)[0]


@pytest.fixture
def points0() -> np.ndarray:
    return np.random.default_rng(0).random((200, 2)) * np.array(SIZE)


def test_perfect_matches(points0):
    points1 = apply(HOMOGRAPHY, points0)
    errors = transfer_errors(points0, points1, HOMOGRAPHY)
    assert np.max(errors) < 1e-9
    assert match_precision(errors) == 1.0
    assert corner_error(points0, points1, HOMOGRAPHY, SIZE) < 1e-3
    assert cumulative_auc([0.0, 0.0, 0.0]) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("shift, precision_at_1, precision_at_3", [(2.0, 0.0, 1.0), (5.0, 0.0, 0.0)])
def test_shifted_matches(points0, shift, precision_at_1, precision_at_3):
    points1 = points0 + np.array([shift, 0.0])  # identity ground truth, every match off by `shift` pixels
    errors = transfer_errors(points0, points1, np.eye(3))
    np.testing.assert_allclose(errors, shift)
    assert match_precision(errors, 1.0) == precision_at_1
    assert match_precision(errors, 3.0) == precision_at_3
    # The fitted homography is the translation itself, so every corner is off by the shift.
    assert corner_error(points0, points1, np.eye(3), SIZE) == pytest.approx(shift, abs=1e-6)


def test_empty_matches():
    empty = np.zeros((0, 2))
    assert transfer_errors(empty, empty, HOMOGRAPHY).shape == (0,)
    assert match_precision(transfer_errors(empty, empty, HOMOGRAPHY)) == 0.0  # documented: 0, not NaN
    assert corner_error(empty, empty, HOMOGRAPHY, SIZE) == math.inf
    assert cumulative_auc([math.inf]) == [0.0, 0.0, 0.0]
    assert cumulative_auc([]) == [0.0, 0.0, 0.0]
    assert estimate_similarity(empty, empty) is None
    assert similarity_errors(None, 45.0, 1.0) == (math.inf, math.inf)


@pytest.mark.parametrize("errors, thresholds, expected", [
    ([1.0, 2.0], [2.0], [0.375]),  # trapezoids (0, 0)-(1, ½)-(2, ½): (¼ + ½) / 2
    ([0.5], [1.0], [0.75]),  # (0, 0)-(½, 1)-(1, 1): (¼ + ½) / 1
    ([2.0], [1.0, 3.0, 5.0], [0.0, 2 / 3, 0.8]),  # a single error e below t gives 1 - e / 2t
    ([0.0, math.inf], [1.0], [0.5]),  # a failed pair is never recalled
    ([3.0, 1.0, 2.0, 4.0], [2.0], [0.1875]),  # sorted first; an error equal to t is not recalled: (0,0)-(1,¼)-(2,¼)
])
def test_cumulative_auc_hand_computed(errors, thresholds, expected):
    np.testing.assert_allclose(cumulative_auc(errors, thresholds), expected)


def test_similarity_name_parser():
    assert parse_similarity_name("02928139_3448003521_rot45.jpg") == ("02928139_3448003521", 45.0, 1.0)
    assert parse_similarity_name("a/b/02928139_3448003521_scale0.5.jpg") == ("02928139_3448003521", 0.0, 0.5)
    for bad in ("photo.jpg", "photo_rotx.jpg", "photo_scale.jpg"):
        with pytest.raises(UserError, match="not named like"):
            parse_similarity_name(bad)


def test_similarity_matrix_on_a_synthetic_rotation():
    size = (101, 51)  # pixel-centre coordinates: the centre is (50, 25)
    rotation = similarity_matrix(90.0, 1.0, size)
    # D > 0 turns the x-axis towards y (down): a point right of the centre goes below it.
    np.testing.assert_allclose(apply(rotation, np.array([[60.0, 25.0], [50.0, 25.0]])), [[50.0, 35.0], [50.0, 25.0]],
                               atol=1e-9)
    scaling = similarity_matrix(0.0, 0.5, size)
    np.testing.assert_allclose(apply(scaling, np.array([[60.0, 35.0]])), [[55.0, 30.0]], atol=1e-9)


def test_similarity_estimate_and_errors(points0):
    truth = similarity_matrix(30.0, 0.8, SIZE)
    points1 = apply(truth, points0)
    points1[:40] += np.random.default_rng(1).normal(0, 50, (40, 2))  # 20 % outliers
    rotation_error, scale_error = similarity_errors(estimate_similarity(points0, points1), 30.0, 0.8)
    assert rotation_error < 1e-3 and scale_error < 1e-5
    # Angles wrap: an estimate of +179° against a truth of -179° is 2° off.
    turn = np.deg2rad(179.0)
    estimate = np.array([[np.cos(turn), -np.sin(turn), 0.0], [np.sin(turn), np.cos(turn), 0.0]])
    assert similarity_errors(estimate, -179.0, 1.0)[0] == pytest.approx(2.0)
    assert similarity_errors(estimate * 1.1, 179.0, 1.0)[1] == pytest.approx(0.1)


def test_dataset_summary_counts_failures():
    pairs = [{"matches": 10, "precision": 1.0, "corner_error_px": 0.0, "layers": 9},
             {"matches": 0, "precision": 0.0, "corner_error_px": math.inf, "layers": 4}]
    summary = dataset_summary("homography", pairs)
    assert summary["failed"] == 1 and summary["corner_error_mean_px"] == 0.0
    assert summary["layers_mean"] == 6.5
    assert summary["precision_mean"] == 0.5
    assert list(summary["auc"].values()) == [0.5, 0.5, 0.5]


def test_presets(data_dir):
    datasets = {d.name: d for d in load_datasets(get_preset("standard"), data_dir)}
    assert {name: len(d.pairs) for name, d in datasets.items()} == {
        "hpatches-graffiti": 5, "sacre-coeur-rot": 9, "sacre-coeur-scale": 6}
    assert [len(d.pairs) for d in load_datasets(get_preset("smoke"), data_dir)] == [1]
    with pytest.raises(UserError, match="standard"):
        get_preset("nope")


def test_rotation_sign_convention_on_the_data(data_dir):
    """Warping the photo by the ground truth reproduces the rotated file; the opposite sign does not."""
    dataset = next(d for d in load_datasets(get_preset("standard"), data_dir) if d.name == "sacre-coeur-rot")
    pair = next(p for p in dataset.pairs if p.angle_deg == 45.0)
    image0 = cv2.imread(str(pair.image0), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    image1 = cv2.imread(str(pair.image1), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    size = (image0.shape[1], image0.shape[0])

    def difference(angle):
        warped = cv2.warpAffine(image0, similarity_matrix(angle, 1.0, size)[:2], size, borderValue=-1)
        inside = cv2.erode((warped >= 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        return float(np.mean(np.abs(warped[inside] - image1[inside])))

    assert difference(pair.angle_deg) < 8.0
    assert difference(-pair.angle_deg) > 30.0
