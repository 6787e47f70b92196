"""Sub-patch input shifts: a token map averaged over the input moved by fractions of a patch.

A transformer's relevance lives on its token grid, one value per patch of ``p`` pixels; inside
a patch the upsampled map cannot tell where the object is. Moving the input by
``round(k p / n)`` pixels (``k < n``, along each axis; edges replicated), explaining each moved
input with the same targets and moving each map back puts the grid at ``n`` phases per axis;
their mean is a map at ``n`` times the grid's resolution::

    M = normalize( 1/n² Σ_{dy, dx} unshift_{dy,dx}( M(shift_{dy,dx}(x)) ) )

(each pass's map min-max scaled before the mean). Cost: ``n²`` forwards and backwards. Used by
``gae-tower`` (generative VLMs, :mod:`mmcam.tasks.generation_gae`) and ``gae-shift``
(:class:`mmcam.methods.attention.ShiftedAttention`, through :func:`mmcam.engine.attention.explain_with_attention`),
and, with the layer's stride in place of the patch, by the CNN variants ``gradcam-shift`` /
``layercam-shift`` (:class:`mmcam.methods.shifted.InputShifts`, through :func:`mean_over_shifts`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import GradientError, MethodError
from ..targets import ClassLogit, SegmentationRegion, TopClasses, logits_of
from .combine import normalize
from .inputs import Inputs

__all__ = ["offsets", "shift_grid", "shifted", "unshifted", "pinned_targets", "moved_target", "mean_over_shifts"]


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


def pinned_targets(items: list[list[Any]], output: Any) -> list[list[Any]]:
    """Each image's resolved targets with every :class:`~mmcam.targets.TopClasses` replaced by
    the :class:`~mmcam.targets.ClassLogit` s it picked on ``output`` (a moved input explains
    the same classes); a target with a ``pin(output, image)`` method (a wrapper around
    ``TopClasses``) is replaced by the list that method returns."""
    out = []
    for i, targets in enumerate(items):
        row: list[Any] = []
        for t in targets:
            if isinstance(t, TopClasses):
                logits = logits_of(output).detach()
                row.extend(ClassLogit(c) for c in logits[i].topk(min(t.k, logits.shape[1])).indices.tolist())
            elif callable(getattr(t, "pin", None)):
                row.extend(t.pin(output, i))
            else:
                row.append(t)
        out.append(row)
    return out


def moved_target(target: Any, dy: int, dx: int, size: tuple[int, int]) -> Any:
    """``target`` for the input moved by ``(dy, dx)`` pixels of an ``size = (H, W)`` input: a
    :class:`~mmcam.targets.SegmentationRegion` with a fixed mask gets the mask moved with the
    image (at the mask's own resolution, edges zero); a region taken from the model's own
    prediction, and every other target, moves with the output already and is kept."""
    if not isinstance(target, SegmentationRegion) or target.mask is None or dy == dx == 0:
        return target
    mask = torch.as_tensor(target.mask, dtype=torch.float32)
    my, mx = round(dy * mask.shape[-2] / size[0]), round(dx * mask.shape[-1] / size[1])
    moved = torch.zeros_like(mask)
    moved[..., my:, mx:] = mask[..., : mask.shape[-2] - my, : mask.shape[-1] - mx]
    return SegmentationRegion(target.classes, moved)


def mean_over_shifts(
    explain: Callable[[Any, Any], Any], batch: Any, first: Any, phases: int, size: tuple[int, int] | None, method: str, patch: tuple[int, int] | None = None
) -> Any:
    """An explanation averaged over sub-stride / sub-patch input shifts (``gradcam-shift``,
    ``layercam-shift``, ``layercam-detr-shift``; ``gae-shift``, ``attnlrp-shift`` through
    :func:`mmcam.engine.attention.over_shifts`).

    ``first`` is the unshifted pass's :class:`~mmcam.engine.Explanation` of ``batch``
    (:class:`~mmcam.engine.inputs.Inputs`); ``explain(moved_inputs, targets)`` runs one more
    pass. With ``s`` input pixels per cell of ``first.raw``'s grid (the hooked layer's stride;
    several layers: the finest grid; or ``patch``, e.g. a DETR's encoder token), each input moved by ``(dy, dx)`` of :func:`shift_grid`
    is explained with the first pass's targets (top classes pinned, fixed masks moved with the
    image: :func:`pinned_targets`, :func:`moved_target`), each map moved back by
    :func:`unshifted` and the min-max scaled maps (``phases²``, fewer where offsets coincide: a
    stride-2 grid has only 0 and 1 px) averaged, then min-max scaled::

        M = normalize( 1/n² Σ_{dy, dx} unshift_{dy,dx}( M(shift_{dy,dx}(x)) ) )

    A moved pass whose gradients are all zero (:class:`~mmcam.errors.GradientError`) adds a zero
    map; ``scores``, ``output`` and ``raw`` stay the unshifted pass's."""
    if first.maps.shape[1] == 0:
        return first
    spatial = batch.spatial_size
    if spatial is None or size is None:
        raise MethodError(f"method {method!r} moves the image tensor (B, C, H, W); these inputs have none. Use the method without '-shift'")
    (h, w), (H, W) = first.raw.shape[-2:], spatial
    grid = shift_grid(patch or (max(1, H // h), max(1, W // w)), phases)
    pinned = pinned_targets(first.resolved_targets, first.output)
    maps = [first.maps]
    for dy, dx in grid[1:]:
        image = shifted(batch.image, dy, dx)
        moved = Inputs(image) if batch.image_key is None else Inputs({**batch.value, batch.image_key: image}, batch.image_key)
        targets = [[moved_target(t, dy, dx, (H, W)) for t in row] for row in pinned]
        try:
            moved_maps = explain(moved, targets).maps
        except GradientError:  # no evidence at this phase (e.g. a tiny fixed region vanished on the logits' grid): a zero map
            moved_maps = torch.zeros_like(first.maps)
        maps.append(unshifted(moved_maps, round(dy * size[0] / H), round(dx * size[1] / W)))
    return replace(first, maps=normalize(torch.stack(maps).mean(0)), method=method, layers=[*first.layers, f"mean over input shifts {grid}"])
