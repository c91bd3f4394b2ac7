"""The independent numerical reference: kornia's LightGlue at full depth with the same state dict."""

import numpy as np
import torch

from trt.extractors import Extractor
from trt.features.base import Features
from trt.models.weights import rename_keys


def kornia_matcher(extractor: Extractor, state_dict: dict):
    from kornia.feature import LightGlue

    matcher = LightGlue(
        features=None,
        input_dim=extractor.descriptor_dim,
        add_scale_ori=extractor.scale_ori,
        depth_confidence=-1,
        width_confidence=-1,
        filter_threshold=0.0,
    ).eval()
    incompatible = matcher.load_state_dict(rename_keys(state_dict), strict=False)
    assert not incompatible.unexpected_keys and set(incompatible.missing_keys) <= {"confidence_thresholds"}
    return matcher


def kornia_match(matcher, f0: Features, f1: Features) -> dict[str, np.ndarray]:
    """matches0/mscores0/matches1/mscores1 of one pair, as numpy arrays without the batch axis."""

    def image(features: Features) -> dict:
        data = {
            "keypoints": torch.from_numpy(features.keypoints)[None],
            "descriptors": torch.from_numpy(features.descriptors)[None],
            "image_size": torch.tensor([features.image_size], dtype=torch.float32),
        }
        if features.scales is not None:
            data["scales"] = torch.from_numpy(features.scales)[None]
            data["oris"] = torch.from_numpy(features.oris)[None]
        return data

    with torch.no_grad():
        out = matcher({"image0": image(f0), "image1": image(f1)})
    return {
        "matches0": out["matches0"][0].numpy(),
        "matches1": out["matches1"][0].numpy(),
        "mscores0": out["matching_scores0"][0].numpy(),
        "mscores1": out["matching_scores1"][0].numpy(),
    }


def random_features(extractor: Extractor, n: int, size: tuple[float, float], rng: np.random.Generator,
                    like: Features | None = None) -> Features:
    """Random-but-valid features; with ``like``, a jittered copy of a subset of it, so pairs match."""
    if like is None:
        keypoints = rng.random((n, 2)) * (np.array(size) - 1)
        descriptors = rng.random((n, extractor.descriptor_dim))
        scales = rng.random(n) * 10 + 1
        oris = (rng.random(n) * 2 - 1) * np.pi
    else:
        pick = rng.permutation(len(like))[:n]
        keypoints = np.clip(like.keypoints[pick] + rng.normal(0, 0.2, (n, 2)), 0, np.array(size) - 1)
        descriptors = like.descriptors[pick] + rng.normal(0, 0.01, (n, extractor.descriptor_dim))
        scales = like.scales[pick] if like.scales is not None else rng.random(n) * 10 + 1
        oris = like.oris[pick] if like.oris is not None else rng.random(n)
    descriptors = descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)
    return Features(
        keypoints.astype(np.float32), descriptors.astype(np.float32), (float(size[0]), float(size[1])),
        scores=rng.random(n).astype(np.float32),
        scales=scales.astype(np.float32) if extractor.scale_ori else None,
        oris=oris.astype(np.float32) if extractor.scale_ori else None,
    )
