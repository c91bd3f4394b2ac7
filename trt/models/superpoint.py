"""SuperPoint (DeTone et al., "SuperPoint: Self-Supervised Interest Point Detection and Description",
2018) as a fixed-shape graph of the extractor contract (trt/extractor_contract.py).

The layout and parameter names are those of ``superpoint_v1.pth`` (Magic Leap's release, loaded by
cvg/LightGlue's ``lightglue/superpoint.py``), so it loads strictly: a VGG-style encoder (``conv1a`` to
``conv4b``, three 2×2 max-pools, stride 8), a detector head (``convPa``, ``convPb``: 64 cell positions
and a "no keypoint" bin, softmax, reshaped to full resolution) and a descriptor head (``convDa``,
``convDb``: a 256-D map at 1/8 resolution, L2-normalised).

Detection follows the reference: ``simple_nms`` with radius 4, no keypoint within 4 pixels of the
image edge, scores above the threshold (0.0005), the K strongest; keypoints on integer pixels.
Descriptors are read bilinearly from the coarse map with the reference's cell-centre convention,
normalised by the size of the image's own stride-padded map (``ceil(width / 8)`` cells), so a
padded batch gives each image what the reference gives it alone, and L2-normalised again.

The reference drops the last partial cell of an image whose sides are not multiples of 8; here the
front-end pads them by replication (``trt.features.padding``), which adds no keypoint there.
"""

import torch
import torch.nn.functional as F
from torch import nn

from trt.models.detection import bilinear_sample, gather_pixels, pixel_xy, region_masks, select_top_k, simple_nms

CELL = 8
FP16_SCOPES = ("/conv", "/relu", "/pool")


class SuperPoint(nn.Module):
    def __init__(self, max_num_keypoints: int = 2048, detection_threshold: float = 0.0005, nms_radius: int = 4,
                 remove_borders: int = 4, descriptor_dim: int = 256) -> None:
        super().__init__()
        self.max_num_keypoints, self.detection_threshold = max_num_keypoints, detection_threshold
        self.nms_radius, self.remove_borders = nms_radius, remove_borders
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        c1, c2, c3, c4, c5 = 64, 64, 128, 128, 256
        self.conv1a = nn.Conv2d(1, c1, kernel_size=3, padding=1)
        self.conv1b = nn.Conv2d(c1, c1, kernel_size=3, padding=1)
        self.conv2a = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
        self.conv2b = nn.Conv2d(c2, c2, kernel_size=3, padding=1)
        self.conv3a = nn.Conv2d(c2, c3, kernel_size=3, padding=1)
        self.conv3b = nn.Conv2d(c3, c3, kernel_size=3, padding=1)
        self.conv4a = nn.Conv2d(c3, c4, kernel_size=3, padding=1)
        self.conv4b = nn.Conv2d(c4, c4, kernel_size=3, padding=1)
        self.convPa = nn.Conv2d(c4, c5, kernel_size=3, padding=1)
        self.convPb = nn.Conv2d(c5, CELL * CELL + 1, kernel_size=1)
        self.convDa = nn.Conv2d(c4, c5, kernel_size=3, padding=1)
        self.convDb = nn.Conv2d(c5, descriptor_dim, kernel_size=1)

    def dense_maps(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image [B, 1, H, W] → keypoint scores [B, 1, H, W], descriptor map [B, D, H/8, W/8] (unnormalised)."""
        x = self.relu(self.conv1b(self.relu(self.conv1a(image))))
        x = self.relu(self.conv2b(self.relu(self.conv2a(self.pool(x)))))
        x = self.relu(self.conv3b(self.relu(self.conv3a(self.pool(x)))))
        x = self.relu(self.conv4b(self.relu(self.conv4a(self.pool(x)))))
        logits = self.convPb(self.relu(self.convPa(x)))
        descriptors = self.convDb(self.relu(self.convDa(x)))
        # Softmax over the 65 bins, the dustbin dropped, each cell's 64 bins to its 8×8 pixels.
        scores = F.pixel_shuffle(F.softmax(logits, dim=1)[:, :CELL * CELL], CELL)
        return scores, descriptors

    def forward(self, image: torch.Tensor, region: torch.Tensor):
        scores, descriptor_map = self.dense_maps(image)
        width = image.shape[3]
        inside, inner = region_masks(region, image.shape[2], width, self.remove_borders)
        candidates = simple_nms(scores, self.nms_radius, inside) & inner & (scores > self.detection_threshold)
        indices, count, valid = select_top_k(scores, candidates, self.max_num_keypoints)
        xy = pixel_xy(indices, width)
        keypoint_scores = gather_pixels(scores, indices)[:, :, 0]
        origin = region[:, :2].to(torch.float32).unsqueeze(1)
        cells = torch.ceil(region[:, 2:].to(torch.float32) / CELL).unsqueeze(1)  # the image's own map size
        # The reference's sample_descriptors: pixel p to coarse-map position (p - 3.5)·(w - 1)/(8w - 4.5).
        position = (xy - origin - (CELL / 2 - 0.5)) * (cells - 1) / (cells * CELL - CELL / 2 - 0.5) + origin / CELL
        descriptors = F.normalize(bilinear_sample(F.normalize(descriptor_map, p=2, dim=1), position), p=2, dim=2)
        keep = valid.to(torch.float32)
        keypoints = (xy - origin) * keep.unsqueeze(2)
        return keypoints, keypoint_scores * keep, descriptors * keep.unsqueeze(2), count
