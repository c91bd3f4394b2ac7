"""The exported ONNX computes what the independent reference (kornia's LightGlue) computes, on every CPU backend.

Accuracy checks use the sharp test weights (``trt.models.sharp``: peaked attention and assignment, like
trained weights) at the threshold users run (0.1): mutual "matches" scored near 0, which flat random
weights give and which any rounding reshuffles, say nothing about a backend.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest

from reference import kornia_match, kornia_matcher, random_features
from trt.contract import DEFAULT_THRESHOLD
from trt.extractors import get_extractor
from trt.features.base import pack_pairs
from trt.features.image import read_image
from trt.features.sift import SIFT
from trt.models.lightglue import LightGlue
from trt.models.sharp import sharp_state_dict
from trt.onnx.export import LOG_SCORE_ATOL, SCORE_FLOOR, export_matcher, onnx_outputs

MIN_AGREEMENT = 0.999
MIN_REFERENCE_MATCHES = 100

# (image 0, image 1) under the shared data folder: unequal keypoint counts, non-square images.
REAL_PAIRS = [
    ("images/hpatches/v_graffiti/1.ppm", "images/hpatches/v_graffiti/2.ppm"),
    ("images/sacre_coeur/mapping/02928139_3448003521.jpg", "images/sacre_coeur/mapping_rot/02928139_3448003521_rot45.jpg"),
    ("images/lightglue_assets/DSC_0410.JPG", "images/lightglue_assets/DSC_0411.JPG"),
    ("images/sacre_coeur/mapping/10265353_3838484249.jpg", "images/sacre_coeur/mapping_scale/10265353_3838484249_scale0.6.jpg"),
]


def onnx_match(path: Path, f0, f1, threshold: float = DEFAULT_THRESHOLD) -> dict[str, np.ndarray]:
    feeds = pack_pairs([(f0, f1)], len(f0), len(f1), threshold)
    return {name: value[0] for name, value in onnx_outputs(path, feeds).items()}


def openvino_match(session, f0, f1, threshold: float = DEFAULT_THRESHOLD) -> dict[str, np.ndarray]:
    return {name: value[0] for name, value in session.infer(pack_pairs([(f0, f1)], len(f0), len(f1), threshold)).items()}


def assert_parity(ours: dict, reference: dict) -> None:
    """matches0/1 identical on >= 99.9 % of rows; scores of the rows that agree within the export check's
    log-domain tolerance (1 %: scores are exp of sums in the thousands, see trt.onnx.export)."""
    assert int(np.sum(reference["matches0"] > -1)) >= MIN_REFERENCE_MATCHES, "reference found too few matches"
    for side in ("0", "1"):
        agreement = np.mean(ours[f"matches{side}"] == reference[f"matches{side}"])
        assert agreement >= MIN_AGREEMENT, f"matches{side} agree on only {agreement:.4%}"
        same = (ours[f"matches{side}"] == reference[f"matches{side}"]) & (reference[f"matches{side}"] > -1)
        log_ours, log_reference = (np.log(np.maximum(x[f"mscores{side}"][same], SCORE_FLOOR)) for x in (ours, reference))
        np.testing.assert_allclose(log_ours, log_reference, rtol=0, atol=LOG_SCORE_ATOL)


@pytest.fixture(scope="module")
def sift_reference():
    extractor = get_extractor("sift")
    return kornia_matcher(extractor, sharp_state_dict(LightGlue(extractor), seed=0), threshold=DEFAULT_THRESHOLD)


@pytest.fixture(scope="module")
def sift_openvino(sift_sharp_onnx):
    """The sharp model on OpenVINO in f32."""
    from trt.runtime.openvino_session import OpenVINOSession

    with OpenVINOSession(sift_sharp_onnx, precision="f32") as session:
        yield session


@pytest.fixture(scope="module")
def reference_matches(sift_reference, sift_features) -> dict:
    """kornia's outputs per real pair, computed once for every backend's parity test."""
    return {pair: kornia_match(sift_reference, sift_features[pair[0]], sift_features[pair[1]]) for pair in REAL_PAIRS}


@pytest.fixture(scope="module")
def sift_features(data_dir):
    """First images at 2048 keypoints (top-K of 4096, as the runtime truncates), second at SIFT's 2048 cap."""
    dense, capped = SIFT(max_num_keypoints=4096), SIFT(max_num_keypoints=2048)
    features = {}
    for first, second in REAL_PAIRS:
        features[first] = dense(read_image(data_dir / first)).top_k(2048)
        features[second] = capped(read_image(data_dir / second))
    return features


@pytest.mark.parametrize("pair", REAL_PAIRS, ids=lambda pair: Path(pair[0]).parent.name)
def test_sift_parity_on_real_pairs(pair, sift_sharp_onnx, reference_matches, sift_features):
    f0, f1 = sift_features[pair[0]], sift_features[pair[1]]
    assert len(f0) != len(f1) and max(len(f0), len(f1)) <= 2048
    assert_parity(onnx_match(sift_sharp_onnx, f0, f1), reference_matches[pair])


@pytest.mark.parametrize("pair", REAL_PAIRS, ids=lambda pair: Path(pair[0]).parent.name)
def test_openvino_parity_on_real_pairs(pair, sift_openvino, reference_matches, sift_features):
    """OpenVINO f32 runs the same graph (its ReduceLogSumExp importer bug is avoided, see test_openvino.py)."""
    f0, f1 = sift_features[pair[0]], sift_features[pair[1]]
    assert_parity(openvino_match(sift_openvino, f0, f1), reference_matches[pair])


