"""Fusion of layers, upsampling and [0, 1] normalisation — done once, for every method."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["EDGES", "normalize", "upsample", "fuse"]

#: How a map is resampled past its outermost cell centres (see :func:`upsample`).
EDGES = ("replicate", "reflect")


def normalize(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each ``(h, w)`` map of ``(..., h, w)`` to [0, 1]; constant maps become 0."""
    flat = maps.flatten(-2)
    low = flat.min(-1, keepdim=True).values
    span = flat.max(-1, keepdim=True).values - low
    # the same arithmetic as torch.where(span > 0, (flat - low) / span, 0), without the
    # full-size zeros and select (3x faster on (K, H, W) photo-sized maps)
    scaled = (flat - low).div_(span.clamp_min(torch.finfo(maps.dtype).tiny))
    return scaled.masked_fill_(~(span > 0), 0.0).view_as(maps)


def upsample(maps: torch.Tensor, size: tuple[int, int], edge: str = "replicate") -> torch.Tensor:
    """Bilinear resize of ``(B, K, h, w)`` maps to ``size`` (cell centres at half-cell offsets,
    ``align_corners=False``).

    Output pixel ``p`` of ``N`` samples the map at cell coordinate ``u = (p + ½)·n/N − ½``
    (cell ``i``'s centre at ``u = i``). Past the outermost centres (``u < 0`` or ``u > n − 1``,
    the outer half cell) ``edge`` decides: ``"replicate"`` clamps ``u`` (``F.interpolate``:
    the outer half cell is flat at the edge cell's value), ``"reflect"`` mirrors it about the
    outermost centre (``u → −u``, ``u → 2(n − 1) − u``), so the interpolant is symmetric about
    every cell centre, the edge cells' too. With ``replicate`` a map whose maximum is an edge
    cell peaks on the image's outermost pixels (the flat half cell beats the inner side, which
    mixes in the smaller neighbour); with ``reflect`` it peaks next to that cell's centre, as
    an interior cell's maximum does.
    """
    if edge not in EDGES:
        raise ValueError(f"edge must be one of {EDGES}, got {edge!r}")
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if edge == "replicate":
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    (h, w), (big_h, big_w) = maps.shape[-2:], (int(size[0]), int(size[1]))
    if min(h, w) >= 2 and big_h % h == 0 and big_w % w == 0:
        # integer ratios r (a stride's): one mirrored cell each side (F.pad "reflect" mirrors about
        # the edge cell's centre), bilinear to N + 2r, the r outer pixels cropped — the same
        # samples u + 1 of the padded grid, never clamped, at F.interpolate's speed
        ry, rx = big_h // h, big_w // w
        padded = F.pad(maps, (1, 1, 1, 1), mode="reflect")
        return F.interpolate(padded, size=(big_h + 2 * ry, big_w + 2 * rx), mode="bilinear", align_corners=False)[..., ry:-ry, rx:-rx].contiguous()
    out = _reflected_axis(maps, -1, big_w)
    return _reflected_axis(out, -2, big_h)


def _reflected_axis(maps: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Linear resampling of ``maps`` along ``dim`` to ``size`` samples, mirrored past the
    outermost cell centres (:func:`upsample` with ``edge="reflect"``)."""
    n = maps.shape[dim]
    if n == size:
        return maps
    if n == 1:  # one cell: constant along this axis
        return maps.index_select(dim, torch.zeros(size, dtype=torch.long, device=maps.device))
    u = (torch.arange(size, dtype=torch.float64, device=maps.device) + 0.5) * (n / size) - 0.5
    u = u.abs()  # mirror about cell 0's centre
    u = (n - 1) - ((n - 1) - u).abs()  # and about the last cell's centre
    low = u.floor().long().clamp(0, n - 2)
    t = (u - low).to(maps.dtype)
    shape = [1] * maps.dim()
    shape[dim] = size
    t = t.view(shape)
    return maps.index_select(dim, low) * (1 - t) + maps.index_select(dim, low + 1) * t


def fuse(maps: list[torch.Tensor], size: tuple[int, int], edge: str = "replicate") -> torch.Tensor:
    """Fuse per-layer ReLU'd maps: each resized to ``size`` (:func:`upsample` with ``edge``),
    then summed.

    Summing in the maps' own units (Σ_c w_c A_c is each layer's first-order account of the
    target) keeps a layer with negligible gradient negligible; normalising each layer first
    would blow its noise up to full scale (e.g. a P5 map for a box the P3 head predicted).
    """
    if len(maps) == 1:
        return upsample(maps[0], size, edge)
    return torch.stack([upsample(m, size, edge) for m in maps]).sum(0)
