"""Local features of one image, and how pairs of them become the matcher's input tensors."""

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from trt.contract import input_specs
from trt.errors import ContractError


@dataclass
class Features:
    """Features of one image, in original-image pixels (the centre of the top-left pixel is (0, 0)).

    keypoints [N, 2] float32 (x, y); descriptors [N, D] float32; scores [N] float32 (detector response,
    used to keep the strongest); scales, oris [N] float32 for DoG detectors (scale as the reference
    LightGlue reads it, orientation in radians), else None; image_size (width, height).
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[float, float]
    scores: Optional[np.ndarray] = None
    scales: Optional[np.ndarray] = None
    oris: Optional[np.ndarray] = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keypoints)

    def subset(self, indices: np.ndarray) -> "Features":
        """The features at ``indices`` (for example the top-K by score)."""
        pick = lambda a: None if a is None else a[indices]  # noqa: E731
        return Features(
            pick(self.keypoints), pick(self.descriptors), self.image_size,
            pick(self.scores), pick(self.scales), pick(self.oris), dict(self.extra),
        )

    def top_k(self, k: int) -> "Features":
        """The ``k`` features of highest score (all of them if there are no more than ``k``)."""
        if len(self) <= k:
            return self
        if self.scores is None:
            return self.subset(np.arange(k))
        keep = np.sort(np.argsort(-self.scores, kind="stable")[:k])
        return self.subset(keep)


def pack_pairs(
    pairs: Sequence[tuple[Features, Features]],
    num_keypoints0: int,
    num_keypoints1: int,
    threshold: float,
) -> dict[str, np.ndarray]:
    """Pad B pairs into one request of the matcher contract, with N0/N1 rows per image.

    Padding rows are zeros; ``count0/count1`` tell the graph which rows are real.
    """
    if not pairs:
        raise ContractError("no pairs to match")
    descriptor_dim = pairs[0][0].descriptors.shape[1]
    scale_ori = pairs[0][0].scales is not None
    batch = len(pairs)
    feeds = {}
    for side, n in ((0, num_keypoints0), (1, num_keypoints1)):
        kpts = np.zeros((batch, n, 2), np.float32)
        desc = np.zeros((batch, n, descriptor_dim), np.float32)
        scales = np.zeros((batch, n), np.float32)
        oris = np.zeros((batch, n), np.float32)
        size = np.zeros((batch, 2), np.float32)
        count = np.zeros((batch,), np.int32)
        for b, pair in enumerate(pairs):
            features = pair[side]
            k = len(features)
            if k > n:
                raise ContractError(f"image {side} of pair {b} has {k} keypoints, more than the {n} rows requested")
            if features.descriptors.shape[1] != descriptor_dim:
                raise ContractError(
                    f"image {side} of pair {b} has {features.descriptors.shape[1]}-D descriptors, "
                    f"expected {descriptor_dim}"
                )
            if (features.scales is not None) != scale_ori:
                raise ContractError("all images must have scales and orientations, or none")
            kpts[b, :k] = features.keypoints
            desc[b, :k] = features.descriptors
            if scale_ori:
                scales[b, :k] = features.scales
                oris[b, :k] = features.oris
            size[b] = features.image_size
            count[b] = k
        feeds.update({f"kpts{side}": kpts, f"desc{side}": desc, f"size{side}": size, f"count{side}": count})
        if scale_ori:
            feeds.update({f"scales{side}": scales, f"oris{side}": oris})
    feeds["threshold"] = np.array([threshold], np.float32)
    names = [spec.name for spec in input_specs(descriptor_dim, scale_ori)]
    return {name: feeds[name] for name in names}
