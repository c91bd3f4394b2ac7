"""Keypoint detection with fixed shapes, shared by the learned extractors (trt/extractor_contract.py).

The references detect with data-dependent shapes (``nonzero``, per-image lists). Here every step keeps
its shape, so the graph has no NonZero and TensorRT can allocate every buffer once:

* ``region_masks``: which pixels belong to each image of a padded batch, and which are far enough
  from its edges to be keypoints;
* ``simple_nms`` (SuperPoint, ALIKED) and ``strict_maxima`` (DISK, as kornia) decide the local maxima
  of a score map, inside each region only, exactly as the references do on the cropped map;
* ``select_top_k`` keeps the K best candidates with one TopK (K ≤ 3840, TensorRT's limit) and counts
  them; rows beyond the count point at pixel 0 and are zeroed by the caller;
* ``gather_pixels``, ``bilinear_sample`` and ``soft_argmax`` read maps at keypoints.

Coordinates are pixels of the padded input, (x, y), the centre of the top-left pixel at (0, 0).
"""

import torch
import torch.nn.functional as F


def region_masks(region: torch.Tensor, height, width, border: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks [B, 1, H, W]: inside each image's region, and inside it by at least ``border`` pixels.

    region [B, 4] int32: (x, y, width, height) of each image within the padded H × W input.
    """
    region = region.to(torch.int64)
    x0, y0 = region[:, 0].reshape(-1, 1, 1, 1), region[:, 1].reshape(-1, 1, 1, 1)
    x1, y1 = x0 + region[:, 2].reshape(-1, 1, 1, 1), y0 + region[:, 3].reshape(-1, 1, 1, 1)
    cols = torch.arange(width, device=region.device).reshape(1, 1, 1, -1)
    rows = torch.arange(height, device=region.device).reshape(1, 1, -1, 1)

    def within(margin: int) -> torch.Tensor:
        return (cols >= x0 + margin) & (cols < x1 - margin) & (rows >= y0 + margin) & (rows < y1 - margin)

    return within(0), within(border)


def _max_pool(x: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=2 * radius + 1, stride=1, padding=radius)


def simple_nms(scores: torch.Tensor, radius: int, inside: torch.Tensor) -> torch.Tensor:
    """The maxima mask [B, 1, H, W] of SuperPoint's ``simple_nms`` (also ALIKED's), within ``inside``.

    A pixel is kept if it equals the maximum of its (2r+1)² window; then, twice, pixels outside the
    windows of those kept that are the maximum of their window once the kept windows are zeroed.
    ``scores`` must be non-negative. Outside the region the map is set to -1, below every score, so
    each region sees exactly what the reference sees on the map cropped to that image.
    """
    fill = torch.where(inside, scores, torch.full_like(scores, -1.0))
    maxima = (fill == _max_pool(fill, radius)) & inside
    for _ in range(2):
        suppressed = _max_pool(maxima.to(scores.dtype), radius) > 0
        remaining = torch.where(suppressed, torch.zeros_like(fill), fill)
        maxima = maxima | ((remaining == _max_pool(remaining, radius)) & ~suppressed & inside)
    return maxima


def strict_maxima(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels [B, 1, H, W] greater than every other pixel of their (2r+1)² window (kornia's ``nms2d``).

    Ties are never maxima. The window is cut at the edges of the input; callers keep only pixels at
    least ``radius`` inside their region, whose windows lie wholly inside it.
    """
    height, width = scores.shape[2], scores.shape[3]
    padded = F.pad(scores, (radius, radius, radius, radius), value=float("-inf"))
    neighbours = None
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy == 0 and dx == 0:
                continue
            shifted = padded[:, :, radius + dy:radius + dy + height, radius + dx:radius + dx + width]
            neighbours = shifted if neighbours is None else torch.maximum(neighbours, shifted)
    return scores > neighbours


def select_top_k(scores: torch.Tensor, candidates: torch.Tensor, k: int):
    """The ``k`` highest-scoring candidates of each image, strongest first.

    scores [B, 1, H, W]; candidates [B, 1, H, W] bool. Returns (indices [B, K] int64 into H·W, count [B]
    int32, valid [B, K] bool). K extra -inf entries make TopK valid for maps smaller than K; rows at or
    beyond ``count`` are not keypoints and point at pixel 0.
    """
    flat = torch.where(candidates, scores, torch.full_like(scores, float("-inf"))).flatten(1)
    padded = torch.cat([flat, torch.full_like(flat[:, :1], float("-inf")).expand(-1, k)], dim=1)
    indices = torch.topk(padded, k, dim=1).indices
    count = torch.clamp(candidates.flatten(1).to(torch.int32).sum(dim=1), max=k)
    valid = torch.arange(k, device=scores.device).reshape(1, -1) < count.reshape(-1, 1)
    return torch.where(valid, indices, torch.zeros_like(indices)), count.to(torch.int32), valid


def pixel_xy(indices: torch.Tensor, width) -> torch.Tensor:
    """Flat indices [B, K] into rows of ``width`` → float (x, y) [B, K, 2]."""
    return torch.stack([indices % width, torch.div(indices, width, rounding_mode="floor")], dim=2).to(torch.float32)


def gather_pixels(maps: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """maps [B, C, H, W] at flat pixel indices [B, P] → [B, P, C]."""
    flat = maps.flatten(2).transpose(1, 2)  # [B, H·W, C]
    return torch.gather(flat, 1, indices.unsqueeze(2).expand(-1, -1, maps.shape[1]))


def bilinear_sample(maps: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """maps [B, C, H, W] read bilinearly at pixel positions xy [B, P, 2] → [B, P, C]; zero beyond the edges.

    Pixel x maps to grid_sample's (2x + 1) / W - 1 without corner alignment: the same positions as the
    references' ``align_corners=True`` normalisation by W - 1, without its division by zero for W = 1.
    """
    height, width = maps.shape[2], maps.shape[3]
    grid = torch.stack([(2 * xy[:, :, 0] + 1) / width - 1, (2 * xy[:, :, 1] + 1) / height - 1], dim=2)
    sampled = F.grid_sample(maps, grid.unsqueeze(1), mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled.squeeze(2).transpose(1, 2)


def soft_argmax(scores: torch.Tensor, indices: torch.Tensor, radius: int, temperature: float) -> torch.Tensor:
    """ALIKED's sub-pixel refinement: each keypoint moved by the softmax-weighted mean offset of its window.

    scores [B, 1, H, W]; indices [B, K] flat pixels at least ``radius`` inside the map (rows beyond the
    count may be anything). Returns refined (x, y) [B, K, 2].
    """
    width = scores.shape[3]
    span = torch.arange(-radius, radius + 1, device=scores.device)
    dy, dx = span.reshape(-1, 1).expand(-1, 2 * radius + 1).flatten(), span.repeat(2 * radius + 1)
    window = indices.unsqueeze(2) + (dy * width + dx).reshape(1, 1, -1)  # [B, K, (2r+1)²], row-major
    flat = scores.flatten(1)
    window = torch.clamp(window, min=0).clamp(max=flat.shape[1] - 1)  # rows beyond the count only
    patch = torch.gather(flat, 1, window.flatten(1)).reshape(window.shape)
    weights = torch.exp((patch - patch.max(dim=2, keepdim=True).values) / temperature)
    offsets = torch.stack([dx, dy], dim=1).to(scores.dtype)  # [(2r+1)², 2] as (x, y)
    residual = torch.matmul(weights, offsets) / weights.sum(dim=2, keepdim=True)
    return pixel_xy(indices, width) + residual
