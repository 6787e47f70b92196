"""ReLU, fusion of layers, upsampling and [0, 1] normalisation — done once, for every method."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["normalize", "upsample", "fuse"]


def normalize(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each ``(h, w)`` map of ``(..., h, w)`` to [0, 1]; constant maps become 0."""
    flat = maps.flatten(-2)
    low = flat.min(-1, keepdim=True).values
    span = flat.max(-1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(flat))
    return scaled.view_as(maps)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, K, h, w)`` maps to ``size``."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def fuse(maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Fuse per-layer ReLU'd maps: each resized to ``size`` and scaled to [0, 1], then the
    element-wise maximum (as in LayerCAM's multi-layer fusion)."""
    if len(maps) == 1:
        return upsample(maps[0], size)
    return torch.stack([normalize(upsample(m, size)) for m in maps]).amax(0)
