"""DISK (Tyszkiewicz et al., "DISK: Learning local features with policy gradient", 2020) as a
fixed-shape graph of the extractor contract (trt/extractor_contract.py).

The layout and parameter names are those of the official ``depth-save.pth`` (cvlab-epfl/disk; its
state dict under the key ``extractor``, as kornia.feature.DISK loads it): a thin U-Net of 5×5
convolutions (``unet.path_down``: 16, 32, 64, 64, 64 channels, average pooling between levels;
``unet.path_up``: bilinear upsampling, the skip connection concatenated, 64, 64, 64 and 129
channels), each convolution but the first preceded by an instance norm and a PReLU. The output is a
128-D descriptor map and a detection heatmap (logits) at full resolution.

Detection follows the reference used by cvg/LightGlue (kornia's DISK): keypoints are the strict
maxima of the heatmap in their 5×5 window (ties are not maxima), at least 2 pixels inside the image,
with a score strictly above the threshold (0), the K strongest; keypoints on integer pixels,
descriptors read there and L2-normalised. The front-end pads with zeros at the bottom and right to a
multiple of 16, as kornia does (``trt.features.padding``).
"""

import torch
import torch.nn.functional as F
from torch import nn

from trt.models.detection import gather_pixels, pixel_xy, region_masks, select_top_k, strict_maxima

DOWN = (16, 32, 64, 64, 64)
UP = (64, 64, 64)
KERNEL = 5
FP16_SCOPES = ("/unet/",)


def gated_conv(in_channels: int, out_channels: int, plain: bool) -> nn.Sequential:
    """Instance norm, PReLU, (no dropout), 5×5 conv; the first convolution of the U-Net has neither."""
    norm = nn.Sequential() if plain else nn.InstanceNorm2d(in_channels)
    gate = nn.Sequential() if plain else nn.PReLU(in_channels)
    return nn.Sequential(norm, gate, nn.Sequential(), nn.Conv2d(in_channels, out_channels, KERNEL, padding=KERNEL // 2))


class Downsample(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2)


class UpBlock(nn.Module):
    def __init__(self, bottom: int, skip: int, out_channels: int) -> None:
        super().__init__()
        self.conv = gated_conv(bottom + skip, out_channels, plain=False)

    def forward(self, bottom: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        upsampled = F.interpolate(bottom, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(torch.cat([upsampled, skip], dim=1))


class UNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        widths = (in_channels, *DOWN)
        self.path_down = nn.ModuleList(
            nn.Sequential(nn.Sequential() if i == 0 else Downsample(), gated_conv(widths[i], widths[i + 1], plain=i == 0))
            for i in range(len(DOWN))
        )
        ups = (*UP, out_channels)
        bottoms, skips = (DOWN[-1], *ups[:-1]), widths[-2::-1]
        self.path_up = nn.ModuleList(UpBlock(b, s, o) for b, s, o in zip(bottoms, skips, ups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = [x]
        for block in self.path_down:
            levels.append(block(levels[-1]))
        out = levels[-1]
        for block, skip in zip(self.path_up, levels[-2::-1]):
            out = block(out, skip)
        return out


class DISK(nn.Module):
    def __init__(self, max_num_keypoints: int = 2048, detection_threshold: float = 0.0, nms_radius: int = 2,
                 descriptor_dim: int = 128) -> None:
        super().__init__()
        self.max_num_keypoints, self.detection_threshold, self.nms_radius = max_num_keypoints, detection_threshold, nms_radius
        self.descriptor_dim = descriptor_dim
        self.unet = UNet(3, descriptor_dim + 1)

    def forward(self, image: torch.Tensor, region: torch.Tensor):
        out = self.unet(image)
        descriptor_map, heatmap = out[:, :self.descriptor_dim], out[:, self.descriptor_dim:]
        width = image.shape[3]
        _, inner = region_masks(region, image.shape[2], width, self.nms_radius)
        candidates = strict_maxima(heatmap, self.nms_radius) & inner & (heatmap > self.detection_threshold)
        indices, count, valid = select_top_k(heatmap, candidates, self.max_num_keypoints)
        scores = gather_pixels(heatmap, indices)[:, :, 0]
        descriptors = F.normalize(gather_pixels(descriptor_map, indices), p=2, dim=2)
        keep = valid.to(torch.float32)
        keypoints = (pixel_xy(indices, width) - region[:, :2].to(torch.float32).unsqueeze(1)) * keep.unsqueeze(2)
        return keypoints, scores * keep, descriptors * keep.unsqueeze(2), count