def test_real_pairs_cover_the_hard_cases(sift_features):
    sizes = {f.image_size for f in sift_features.values()}
    assert any(w != h for w, h in sizes), "a non-square image"
    assert max(len(f) for f in sift_features.values()) == 2048, "N up to 2048"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["superpoint", "disk", "aliked", "doghardnet"])
def test_parity_for_other_extractors(name, model_cache):
    extractor = get_extractor(name)
    path = model_cache / f"{name}_sharp0.onnx"
    if not path.exists():
        export_matcher(name, path, sharp_seed=0, dynamic=True)
    rng = np.random.default_rng(1)
    f0 = random_features(extractor, 1200, (640, 480), rng)
    f1 = random_features(extractor, 1100, (640, 480), rng, like=f0)
    reference = kornia_matcher(extractor, sharp_state_dict(LightGlue(extractor), seed=0), threshold=DEFAULT_THRESHOLD)
    assert_parity(onnx_match(path, f0, f1), kornia_match(reference, f0, f1))


def test_batched_equals_single(sift_sharp_onnx, sift_features):
    pairs = [(sift_features[a], sift_features[b]) for a, b in REAL_PAIRS[:3]]
    pairs = [(f0.top_k(400 + 150 * i), f1.top_k(300 + 200 * i)) for i, (f0, f1) in enumerate(pairs)]
    n0, n1 = max(len(f0) for f0, _ in pairs), max(len(f1) for _, f1 in pairs)
    batched = onnx_outputs(sift_sharp_onnx, pack_pairs(pairs, n0, n1, DEFAULT_THRESHOLD))
    for b, (f0, f1) in enumerate(pairs):
        single = onnx_match(sift_sharp_onnx, f0, f1)
        assert np.sum(single["matches0"] > -1) > 50
        np.testing.assert_array_equal(batched["matches0"][b, : len(f0)], single["matches0"])
        np.testing.assert_array_equal(batched["matches1"][b, : len(f1)], single["matches1"])
        np.testing.assert_allclose(batched["mscores0"][b, : len(f0)], single["mscores0"], atol=1e-5)
        assert np.all(batched["matches0"][b, len(f0):] == -1) and np.all(batched["mscores0"][b, len(f0):] == 0)
        assert np.all(batched["matches1"][b, len(f1):] == -1) and np.all(batched["mscores1"][b, len(f1):] == 0)


def test_nearest_neighbour_weights_recover_the_homography(sift_nn_onnx, data_dir):
    folder = data_dir / "images/hpatches/v_graffiti"
    sift = SIFT(max_num_keypoints=2048)
    f0, f1 = sift(read_image(folder / "1.ppm")), sift(read_image(folder / "2.ppm"))
    matches0 = onnx_match(sift_nn_onnx, f0, f1, threshold=0.1)["matches0"]
    valid = matches0 > -1
    points0, points1 = f0.keypoints[valid], f1.keypoints[matches0[valid]]
    homography = np.loadtxt(folder / "H_1_2")
    projected = cv2.perspectiveTransform(points0[None].astype(np.float64), homography)[0]
    errors = np.linalg.norm(projected - points1, axis=1)
    assert valid.sum() >= 200, f"only {valid.sum()} matches"
    assert np.mean(errors < 3) >= 0.8, f"only {np.mean(errors < 3):.1%} of matches within 3 px"


@pytest.fixture(scope="module")
def trained_sift_weights() -> Path:
    """The official sift_lightglue.pth where a user or CI machine has it (found offline by sha256:
    trt.official_weights); the test skips otherwise."""
    from trt.official_weights import find_official

    found = find_official(get_extractor("sift"), Path(__file__).resolve().parent.parent / "weights")
    if found is None:
        pytest.skip("no official sift_lightglue.pth in weights/ or the torch hub cache (no package ships it; "
                    "it cannot be downloaded here)")
    return found.path


def test_trained_weights_match_the_reference_and_the_geometry(trained_sift_weights, tmp_path, data_dir):
    import torch

    onnx_path = export_matcher("sift", tmp_path / "sift.onnx", weights=trained_sift_weights)
    extractor = get_extractor("sift")
    reference = kornia_matcher(extractor, torch.load(trained_sift_weights, map_location="cpu", weights_only=True),
                               threshold=DEFAULT_THRESHOLD)
    folder = data_dir / "images/hpatches/v_graffiti"
    sift = SIFT(max_num_keypoints=2048)
    f0, f1 = sift(read_image(folder / "1.ppm")), sift(read_image(folder / "2.ppm"))
    assert_parity(onnx_match(onnx_path, f0, f1), kornia_match(reference, f0, f1))
    matches0 = onnx_match(onnx_path, f0, f1)["matches0"]
    valid = matches0 > -1
    projected = cv2.perspectiveTransform(f0.keypoints[valid][None].astype(np.float64), np.loadtxt(folder / "H_1_2"))[0]
    errors = np.linalg.norm(projected - f1.keypoints[matches0[valid]], axis=1)
    assert valid.sum() >= 200 and np.mean(errors < 3) >= 0.9
