"""Export a learned extractor (ALIKED, SuperPoint, DISK) to a TensorRT-ready ONNX file of the extractor
contract (trt/extractor_contract.py), through the matcher's pipeline (trt/onnx/export.py): TorchScript
exporter at opset 17 → checker → symbolic shape inference → graph-surgeon clean-up → TensorRT op lint →
numerical check against the torch module at sizes other than the trace sizes → atomic write.

The check runs seeded synthetic scenes (``trt.synthetic.synthetic_image``) through ONNX Runtime and
the torch module, in batches whose images have different sizes, and compares the keypoints, scores
and descriptors (``compare_features``): the graph's detection must agree with the module's, not only
its dense maps.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trt import __version__
from trt.contract import BATCH
from trt.errors import ContractError, UserError
from trt.extractor_contract import (DEFAULT_MAX_KEYPOINTS, HEIGHT, IMAGE, MAX_KEYPOINTS, OUTPUT_NAMES, REGION,
                                    WIDTH, ExtractorLayout)
from trt.extractors import ExtractorNetwork, get_network
from trt.fileio import atomic_path, check_writable

# Trace sizes equal no model dimension: batch 5; 224 × 352 pixels is 7 × 11 cells at stride 32.
TRACE_BATCH, TRACE_SIZE = 5, (224, 352)
# Check sizes (height, width) of the padded batch, and of the images inside it (smaller ones padded).
CHECK_SIZES = (((160, 288), ((160, 288),)), ((256, 192), ((256, 192), (200, 150), (131, 177))))
# Agreement the check demands of ONNX Runtime against the torch module (same weights, FP32).
CHECK_RADIUS_PX = 0.05
CHECK_MIN_RECALL = 0.99
CHECK_MIN_COSINE = 0.9999


@dataclass(frozen=True)
class FeatureAgreement:
    """How well one extractor's keypoints reproduce another's: the reference keypoints that have a
    candidate keypoint within ``radius`` pixels, and the cosine of the descriptors of those pairs."""

    recall: float
    cosines: np.ndarray
    reference_count: int
    candidate_count: int

    @property
    def min_cosine(self) -> float:
        return float(self.cosines.min()) if self.cosines.size else 1.0

    def __str__(self) -> str:
        return (f"{self.recall:.2%} of {self.reference_count} keypoints matched ({self.candidate_count} found), "
                f"descriptor cosine min {self.min_cosine:.6f}")


def feature_agreement(reference_kpts: np.ndarray, reference_desc: np.ndarray, kpts: np.ndarray, desc: np.ndarray,
                      radius: float) -> FeatureAgreement:
    """Pair each reference keypoint [N, 2] with the nearest candidate [M, 2]; keep pairs within ``radius``."""
    if len(reference_kpts) == 0 or len(kpts) == 0:
        return FeatureAgreement(float(len(reference_kpts) == 0), np.zeros(0), len(reference_kpts), len(kpts))
    nearest = np.empty(len(reference_kpts), np.int64)
    distance = np.empty(len(reference_kpts))
    for start in range(0, len(reference_kpts), 1024):  # bounded memory for any K
        block = reference_kpts[start:start + 1024, None, :] - kpts[None, :, :]
        squared = np.einsum("nmk,nmk->nm", block, block)
        nearest[start:start + 1024] = squared.argmin(axis=1)
        distance[start:start + 1024] = np.sqrt(squared.min(axis=1))
    paired = distance <= radius
    cosines = np.sum(reference_desc[paired] * desc[nearest[paired]], axis=1)
    return FeatureAgreement(float(paired.mean()), cosines, len(reference_kpts), len(kpts))


def compare_features(expected: dict, actual: dict, where: str, radius: float = CHECK_RADIUS_PX,
                     min_recall: float = CHECK_MIN_RECALL, min_cosine: float = CHECK_MIN_COSINE) -> None:
    """Per image of the batch: the expected keypoints found again, descriptors alike, or a ContractError."""
    for name, reference in expected.items():
        value = actual[name]
        if value.shape != reference.shape or value.dtype != reference.dtype:
            raise ContractError(f"{where}: {name} is {value.dtype}{list(value.shape)}, "
                                f"expected {reference.dtype}{list(reference.shape)}")
    for index, (n_ref, n) in enumerate(zip(expected["count"], actual["count"])):
        agreement = feature_agreement(expected["keypoints"][index, :n_ref], expected["descriptors"][index, :n_ref],
                                      actual["keypoints"][index, :n], actual["descriptors"][index, :n], radius)
        if agreement.recall < min_recall or agreement.min_cosine < min_cosine:
            raise ContractError(f"{where}, image {index}: {agreement} (need {min_recall:.0%} within {radius} px, "
                                f"cosine >= {min_cosine})")
        if np.any(actual["keypoints"][index, n:]) or np.any(actual["descriptors"][index, n:]):
            raise ContractError(f"{where}, image {index}: rows beyond count {n} are not zero")


def example_inputs(network: ExtractorNetwork, size: tuple[int, int], image_sizes: list[tuple[int, int]],
                   seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic scenes of ``image_sizes`` (height, width), padded by the front-end into one ``size`` batch."""
    from trt.synthetic import synthetic_image
    from trt.features.padding import batch_images, to_channels

    rng = np.random.default_rng(seed)
    images = [to_channels(synthetic_image(h, w, rng), network.channels) for h, w in image_sizes]
    image, region = batch_images(images, network.stride, network.padding, min_size=size)
    if image.shape[2:] != size:
        raise ValueError(f"images {image_sizes} do not fit a {size} batch")
    return {IMAGE: image, REGION: region}


