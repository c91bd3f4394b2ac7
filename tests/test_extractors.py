"""Learned extractors: the contract, the front-end's padding rule, the networks (official layouts, strict
loading), fixed-shape detection, parity with kornia on real images (the ONNX on ONNX Runtime), export and
its bad input."""

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from trt.errors import ContractError, ImageError, UserError, WeightsError
from trt.extractor_contract import (IMAGE, MAX_KEYPOINTS, OUTPUT_NAMES, REGION, ExtractorLayout, check_feeds,
                                    infer_layout)
from trt.extractors import NETWORKS, get_network
from trt.features.padding import GRAY_WEIGHTS, Padding, batch_images, pad_to_stride, stride_padding, to_channels
from trt.models.detection import region_masks, select_top_k, simple_nms, strict_maxima
from trt.models.networks import load_network_checkpoint, make_module, official_layout, random_state_dict
from trt.onnx.export import read_metadata, run_onnx
from trt.onnx.export_extractor import compare_features, feature_agreement

ROOT = Path(__file__).resolve().parent.parent
PARITY_RADIUS_PX, PARITY_MIN_RECALL, PARITY_MIN_COSINE = 0.5, 0.95, 0.999


def read_rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path))[..., ::-1])


def run_export(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "export.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


# ---------------------------------------------------------------------------------------------------
# The contract


def test_contract_layout_and_specs():
    layout = ExtractorLayout(3, 2048, 128)
    assert [(s.name, s.dtype.name, s.shape) for s in layout.inputs] == [
        ("image", "float32", ("B", 3, "H", "W")), ("region", "int32", ("B", 4))]
    assert [(s.name, s.dtype.name, s.shape) for s in layout.outputs] == [
        ("keypoints", "float32", ("B", 2048, 2)), ("scores", "float32", ("B", 2048)),
        ("descriptors", "float32", ("B", 2048, 128)), ("count", "int32", ("B",))]
    outputs = {"keypoints": ("B", 2048, 2), "scores": ("B", 2048), "descriptors": ("B", 2048, 128), "count": ("B",)}
    assert infer_layout({"image": ("B", 3, "H", "W"), "region": ("B", 4)}, outputs) == layout
    with pytest.raises(ContractError, match="do not follow the extractor contract"):
        infer_layout({"image": (1, 3, 480, 640)}, outputs)
    with pytest.raises(ContractError, match="fixed C, K and D"):
        infer_layout({"image": ("B", 3, "H", "W"), "region": ("B", 4)}, {**outputs, "keypoints": ("B", "K", 2)})


def test_check_feeds_names_what_is_wrong():
    layout = ExtractorLayout(1, 64, 256)
    image = np.zeros((2, 1, 64, 96), np.float32)
    region = np.array([[0, 0, 96, 64], [0, 0, 50, 40]], np.int32)
    assert check_feeds({IMAGE: image, REGION: region}, layout, stride=8) == (2, 64, 96)
    cases = [
        ({IMAGE: image}, "missing inputs: region"),
        ({IMAGE: image.astype(np.float64), REGION: region}, "image has dtype float64"),
        ({IMAGE: np.zeros((2, 3, 64, 96), np.float32), REGION: region}, r"image has shape \(2, 3, 64, 96\)"),
        ({IMAGE: np.zeros((2, 1, 60, 96), np.float32), REGION: region}, "multiples of the network's stride 8"),
        ({IMAGE: image, REGION: np.array([[0, 0, 96, 64], [60, 0, 50, 40]], np.int32)}, "of image 1 is not a rectangle"),
        ({IMAGE: image, REGION: np.array([[0, 0, 96, 64], [0, 0, 4, 40]], np.int32)}, "at least 8x8 pixels"),
    ]
    for feeds, message in cases:
        with pytest.raises(ContractError, match=message):
            check_feeds(feeds, layout, stride=8)


# ---------------------------------------------------------------------------------------------------
# The front-end rule (numpy only)


@pytest.mark.parametrize("height, width, padding, expected", [
    (731, 1024, "centre-replicate", Padding(0, 2, 0, 3)),  # ALIKED's InputPadder: the smaller half first
    (640, 800, "centre-replicate", Padding(0, 0, 0, 0)),
    (100, 45, "centre-replicate", Padding(9, 14, 10, 14)),
    (731, 1021, "bottom-right-zero", Padding(0, 0, 3, 5)),
    (13, 9, "bottom-right-replicate", Padding(0, 0, 7, 3)),
])
def test_stride_padding(height, width, padding, expected):
    stride = 32 if padding.startswith("centre") else (16 if padding.endswith("zero") else 8)
    assert stride_padding(height, width, stride, padding) == expected


def test_pad_to_stride_keeps_the_image_and_fills_as_told():
    image = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    padded, pads = pad_to_stride(image, 4, "centre-replicate")
    assert padded.shape == (8, 8, 3) and pads == Padding(0, 1, 1, 2)
    assert np.array_equal(padded[1:6, 0:7], image)
    assert np.array_equal(padded[0, :7], image[0]) and np.array_equal(padded[7, :7], image[-1])  # replicated rows
    zero, pads = pad_to_stride(image, 4, "bottom-right-zero")
    assert pads == Padding(0, 0, 1, 3) and np.array_equal(zero[:5, :7], image) and not zero[5:].any()


@pytest.mark.parametrize("shape", [(20, 40), (40, 31), (1, 1)])
def test_image_smaller_than_the_stride_is_refused(shape):
    with pytest.raises(ImageError, match=f"is {shape[1]}x{shape[0]} pixels: the network needs at least its stride, 32"):
        pad_to_stride(np.zeros((*shape, 3), np.float32), 32, "centre-replicate")


def test_batch_images_pads_each_then_to_one_size():
    rng = np.random.default_rng(1)
    first, second = rng.random((731, 1024, 3)).astype(np.float32), rng.random((300, 200, 3)).astype(np.float32)
    image, region = batch_images([first, second], 32, "centre-replicate", min_size=(768, 1024))
    assert image.shape == (2, 3, 768, 1024) and image.dtype == np.float32
    assert region.tolist() == [[0, 2, 1024, 731], [12, 10, 200, 300]] and region.dtype == np.int32
    assert np.array_equal(image[0, :, 2:733, :], first.transpose(2, 0, 1))
    assert np.array_equal(image[1, :, 10:310, 12:212], second.transpose(2, 0, 1))
    with pytest.raises(ValueError, match="not a multiple of the stride"):
        batch_images([first], 32, "centre-replicate", min_size=(100, 100))


def test_to_channels():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = to_channels(gray, 3)
    assert rgb.shape == (3, 4, 3) and np.array_equal(rgb[..., 0], rgb[..., 2]) and rgb.max() == np.float32(11 / 255)
    colour = np.random.default_rng(2).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    expected = (colour.astype(np.float32) / 255 * GRAY_WEIGHTS).sum(axis=2)
    assert np.allclose(to_channels(colour, 1)[..., 0], expected, atol=1e-6)
    with pytest.raises(ImageError, match="expected a uint8"):
        to_channels(colour.astype(np.float32), 3)


# ---------------------------------------------------------------------------------------------------
# Networks and weights


def test_network_table():
    assert get_network("aliked").name == "aliked-n16" and get_network("aliked", "aliked-t16").descriptor_dim == 64
    assert (get_network("superpoint").channels, get_network("superpoint").stride) == (1, 8)
    with pytest.raises(UserError, match="sift features come from OpenCV on the host"):
        get_network("sift")
    with pytest.raises(UserError, match="network disk makes disk features, not aliked: choose one of aliked-n16, "):
        get_network("aliked", "disk")
    with pytest.raises(UserError, match="unknown extractor 'orb'"):
        get_network("orb")


@pytest.mark.parametrize("name", ["aliked-n16", "aliked-n16rot", "aliked-n32", "aliked-t16"])
def test_official_aliked_checkpoints_load_strictly(name, data_dir):
    network = NETWORKS[name]
    module = make_module(network, 64, 0.2, 2)
    source = load_network_checkpoint(module, network, data_dir / "aliked" / f"{name}.pth")
    assert source.kind == "official" and source.description == f"sha256:{network.weights_sha256}"
    from trt.synthetic import synthetic_image

    image, region = batch_images([to_channels(synthetic_image(96, 128, np.random.default_rng(0)), 3)], 32,
                                 network.padding)
    with torch.no_grad():
        keypoints, scores, descriptors, count = module(torch.from_numpy(image), torch.from_numpy(region))
    assert keypoints.shape == (1, 64, 2) and descriptors.shape == (1, 64, network.descriptor_dim)
    assert 0 < int(count[0]) <= 64 and (scores[0, :int(count[0])] > 0).all()  # read at the refined position


def test_another_variants_checkpoint_is_refused(data_dir):
    with pytest.raises(WeightsError, match="is the official aliked-n16rot checkpoint, not aliked-n16's: export it "
                                           "with --extractor-model aliked-n16rot"):
        load_network_checkpoint(make_module(NETWORKS["aliked-n16"], 64, 0.2, 2), NETWORKS["aliked-n16"],
                                data_dir / "aliked" / "aliked-n16rot.pth")


def test_wrong_layout_lists_the_keys(tmp_path):
    network = NETWORKS["aliked-n16"]
    checkpoint = tmp_path / "t16-layout.pth"
    torch.save(random_state_dict(make_module(NETWORKS["aliked-t16"], 64, 0.2, 2), 0), checkpoint)
    with pytest.raises(WeightsError, match=r"is not a aliked-n16 checkpoint of this layout; wrong shapes: "
                                           r"block1.bn1.bias \(8,\) \(expected \(16,\)\)"):
        load_network_checkpoint(make_module(network, 64, 0.2, 2), network, checkpoint)


# superpoint_v1.pth (Magic Leap's release): a VGG encoder, the detector and the descriptor heads.
SUPERPOINT_LAYOUT = [
    ("conv1a", (64, 1, 3, 3)), ("conv1b", (64, 64, 3, 3)), ("conv2a", (64, 64, 3, 3)), ("conv2b", (64, 64, 3, 3)),
    ("conv3a", (128, 64, 3, 3)), ("conv3b", (128, 128, 3, 3)), ("conv4a", (128, 128, 3, 3)),
    ("conv4b", (128, 128, 3, 3)), ("convPa", (256, 128, 3, 3)), ("convPb", (65, 256, 1, 1)),
    ("convDa", (256, 128, 3, 3)), ("convDb", (256, 256, 1, 1)),
]


def test_superpoint_has_the_official_layout():
    expected = {}
    for name, shape in SUPERPOINT_LAYOUT:
        expected[f"{name}.weight"], expected[f"{name}.bias"] = shape, shape[:1]
    state_dict = make_module(NETWORKS["superpoint"], 64, 0.0005, 4).state_dict()
    assert {key: tuple(value.shape) for key, value in state_dict.items()} == expected


def test_disk_has_the_official_layout_nested_as_the_file_is(tmp_path):
    """kornia's DISK loads the official depth-save.pth strictly (its state dict under "extractor")."""
    from kornia.feature import DISK as KorniaDISK

    network = NETWORKS["disk"]
    module = make_module(network, 64, 0.0, 2)
    reference = KorniaDISK().state_dict()
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {k: tuple(v.shape) for k, v in reference.items()}
    checkpoint = tmp_path / "depth-save.pth"
    torch.save(official_layout(network, random_state_dict(module, 3)), checkpoint)
    with pytest.warns(UserWarning, match=f"not the official {network.weights_sha256}"):
        assert load_network_checkpoint(module, network, checkpoint).kind == "file"
    torch.save(random_state_dict(module, 3), tmp_path / "flat.pth")
    with pytest.raises(WeightsError, match="has no 'extractor' entry holding a state dict"):
        load_network_checkpoint(module, network, tmp_path / "flat.pth")


# ---------------------------------------------------------------------------------------------------
# Fixed-shape detection


def test_nms_inside_a_region_is_the_nms_of_the_cropped_map():
    """simple_nms on a padded batch sees each region exactly as the reference sees the map cropped to it."""
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(np.round(rng.random((1, 1, 40, 48)), 1).astype(np.float32))  # plenty of ties
    region = torch.tensor([[5, 7, 30, 25]], dtype=torch.int32)
    inside, _ = region_masks(region, 40, 48, border=0)
    crop = scores[:, :, 7:32, 5:35]
    alone = simple_nms(crop, 2, torch.ones_like(crop, dtype=torch.bool))
    in_batch = simple_nms(scores, 2, inside)
    assert torch.equal(in_batch[:, :, 7:32, 5:35], alone) and not (in_batch & ~inside).any()


def test_strict_maxima_are_kornias_nms2d():
    from kornia.geometry.subpix import nms2d

    rng = np.random.default_rng(4)
    heatmap = torch.from_numpy(np.round(rng.normal(size=(2, 1, 30, 41)), 1).astype(np.float32))
    _, inner = region_masks(torch.tensor([[0, 0, 41, 30]] * 2, dtype=torch.int32), 30, 41, border=2)
    assert torch.equal(strict_maxima(heatmap, 2) & inner, nms2d(heatmap, (5, 5), mask_only=True))


def test_select_top_k_counts_and_pads():
    scores = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    candidates = scores.remainder(3) == 0  # 0, 3, 6, 9, 12, 15
    indices, count, valid = select_top_k(scores, candidates, 20)  # K larger than the map
    assert count.tolist() == [6] and count.dtype == torch.int32
    assert indices[0, :6].tolist() == [15, 12, 9, 6, 3, 0] and not indices[0, 6:].any()
    assert valid[0].tolist() == [True] * 6 + [False] * 14
    indices, count, _ = select_top_k(scores, candidates, 4)
    assert count.tolist() == [4] and indices[0].tolist() == [15, 12, 9, 6]


# ---------------------------------------------------------------------------------------------------
# Parity with kornia on real images: our ONNX on ONNX Runtime


def extract_with_onnx(onnx_path: Path, network, image: np.ndarray) -> dict:
    tensor, region = batch_images([to_channels(image, network.channels)], network.stride, network.padding)
    (outputs,) = run_onnx(onnx_path, [{IMAGE: tensor, REGION: region}], OUTPUT_NAMES)
    return outputs


def check_against_reference(outputs: dict, keypoints: np.ndarray, descriptors: np.ndarray, size) -> float:
    """The parity criteria; returns the recall. Also: rows beyond count are zero, keypoints inside the image."""
    n = int(outputs["count"][0])
    agreement = feature_agreement(keypoints, descriptors, outputs["keypoints"][0, :n], outputs["descriptors"][0, :n],
                                  PARITY_RADIUS_PX)
    assert agreement.recall >= PARITY_MIN_RECALL, agreement
    assert agreement.min_cosine >= PARITY_MIN_COSINE, agreement
    kpts = outputs["keypoints"][0, :n]
    assert (kpts >= 0).all() and (kpts[:, 0] <= size[1] - 1).all() and (kpts[:, 1] <= size[0] - 1).all()
    assert not outputs["keypoints"][0, n:].any() and not outputs["descriptors"][0, n:].any()
    assert np.allclose(np.linalg.norm(outputs["descriptors"][0, :n], axis=1), 1, atol=1e-5)
    return agreement.recall


@pytest.mark.slow
def test_aliked_parity_with_kornia(aliked_extractor_onnx, aliked_checkpoint, data_dir):
    from kornia.feature import ALIKED as KorniaALIKED

    metadata = read_metadata(onnx.load(str(aliked_extractor_onnx), load_external_data=False))
    assert (metadata["network"], metadata["max_keypoints"], metadata["detection_threshold"]) == ("aliked-n16", "2048", "0.2")
    assert metadata["weights"] == f"sha256:{NETWORKS['aliked-n16'].weights_sha256}"
    reference = KorniaALIKED("aliked-n16", max_num_keypoints=2048, detection_threshold=0.2, nms_radius=2).eval()
    reference.load_state_dict(torch.load(aliked_checkpoint, weights_only=True), strict=False)  # kornia's own way
    images = [data_dir / "images/hpatches/v_graffiti/1.ppm",  # 800x640: no padding
              data_dir / "images/lightglue_assets/sacre_coeur1.jpg"]  # 1024x731: padded around the centre
    for path in images:
        image = read_rgb(path)
        with torch.no_grad():
            expected = reference(torch.from_numpy(to_channels(image, 3)).permute(2, 0, 1)[None])[0]
        outputs = extract_with_onnx(aliked_extractor_onnx, NETWORKS["aliked-n16"], image)
        assert len(expected.keypoints) > 1000
        check_against_reference(outputs, expected.keypoints.numpy(), expected.descriptors.numpy(), image.shape)


@pytest.mark.slow
def test_disk_parity_with_kornia(disk_extractor_onnx, data_dir):
    from kornia.feature import DISK as KorniaDISK

    network = NETWORKS["disk"]
    reference = KorniaDISK().eval()
    reference.load_state_dict(random_state_dict(make_module(network, 2048, 0.0, 2), 0))  # the export's seeded weights
    image = read_rgb(data_dir / "images/lightglue_assets/sacre_coeur1.jpg")  # 1024x731: zero-padded to 736 rows
    with torch.no_grad():
        expected = reference(torch.from_numpy(to_channels(image, 3)).permute(2, 0, 1)[None], n=2048, window_size=5,
                             score_threshold=0.0, pad_if_not_divisible=True)[0]
    outputs = extract_with_onnx(disk_extractor_onnx, network, image)
    check_against_reference(outputs, expected.keypoints.numpy(), expected.descriptors.numpy(), image.shape)
    assert np.array_equal(outputs["keypoints"][0], np.round(outputs["keypoints"][0]))  # DISK has no sub-pixel step


@pytest.mark.slow
def test_superpoint_onnx_is_its_module_on_a_real_image(superpoint_extractor_onnx, data_dir):
    """No kornia SuperPoint: the ONNX against our module (with the export's seeded weights) and the
    reference's detection rules (integer pixels, 4 px border, threshold, unit descriptors)."""
    network = NETWORKS["superpoint"]
    module = make_module(network, 2048, 0.0005, 4)
    module.load_state_dict(random_state_dict(module, 0))
    image = read_rgb(data_dir / "images/lightglue_assets/sacre_coeur1.jpg")
    tensor, region = batch_images([to_channels(image, 1)], 8, network.padding)
    feeds = {IMAGE: tensor, REGION: region}
    with torch.no_grad():
        expected = dict(zip(OUTPUT_NAMES, (v.numpy() for v in module(torch.from_numpy(tensor), torch.from_numpy(region)))))
    (actual,) = run_onnx(superpoint_extractor_onnx, [feeds], OUTPUT_NAMES)
    compare_features(expected, actual, "superpoint on sacre_coeur1")
    n = int(actual["count"][0])
    kpts = actual["keypoints"][0, :n]
    assert n == 2048 and np.array_equal(kpts, np.round(kpts))
    assert kpts.min() >= 4 and (kpts[:, 0] < 1024 - 4).all() and (kpts[:, 1] < 731 - 4).all()
    assert (actual["scores"][0, :n] > 0.0005).all() and (np.diff(actual["scores"][0, :n]) <= 0).all()


# ---------------------------------------------------------------------------------------------------
# export.py: the extractor flags and bad input

STATIC_SUPERPOINT = ["--extractor_type=superpoint", "--extractor_path", "e.onnx", "--lightglue_path", "m.onnx",
                     "--extractor-random-weights", "0", "--img_size", "64", "96", "--max_num_keypoints", "32",
                     "--num_keypoints", "64"]


def test_export_cli_writes_both_or_neither(tmp_path):
    result = run_export(STATIC_SUPERPOINT + ["--random-weights", "0"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wrote", "e.onnx", "wrote", "m.onnx"]
    extractor = onnx.load(str(tmp_path / "e.onnx"))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in extractor.graph.input}
    assert shapes == {"image": [1, 1, 64, 96], "region": [1, 4]}
    metadata = read_metadata(extractor)
    assert (metadata["role"], metadata["network"], metadata["max_keypoints"], metadata["stride"]) == (
        "extractor", "superpoint", "32", "8")
    assert metadata["weights_kind"] == "random" and read_metadata(onnx.load(str(tmp_path / "m.onnx")))["extractor"] == "superpoint"

    fresh = tmp_path / "offline"
    fresh.mkdir()
    result = run_export(STATIC_SUPERPOINT, fresh)  # no matcher weights offline: the extractor is not kept either
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "superpoint_lightglue.pth" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in fresh.rglob("*") if p.is_file()) == []


@pytest.mark.parametrize("args, message", [
    (["--extractor_type=aliked", "--max_num_keypoints", str(MAX_KEYPOINTS + 1)],
     f"--max-keypoints {MAX_KEYPOINTS + 1} is more than TensorRT's TopK allows \\({MAX_KEYPOINTS}\\)"),
    # SuperPoint's network: not shipped by a package (the ALIKED and DISK files are found offline, trt.official_weights)
    (["--extractor_type=superpoint"],
     r"no weights at weights/superpoint_v1.pth .* Download https://github.com/cvg/LightGlue/releases/download/"
     r"v0.1_arxiv/superpoint_v1.pth and put it at weights/superpoint_v1.pth, pass --extractor-weights FILE"),
])
def test_export_cli_bad_input(args, message, tmp_path):
    result = run_export([*args, "--extractor_path", "x.onnx", "--dynamic"], tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert re.search(message, result.stderr), result.stderr
    assert not list(tmp_path.rglob("*.onnx"))


@pytest.mark.parametrize("kwargs, message", [
    ({"max_num_keypoints": 0}, "--max-keypoints must be a positive integer"),
    ({"extractor": "sift"}, "sift features come from OpenCV on the host"),
    ({"extractor": "disk", "weights": Path("missing.pth")}, "weights file missing.pth does not exist"),
    ({"extractor": "superpoint", "random_seed": 0, "dynamic": False, "image_size": (60, 80)},
     "height and width are positive multiples of the network's stride 8, not 60x80"),
    ({"extractor": "superpoint", "random_seed": 0, "weights": Path("x.pth")}, "choose one of --extractor-weights and"),
    ({"nms_radius": 0}, "--nms-radius must be a positive integer"),
])
def test_export_bad_input(kwargs, message, tmp_path):
    from trt.onnx.export_extractor import export_extractor

    with pytest.raises(UserError, match=message):
        export_extractor(**{"extractor": "aliked", **kwargs}, output=tmp_path / "x.onnx", weights_dir=tmp_path)
    assert not list(tmp_path.iterdir())
