"""ALIKED (Zhao et al., "ALIKED: A Lighter Keypoint and Descriptor Extraction Network via Deformable
Transformation", 2023) as a fixed-shape graph of the extractor contract (trt/extractor_contract.py).

The layout and parameter names are those of the official checkpoints (Shiaoming/ALIKED, loaded by
cvg/LightGlue's ``lightglue/aliked.py``), so they load strictly:

* a four-stage encoder (``block1``-``block4``: a plain conv block, then residual blocks, the last two
  with deformable 3×3 convolutions), average pooling by 2, 4 and 4 between them, SELU activations;
* 1×1 projections (``conv1``-``conv4``) of every stage to dim/4 channels, upsampled bilinearly to full
  resolution and concatenated: the dense feature map, L2-normalised per pixel;
* a small score head (sigmoid) for detection and the sparse deformable descriptor head ``desc_head``
  (SDDH): per keypoint, M sampling offsets from a 3×3 patch, features sampled there, a 1×1 conv and a
  learned weighted sum to a D-dimensional descriptor.

Detection follows the reference's DKD: ``simple_nms`` with radius r, no keypoint within r pixels of
the image edge, scores above the threshold (if none of an image's maxima are, those above its mean
score), the K strongest, and a soft-argmax over the (2r+1)² window (temperature 0.1) for sub-pixel
positions, scored by reading the score map there.

What differs from the reference is how, not what:

* The deformable convolution (``torchvision.ops.deform_conv2d`` in the reference) is one
  ``grid_sample`` of all nine taps followed by a 1×1 convolution: plain ONNX ops TensorRT parses.
* The image arrives padded (``trt.features.padding``: around the centre, replicating the border, as
  the reference pads) together with its region; detection and the descriptor head see each region
  as the reference sees its cropped map (the map outside it is -1 for NMS and zero for sampling).
* With a detection threshold <= 0 the graph keeps the K strongest maxima (kornia's top-k mode); the
  reference's top-k mode fills K with non-maxima when an image has fewer.
* The mean-score fallback is decided per image (as kornia does), not for the whole batch.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.onnx.operators import shape_as_tensor

from trt.models.detection import bilinear_sample, gather_pixels, region_masks, select_top_k, simple_nms, soft_argmax

# c1, c2, c3, c4, dim, patch size of the offset estimate, M sampling positions
CONFIGS = {
    "aliked-t16": (8, 16, 32, 64, 64, 3, 16),
    "aliked-n16": (16, 32, 64, 128, 128, 3, 16),
    "aliked-n16rot": (16, 32, 64, 128, 128, 3, 16),
    "aliked-n32": (16, 32, 64, 128, 128, 3, 32),
}
SOFT_ARGMAX_TEMPERATURE = 0.1
# Module scopes (ONNX node-name prefixes) of the dense encoder, where the time goes: they run in FP16 in
# the mixed-precision variant; detection, coordinates and the descriptor head stay FP32.
FP16_SCOPES = ("/block1/", "/block2/", "/block3/", "/block4/", "/pool2", "/pool4", "/conv1/", "/conv2/",
               "/conv3/", "/conv4/", "/gate", "/upsample2/", "/upsample8/", "/upsample32/", "/score_head/")


def spatial_limit(x: torch.Tensor) -> torch.Tensor:
    """max(H, W) / 4 of a feature map, as a traced value: the reference's bound on sampling offsets."""
    return shape_as_tensor(x)[2:].max().to(torch.float32) / 4


