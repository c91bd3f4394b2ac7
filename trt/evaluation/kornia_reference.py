"""kornia's LightGlue as the independent reference: the same state dict in ``kornia.feature.LightGlue`` (full
depth, or its adaptive depth and width), fed the contract's requests, and kornia's ALIKED and DISK for the
extractors. Used by ``make bench``, ``make eval``'s anchor row and the parity tests."""

from trt.errors import WeightsError
from trt.extractor_contract import DEFAULT_MAX_KEYPOINTS
from trt.extractors import Extractor, ExtractorNetwork


def kornia_reference(extractor: Extractor, state_dict: dict, threshold: float = 0.0, depth_confidence: float = -1,
                     width_confidence: float = -1):
    """``kornia.feature.LightGlue`` with ``state_dict``, at full depth unless ``depth_confidence`` /
    ``width_confidence`` say otherwise (kornia's adaptive LightGlue); its ``filter_threshold`` is
    ``threshold``, the one ``bench_feeds`` gives our backends."""
    from kornia.feature import LightGlue

    from trt.models.weights import OPTIONAL_KEYS, current_layout

    matcher = LightGlue(features=None, input_dim=extractor.descriptor_dim, add_scale_ori=extractor.scale_ori,
                        depth_confidence=depth_confidence, width_confidence=width_confidence,
                        filter_threshold=threshold).eval()
    incompatible = matcher.load_state_dict(current_layout(state_dict), strict=False)
    if incompatible.unexpected_keys or set(incompatible.missing_keys) - OPTIONAL_KEYS:
        raise WeightsError(f"kornia's LightGlue does not take these weights: missing {incompatible.missing_keys}, "
                           f"unexpected {incompatible.unexpected_keys}")
    return matcher


def kornia_inputs(feeds: dict) -> dict:
    """The reference's feature dicts for a request of the contract (every row real)."""
    import torch

    data = {}
    for side in (0, 1):
        image = {"keypoints": f"kpts{side}", "descriptors": f"desc{side}", "image_size": f"size{side}",
                 "scales": f"scales{side}", "oris": f"oris{side}"}
        data[f"image{side}"] = {key: torch.from_numpy(feeds[name]) for key, name in image.items() if name in feeds}
    return data


def kornia_extractor(network: ExtractorNetwork, state_dict: dict):
    """kornia's module for ``network`` with ``state_dict`` (the official layout) and the reference's
    detection settings, called as ``module(image)``; None where kornia has no such network."""
    if network.feature == "aliked":
        from kornia.feature import ALIKED

        module = ALIKED(network.name, max_num_keypoints=DEFAULT_MAX_KEYPOINTS,
                        detection_threshold=network.detection_threshold, nms_radius=network.nms_radius)
        parameters = dict(module.named_parameters())  # kornia computes its buffers (dkd.hw_grid) itself
        missing = [key for key in module.load_state_dict(state_dict, strict=False).missing_keys if key in parameters]
        if missing:
            raise ValueError(f"kornia's ALIKED lacks weights for {missing}")
        return module.eval()
    if network.feature == "disk":
        from kornia.feature import DISK

        module = DISK().eval()
        module.load_state_dict(state_dict)
        window = 2 * network.nms_radius + 1
        return lambda image: module(image, n=DEFAULT_MAX_KEYPOINTS, window_size=window,
                                    score_threshold=network.detection_threshold, pad_if_not_divisible=True)
    return None