def torch_features(model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        outputs = model(torch.from_numpy(feeds[IMAGE]), torch.from_numpy(feeds[REGION]))
    return {name: value.numpy() for name, value in zip(OUTPUT_NAMES, outputs)}


def _dynamic_axes(dynamic: bool) -> dict | None:
    if not dynamic:
        return None
    return {IMAGE: {0: BATCH, 2: HEIGHT, 3: WIDTH}, REGION: {0: BATCH}, **{name: {0: BATCH} for name in OUTPUT_NAMES}}


def set_extractor_metadata(model, network: ExtractorNetwork, layout: ExtractorLayout, settings: dict, weights) -> None:
    """``lightglue.*`` metadata: what the network is and makes, and what the front-end must do for it."""
    import torch

    from trt.models.networks import fp16_scopes
    from trt.onnx.export import write_metadata

    write_metadata(model, {
        "role": "extractor",
        "extractor": network.feature,
        "network": network.name,
        "channels": str(layout.channels),
        "stride": str(network.stride),
        "padding": network.padding,
        "descriptor_dim": str(layout.descriptor_dim),
        "max_keypoints": str(layout.max_keypoints),
        "detection_threshold": repr(settings["detection_threshold"]),
        "nms_radius": str(settings["nms_radius"]),
        "fp16_scopes": json.dumps(list(fp16_scopes(network))),
        "weights": weights.description,
        "weights_kind": weights.kind,
        "contract": "1",
        "export": json.dumps({**settings, "exporter": "torch.onnx (TorchScript)", "torch": torch.__version__,
                              "lightglue_trt": __version__}, sort_keys=True),
    })


def check_max_keypoints(max_num_keypoints: int) -> int:
    if isinstance(max_num_keypoints, bool) or not isinstance(max_num_keypoints, int) or max_num_keypoints < 1:
        raise UserError(f"--max-keypoints must be a positive integer, not {max_num_keypoints!r}")
    if max_num_keypoints > MAX_KEYPOINTS:
        raise UserError(f"--max-keypoints {max_num_keypoints} is more than TensorRT's TopK allows "
                        f"({MAX_KEYPOINTS}): the engine could not be built; ask for at most {MAX_KEYPOINTS}")
    return max_num_keypoints


def export_extractor(
    extractor: str = "aliked",
    output: Path = Path("weights/aliked-n16.onnx"),
    *,
    network: str | None = None,
    weights: Path | None = None,
    random_seed: int | None = None,
    max_num_keypoints: int = DEFAULT_MAX_KEYPOINTS,
    detection_threshold: float | None = None,
    nms_radius: int | None = None,
    dynamic: bool = True,
    batch_size: int = 1,
    image_size: tuple[int, int] = (480, 640),
    opset: int | None = None,
    weights_dir: Path = Path("weights"),
    verify: bool = True,
) -> Path:
    """Export, clean, lint and verify an extractor network; write it atomically to ``output``; return the path.

    ``network``: the ``--extractor-model`` (default: the one cvg/LightGlue uses for ``extractor``);
    ``detection_threshold``, ``nms_radius``: default the reference's; ``image_size`` (height, width) and
    ``batch_size`` fix the input of a static export (``dynamic=False``). ``verify=False`` skips the
    comparison with the torch module: for a stand-in read only for its inputs and layer names
    (``trt.engine.trtexec.stand_in_onnx``), never for a model to serve.
    """
    from trt.onnx.export import DEFAULT_OPSET, SUPPORTED_OPSETS, finish_for_tensorrt, run_onnx, torch_to_onnx

    spec = get_network(extractor, network)
    max_num_keypoints = check_max_keypoints(max_num_keypoints)
    opset = DEFAULT_OPSET if opset is None else opset
    if opset not in SUPPORTED_OPSETS:
        raise UserError(f"opset {opset} is not supported: use {', '.join(map(str, SUPPORTED_OPSETS))}")
    detection_threshold = spec.detection_threshold if detection_threshold is None else float(detection_threshold)
    nms_radius = spec.nms_radius if nms_radius is None else nms_radius
    if isinstance(nms_radius, bool) or not isinstance(nms_radius, int) or nms_radius < 1:
        raise UserError(f"--nms-radius must be a positive integer, not {nms_radius!r}")
    if not dynamic:
        height, width = image_size
        if batch_size < 1 or height < spec.stride or width < spec.stride or height % spec.stride or width % spec.stride:
            raise UserError(f"a static {spec.name} export needs --batch-size >= 1 and an --img-size whose height and "
                            f"width are positive multiples of the network's stride {spec.stride}, not {height}x{width}")
    output = check_writable(Path(output))

    from trt.models.networks import build_network

    model, source = build_network(spec, weights, random_seed, Path(weights_dir), max_num_keypoints,
                                  detection_threshold, nms_radius)
    layout = ExtractorLayout(spec.channels, max_num_keypoints, spec.descriptor_dim)
    settings = {"dynamic": dynamic, "batch_size": None if dynamic else batch_size,
                "image_size": None if dynamic else list(image_size), "opset": opset,
                "max_num_keypoints": max_num_keypoints, "detection_threshold": detection_threshold,
                "nms_radius": nms_radius}
    if dynamic:
        trace = example_inputs(spec, TRACE_SIZE, [TRACE_SIZE] * TRACE_BATCH)
        checks = [example_inputs(spec, size, list(images), seed=index + 1) for index, (size, images) in enumerate(CHECK_SIZES)]
    else:
        trace = example_inputs(spec, tuple(image_size), [tuple(image_size)] * batch_size)
        checks = [trace]
    graph = torch_to_onnx(model, trace, OUTPUT_NAMES, _dynamic_axes(dynamic), opset)
    set_extractor_metadata(graph, spec, layout, settings, source)
    graph_bytes = finish_for_tensorrt(graph)

    for feeds, actual in zip(checks, run_onnx(graph_bytes, checks, OUTPUT_NAMES) if verify else ()):
        batch, _, height, width = feeds[IMAGE].shape
        compare_features(torch_features(model, feeds), actual, f"exported graph at B={batch}, {height}x{width}")

    with atomic_path(output) as tmp:
        tmp.write_bytes(graph_bytes)
    return output
