"""The independent numerical reference: kornia's LightGlue at full depth with the same state dict."""

import numpy as np
import torch

from trt.synthetic import synthetic_features
from trt.evaluation.kornia_reference import kornia_reference
from trt.extractors import Extractor
from trt.features.base import Features


def kornia_matcher(extractor: Extractor, state_dict: dict, threshold: float = 0.0):
    """kornia's LightGlue at full depth with ``state_dict``, keeping matches scored above ``threshold``."""
    return kornia_reference(extractor, state_dict, threshold=threshold)


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
    """Random-but-valid features of ``extractor``'s layout (see ``trt.synthetic.synthetic_features``)."""
    return synthetic_features(extractor.descriptor_dim, extractor.scale_ori, n, size, rng, like)