class DeformableConv2d(nn.Module):
    """3×3 deformable convolution (DCNv1, stride 1, padding 1): offsets from ``offset_conv``, weights of
    ``regular_conv``. The nine taps are sampled with one grid_sample (zero outside the map, as
    torchvision's kernel) and contracted with the weights by a 1×1 convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.offset_conv = nn.Conv2d(in_channels, 18, kernel_size=3, padding=1, bias=True)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        taps = torch.arange(-1, 2, dtype=torch.float32)
        self.register_buffer("tap_y", taps.reshape(-1, 1).expand(3, 3).reshape(1, 9, 1, 1), persistent=False)
        self.register_buffer("tap_x", taps.reshape(1, -1).expand(3, 3).reshape(1, 9, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        channels = self.regular_conv.in_channels  # a constant, so the exporter knows the 1×1 conv's input width
        limit = spatial_limit(x)
        offset = torch.minimum(torch.maximum(self.offset_conv(x), -limit), limit)
        offset = offset.reshape(batch, 9, 2, height, width)  # per tap (dy, dx), taps in row-major order
        rows = torch.arange(height, device=x.device).to(x.dtype).reshape(1, 1, -1, 1)
        cols = torch.arange(width, device=x.device).to(x.dtype).reshape(1, 1, 1, -1)
        y = rows + self.tap_y + offset[:, :, 0]
        sample_x = cols + self.tap_x + offset[:, :, 1]
        grid = torch.stack([(2 * sample_x + 1) / width - 1, (2 * y + 1) / height - 1], dim=4)
        taps = F.grid_sample(x, grid.reshape(batch, 9 * height, width, 2), mode="bilinear", padding_mode="zeros",
                             align_corners=False)  # [B, C, 9·H, W]
        weight = self.regular_conv.weight.reshape(self.regular_conv.out_channels, channels * 9, 1, 1)
        return F.conv2d(taps.reshape(batch, channels * 9, height, width), weight)


class UpsampleTo(nn.Module):
    """Bilinear upsampling with aligned corners to the size of another map (the reference's nn.Upsample by 2, 8
    and 32, exactly, for inputs whose sides are multiples of 32). An explicit size makes a Resize whose output
    shape symbolic shape inference copies instead of deriving it from scales."""

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=True)


def conv3x3(in_channels: int, out_channels: int, deformable: bool) -> nn.Module:
    if deformable:
        return DeformableConv2d(in_channels, out_channels)
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, gate: nn.Module) -> None:
        super().__init__()
        self.gate = gate
        self.conv1 = conv3x3(in_channels, out_channels, False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels, False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gate(self.bn1(self.conv1(x)))
        return self.gate(self.bn2(self.conv2(x)))


class ResBlock(nn.Module):
    """ResNet's basic block with a 1×1 projection shortcut, optionally deformable."""

    def __init__(self, in_channels: int, out_channels: int, gate: nn.Module, deformable: bool) -> None:
        super().__init__()
        self.gate = gate
        self.conv1 = conv3x3(in_channels, out_channels, deformable)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels, deformable)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gate(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.gate(out + self.downsample(x))


class SDDH(nn.Module):
    """Sparse deformable descriptor head: M offsets per keypoint from a patch, features sampled there,
    a 1×1 conv and SELU, then a learned weighted sum over positions and channels."""

    def __init__(self, dim: int, patch: int, positions: int, gate: nn.Module) -> None:
        super().__init__()
        self.patch, self.positions = patch, positions
        self.offset_conv = nn.Sequential(
            nn.Conv2d(dim, 2 * positions, kernel_size=patch, bias=True),
            gate,
            nn.Conv2d(2 * positions, 2 * positions, kernel_size=1, bias=True),
        )
        self.sf_conv = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.agg_weights = nn.Parameter(torch.zeros(positions, dim, dim))
        span = torch.arange(patch)
        self.register_buffer("patch_dy", span.reshape(-1, 1).expand(patch, patch).reshape(1, 1, -1), persistent=False)
        self.register_buffer("patch_dx", span.reshape(1, -1).expand(patch, patch).reshape(1, 1, -1), persistent=False)

    def forward(self, features: torch.Tensor, xy: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """features [B, C, H, W], zero outside each region; xy [B, K, 2] keypoints in input pixels → [B, K, D]."""
        batch, channels, _, width = features.shape
        keypoints = xy.shape[1]
        origin = region[:, :2].to(torch.float32).unsqueeze(1)  # [B, 1, 2]
        size = region[:, 2:].to(torch.float32).unsqueeze(1)
        # The reference's patch: its corner one pixel up-left of the keypoint's pixel, kept inside the region.
        corner = torch.floor(xy - origin) - (self.patch - 1) // 2
        corner = torch.minimum(torch.maximum(corner, torch.zeros_like(corner)), size - 1 - self.patch) + origin
        corner = corner.to(torch.int64)
        pixels = (corner[:, :, 1:2] + self.patch_dy) * width + corner[:, :, 0:1] + self.patch_dx  # [B, K, p²]
        patch = gather_pixels(features, pixels.flatten(1)).reshape(batch, keypoints, -1, channels)
        patch = patch.transpose(2, 3).flatten(2)  # [B, K, C·p²] in the conv weight's (c, dy, dx) order
        first, gate, second = self.offset_conv
        offset = gate(F.linear(patch, first.weight.flatten(1), first.bias))
        offset = F.linear(offset, second.weight.flatten(1), second.bias)
        limit = size.max(dim=2, keepdim=True).values / 4
        offset = torch.minimum(torch.maximum(offset, -limit), limit)
        shifts = torch.stack([offset[:, :, :self.positions], offset[:, :, self.positions:]], dim=3)  # [B, K, M, 2]
        positions = (xy.unsqueeze(2) + shifts).reshape(batch, keypoints * self.positions, 2)
        sampled = bilinear_sample(features, positions).reshape(batch, keypoints, self.positions, channels)
        sampled = F.selu(F.linear(sampled, self.sf_conv.weight.flatten(1)))
        descriptors = torch.matmul(sampled.reshape(batch, keypoints, -1), self.agg_weights.flatten(0, 1))
        return F.normalize(descriptors, p=2, dim=2)


class ALIKED(nn.Module):
    def __init__(self, model_name: str = "aliked-n16", max_num_keypoints: int = 2048,
                 detection_threshold: float = 0.2, nms_radius: int = 2) -> None:
        super().__init__()
        c1, c2, c3, c4, dim, patch, positions = CONFIGS[model_name]
        self.max_num_keypoints, self.detection_threshold, self.nms_radius = max_num_keypoints, detection_threshold, nms_radius
        self.pool2 = nn.AvgPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AvgPool2d(kernel_size=4, stride=4)
        self.gate = nn.SELU()
        self.block1 = ConvBlock(3, c1, self.gate)
        self.block2 = ResBlock(c1, c2, self.gate, deformable=False)
        self.block3 = ResBlock(c2, c3, self.gate, deformable=True)
        self.block4 = ResBlock(c3, c4, self.gate, deformable=True)
        self.conv1 = nn.Conv2d(c1, dim // 4, kernel_size=1, bias=False)
        self.conv2 = nn.Conv2d(c2, dim // 4, kernel_size=1, bias=False)
        self.conv3 = nn.Conv2d(c3, dim // 4, kernel_size=1, bias=False)
        self.conv4 = nn.Conv2d(c4, dim // 4, kernel_size=1, bias=False)
        self.upsample2, self.upsample8, self.upsample32 = UpsampleTo(), UpsampleTo(), UpsampleTo()
        self.score_head = nn.Sequential(
            nn.Conv2d(dim, 8, kernel_size=1, bias=False), self.gate,
            nn.Conv2d(8, 4, kernel_size=3, padding=1, bias=False), self.gate,
            nn.Conv2d(4, 4, kernel_size=3, padding=1, bias=False), self.gate,
            nn.Conv2d(4, 1, kernel_size=3, padding=1, bias=False),
        )
        self.desc_head = SDDH(dim, patch, positions, self.gate)

    def dense_maps(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image [B, 3, H, W] (multiples of 32) → L2-normalised features [B, dim, H, W], scores [B, 1, H, W]."""
        x1 = self.block1(image)
        x2 = self.block2(self.pool2(x1))
        x3 = self.block3(self.pool4(x2))
        x4 = self.block4(self.pool4(x3))
        x1234 = torch.cat([
            self.gate(self.conv1(x1)),
            self.upsample2(self.gate(self.conv2(x2)), x1),
            self.upsample8(self.gate(self.conv3(x3)), x1),
            self.upsample32(self.gate(self.conv4(x4)), x1),
        ], dim=1)
        return F.normalize(x1234, p=2, dim=1), torch.sigmoid(self.score_head(x1234))

    def forward(self, image: torch.Tensor, region: torch.Tensor):
        feature_map, score_map = self.dense_maps(image)
        inside, inner = region_masks(region, image.shape[2], image.shape[3], self.nms_radius)
        maxima = simple_nms(score_map, self.nms_radius, inside) & inner
        if self.detection_threshold > 0:
            above = maxima & (score_map > self.detection_threshold)
            any_above = above.flatten(1).to(torch.float32).amax(dim=1).reshape(-1, 1, 1, 1) > 0
            area = inside.flatten(1).to(torch.float32).sum(dim=1)
            mean = ((score_map * inside.to(score_map.dtype)).flatten(1).sum(dim=1) / area).reshape(-1, 1, 1, 1)
            candidates = (above & any_above) | (maxima & (score_map > mean) & ~any_above)  # no bool Where in ORT
        else:
            candidates = maxima
        indices, count, valid = select_top_k(score_map, candidates, self.max_num_keypoints)
        xy = soft_argmax(score_map, indices, self.nms_radius, SOFT_ARGMAX_TEMPERATURE)
        scores = bilinear_sample(score_map, xy)[:, :, 0]
        descriptors = self.desc_head(feature_map * inside.to(feature_map.dtype), xy, region)
        keep = valid.to(torch.float32)
        keypoints = (xy - region[:, :2].to(torch.float32).unsqueeze(1)) * keep.unsqueeze(2)
        return keypoints, scores * keep, descriptors * keep.unsqueeze(2), count
