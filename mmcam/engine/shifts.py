"""Sub-patch input shifts: a token map averaged over the input moved by fractions of a patch.

A transformer's relevance lives on its token grid, one value per patch of ``p`` pixels; inside
a patch the upsampled map cannot tell where the object is. Moving the input by
``round(k p / n)`` pixels (``k < n``, along each axis; edges replicated), explaining each moved
input with the same targets and moving each map back puts the grid at ``n`` phases per axis;
their mean is a map at ``n`` times the grid's resolution::

    M = normalize( 1/n² Σ_{dy, dx} unshift_{dy,dx}( M(shift_{dy,dx}(x)) ) )

(each pass's map min-max scaled before the mean). Cost: ``n²`` forwards and backwards. Used by
``gae-tower`` (generative VLMs, :mod:`mmcam.tasks.generation_gae`) and ``gae-shift``
(:class:`mmcam.methods.attention.ShiftedAttention`, through :func:`mmcam.engine.attention.explain_with_attention`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .combine import normalize

__all__ = ["offsets", "shift_grid", "shifted", "unshifted", "mean_over_shifts"]


def offsets(pixels: int, phases: int) -> list[int]:
    """The shifts along one axis of ``pixels`` pixels per token: ``round(k pixels / phases)``,
    ``k < phases`` (``pixels=8``: 2 phases ``[0, 4]``, 3 phases ``[0, 3, 5]``), duplicates
    dropped."""
    return sorted({round(k * pixels / phases) for k in range(max(1, phases))})


def shift_grid(patch: tuple[int, int], phases: int) -> list[tuple[int, int]]:
    """Every ``(dy, dx)`` of :func:`offsets` along both axes of a ``(ph, pw)``-pixel token,
    ``(0, 0)`` first."""
    return [(dy, dx) for dy in offsets(patch[0], phases) for dx in offsets(patch[1], phases)]


def shifted(pixels: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``(..., H, W)`` moved ``dy`` rows down and ``dx`` columns right, edges replicated."""
    H, W = pixels.shape[-2:]
    if dy == dx == 0:
        return pixels
    flat = pixels.reshape(-1, *pixels.shape[-3:]) if pixels.ndim >= 3 else pixels[None]
    moved = F.pad(flat, (dx, 0, dy, 0), mode="replicate")[..., :H, :W]
    return moved.reshape(pixels.shape)


def unshifted(maps: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``(..., H, W)`` maps of a :func:`shifted` input moved back, edges replicated."""
    if dy == dx == 0:
        return maps
    flat = maps.reshape(-1, *maps.shape[-3:]) if maps.ndim >= 3 else maps[None]
    moved = F.pad(flat, (0, dx, 0, dy), mode="replicate")[..., dy:, dx:]
    return moved.reshape(maps.shape)


def mean_over_shifts(
    first: torch.Tensor, explain: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, patch: tuple[int, int], phases: int
) -> torch.Tensor:
    """``normalize(mean_{dy,dx} unshifted(explain(shifted(image, dy, dx))))`` over
    :func:`shift_grid` of ``patch`` (pixels per token of ``image``, ``(..., H, W)``):
    ``first`` holds the min-max scaled maps ``(..., h', w')`` of the unshifted image (the
    ``(0, 0)`` pass, not run again), ``explain`` gives those of a moved image at the same
    ``(h', w')``; each map is moved back by the shift scaled to its size, ``round(dy h' / H)``."""
    (H, W), (h, w) = image.shape[-2:], first.shape[-2:]
    maps = [first]
    for dy, dx in shift_grid(patch, phases)[1:]:
        maps.append(unshifted(explain(shifted(image, dy, dx)), round(dy * h / H), round(dx * w / W)))
    return normalize(torch.stack(maps).mean(0))
